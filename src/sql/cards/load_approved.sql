SELECT id, client_id, contact_id, action_payload
  FROM public.kanban_cards
 WHERE tenant_id = $1 AND type = 'send_email' AND state = 'approved'
 ORDER BY created_at, id
 LIMIT $2
