-- The eleven tables of the autonomous agent (the review's schema, made to apply and to hold).
--
-- Differences from the review, each deliberate:
-- * is_compliant / days_overdue are not generated columns (PostgreSQL forbids now() there
--   and a stored value would go stale); the view engagement_clock_status derives them.
-- * Every reference to a tenant-owned row is a composite foreign key on (tenant_id, id), so
--   a row can never point at another tenant's client, contact, order, queue entry or run.
-- * A contact's clock names its client too; uniqueness is one clock per contact and one
--   client-level clock (contact_id IS NULL) per client, as two partial indexes.

CREATE OR REPLACE FUNCTION pg_temp.ensure_constraint(tbl regclass, cname text, def text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid = tbl AND conname = cname) THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, cname, def);
    END IF;
END $$;

-- agent_autonomous_runs -------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.agent_autonomous_runs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    cycle_number integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    phase text NOT NULL DEFAULT 'plan'
        CHECK (phase IN ('plan', 'act', 'react', 'reflect', 'completed', 'failed')),
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'completed', 'failed', 'timeout')),
    actions_planned integer NOT NULL DEFAULT 0,
    actions_executed integer NOT NULL DEFAULT 0,
    actions_blocked integer NOT NULL DEFAULT 0,
    emails_sent integer NOT NULL DEFAULT 0,
    cards_created integer NOT NULL DEFAULT 0,
    trigger text NOT NULL DEFAULT 'scheduled' CHECK (trigger IN ('scheduled', 'manual', 'event')),
    error_message text,
    duration_ms integer,
    lock_holder text,
    metrics jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_autonomous_runs_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT agent_autonomous_runs_tenant_cycle_key UNIQUE (tenant_id, cycle_number),
    CONSTRAINT agent_autonomous_runs_terminal_completed CHECK ((status = 'running') = (completed_at IS NULL))
);
CREATE INDEX IF NOT EXISTS agent_runs_tenant_started_idx ON public.agent_autonomous_runs (tenant_id, started_at DESC);
CREATE INDEX IF NOT EXISTS agent_runs_tenant_status_idx ON public.agent_autonomous_runs (tenant_id, status);
CREATE INDEX IF NOT EXISTS agent_runs_running_idx ON public.agent_autonomous_runs (started_at) WHERE status = 'running';

-- agent_tenant_locks ----------------------------------------------------------------------
-- The lease row is written before its run row inside acquire_tenant_lock, hence the
-- deferred foreign key.
CREATE TABLE IF NOT EXISTS public.agent_tenant_locks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    run_id uuid NOT NULL,
    locked_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    lock_holder text NOT NULL,
    lease_duration interval NOT NULL DEFAULT interval '60 minutes',
    heartbeat_at timestamptz,
    CONSTRAINT agent_tenant_locks_tenant_id_key UNIQUE (tenant_id),
    CONSTRAINT agent_tenant_locks_run_fkey FOREIGN KEY (tenant_id, run_id)
        REFERENCES public.agent_autonomous_runs (tenant_id, id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT agent_tenant_locks_lease_positive CHECK (lease_duration > interval '0')
);
CREATE INDEX IF NOT EXISTS agent_tenant_locks_expires_idx ON public.agent_tenant_locks (expires_at);

-- engagement_clocks -----------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.engagement_clocks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    client_id uuid,
    contact_id uuid,
    last_touch_at timestamptz,
    last_touch_type text CHECK (last_touch_type IN ('email', 'call', 'meeting', 'task')),
    last_touch_by uuid,
    next_touch_due timestamptz NOT NULL DEFAULT now(),
    engagement_interval_days integer NOT NULL DEFAULT 21 CHECK (engagement_interval_days > 0),
    priority_score numeric(5,2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT engagement_clocks_target_present CHECK (client_id IS NOT NULL OR contact_id IS NOT NULL),
    CONSTRAINT engagement_clocks_tenant_client_fkey FOREIGN KEY (tenant_id, client_id)
        REFERENCES public.clients (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT engagement_clocks_tenant_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES public.contacts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT engagement_clocks_tenant_touch_by_fkey FOREIGN KEY (tenant_id, last_touch_by)
        REFERENCES public.profiles (tenant_id, id) ON DELETE SET NULL (last_touch_by)
);
CREATE UNIQUE INDEX IF NOT EXISTS engagement_clocks_contact_key
    ON public.engagement_clocks (contact_id) WHERE contact_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS engagement_clocks_client_level_key
    ON public.engagement_clocks (client_id) WHERE contact_id IS NULL;
-- Compliance status and overdue sorting (most overdue = earliest due first): both read a
-- tenant's clocks by due date. priority_score is deliberately not indexed: the hourly
-- score refresh then updates rows in place (HOT, helped by the fillfactor below) instead
-- of writing every index again.
CREATE INDEX IF NOT EXISTS engagement_clocks_tenant_due_idx
    ON public.engagement_clocks (tenant_id, next_touch_due);
ALTER TABLE public.engagement_clocks SET (fillfactor = 85);

-- agent_policy_violations -----------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.agent_policy_violations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    run_id uuid,
    violation_type text NOT NULL,
    action_type text,
    action_data jsonb,
    reason text NOT NULL,
    blocked boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_policy_violations_tenant_run_fkey FOREIGN KEY (tenant_id, run_id)
        REFERENCES public.agent_autonomous_runs (tenant_id, id) ON DELETE SET NULL (run_id)
);
CREATE INDEX IF NOT EXISTS agent_policy_violations_tenant_created_idx
    ON public.agent_policy_violations (tenant_id, created_at DESC);
CREATE INDEX IF NOT EXISTS agent_policy_violations_run_idx
    ON public.agent_policy_violations (run_id) WHERE run_id IS NOT NULL;

-- order_processing_queue ------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.order_processing_queue (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    order_id uuid NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'validated', 'exception', 'skipped')),
    queued_at timestamptz NOT NULL DEFAULT now(),
    claimed_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    processed_at timestamptz,
    pricing_valid boolean,
    credit_valid boolean,
    requirements_valid boolean,
    auto_fixes jsonb NOT NULL DEFAULT '[]'::jsonb,
    last_error text,
    CONSTRAINT order_processing_queue_order_id_key UNIQUE (order_id),
    CONSTRAINT order_processing_queue_tenant_order_key UNIQUE (tenant_id, order_id),
    CONSTRAINT order_processing_queue_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT order_processing_queue_tenant_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES public.orders (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS order_processing_queue_pending_idx
    ON public.order_processing_queue (tenant_id, queued_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS order_processing_queue_processing_idx
    ON public.order_processing_queue (claimed_at) WHERE status = 'processing';

-- order_processing_exceptions -------------------------------------------------------------
-- code identifies the rule that fired; (order_id, code) is the idempotency key so that
-- validating an order again never duplicates a finding.
CREATE TABLE IF NOT EXISTS public.order_processing_exceptions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    order_id uuid NOT NULL,
    queue_id uuid,
    exception_type text NOT NULL CHECK (exception_type IN ('pricing', 'credit', 'requirements', 'other')),
    severity text NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    code text NOT NULL,
    field text,
    message text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    resolved boolean NOT NULL DEFAULT false,
    resolved_at timestamptz,
    resolved_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT order_processing_exceptions_order_code_key UNIQUE (order_id, code),
    CONSTRAINT order_processing_exceptions_tenant_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES public.orders (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT order_processing_exceptions_tenant_queue_fkey FOREIGN KEY (tenant_id, queue_id)
        REFERENCES public.order_processing_queue (tenant_id, id) ON DELETE SET NULL (queue_id),
    CONSTRAINT order_processing_exceptions_tenant_resolved_by_fkey FOREIGN KEY (tenant_id, resolved_by)
        REFERENCES public.profiles (tenant_id, id) ON DELETE SET NULL (resolved_by)
);
CREATE INDEX IF NOT EXISTS order_processing_exceptions_unresolved_idx
    ON public.order_processing_exceptions (tenant_id, severity, created_at) WHERE NOT resolved;

-- agent_hourly_reflections ----------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.agent_hourly_reflections (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    run_id uuid,
    summary text,
    changes jsonb NOT NULL DEFAULT '[]'::jsonb,
    metrics_delta jsonb NOT NULL DEFAULT '{}'::jsonb,
    blockers jsonb NOT NULL DEFAULT '[]'::jsonb,
    insights jsonb NOT NULL DEFAULT '[]'::jsonb,
    next_hour_priorities jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_hourly_reflections_tenant_run_fkey FOREIGN KEY (tenant_id, run_id)
        REFERENCES public.agent_autonomous_runs (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS agent_hourly_reflections_tenant_created_idx
    ON public.agent_hourly_reflections (tenant_id, created_at DESC);

-- agent_rate_limits -----------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.agent_rate_limits (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    action_type text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    action_count integer NOT NULL DEFAULT 0 CHECK (action_count >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_rate_limits_tenant_action_window_key UNIQUE (tenant_id, action_type, window_start)
);
CREATE INDEX IF NOT EXISTS agent_rate_limits_window_end_idx ON public.agent_rate_limits (window_end);

-- agent_alerts ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.agent_alerts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    alert_type text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    message text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurrences integer NOT NULL DEFAULT 1,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    acknowledged boolean NOT NULL DEFAULT false,
    acknowledged_at timestamptz,
    acknowledged_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_alerts_tenant_ack_by_fkey FOREIGN KEY (tenant_id, acknowledged_by)
        REFERENCES public.profiles (tenant_id, id) ON DELETE SET NULL (acknowledged_by)
);
-- One open (unacknowledged) alert per tenant and type: the condition firing again while it
-- is open counts an occurrence instead of opening a new alert.
CREATE UNIQUE INDEX IF NOT EXISTS agent_alerts_one_open_per_type_idx
    ON public.agent_alerts (tenant_id, alert_type) WHERE NOT acknowledged;
CREATE INDEX IF NOT EXISTS agent_alerts_tenant_created_idx ON public.agent_alerts (tenant_id, created_at DESC);

-- email_provider_failures -----------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.email_provider_failures (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    error_type text NOT NULL CHECK (error_type IN ('auth', 'rate_limit', '5xx', '4xx', 'timeout', 'connection', 'other')),
    error_message text,
    smtp_code integer,
    card_id uuid,
    provider text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS email_provider_failures_tenant_created_idx
    ON public.email_provider_failures (tenant_id, created_at DESC);

-- system_config ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.system_config (
    key text PRIMARY KEY,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.system_config (key, value)
VALUES ('agent_config', '{"global_enabled": false, "kill_switch_reason": null}'::jsonb)
ON CONFLICT (key) DO NOTHING;

-- kanban_cards.run_id refers to the run that created the card (runs exist only from here on).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.kanban_cards'::regclass AND conname = 'kanban_cards_tenant_run_fkey') THEN
        ALTER TABLE public.kanban_cards ADD CONSTRAINT kanban_cards_tenant_run_fkey
            FOREIGN KEY (tenant_id, run_id) REFERENCES public.agent_autonomous_runs (tenant_id, id)
            ON DELETE SET NULL (run_id) NOT VALID;
        BEGIN
            ALTER TABLE public.kanban_cards VALIDATE CONSTRAINT kanban_cards_tenant_run_fkey;
        EXCEPTION WHEN foreign_key_violation THEN
            RAISE WARNING 'kanban_cards.run_id has rows without a run; constraint kept NOT VALID';
        END;
    END IF;
END $$;
