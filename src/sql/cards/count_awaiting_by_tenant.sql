SELECT tenant_id, count(*) FROM public.kanban_cards
 WHERE tenant_id = ANY($1) AND state = 'blocked' AND blocked_code = 'delivery_unknown'
 GROUP BY tenant_id
