UPDATE public.kanban_cards SET state = 'suggested', updated_at = $3
WHERE tenant_id = $1 AND id = ANY($2) AND state = 'scheduled'
