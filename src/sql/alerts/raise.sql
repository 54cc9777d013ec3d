SELECT alert_id, opened FROM public.raise_agent_alert($1, $2, $3, $4, $5, $6)
