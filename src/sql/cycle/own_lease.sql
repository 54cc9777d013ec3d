SELECT run_id FROM public.agent_tenant_locks WHERE tenant_id = $1 AND lock_holder = $2
