UPDATE public.agent_alerts
SET acknowledged = true, acknowledged_at = $2, acknowledged_by = $3
WHERE id = ANY($1) AND NOT acknowledged
