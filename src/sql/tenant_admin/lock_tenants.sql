-- The listed tenants, locked so that two operators' changes serialize and each records what it changed.
SELECT id, agent_enabled, is_active FROM public.tenants WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
