-- Monitoring views (issue 16, section 2): what an operator or a Grafana PostgreSQL panel
-- reads to see the agent's health, success rates and lease contention.
--
-- * agent_tenant_health: one row per tenant: last run and its status, consecutive failures,
--   open alerts by severity, parked or stuck work, the lease, engagement compliance.
-- * agent_success_rates: one row per tenant and UTC day with runs: runs by status, cards
--   drafted / sent / failed, order exceptions found, p50 / p95 run duration.
-- * agent_lock_contention: one row per UTC hour: lease acquisitions won, skipped because
--   held, taken over after expiry, fence losses (from agent_lease_stats, below).
--
-- Access: the views are security_invoker, so every agent table they read applies the
-- caller's row-level security (authenticated: its own tenant only; service_role: all).
-- Two things the agent tables do not hold are read through SECURITY DEFINER functions that
-- apply the same rule themselves, because `authenticated` has no right on the host tables
-- `tenants` and `kanban_cards` (and must not get one: tenant names are not its to list):
-- agent_monitoring_tenants() (the tenants the caller may see) and agent_card_health() (a
-- visible tenant's parked and stuck cards). anon and PUBLIC get nothing.
--
-- Thresholds (the SPEC is silent): a card `executing` for more than an hour (one cycle) is
-- stuck, `blocked` is parked; a queue entry pending for more than an hour, or left
-- `processing` by an older binary for more than 600 s (the reclaim limit of process-orders),
-- is stuck; a `running` run whose lease expired or is gone has run past its lease.

-- Lease statistics ----------------------------------------------------------------------------

-- Per tenant and UTC hour, counted by the lease functions (wrapped below). One small upsert
-- per event; an event that changes nothing else (a skip, a refused release) becomes a write,
-- cheap next to a cycle and rare outside benchmarks that race for held leases. The counts
-- are spread over `slot` (the caller's backend pid modulo 64) so that callers racing for
-- one lease do not queue behind each other's counter row: the views sum the slots.
CREATE TABLE IF NOT EXISTS public.agent_lease_stats (
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    hour timestamptz NOT NULL,
    slot smallint NOT NULL DEFAULT 0,
    acquired integer NOT NULL DEFAULT 0,
    skipped integer NOT NULL DEFAULT 0,
    taken_over integer NOT NULL DEFAULT 0,
    fence_lost integer NOT NULL DEFAULT 0,
    CONSTRAINT agent_lease_stats_pkey PRIMARY KEY (tenant_id, hour, slot)
);
CREATE INDEX IF NOT EXISTS agent_lease_stats_hour_idx ON public.agent_lease_stats (hour);

ALTER TABLE public.agent_lease_stats ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.agent_lease_stats;
CREATE POLICY tenant_isolation ON public.agent_lease_stats FOR SELECT TO authenticated
    USING (tenant_id IN (SELECT p.tenant_id FROM public.profiles p WHERE p.id = (SELECT auth.uid())));
DROP POLICY IF EXISTS service_role_all ON public.agent_lease_stats;
CREATE POLICY service_role_all ON public.agent_lease_stats FOR ALL TO service_role
    USING (true) WITH CHECK (true);
REVOKE ALL ON public.agent_lease_stats FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.agent_lease_stats TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.agent_lease_stats TO service_role;

-- Count one lease event. p_kind: acquired, skipped, taken_over, fence_lost.
CREATE OR REPLACE FUNCTION public.agent_lease_note(p_tenant_id uuid, p_kind text, p_now timestamptz)
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    INSERT INTO public.agent_lease_stats AS s (tenant_id, hour, slot, acquired, skipped, taken_over, fence_lost)
    SELECT p_tenant_id, pg_catalog.date_trunc('hour', coalesce(p_now, pg_catalog.now()), 'UTC'),
           (pg_catalog.pg_backend_pid() % 64)::smallint,
           (p_kind = 'acquired')::integer, (p_kind = 'skipped')::integer,
           (p_kind = 'taken_over')::integer, (p_kind = 'fence_lost')::integer
    -- A tenant deleted meanwhile has nothing to count (and must not fail the caller).
    WHERE EXISTS (SELECT 1 FROM public.tenants t WHERE t.id = p_tenant_id)
    ON CONFLICT (tenant_id, hour, slot) DO UPDATE
    SET acquired = s.acquired + EXCLUDED.acquired,
        skipped = s.skipped + EXCLUDED.skipped,
        taken_over = s.taken_over + EXCLUDED.taken_over,
        fence_lost = s.fence_lost + EXCLUDED.fence_lost
$$;
REVOKE ALL ON FUNCTION public.agent_lease_note(uuid, text, timestamptz) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.agent_lease_note(uuid, text, timestamptz) TO service_role;

-- The lease functions are wrapped rather than rewritten: the existing function is renamed
-- `<name>_uncounted` (once) and a function of the original name and signature calls it and
-- counts the outcome. A later migration that replaces a lease function keeps working (it
-- replaces the wrapper and the counting stops, nothing else changes).
DO $wrap$
BEGIN
    IF to_regprocedure('public.acquire_tenant_lease_uncounted(uuid, text, interval, text, timestamptz, timestamptz)') IS NULL THEN
        ALTER FUNCTION public.acquire_tenant_lease(uuid, text, interval, text, timestamptz, timestamptz)
            RENAME TO acquire_tenant_lease_uncounted;
    END IF;
    IF to_regprocedure('public.release_tenant_lease_uncounted(uuid, uuid, text, text, timestamptz)') IS NULL THEN
        ALTER FUNCTION public.release_tenant_lease(uuid, uuid, text, text, timestamptz)
            RENAME TO release_tenant_lease_uncounted;
    END IF;
    IF to_regprocedure('public.extend_tenant_lease_uncounted(uuid, uuid, interval, timestamptz)') IS NULL THEN
        ALTER FUNCTION public.extend_tenant_lease(uuid, uuid, interval, timestamptz)
            RENAME TO extend_tenant_lease_uncounted;
    END IF;
END
$wrap$;

-- NULL (lease held, being taken by another caller, or the tenant's cycle finished since the
-- caller started) counts as skipped; a run id as acquired. Taking over an expired lease is
-- counted by the trigger below, as it happens.
CREATE OR REPLACE FUNCTION public.acquire_tenant_lease(
    p_tenant_id uuid,
    p_holder text,
    p_lease interval,
    p_trigger text DEFAULT 'scheduled',
    p_now timestamptz DEFAULT now(),
    p_skip_if_finished_since timestamptz DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_run uuid;
BEGIN
    v_run := public.acquire_tenant_lease_uncounted(p_tenant_id, p_holder, p_lease, p_trigger, p_now,
                                                   p_skip_if_finished_since);
    PERFORM public.agent_lease_note(p_tenant_id,
        CASE WHEN v_run IS NULL THEN 'skipped' ELSE 'acquired' END, p_now);
    RETURN v_run;
END
$$;

-- A release refused because the run no longer holds the lease is a fence loss.
CREATE OR REPLACE FUNCTION public.release_tenant_lease(
    p_tenant_id uuid,
    p_run_id uuid,
    p_status text DEFAULT 'completed',
    p_error text DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_ok boolean;
BEGIN
    v_ok := public.release_tenant_lease_uncounted(p_tenant_id, p_run_id, p_status, p_error, p_now);
    IF NOT v_ok THEN
        PERFORM public.agent_lease_note(p_tenant_id, 'fence_lost', p_now);
    END IF;
    RETURN v_ok;
END
$$;

-- A heartbeat of a run (p_run_id given) refused because the lease is no longer its own is a
-- fence loss. (assert_tenant_lease raises, which rolls back anything it could write: a
-- runner fenced out there is counted when its release is refused.)
CREATE OR REPLACE FUNCTION public.extend_tenant_lease(
    p_tenant_id uuid,
    p_run_id uuid,
    p_extension interval,
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_ok boolean;
BEGIN
    v_ok := public.extend_tenant_lease_uncounted(p_tenant_id, p_run_id, p_extension, p_now);
    IF NOT v_ok AND p_run_id IS NOT NULL THEN
        PERFORM public.agent_lease_note(p_tenant_id, 'fence_lost', p_now);
    END IF;
    RETURN v_ok;
END
$$;

-- A lease row that changes hands (acquire_tenant_lease updates it only to take over an
-- expired lease) is a takeover, counted in the hour of the new lease.
CREATE OR REPLACE FUNCTION public.agent_lease_count_takeover()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    PERFORM public.agent_lease_note(NEW.tenant_id, 'taken_over', NEW.locked_at);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS agent_tenant_locks_count_takeover ON public.agent_tenant_locks;
CREATE TRIGGER agent_tenant_locks_count_takeover
    AFTER UPDATE OF run_id ON public.agent_tenant_locks
    FOR EACH ROW WHEN (OLD.run_id IS DISTINCT FROM NEW.run_id)
    EXECUTE FUNCTION public.agent_lease_count_takeover();

REVOKE ALL ON FUNCTION
    public.acquire_tenant_lease(uuid, text, interval, text, timestamptz, timestamptz),
    public.acquire_tenant_lease_uncounted(uuid, text, interval, text, timestamptz, timestamptz),
    public.release_tenant_lease(uuid, uuid, text, text, timestamptz),
    public.release_tenant_lease_uncounted(uuid, uuid, text, text, timestamptz),
    public.extend_tenant_lease(uuid, uuid, interval, timestamptz),
    public.extend_tenant_lease_uncounted(uuid, uuid, interval, timestamptz),
    public.agent_lease_count_takeover()
FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION
    public.acquire_tenant_lease(uuid, text, interval, text, timestamptz, timestamptz),
    public.acquire_tenant_lease_uncounted(uuid, text, interval, text, timestamptz, timestamptz),
    public.release_tenant_lease(uuid, uuid, text, text, timestamptz),
    public.release_tenant_lease_uncounted(uuid, uuid, text, text, timestamptz),
    public.extend_tenant_lease(uuid, uuid, interval, timestamptz),
    public.extend_tenant_lease_uncounted(uuid, uuid, interval, timestamptz)
TO service_role;

-- Indexes the views read by ------------------------------------------------------------------

-- Runs per tenant and UTC day (success rates filtered by day, all tenants or one).
CREATE INDEX IF NOT EXISTS agent_runs_utc_day_idx
    ON public.agent_autonomous_runs (((started_at AT TIME ZONE 'UTC')::date), tenant_id);
-- Exceptions found per tenant and day (the existing indexes hold only unresolved ones).
CREATE INDEX IF NOT EXISTS order_processing_exceptions_tenant_created_idx
    ON public.order_processing_exceptions (tenant_id, created_at);

-- Caller scope --------------------------------------------------------------------------------

-- The caller's role: the role it SET (as PostgREST does), else the role it logged in as.
-- Inside a SECURITY DEFINER function CURRENT_USER is the owner, but the `role` setting is
-- still the caller's, and it can only name a role the session is a member of.
CREATE OR REPLACE FUNCTION public.agent_calling_role()
RETURNS name
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT CASE WHEN coalesce(pg_catalog.current_setting('role', true), 'none') = 'none'
                THEN SESSION_USER
                ELSE pg_catalog.current_setting('role', true)::name END
$$;

-- Whether the caller may see tenant p_tenant_id (any tenant when NULL): service_role and the
-- roles that have its rights (the operator's login, a superuser) see all; anyone else the
-- tenants of its profile (auth.uid()), the rule of the agent tables' row-level security.
CREATE OR REPLACE FUNCTION public.agent_may_see_tenant(p_tenant_id uuid)
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT pg_catalog.pg_has_role(public.agent_calling_role(), 'service_role', 'USAGE')
        OR EXISTS (SELECT 1 FROM public.profiles p
                   WHERE p.id = (SELECT auth.uid()) AND p.tenant_id = p_tenant_id)
$$;

-- The tenants the caller may see (with the columns the health view shows).
CREATE OR REPLACE FUNCTION public.agent_monitoring_tenants()
RETURNS TABLE (id uuid, name text, is_active boolean, agent_enabled boolean)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT t.id, t.name::text, t.is_active, t.agent_enabled
    FROM public.tenants t
    WHERE (SELECT pg_catalog.pg_has_role(public.agent_calling_role(), 'service_role', 'USAGE'))
       OR t.id IN (SELECT p.tenant_id FROM public.profiles p WHERE p.id = (SELECT auth.uid()))
$$;

-- A visible tenant's parked (blocked) cards and cards executing for more than an hour;
-- zeros for a tenant the caller may not see. Reads kanban_cards, on which authenticated
-- has no right.
CREATE OR REPLACE FUNCTION public.agent_card_health(p_tenant_id uuid)
RETURNS TABLE (cards_parked bigint, cards_stuck_executing bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT count(*) FILTER (WHERE k.state = 'blocked'),
           count(*) FILTER (WHERE k.state = 'executing'
                              AND coalesce(k.updated_at, k.created_at) < pg_catalog.now() - interval '1 hour')
    FROM public.kanban_cards k
    WHERE k.tenant_id = p_tenant_id
      AND k.state IN ('blocked', 'executing')
      AND (SELECT public.agent_may_see_tenant(p_tenant_id))
$$;

REVOKE ALL ON FUNCTION public.agent_calling_role(), public.agent_may_see_tenant(uuid),
    public.agent_monitoring_tenants(), public.agent_card_health(uuid)
FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.agent_calling_role(), public.agent_may_see_tenant(uuid),
    public.agent_monitoring_tenants(), public.agent_card_health(uuid)
TO authenticated, service_role;

-- Views ---------------------------------------------------------------------------------------

CREATE OR REPLACE VIEW public.agent_tenant_health WITH (security_invoker = true) AS
SELECT t.id AS tenant_id,
       t.name AS tenant_name,
       t.is_active,
       t.agent_enabled,
       r.id AS last_run_id,
       r.cycle_number AS last_run_cycle,
       r.status AS last_run_status,
       r.phase AS last_run_phase,
       r.started_at AS last_run_started_at,
       r.completed_at AS last_run_completed_at,
       r.duration_ms AS last_run_duration_ms,
       r.error_message AS last_run_error,
       f.consecutive_failures,
       a.info AS alerts_open_info,
       a.warning AS alerts_open_warning,
       a.critical AS alerts_open_critical,
       k.cards_parked,
       k.cards_stuck_executing,
       q.pending AS queue_pending,
       q.stuck AS queue_stuck,
       x.runs_past_lease,
       l.run_id AS lease_run_id,
       l.lock_holder AS lease_holder,
       l.expires_at AS lease_expires_at,
       (l.expires_at > now()) AS lease_held,
       e.total AS clocks_total,
       e.compliant AS clocks_compliant,
       e.compliance_rate
FROM public.agent_monitoring_tenants() t
LEFT JOIN LATERAL (
    SELECT r.id, r.cycle_number, r.status, r.phase, r.started_at, r.completed_at, r.duration_ms,
           r.error_message
    FROM public.agent_autonomous_runs r
    WHERE r.tenant_id = t.id
    ORDER BY r.started_at DESC, r.cycle_number DESC
    LIMIT 1) r ON true
-- Failed or timed-out runs since the tenant's last completed run (read newest first by the
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
CROSS JOIN LATERAL public.agent_card_health(t.id) k
-- Each from its partial index (pending: tenant_id, queued_at; processing: claimed_at).
CROSS JOIN LATERAL (
    SELECT (SELECT count(*) FROM public.order_processing_queue qp
            WHERE qp.tenant_id = t.id AND qp.status = 'pending') AS pending,
           (SELECT count(*) FROM public.order_processing_queue qp
            WHERE qp.tenant_id = t.id AND qp.status = 'pending'
              AND qp.queued_at < now() - interval '1 hour')
         + (SELECT count(*) FROM public.order_processing_queue qc
            WHERE qc.tenant_id = t.id AND qc.status = 'processing'
              AND (qc.claimed_at IS NULL OR qc.claimed_at < now() - interval '600 seconds')) AS stuck) q
CROSS JOIN LATERAL (
    SELECT count(*) AS runs_past_lease
    FROM public.agent_autonomous_runs rr
    WHERE rr.tenant_id = t.id AND rr.status = 'running'
      AND NOT EXISTS (SELECT 1 FROM public.agent_tenant_locks ll
                      WHERE ll.tenant_id = rr.tenant_id AND ll.run_id = rr.id AND ll.expires_at > now())) x
LEFT JOIN public.agent_tenant_locks l ON l.tenant_id = t.id
CROSS JOIN LATERAL (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE ec.next_touch_due > now()) AS compliant,
           CASE WHEN count(*) = 0 THEN 100::numeric
                ELSE round(100.0 * count(*) FILTER (WHERE ec.next_touch_due > now()) / count(*), 2)
           END AS compliance_rate
    FROM public.engagement_clocks ec
    WHERE ec.tenant_id = t.id) e;

-- Days are UTC days of the runs' start; a day without a run has no row.
CREATE OR REPLACE VIEW public.agent_success_rates WITH (security_invoker = true) AS
SELECT d.tenant_id,
       d.day,
       d.runs,
       d.runs_completed,
       d.runs_failed,
       d.runs_timeout,
       d.runs_running,
       CASE WHEN d.runs - d.runs_running = 0 THEN NULL
            ELSE round(100.0 * d.runs_completed / (d.runs - d.runs_running), 2) END AS success_rate,
       d.cards_drafted,
       d.cards_sent,
       cf.cards_failed,
       ex.exceptions_found,
       d.p50_duration_ms,
       d.p95_duration_ms
FROM (
    SELECT r.tenant_id,
           (r.started_at AT TIME ZONE 'UTC')::date AS day,
           count(*) AS runs,
           count(*) FILTER (WHERE r.status = 'completed') AS runs_completed,
           count(*) FILTER (WHERE r.status = 'failed') AS runs_failed,
           count(*) FILTER (WHERE r.status = 'timeout') AS runs_timeout,
           count(*) FILTER (WHERE r.status = 'running') AS runs_running,
           coalesce(sum(r.cards_created), 0) AS cards_drafted,
           coalesce(sum(r.emails_sent), 0) AS cards_sent,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_ms)
               FILTER (WHERE r.status <> 'running') AS p50_duration_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_ms)
               FILTER (WHERE r.status <> 'running') AS p95_duration_ms
    FROM public.agent_autonomous_runs r
    GROUP BY r.tenant_id, (r.started_at AT TIME ZONE 'UTC')::date
) d
-- Cards whose send failed that day (each card once, however many attempts).
CROSS JOIN LATERAL (
    SELECT count(DISTINCT pf.card_id) AS cards_failed
    FROM public.email_provider_failures pf
    WHERE pf.tenant_id = d.tenant_id
      AND pf.created_at >= (d.day::timestamp AT TIME ZONE 'UTC')
      AND pf.created_at < ((d.day + 1)::timestamp AT TIME ZONE 'UTC')) cf
CROSS JOIN LATERAL (
    SELECT count(*) AS exceptions_found
    FROM public.order_processing_exceptions oe
    WHERE oe.tenant_id = d.tenant_id
      AND oe.created_at >= (d.day::timestamp AT TIME ZONE 'UTC')
      AND oe.created_at < ((d.day + 1)::timestamp AT TIME ZONE 'UTC')) ex;

-- Hours are UTC hours; under row-level security the sums cover the caller's tenant only.
CREATE OR REPLACE VIEW public.agent_lock_contention WITH (security_invoker = true) AS
SELECT s.hour,
       sum(s.acquired)::bigint AS acquired,
       sum(s.skipped)::bigint AS skipped_held,
       sum(s.taken_over)::bigint AS taken_over,
       sum(s.fence_lost)::bigint AS fence_lost,
       count(DISTINCT s.tenant_id) FILTER (WHERE s.skipped > 0 OR s.taken_over > 0 OR s.fence_lost > 0)
           AS tenants_contended
FROM public.agent_lease_stats s
GROUP BY s.hour;

REVOKE ALL ON public.agent_tenant_health, public.agent_success_rates, public.agent_lock_contention
FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.agent_tenant_health, public.agent_success_rates, public.agent_lock_contention
TO authenticated, service_role;
