-- One row per reported tenant from the monitoring view's function at the caller's instant
-- ($2): default every active tenant with the agent enabled, else exactly the listed ones
-- (passed to the function, which then computes only those).
SELECT h.tenant_id, COALESCE(h.tenant_name, ''), h.is_active, h.agent_enabled,
       h.last_run_id, h.last_run_cycle, h.last_run_status, h.last_run_phase,
       h.last_run_started_at, h.last_run_completed_at, h.last_run_duration_ms, h.last_run_error,
       h.lease_run_id, h.lease_holder, h.lease_expires_at,
       h.alerts_open_info, h.alerts_open_warning, h.alerts_open_critical,
       h.clocks_total, h.clocks_compliant, h.compliance_rate::float8,
       h.queue_pending
FROM public.agent_tenant_health_at($2::timestamptz, NULLIF($1::uuid[], '{}')) h
WHERE (cardinality($1::uuid[]) = 0 AND h.is_active AND h.agent_enabled) OR h.tenant_id = ANY($1::uuid[])
ORDER BY COALESCE(h.tenant_name, ''), h.tenant_id
