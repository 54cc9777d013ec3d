-- Why the agent parked a card, as a code programs count on (blocked_reason stays the text a
-- person reads). 'delivery_unknown': the mail server may have delivered the card's e-mail
-- (the connection failed after the final dot of DATA, or a send was interrupted) and only a
-- person re-queues it (`autopilot card requeue`) or closes it (`autopilot card close`).
-- A host column added when absent, like the other agent bookkeeping columns of
-- kanban_cards; the table's existing grants and RLS cover it.
ALTER TABLE public.kanban_cards
    ADD COLUMN IF NOT EXISTS blocked_code text;

-- Parked cards are few; `status`, the reflection and the follow-up planner count them per
-- tenant.
CREATE INDEX IF NOT EXISTS kanban_cards_parked_idx
    ON public.kanban_cards (tenant_id, blocked_code)
    WHERE state = 'blocked' AND blocked_code IS NOT NULL;

-- The follow-up planner looks up a contact's e-mail cards, whoever created them: by contact
-- (a person's card names contact_id, the agent's also agent_target) and by recipient address
-- (a person's card may name only the address), once per overdue contact.
CREATE INDEX IF NOT EXISTS kanban_cards_email_contact_idx
    ON public.kanban_cards (tenant_id, (coalesce(contact_id, agent_target)))
    WHERE type = 'send_email';
CREATE INDEX IF NOT EXISTS kanban_cards_email_to_idx
    ON public.kanban_cards (tenant_id, (lower(btrim(action_payload->>'to'))))
    WHERE type = 'send_email';
