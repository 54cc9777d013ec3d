-- A card for a person to answer the reply; one open card per contact (the partial unique
-- index of open agent cards), so a second reply does not pile up another.
INSERT INTO public.kanban_cards
    (tenant_id, client_id, contact_id, agent_target, type, title, description, rationale,
     priority, state, action_payload, created_at, updated_at)
VALUES ($1, $2, $3, $3, 'create_task', $4, $5, $6, 'high', 'suggested', $7, $8, $8)
ON CONFLICT (tenant_id, type, agent_target)
    WHERE agent_target IS NOT NULL AND state IN ('suggested', 'in_review', 'approved', 'executing')
DO NOTHING
RETURNING id
