-- The tenant-health view at a given instant (issue 16, status on the views).
--
-- agent_tenant_health judged "now" by now(), but `autopilot status` takes its instant from
-- the caller (--now, injected in tests and replays). The view's body moves into a
-- set-returning function of that instant, agent_tenant_health_at(p_now); the view becomes
-- `SELECT * FROM agent_tenant_health_at(now())` with the same columns, so Grafana panels
-- and the operator read it as before, and status reads the function with its own now.
--
-- The function is SECURITY INVOKER (the default), so row-level security of the agent tables
-- still applies to the caller. Its search_path is pinned like every function's, which keeps
-- the planner from inlining it: a filter on the view's tenant_id is applied to the rows it
-- returns, so a caller that wants a few tenants passes them (p_tenants; NULL: all visible).
-- The card figures read kanban_cards, on which authenticated has no right, through
-- agent_card_health_at(tenant, instant), SECURITY DEFINER like agent_card_health.

CREATE OR REPLACE FUNCTION public.agent_card_health_at(p_tenant_id uuid, p_now timestamptz)
RETURNS TABLE (cards_parked bigint, cards_stuck_executing bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT count(*) FILTER (WHERE k.state = 'blocked'),
           count(*) FILTER (WHERE k.state = 'executing'
                              AND coalesce(k.updated_at, k.created_at) < p_now - interval '1 hour')
    FROM public.kanban_cards k
    WHERE k.tenant_id = p_tenant_id
      AND k.state IN ('blocked', 'executing')
      AND (SELECT public.agent_may_see_tenant(p_tenant_id))
$$;

-- "Last run" is the latest by started_at (cycle number breaks a tie).
CREATE OR REPLACE FUNCTION public.agent_tenant_health_at(p_now timestamptz, p_tenants uuid[] DEFAULT NULL)
RETURNS TABLE (
    tenant_id uuid, tenant_name text, is_active boolean, agent_enabled boolean,
    last_run_id uuid, last_run_cycle integer, last_run_status text, last_run_phase text,
    last_run_started_at timestamptz, last_run_completed_at timestamptz,
    last_run_duration_ms integer, last_run_error text,
    consecutive_failures bigint,
    alerts_open_info bigint, alerts_open_warning bigint, alerts_open_critical bigint,
    cards_parked bigint, cards_stuck_executing bigint,
    queue_pending bigint, queue_stuck bigint, runs_past_lease bigint,
    lease_run_id uuid, lease_holder text, lease_expires_at timestamptz, lease_held boolean,
    clocks_total bigint, clocks_compliant bigint, compliance_rate numeric)
LANGUAGE sql STABLE
SET search_path = ''
AS $$
SELECT t.id, t.name, t.is_active, t.agent_enabled,
       r.id, r.cycle_number, r.status, r.phase, r.started_at, r.completed_at, r.duration_ms,
       r.error_message,
       f.consecutive_failures,
       a.info, a.warning, a.critical,
       k.cards_parked, k.cards_stuck_executing,
       q.pending, q.stuck,
       x.runs_past_lease,
       l.run_id, l.lock_holder, l.expires_at, (l.expires_at > p_now),
       e.total, e.compliant, e.compliance_rate
FROM public.agent_monitoring_tenants() t
LEFT JOIN LATERAL (
    SELECT r.id, r.cycle_number, r.status, r.phase, r.started_at, r.completed_at, r.duration_ms,
           r.error_message
    FROM public.agent_autonomous_runs r
    WHERE r.tenant_id = t.id
    ORDER BY r.started_at DESC, r.cycle_number DESC
    LIMIT 1) r ON true
-- Failed or timed-out runs since the tenant's last completed run (newest first by the
-- (tenant_id, started_at) index; counted up to 1000).
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE z.status IN ('failed', 'timeout')) AS consecutive_failures
    FROM (
        SELECT fr.status
        FROM public.agent_autonomous_runs fr
        WHERE fr.tenant_id = t.id
          AND fr.started_at > coalesce(
              (SELECT c.started_at FROM public.agent_autonomous_runs c
               WHERE c.tenant_id = t.id AND c.status = 'completed'
               ORDER BY c.started_at DESC LIMIT 1),
              '-infinity'::timestamptz)
        ORDER BY fr.started_at DESC
        LIMIT 1000) z) f
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE al.severity = 'info') AS info,
           count(*) FILTER (WHERE al.severity = 'warning') AS warning,
           count(*) FILTER (WHERE al.severity = 'critical') AS critical
    FROM public.agent_alerts al
    WHERE al.tenant_id = t.id AND NOT al.acknowledged) a
CROSS JOIN LATERAL public.agent_card_health_at(t.id, p_now) k
CROSS JOIN LATERAL (
    SELECT (SELECT count(*) FROM public.order_processing_queue qp
            WHERE qp.tenant_id = t.id AND qp.status = 'pending') AS pending,
           (SELECT count(*) FROM public.order_processing_queue qp
            WHERE qp.tenant_id = t.id AND qp.status = 'pending'
              AND qp.queued_at < p_now - interval '1 hour')
         + (SELECT count(*) FROM public.order_processing_queue qc
            WHERE qc.tenant_id = t.id AND qc.status = 'processing'
              AND (qc.claimed_at IS NULL OR qc.claimed_at < p_now - interval '600 seconds')) AS stuck) q
CROSS JOIN LATERAL (
    SELECT count(*) AS runs_past_lease
    FROM public.agent_autonomous_runs rr
    WHERE rr.tenant_id = t.id AND rr.status = 'running'
      AND NOT EXISTS (SELECT 1 FROM public.agent_tenant_locks ll
                      WHERE ll.tenant_id = rr.tenant_id AND ll.run_id = rr.id AND ll.expires_at > p_now)) x
LEFT JOIN public.agent_tenant_locks l ON l.tenant_id = t.id
CROSS JOIN LATERAL (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE ec.next_touch_due > p_now) AS compliant,
           CASE WHEN count(*) = 0 THEN 100::numeric
                ELSE round(100.0 * count(*) FILTER (WHERE ec.next_touch_due > p_now) / count(*), 2)
           END AS compliance_rate
    FROM public.engagement_clocks ec
    WHERE ec.tenant_id = t.id) e
WHERE p_tenants IS NULL OR t.id = ANY (p_tenants)
$$;

REVOKE ALL ON FUNCTION public.agent_card_health_at(uuid, timestamptz),
    public.agent_tenant_health_at(timestamptz, uuid[])
FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.agent_card_health_at(uuid, timestamptz),
    public.agent_tenant_health_at(timestamptz, uuid[])
TO authenticated, service_role;

-- Same columns, names and types as before: the view's grants and readers are unchanged.
CREATE OR REPLACE VIEW public.agent_tenant_health WITH (security_invoker = true) AS
SELECT * FROM public.agent_tenant_health_at(now());
