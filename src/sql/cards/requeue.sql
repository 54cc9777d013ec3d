UPDATE public.kanban_cards
   SET state = 'approved', blocked_code = NULL, blocked_reason = NULL, updated_at = $2
 WHERE id = $1 AND type = 'send_email' AND state = 'blocked' AND blocked_code = 'delivery_unknown'
