SELECT count(*) FROM public.kanban_cards
 WHERE tenant_id = $1 AND state = 'blocked' AND blocked_code = 'delivery_unknown'
