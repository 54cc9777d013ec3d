SELECT id FROM public.kanban_cards
WHERE tenant_id = $1 AND state = 'scheduled' AND due_at <= $2 ORDER BY due_at, id LIMIT $3
