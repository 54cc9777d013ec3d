SELECT tenant_id, type, state, blocked_code, message_id, client_id, contact_id
  FROM public.kanban_cards WHERE id = $1 FOR UPDATE
