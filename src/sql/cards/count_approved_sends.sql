SELECT count(*) FROM public.kanban_cards
WHERE tenant_id = $1 AND type = 'send_email' AND state = 'approved'
