INSERT INTO public.kanban_cards
    (tenant_id, run_id, client_id, contact_id, agent_target, type, title, description,
     rationale, priority, state, action_payload)
SELECT $1, $2, d.client_id, d.contact_id, d.contact_id, 'send_email', d.title, d.description,
       d.rationale, d.priority, 'suggested', d.payload
FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::jsonb[])
     AS d(contact_id, client_id, title, description, rationale, priority, payload)
ON CONFLICT (tenant_id, type, agent_target)
    WHERE agent_target IS NOT NULL AND state IN ('suggested', 'in_review', 'approved', 'executing')
DO NOTHING
