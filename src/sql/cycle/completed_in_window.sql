SELECT max(completed_at) FROM public.agent_autonomous_runs
WHERE tenant_id = $1 AND status = 'completed' AND cadence_window = $2
