-- New suggested cards of one type for a person to look at: at most one open agent card per
-- target (a contact for follow-ups, an order for review tasks; the partial unique index of
-- open agent cards), so a repeated cycle adds nothing.
INSERT INTO public.kanban_cards
    (tenant_id, run_id, type, client_id, contact_id, agent_target, title, description,
     rationale, priority, state, action_payload, created_at, updated_at)
SELECT $1, $2, $3, u.client_id, u.contact_id, u.target, u.title, u.description,
       u.rationale, u.priority, 'suggested', u.payload, $4, $4
FROM unnest($5::uuid[], $6::uuid[], $7::uuid[], $8::text[], $9::text[], $10::text[], $11::text[], $12::jsonb[])
     AS u(target, client_id, contact_id, title, description, rationale, priority, payload)
ON CONFLICT (tenant_id, type, agent_target)
    WHERE agent_target IS NOT NULL AND state IN ('suggested', 'in_review', 'approved', 'executing')
DO NOTHING
