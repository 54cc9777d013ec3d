SELECT e.id, e.next_touch_due::text, e.last_touch_at::text
FROM public.engagement_clocks e
WHERE e.tenant_id = $1
  AND (NOT isfinite(e.next_touch_due) OR NOT isfinite(coalesce(e.last_touch_at, e.next_touch_due)))
ORDER BY e.id
LIMIT 5
