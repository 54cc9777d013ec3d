UPDATE public.kanban_cards
   SET state = 'executing', message_id = $2, updated_at = $3
 WHERE id = $1 AND state = 'approved'
 RETURNING id
