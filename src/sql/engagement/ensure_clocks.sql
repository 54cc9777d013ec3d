INSERT INTO public.engagement_clocks AS ec
    (tenant_id, client_id, contact_id, next_touch_due, engagement_interval_days,
     priority_score, created_at, updated_at)
SELECT ct.tenant_id, ct.client_id, ct.id, $2::timestamptz, iv.days,
       public.engagement_priority(0, ct.is_primary, ct.title), $2::timestamptz, $2::timestamptz
FROM public.contacts ct
CROSS JOIN (SELECT public.tenant_engagement_interval_days($1) AS days) iv
WHERE ct.tenant_id = $1
  AND NOT EXISTS (SELECT 1 FROM public.engagement_clocks e WHERE e.contact_id = ct.id)
ON CONFLICT (tenant_id, contact_id) WHERE contact_id IS NOT NULL DO NOTHING
