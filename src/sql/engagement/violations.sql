SELECT v.clock_id, v.client_id, v.contact_id, v.days_overdue,
       v.priority_score::float8 AS priority_score, v.next_touch_due
FROM public.get_engagement_violations_at($1, $2) WITH ORDINALITY AS v
ORDER BY v.ordinality
LIMIT $3
