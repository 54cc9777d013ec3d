UPDATE public.kanban_cards
   SET state = 'blocked', blocked_reason = $2, updated_at = $3
 WHERE id = $1 AND state IN ('approved', 'executing')
