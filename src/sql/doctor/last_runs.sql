-- The most recent run of each status (all tenants), and how many runs have it.
SELECT DISTINCT ON (status) status, tenant_id, cycle_number, started_at, completed_at, error_message,
       count(*) OVER (PARTITION BY status)
FROM public.agent_autonomous_runs
ORDER BY status, started_at DESC
