UPDATE public.kanban_cards
   SET state = 'done', blocked_code = NULL, blocked_reason = NULL,
       executed_at = coalesce(executed_at, $2), updated_at = $2
 WHERE id = $1 AND type = 'send_email' AND state = 'blocked' AND blocked_code = 'delivery_unknown'
