-- SQL floor of `autopilot check-engagement --limit 1` (all tenants): the same work as the
-- fewest set-based statements (scripts/bench prints autopilot/floor).
--
-- 1. create the missing clock of every contact (due at once, the tenant's interval);
-- 2. refresh every clock's priority score (rows whose score is unchanged are not written);
-- 3. the per-tenant compliance summary and the top violation of each tenant.
-- The scoring formula is written inline (as refresh_engagement_scores does): per-row
-- calls of functions with a pinned search_path are never inlined and would slow the floor.
-- Output is discarded (\o /dev/null), as the binary's is in the benchmark.

INSERT INTO public.engagement_clocks AS ec
    (tenant_id, client_id, contact_id, next_touch_due, engagement_interval_days,
     priority_score, created_at, updated_at)
SELECT ct.tenant_id, ct.client_id, ct.id, now(), iv.days,
       (least(2 * greatest(coalesce(0, 0), 0), 50) + CASE WHEN coalesce(ct.is_primary, false) THEN 20 ELSE 0 END + CASE WHEN ct.title ~* '\m(president|ceo|owner|director)' THEN 15 WHEN ct.title ~* '\m(manager|lead|head)' THEN 10 ELSE 0 END)::numeric(5,2), now(), now()
FROM public.contacts ct
JOIN (SELECT t.id, public.tenant_engagement_interval_days(t.id) AS days FROM public.tenants t) iv
  ON iv.id = ct.tenant_id
WHERE NOT EXISTS (SELECT 1 FROM public.engagement_clocks e WHERE e.contact_id = ct.id)
ON CONFLICT (tenant_id, contact_id) WHERE contact_id IS NOT NULL DO NOTHING;

UPDATE public.engagement_clocks ec
SET priority_score = s.score, updated_at = now()
FROM (
    SELECT e.id,
           (least(2 * greatest(coalesce((CASE WHEN e.next_touch_due <= now() THEN floor(extract(epoch FROM (now() - e.next_touch_due)) / 86400)::int ELSE 0 END), 0), 0), 50) + CASE WHEN coalesce(ct.is_primary, false) THEN 20 ELSE 0 END + CASE WHEN ct.title ~* '\m(president|ceo|owner|director)' THEN 15 WHEN ct.title ~* '\m(manager|lead|head)' THEN 10 ELSE 0 END)::numeric(5,2) AS score
    FROM public.engagement_clocks e
    LEFT JOIN public.contacts ct ON ct.id = e.contact_id AND ct.tenant_id = e.tenant_id
) s
WHERE ec.id = s.id AND ec.priority_score IS DISTINCT FROM s.score;

\o /dev/null
SELECT e.tenant_id, count(*) AS total,
       count(*) FILTER (WHERE e.next_touch_due > now()) AS compliant,
       count(*) FILTER (WHERE e.next_touch_due <= now()) AS overdue,
       round(100.0 * count(*) FILTER (WHERE e.next_touch_due > now()) / count(*), 2) AS compliance_rate,
       coalesce(round(avg((CASE WHEN e.next_touch_due <= now() THEN floor(extract(epoch FROM (now() - e.next_touch_due)) / 86400)::int ELSE 0 END))
                      FILTER (WHERE e.next_touch_due <= now()), 2), 0) AS avg_days_overdue
FROM public.engagement_clocks e
GROUP BY e.tenant_id;

SELECT DISTINCT ON (e.tenant_id)
       e.tenant_id, e.id, e.client_id, e.contact_id,
       (CASE WHEN e.next_touch_due <= now() THEN floor(extract(epoch FROM (now() - e.next_touch_due)) / 86400)::int ELSE 0 END) AS days_overdue,
       e.priority_score, e.next_touch_due
FROM public.engagement_clocks e
WHERE e.next_touch_due <= now()
ORDER BY e.tenant_id, days_overdue DESC, e.priority_score DESC, e.next_touch_due, e.id;
\o
