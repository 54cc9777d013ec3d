SELECT public.refresh_engagement_scores($1, $2)
