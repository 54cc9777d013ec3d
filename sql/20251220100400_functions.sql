-- The six functions of the review, with their original signatures, and the variants the
-- binary and the tests use (explicit interval, run id, and an injectable `now`).
--
-- Every function pins search_path to '' and names every object with its schema, so a
-- caller's search_path can never redirect a table or operator.

-- Engagement arithmetic ---------------------------------------------------------------------

-- Whole days since the clock fell due; 0 while it is not yet due.
CREATE OR REPLACE FUNCTION public.engagement_days_overdue(p_next_touch_due timestamptz, p_now timestamptz)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
    SELECT CASE WHEN p_next_touch_due <= p_now
                THEN pg_catalog.floor(EXTRACT(EPOCH FROM (p_now - p_next_touch_due)) / 86400)::integer
                ELSE 0 END
$$;

-- Points a contact earns whatever its clock: +20 for a primary contact, +15 for a
-- decision-maker title, else +10 for manager/lead/head. Titles match case-insensitively at
-- word starts ("Vice President", "Team Lead", "Head of Operations", "CEO & Founder").
CREATE OR REPLACE FUNCTION public.engagement_contact_points(p_is_primary boolean, p_title text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
    SELECT CASE WHEN coalesce(p_is_primary, false) THEN 20 ELSE 0 END
         + CASE WHEN p_title ~* '\m(president|ceo|owner|director)' THEN 15
                WHEN p_title ~* '\m(manager|lead|head)' THEN 10
                ELSE 0 END
$$;

-- 2 points per overdue day up to 50, plus the contact's points.
CREATE OR REPLACE FUNCTION public.engagement_priority(p_days_overdue integer, p_is_primary boolean, p_title text)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
    SELECT (least(2 * greatest(coalesce(p_days_overdue, 0), 0), 50)
        + public.engagement_contact_points(p_is_primary, p_title))::numeric(5,2)
$$;

-- A tenant's engagement interval from its settings; 21 days when absent or not a positive
-- whole number (the binary rejects malformed settings before it runs a tenant).
CREATE OR REPLACE FUNCTION public.tenant_engagement_interval_days(p_tenant_id uuid)
RETURNS integer
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT coalesce(
        (SELECT CASE WHEN pg_catalog.jsonb_typeof(t.agent_settings -> 'engagement_interval_days') = 'number'
                      AND (t.agent_settings ->> 'engagement_interval_days') ~ '^[0-9]+$'
                      AND (t.agent_settings ->> 'engagement_interval_days')::integer > 0
                     THEN (t.agent_settings ->> 'engagement_interval_days')::integer END
         FROM public.tenants t WHERE t.id = p_tenant_id),
        21)
$$;

-- Leases -------------------------------------------------------------------------------------

-- Take the tenant's lease for a new run. Returns the run id, or NULL while an unexpired
-- lease is held. The lease row is locked (or inserted) first, so of any number of
-- concurrent callers exactly one proceeds; an expired lease is taken over and every run of
-- the tenant still marked running is closed as `timeout` (its runner is dead or fenced out).
--
-- p_skip_if_finished_since: a runner passes the instant it started, so that of two runners
-- started together each tenant runs once: a tenant whose cycle another runner finished
-- after that instant is not run again (NULL when the lease is free for that reason too).
-- The check runs after this caller holds the lease row, so it cannot race with a release.
DROP FUNCTION IF EXISTS public.acquire_tenant_lease(uuid, text, interval, text, timestamptz);
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
    v_run uuid := gen_random_uuid();
    v_lock public.agent_tenant_locks%ROWTYPE;
    v_cycle integer;
BEGIN
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease length must be positive, got %', p_lease USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Fast path, no row lock and no write: a lease that is visibly held is held. (Reading
    -- it a moment before its holder releases it only makes this caller a moment early.)
    IF EXISTS (SELECT 1 FROM public.agent_tenant_locks l
               WHERE l.tenant_id = p_tenant_id AND l.expires_at > p_now) THEN
        RETURN NULL;
    END IF;

    -- Another caller is taking this lease right now: it will hold the lease (or find it
    -- held), so answer at once instead of queueing behind its row lock. Transaction-scoped,
    -- so it also works through a transaction-mode pooler.
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('autopilot.tenant_lease'),
                                                pg_catalog.hashtext(p_tenant_id::text)) THEN
        RETURN NULL;
    END IF;

    LOOP
        SELECT * INTO v_lock FROM public.agent_tenant_locks WHERE tenant_id = p_tenant_id FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO public.agent_tenant_locks (tenant_id, run_id, locked_at, expires_at, lock_holder, lease_duration)
            VALUES (p_tenant_id, v_run, p_now, p_now + p_lease, p_holder, p_lease)
            ON CONFLICT (tenant_id) DO NOTHING;
            IF FOUND THEN
                EXIT;
            END IF;
            -- Another caller inserted first: loop to lock and inspect its row.
            CONTINUE;
        END IF;

        IF v_lock.expires_at > p_now THEN
            RETURN NULL;
        END IF;

        UPDATE public.agent_tenant_locks
        SET run_id = v_run, locked_at = p_now, expires_at = p_now + p_lease,
            lock_holder = p_holder, lease_duration = p_lease, heartbeat_at = NULL
        WHERE tenant_id = p_tenant_id;
        EXIT;
    END LOOP;

    IF p_skip_if_finished_since IS NOT NULL AND EXISTS (
        SELECT 1 FROM public.agent_autonomous_runs r
        WHERE r.tenant_id = p_tenant_id AND r.completed_at >= p_skip_if_finished_since
    ) THEN
        DELETE FROM public.agent_tenant_locks WHERE tenant_id = p_tenant_id AND run_id = v_run;
        RETURN NULL;
    END IF;

    UPDATE public.agent_autonomous_runs r
    SET status = 'timeout',
        phase = 'failed',
        completed_at = greatest(p_now, r.started_at),
        -- Capped: a run left running for weeks must not overflow the integer column.
        duration_ms = least(greatest(0, EXTRACT(EPOCH FROM (p_now - r.started_at)) * 1000), 2147483647)::integer,
        error_message = coalesce(r.error_message,
            pg_catalog.format('lease expired without release; taken over by %s', p_holder))
    WHERE r.tenant_id = p_tenant_id AND r.status = 'running';

    SELECT coalesce(pg_catalog.max(r.cycle_number), 0) + 1 INTO v_cycle
    FROM public.agent_autonomous_runs r WHERE r.tenant_id = p_tenant_id;

    INSERT INTO public.agent_autonomous_runs (id, tenant_id, cycle_number, started_at, phase, status, trigger, lock_holder)
    VALUES (v_run, p_tenant_id, v_cycle, p_now, 'plan', 'running', coalesce(p_trigger, 'scheduled'), p_holder);

    RETURN v_run;
END
$$;

CREATE OR REPLACE FUNCTION public.acquire_tenant_lock(
    p_tenant_id uuid,
    p_lock_holder text,
    p_lock_duration_minutes integer DEFAULT 60
) RETURNS uuid
LANGUAGE sql
SET search_path = ''
AS $$
    SELECT public.acquire_tenant_lease(p_tenant_id, p_lock_holder,
        pg_catalog.make_interval(mins => p_lock_duration_minutes), 'scheduled', pg_catalog.now())
$$;

-- Raises SQLSTATE AP001 unless the run still holds an unexpired lease of its tenant. The
-- KEY SHARE row lock makes a takeover wait until the caller's transaction ends, so every
-- write made in a transaction that passed this check happened while the lease was held.
CREATE OR REPLACE FUNCTION public.assert_tenant_lease(p_tenant_id uuid, p_run_id uuid, p_now timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    PERFORM 1 FROM public.agent_tenant_locks l
    WHERE l.tenant_id = p_tenant_id AND l.run_id = p_run_id AND l.expires_at > p_now
    FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lease lost: run % no longer holds the lease of tenant %', p_run_id, p_tenant_id
            USING ERRCODE = 'AP001';
    END IF;
END
$$;

-- Heartbeat. Only an unexpired lease of this run is extended, and never beyond one lease
-- length past now, so a crashed runner's tenant is free again within one lease.
CREATE OR REPLACE FUNCTION public.extend_tenant_lease(
    p_tenant_id uuid,
    p_run_id uuid,
    p_extension interval,
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF p_extension IS NULL OR p_extension <= interval '0' THEN
        RAISE EXCEPTION 'lease extension must be positive, got %', p_extension USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE public.agent_tenant_locks l
    SET expires_at = greatest(l.expires_at, p_now + least(p_extension, l.lease_duration)),
        heartbeat_at = p_now
    WHERE l.tenant_id = p_tenant_id
      AND (p_run_id IS NULL OR l.run_id = p_run_id)
      AND l.expires_at > p_now;
    RETURN FOUND;
END
$$;

-- Original signature. The argument is the tenant id, as in the review; a run id is
-- accepted too (ids are UUIDs, they cannot be confused).
CREATE OR REPLACE FUNCTION public.extend_tenant_lock(p_tenant_id uuid, p_extension_minutes integer DEFAULT 30)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_tenant uuid;
BEGIN
    SELECT l.tenant_id INTO v_tenant FROM public.agent_tenant_locks l
    WHERE l.tenant_id = p_tenant_id OR l.run_id = p_tenant_id
    LIMIT 1;
    IF v_tenant IS NULL THEN
        RETURN false;
    END IF;
    RETURN public.extend_tenant_lease(v_tenant, NULL,
        pg_catalog.make_interval(mins => p_extension_minutes), pg_catalog.now());
END
$$;

-- Release with fencing: only the run that holds the lease removes it and closes itself.
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
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('completed', 'failed', 'timeout') THEN
        RAISE EXCEPTION 'final status must be completed, failed or timeout, got %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    DELETE FROM public.agent_tenant_locks l WHERE l.tenant_id = p_tenant_id AND l.run_id = p_run_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    UPDATE public.agent_autonomous_runs r
    SET status = p_status,
        phase = CASE WHEN p_status = 'completed' THEN 'completed' ELSE 'failed' END,
        completed_at = greatest(p_now, r.started_at),
        -- Capped: a run left running for weeks must not overflow the integer column.
        duration_ms = least(greatest(0, EXTRACT(EPOCH FROM (p_now - r.started_at)) * 1000), 2147483647)::integer,
        error_message = coalesce(p_error, r.error_message)
    WHERE r.id = p_run_id AND r.tenant_id = p_tenant_id AND r.status = 'running';
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION public.release_tenant_lock(p_tenant_id uuid, p_run_id uuid, p_status text DEFAULT 'completed')
RETURNS boolean
LANGUAGE sql
SET search_path = ''
AS $$
    SELECT public.release_tenant_lease(p_tenant_id, p_run_id, p_status, NULL, pg_catalog.now())
$$;

-- Rate limits --------------------------------------------------------------------------------

-- Take one unit of the tenant's hourly quota for an action. Windows are whole UTC hours
-- whatever the session's TimeZone. The upsert's WHERE is re-checked against the latest row
-- version under its row lock, so of N concurrent callers with limit M exactly min(N, M)
-- succeed, and a refused call changes nothing.
CREATE OR REPLACE FUNCTION public.rate_limit_take(
    p_tenant_id uuid,
    p_action_type text,
    p_limit integer,
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_window timestamptz := pg_catalog.date_trunc('hour', p_now, 'UTC');
BEGIN
    IF p_limit IS NULL OR p_limit <= 0 THEN
        RETURN false;
    END IF;
    INSERT INTO public.agent_rate_limits AS rl (tenant_id, action_type, window_start, window_end, action_count)
    VALUES (p_tenant_id, p_action_type, v_window, v_window + interval '1 hour', 1)
    ON CONFLICT (tenant_id, action_type, window_start)
    DO UPDATE SET action_count = rl.action_count + 1
    WHERE rl.action_count < p_limit;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION public.check_and_increment_rate_limit(p_tenant_id uuid, p_action_type text, p_limit integer)
RETURNS boolean
LANGUAGE sql
SET search_path = ''
AS $$
    SELECT public.rate_limit_take(p_tenant_id, p_action_type, p_limit, pg_catalog.now())
$$;

-- Engagement clocks ----------------------------------------------------------------------------

-- Record a touch: upsert the client-level clock and the contact's clock (which also names
-- the contact's client) and move next_touch_due one interval past now. p_touched_by is a
-- profile id, NULL when the agent made the touch. Returns the contact's clock id when a
-- contact is given, else the client-level clock id.
CREATE OR REPLACE FUNCTION public.touch_engagement_clock(
    p_tenant_id uuid,
    p_client_id uuid,
    p_contact_id uuid,
    p_touch_type text,
    p_touched_by uuid,
    p_now timestamptz DEFAULT now()
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_client uuid := p_client_id;
    v_contact public.contacts%ROWTYPE;
    v_interval integer := public.tenant_engagement_interval_days(p_tenant_id);
    v_client_clock uuid;
    v_contact_clock uuid;
BEGIN
    IF p_contact_id IS NOT NULL THEN
        SELECT * INTO v_contact FROM public.contacts c WHERE c.id = p_contact_id AND c.tenant_id = p_tenant_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'contact % does not belong to tenant %', p_contact_id, p_tenant_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        v_client := coalesce(v_contact.client_id, p_client_id);
    END IF;
    IF v_client IS NULL AND p_contact_id IS NULL THEN
        RAISE EXCEPTION 'a touch needs a client or a contact' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF v_client IS NOT NULL THEN
        INSERT INTO public.engagement_clocks AS ec
            (tenant_id, client_id, contact_id, last_touch_at, last_touch_type, last_touch_by,
             next_touch_due, engagement_interval_days, priority_score, updated_at)
        VALUES (p_tenant_id, v_client, NULL, p_now, p_touch_type, p_touched_by,
                p_now + pg_catalog.make_interval(days => v_interval), v_interval, 0, p_now)
        ON CONFLICT (client_id) WHERE contact_id IS NULL
        DO UPDATE SET last_touch_at = EXCLUDED.last_touch_at,
                      last_touch_type = EXCLUDED.last_touch_type,
                      last_touch_by = EXCLUDED.last_touch_by,
                      next_touch_due = EXCLUDED.last_touch_at + pg_catalog.make_interval(days => ec.engagement_interval_days),
                      priority_score = 0,
                      updated_at = EXCLUDED.updated_at
        RETURNING ec.id INTO v_client_clock;
    END IF;

    IF p_contact_id IS NOT NULL THEN
        INSERT INTO public.engagement_clocks AS ec
            (tenant_id, client_id, contact_id, last_touch_at, last_touch_type, last_touch_by,
             next_touch_due, engagement_interval_days, priority_score, updated_at)
        VALUES (p_tenant_id, v_client, p_contact_id, p_now, p_touch_type, p_touched_by,
                p_now + pg_catalog.make_interval(days => v_interval), v_interval,
                public.engagement_priority(0, v_contact.is_primary, v_contact.title), p_now)
        ON CONFLICT (contact_id) WHERE contact_id IS NOT NULL
        DO UPDATE SET client_id = EXCLUDED.client_id,
                      last_touch_at = EXCLUDED.last_touch_at,
                      last_touch_type = EXCLUDED.last_touch_type,
                      last_touch_by = EXCLUDED.last_touch_by,
                      next_touch_due = EXCLUDED.last_touch_at + pg_catalog.make_interval(days => ec.engagement_interval_days),
                      priority_score = EXCLUDED.priority_score,
                      updated_at = EXCLUDED.updated_at
        RETURNING ec.id INTO v_contact_clock;
    END IF;

    RETURN coalesce(v_contact_clock, v_client_clock);
END
$$;

CREATE OR REPLACE FUNCTION public.update_engagement_clock(
    p_tenant_id uuid,
    p_client_id uuid,
    p_contact_id uuid,
    p_touch_type text,
    p_touched_by uuid
) RETURNS uuid
LANGUAGE sql
SET search_path = ''
AS $$
    SELECT public.touch_engagement_clock(p_tenant_id, p_client_id, p_contact_id, p_touch_type, p_touched_by, pg_catalog.now())
$$;

-- The tenant's overdue clocks, most days overdue first, then highest priority.
CREATE OR REPLACE FUNCTION public.get_engagement_violations_at(p_tenant_id uuid, p_now timestamptz)
RETURNS TABLE (
    clock_id uuid,
    client_id uuid,
    contact_id uuid,
    days_overdue integer,
    priority_score numeric,
    next_touch_due timestamptz,
    last_touch_at timestamptz,
    last_touch_type text
)
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT c.id, c.client_id, c.contact_id,
           -- engagement_days_overdue, inlined: a nested call of a function with a pinned
           -- search_path is never inlined and costs microseconds per row.
           pg_catalog.floor(EXTRACT(EPOCH FROM (p_now - c.next_touch_due)) / 86400)::integer AS days_overdue,
           c.priority_score, c.next_touch_due, c.last_touch_at, c.last_touch_type
    FROM public.engagement_clocks c
    WHERE c.tenant_id = p_tenant_id AND c.next_touch_due <= p_now
    ORDER BY days_overdue DESC, c.priority_score DESC, c.next_touch_due, c.id
$$;

CREATE OR REPLACE FUNCTION public.get_engagement_violations(p_tenant_id uuid)
RETURNS TABLE (
    clock_id uuid,
    client_id uuid,
    contact_id uuid,
    days_overdue integer,
    priority_score numeric,
    next_touch_due timestamptz,
    last_touch_at timestamptz,
    last_touch_type text
)
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT * FROM public.get_engagement_violations_at(p_tenant_id, pg_catalog.now())
$$;

-- Refresh the priority scores of a tenant's clocks as of p_now; only rows whose score
-- changes are written (an hourly refresh would otherwise rewrite every clock). Returns
-- the number of rows changed.
--
-- The formula of engagement_priority / engagement_contact_points / engagement_days_overdue
-- is spelled out inline here because this runs over every clock of every tenant each hour,
-- and a nested call of a function with a pinned search_path is never inlined (a few
-- microseconds per row and call). tests/functions.rs checks that both agree.
CREATE OR REPLACE FUNCTION public.refresh_engagement_scores(p_tenant_id uuid, p_now timestamptz)
RETURNS bigint
LANGUAGE sql
SET search_path = ''
AS $$
    WITH contact_clocks AS (
        UPDATE public.engagement_clocks ec
        SET priority_score = (least(2 * CASE WHEN ec.next_touch_due <= p_now
                                             THEN pg_catalog.floor(EXTRACT(EPOCH FROM (p_now - ec.next_touch_due)) / 86400)::integer
                                             ELSE 0 END, 50) + ct.points)::numeric(5,2),
            updated_at = p_now
        FROM (SELECT c.id,
                     CASE WHEN coalesce(c.is_primary, false) THEN 20 ELSE 0 END
                     + CASE WHEN c.title ~* '\m(president|ceo|owner|director)' THEN 15
                            WHEN c.title ~* '\m(manager|lead|head)' THEN 10
                            ELSE 0 END AS points
              FROM public.contacts c WHERE c.tenant_id = p_tenant_id) ct
        WHERE ec.tenant_id = p_tenant_id AND ec.contact_id = ct.id
          AND ec.priority_score IS DISTINCT FROM
              (least(2 * CASE WHEN ec.next_touch_due <= p_now
                              THEN pg_catalog.floor(EXTRACT(EPOCH FROM (p_now - ec.next_touch_due)) / 86400)::integer
                              ELSE 0 END, 50) + ct.points)::numeric(5,2)
        RETURNING 1
    ), client_clocks AS (
        UPDATE public.engagement_clocks ec
        SET priority_score = least(2 * CASE WHEN ec.next_touch_due <= p_now
                                            THEN pg_catalog.floor(EXTRACT(EPOCH FROM (p_now - ec.next_touch_due)) / 86400)::integer
                                            ELSE 0 END, 50)::numeric(5,2),
            updated_at = p_now
        WHERE ec.tenant_id = p_tenant_id AND ec.contact_id IS NULL
          AND ec.priority_score IS DISTINCT FROM
              least(2 * CASE WHEN ec.next_touch_due <= p_now
                             THEN pg_catalog.floor(EXTRACT(EPOCH FROM (p_now - ec.next_touch_due)) / 86400)::integer
                             ELSE 0 END, 50)::numeric(5,2)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM contact_clocks) + (SELECT count(*) FROM client_clocks)
$$;

-- Alerts -------------------------------------------------------------------------------------

-- Open an alert unless one of the same type is already open (unacknowledged) for the
-- tenant; then count the occurrence on the open one. Returns the alert id and whether it
-- was newly opened.
CREATE OR REPLACE FUNCTION public.raise_agent_alert(
    p_tenant_id uuid,
    p_alert_type text,
    p_severity text,
    p_message text,
    p_metadata jsonb DEFAULT '{}'::jsonb,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (alert_id uuid, opened boolean)
LANGUAGE sql
SET search_path = ''
AS $$
    INSERT INTO public.agent_alerts AS a (tenant_id, alert_type, severity, message, metadata, created_at, last_seen_at)
    VALUES (p_tenant_id, p_alert_type, p_severity, p_message, coalesce(p_metadata, '{}'::jsonb), p_now, p_now)
    ON CONFLICT (tenant_id, alert_type) WHERE NOT acknowledged
    DO UPDATE SET occurrences = a.occurrences + 1,
                  last_seen_at = EXCLUDED.last_seen_at,
                  message = EXCLUDED.message,
                  metadata = EXCLUDED.metadata
    RETURNING a.id, (a.xmax = 0)
$$;

-- Order queueing ---------------------------------------------------------------------------

-- Statement-level, so a bulk insert of orders queues them in one statement. SECURITY
-- DEFINER so the host's users may insert orders without rights on the queue.
CREATE OR REPLACE FUNCTION public.queue_new_orders()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    INSERT INTO public.order_processing_queue (tenant_id, order_id)
    SELECT n.tenant_id, n.id FROM new_orders n WHERE n.tenant_id IS NOT NULL
    ON CONFLICT (order_id) DO NOTHING;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS orders_queue_new_orders ON public.orders;
CREATE TRIGGER orders_queue_new_orders
    AFTER INSERT ON public.orders
    REFERENCING NEW TABLE AS new_orders
    FOR EACH STATEMENT EXECUTE FUNCTION public.queue_new_orders();

-- Views ----------------------------------------------------------------------------------------

-- is_compliant / days_overdue derived at query time. security_invoker so the caller's RLS
-- applies through the view.
CREATE OR REPLACE VIEW public.engagement_clock_status WITH (security_invoker = true) AS
SELECT c.id, c.tenant_id, c.client_id, c.contact_id, c.last_touch_at, c.last_touch_type,
       c.last_touch_by, c.next_touch_due, c.engagement_interval_days, c.priority_score,
       c.created_at, c.updated_at,
       (c.next_touch_due > now()) AS is_compliant,
       public.engagement_days_overdue(c.next_touch_due, now()) AS days_overdue
FROM public.engagement_clocks c;

REVOKE ALL ON public.engagement_clock_status FROM PUBLIC, anon;
GRANT SELECT ON public.engagement_clock_status TO authenticated, service_role;

-- Function privileges: the agent's functions are for service_role (and the owner).
REVOKE EXECUTE ON FUNCTION
    public.acquire_tenant_lease(uuid, text, interval, text, timestamptz, timestamptz),
    public.acquire_tenant_lock(uuid, text, integer),
    public.assert_tenant_lease(uuid, uuid, timestamptz),
    public.extend_tenant_lease(uuid, uuid, interval, timestamptz),
    public.extend_tenant_lock(uuid, integer),
    public.release_tenant_lease(uuid, uuid, text, text, timestamptz),
    public.release_tenant_lock(uuid, uuid, text),
    public.rate_limit_take(uuid, text, integer, timestamptz),
    public.check_and_increment_rate_limit(uuid, text, integer),
    public.touch_engagement_clock(uuid, uuid, uuid, text, uuid, timestamptz),
    public.update_engagement_clock(uuid, uuid, uuid, text, uuid),
    public.get_engagement_violations_at(uuid, timestamptz),
    public.get_engagement_violations(uuid),
    public.refresh_engagement_scores(uuid, timestamptz),
    public.raise_agent_alert(uuid, text, text, text, jsonb, timestamptz)
FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION
    public.acquire_tenant_lease(uuid, text, interval, text, timestamptz, timestamptz),
    public.acquire_tenant_lock(uuid, text, integer),
    public.assert_tenant_lease(uuid, uuid, timestamptz),
    public.extend_tenant_lease(uuid, uuid, interval, timestamptz),
    public.extend_tenant_lock(uuid, integer),
    public.release_tenant_lease(uuid, uuid, text, text, timestamptz),
    public.release_tenant_lock(uuid, uuid, text),
    public.rate_limit_take(uuid, text, integer, timestamptz),
    public.check_and_increment_rate_limit(uuid, text, integer),
    public.touch_engagement_clock(uuid, uuid, uuid, text, uuid, timestamptz),
    public.update_engagement_clock(uuid, uuid, uuid, text, uuid),
    public.get_engagement_violations_at(uuid, timestamptz),
    public.get_engagement_violations(uuid),
    public.refresh_engagement_scores(uuid, timestamptz),
    public.raise_agent_alert(uuid, text, text, text, jsonb, timestamptz)
TO service_role;
