UPDATE public.kanban_cards
   SET state = 'blocked', blocked_code = 'delivery_unknown',
       blocked_reason = 'delivery unknown: found executing after an interrupted send; check the mailbox for Message-ID '
                        || coalesce(message_id, '(unknown)')
                        || ', then run autopilot card requeue ' || id || ' (not delivered) or autopilot card close ' || id || ' (delivered)',
       updated_at = $2
 WHERE tenant_id = $1 AND type = 'send_email' AND state = 'executing' AND updated_at < $3
 RETURNING id, message_id
