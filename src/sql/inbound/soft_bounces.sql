-- Transient failures for an address within the 30 days before $3 (this one included).
SELECT count(*) FROM public.inbound_mail_events
WHERE tenant_id = $1 AND kind = 'soft_bounce' AND email = lower($2)
  AND received_at > $3::timestamptz - interval '30 days' AND received_at <= $3
