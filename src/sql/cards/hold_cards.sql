-- Cards approved before the reply and not yet sent are held for the person, not sent. A
-- card a sender has already claimed (executing) is on its way and is left alone.
UPDATE public.kanban_cards
SET state = 'blocked', blocked_reason = $4, updated_at = $5
WHERE tenant_id = $1 AND type = 'send_email' AND state = 'approved'
  AND (contact_id = $2 OR lower(btrim(action_payload ->> 'to')) = lower($3))
RETURNING id
