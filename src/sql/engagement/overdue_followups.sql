SELECT v.clock_id, v.contact_id, coalesce(ct.client_id, v.client_id) AS client_id,
       nullif(btrim(ct.email), '') AS email, ct.first_name, ct.last_name, ct.title,
       cl.company_name, v.days_overdue, v.priority_score::float8 AS priority_score
FROM public.get_engagement_violations_at($1, $2) WITH ORDINALITY AS v
JOIN public.contacts ct ON ct.id = v.contact_id AND ct.tenant_id = $1
JOIN public.engagement_clocks ec ON ec.id = v.clock_id
CROSS JOIN LATERAL (
    SELECT $2::timestamptz - make_interval(days => least(greatest(ec.engagement_interval_days, 0), 36500)) AS since) w
LEFT JOIN public.clients cl ON cl.id = coalesce(ct.client_id, v.client_id) AND cl.tenant_id = $1
WHERE NOT EXISTS (
        SELECT 1 FROM public.kanban_cards k
        WHERE k.tenant_id = $1 AND k.type = 'send_email'
          AND coalesce(k.contact_id, k.agent_target) = v.contact_id
          AND (k.state IN ('suggested', 'in_review', 'approved', 'executing')
               OR (k.state = 'blocked' AND k.blocked_code = 'delivery_unknown')
               OR (k.state = 'done' AND k.executed_at > w.since)))
  AND NOT EXISTS (
        SELECT 1 FROM public.kanban_cards k
        WHERE k.tenant_id = $1 AND k.type = 'send_email'
          AND lower(btrim(k.action_payload->>'to')) = lower(nullif(btrim(ct.email), ''))
          AND (k.state IN ('suggested', 'in_review', 'approved', 'executing')
               OR (k.state = 'blocked' AND k.blocked_code = 'delivery_unknown')
               OR (k.state = 'done' AND k.executed_at > w.since)))
  AND NOT EXISTS (
        SELECT 1 FROM public.email_suppressions s
        WHERE s.tenant_id = $1
          AND (s.contact_id = v.contact_id
               OR lower(s.email) = lower(nullif(btrim(ct.email), ''))))
  AND NOT EXISTS (
        SELECT 1 FROM public.contact_email_holds h
        WHERE h.tenant_id = $1 AND h.resumed_at IS NULL
          AND (h.contact_id = v.contact_id OR lower(h.email) = lower(nullif(btrim(ct.email), ''))))
ORDER BY v.ordinality
LIMIT $3
