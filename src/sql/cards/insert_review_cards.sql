INSERT INTO public.kanban_cards
    (tenant_id, run_id, client_id, type, title, description, rationale, priority, state,
     action_payload, agent_target, created_at, updated_at)
SELECT $1, $2, u.client_id, 'create_task', u.title, u.description, u.rationale, u.priority,
       'suggested', u.payload, u.order_id, $3, $3
FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[])
     AS u(order_id, client_id, title, description, rationale, priority, payload)
ON CONFLICT (tenant_id, type, agent_target)
    WHERE agent_target IS NOT NULL AND state IN ('suggested', 'in_review', 'approved', 'executing')
DO NOTHING
