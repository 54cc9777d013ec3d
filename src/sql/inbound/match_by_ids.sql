-- The agent's send_email card a returned Message-ID names (recorded at the claim), or whose
-- id a `<card-UUID@domain>` id carries when the sending domain has changed since.
SELECT k.id, k.tenant_id, k.contact_id, k.client_id,
       lower(btrim(k.action_payload ->> 'to')) AS email,
       k.action_payload ->> 'subject' AS subject
FROM public.kanban_cards k
WHERE k.type = 'send_email' AND k.message_id IS NOT NULL
  AND (k.message_id = ANY($1::text[]) OR k.id = ANY($2::uuid[]))
ORDER BY k.executed_at DESC NULLS LAST, k.id
LIMIT 1
