UPDATE public.agent_alerts
SET acknowledged = true, acknowledged_at = $2, acknowledged_by = $3
WHERE tenant_id = $1 AND NOT acknowledged
  AND ($4::text IS NULL OR alert_type = $4)
  AND ($5::text IS NULL OR severity = $5)
