-- The card the agent last sent to an address (or contact) in the 30 days before $4: a
-- message from that address in the host's inbox answers it.
SELECT k.id, k.tenant_id, k.contact_id, k.client_id,
       lower(btrim(k.action_payload ->> 'to')) AS email,
       k.action_payload ->> 'subject' AS subject
FROM public.kanban_cards k
WHERE k.tenant_id = $1 AND k.type = 'send_email' AND k.message_id IS NOT NULL
  AND k.executed_at IS NOT NULL
  AND (lower(btrim(k.action_payload ->> 'to')) = $2 OR ($3::uuid IS NOT NULL AND k.contact_id = $3))
  AND k.executed_at <= $4 AND k.executed_at > $4::timestamptz - interval '30 days'
ORDER BY k.executed_at DESC, k.id
LIMIT 1
