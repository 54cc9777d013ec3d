UPDATE public.kanban_cards
   SET state = 'done', executed_at = $2, updated_at = $2, blocked_reason = NULL, blocked_code = NULL
 WHERE id = $1 AND state IN ('executing', 'blocked')
