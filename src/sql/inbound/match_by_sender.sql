-- Cards the agent sent to an address before $2 (newest first): a reply without threading
-- headers is matched to one of them by its subject.
SELECT k.id, k.tenant_id, k.contact_id, k.client_id,
       lower(btrim(k.action_payload ->> 'to')) AS email,
       k.action_payload ->> 'subject' AS subject
FROM public.kanban_cards k
WHERE k.type = 'send_email' AND k.message_id IS NOT NULL AND k.executed_at IS NOT NULL
  AND lower(btrim(k.action_payload ->> 'to')) = $1
  AND k.executed_at <= $2 AND k.executed_at > $2::timestamptz - interval '90 days'
ORDER BY k.executed_at DESC, k.id
LIMIT 50
