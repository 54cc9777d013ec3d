-- Rates of each listed tenant at $2, and whether its sending is paused by an open rate alert.
SELECT t.id, public.mail_feedback_rates(t.id, $2),
       (SELECT a.message FROM public.agent_alerts a
        WHERE a.tenant_id = t.id AND NOT a.acknowledged
          AND a.alert_type IN ('email_bounce_rate', 'email_complaint_rate')
        ORDER BY a.created_at LIMIT 1)
FROM unnest($1::uuid[]) AS t(id)
