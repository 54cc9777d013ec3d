UPDATE public.kanban_cards
   SET state = 'approved', updated_at = $2
 WHERE id = $1 AND state = 'executing'
