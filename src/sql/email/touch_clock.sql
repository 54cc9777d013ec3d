SELECT public.touch_engagement_clock($1, $2, $3, 'email', NULL, $4)
