SELECT a.message FROM public.agent_alerts a
  WHERE a.tenant_id = $1 AND NOT a.acknowledged
    AND a.alert_type IN ('email_bounce_rate', 'email_complaint_rate')
  ORDER BY a.created_at LIMIT 1
