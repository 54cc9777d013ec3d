SELECT id, tenant_id, acknowledged FROM public.agent_alerts WHERE id = ANY($1) FOR UPDATE
