SELECT metrics_delta FROM public.agent_hourly_reflections
WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 1
