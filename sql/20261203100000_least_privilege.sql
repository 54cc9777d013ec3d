-- Least privilege and no enumeration (issue 15).
--
-- * auth.uid(): our shim (only ours, never Supabase's) reads the current claim form
--   `request.jwt.claims` ->> 'sub' first and the legacy `request.jwt.claim.sub` only as a
--   fallback.
-- * The agent's bookkeeping is read-only to `authenticated`; a person may only resolve an
--   order exception and acknowledge an alert (column-level UPDATE grants, rows still
--   confined to the tenant by the tenant_isolation policy).
-- * Functions only the agent calls are executable by service_role only (Supabase's default
--   privileges grant EXECUTE to anon and authenticated, PostgreSQL's grant it to PUBLIC).
-- * profiles gets RLS (membership of other tenants is not enumerable) unless the host
--   already protects it with its own RLS.
-- * email_provider_failures.card_id references the tenant's card.
-- * An error stored on a run never carries row contents (PostgreSQL's DETAIL).
--
-- `autopilot migrate` also runs a privilege-closing step after every migration (see
-- src/privileges.rs); the statements here are the per-file half of that.

-- auth.uid() ---------------------------------------------------------------------------------
DO $shim$
BEGIN
    -- Ours: created by 20251220100000_supabase_shim.sql (pinned search_path, schema-qualified
    -- current_setting). Supabase's own auth.uid() never matches and is left alone.
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'auth' AND p.proname = 'uid' AND p.pronargs = 0
          AND p.prosrc LIKE '%pg_catalog.current_setting(''request.jwt.claim%'
          AND p.proconfig IS NOT NULL
          AND 'search_path=""' = ANY (p.proconfig)
    ) THEN
        EXECUTE $fn$
            CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
            LANGUAGE sql STABLE
            SET search_path = ''
            AS $body$
                SELECT nullif(
                    coalesce(
                        nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
                        nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), '')
                    ),
                    ''
                )::uuid
            $body$
        $fn$;
        REVOKE ALL ON FUNCTION auth.uid() FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, service_role;
    END IF;
END
$shim$;

-- The caller's tenants, for policies on profiles itself: a policy on profiles that queried
-- profiles as the caller would recurse. SECURITY DEFINER reads profiles as its owner.
CREATE OR REPLACE FUNCTION public.autopilot_caller_tenant_ids()
RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT p.tenant_id FROM public.profiles p
    WHERE p.id = (SELECT auth.uid()) AND p.tenant_id IS NOT NULL
$$;
REVOKE ALL ON FUNCTION public.autopilot_caller_tenant_ids() FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.autopilot_caller_tenant_ids() TO authenticated, service_role;

-- profiles: readable within one's own tenant only. A host whose profiles already has RLS
-- keeps its own rules (we never loosen or replace a host's policies).
DO $prof$
DECLARE
    v_rls boolean;
    v_ours boolean;
BEGIN
    SELECT c.relrowsecurity INTO v_rls FROM pg_catalog.pg_class c WHERE c.oid = 'public.profiles'::regclass;
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = 'public.profiles'::regclass
                   AND polname = 'autopilot_same_tenant') INTO v_ours;
    IF NOT v_rls OR v_ours THEN
        ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
        DROP POLICY IF EXISTS autopilot_same_tenant ON public.profiles;
        CREATE POLICY autopilot_same_tenant ON public.profiles FOR SELECT TO authenticated
            USING (id = (SELECT auth.uid())
                   OR tenant_id IN (SELECT public.autopilot_caller_tenant_ids()));
        DROP POLICY IF EXISTS service_role_all ON public.profiles;
        CREATE POLICY service_role_all ON public.profiles FOR ALL TO service_role USING (true) WITH CHECK (true);
    END IF;
END
$prof$;
REVOKE ALL ON public.profiles FROM PUBLIC, anon;

-- Bookkeeping read-only to authenticated -----------------------------------------------------
DO $grants$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'agent_autonomous_runs', 'agent_tenant_locks', 'engagement_clocks',
        'agent_policy_violations', 'order_processing_queue', 'order_processing_exceptions',
        'agent_hourly_reflections', 'agent_rate_limits', 'agent_alerts', 'email_provider_failures'
    ] LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON public.%I FROM PUBLIC, anon, authenticated', t);
        EXECUTE pg_catalog.format('GRANT SELECT ON public.%I TO authenticated', t);
        EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO service_role', t);
    END LOOP;
END
$grants$;
-- What a person does in the product, column by column.
GRANT UPDATE (resolved, resolved_at, resolved_by) ON public.order_processing_exceptions TO authenticated;
GRANT UPDATE (acknowledged, acknowledged_at, acknowledged_by) ON public.agent_alerts TO authenticated;

REVOKE ALL ON public.engagement_clock_status FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.engagement_clock_status TO authenticated, service_role;

-- Functions ----------------------------------------------------------------------------------
-- Every function of the agent: service_role only. engagement_days_overdue is read through
-- the security_invoker view engagement_clock_status, so authenticated keeps it.
DO $fns$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND p.proname IN (
            'engagement_days_overdue', 'engagement_contact_points', 'engagement_priority',
            'tenant_engagement_interval_days', 'acquire_tenant_lease', 'acquire_tenant_lock',
            'assert_tenant_lease', 'extend_tenant_lease', 'extend_tenant_lock',
            'release_tenant_lease', 'release_tenant_lock', 'rate_limit_take',
            'check_and_increment_rate_limit', 'touch_engagement_clock', 'update_engagement_clock',
            'get_engagement_violations_at', 'get_engagement_violations', 'refresh_engagement_scores',
            'raise_agent_alert', 'queue_new_orders')
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon, authenticated', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO service_role', f);
    END LOOP;
END
$fns$;
GRANT EXECUTE ON FUNCTION public.engagement_days_overdue(timestamptz, timestamptz) TO authenticated;

-- email_provider_failures.card_id -> the tenant's card ---------------------------------------
DO $fk$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.kanban_cards'::regclass AND conname = 'kanban_cards_tenant_id_id_key') THEN
        -- Never hit by the host's writes: id alone is already unique.
        ALTER TABLE public.kanban_cards ADD CONSTRAINT kanban_cards_tenant_id_id_key UNIQUE (tenant_id, id);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.email_provider_failures'::regclass
                     AND conname = 'email_provider_failures_tenant_card_fkey') THEN
        ALTER TABLE public.email_provider_failures ADD CONSTRAINT email_provider_failures_tenant_card_fkey
            FOREIGN KEY (tenant_id, card_id) REFERENCES public.kanban_cards (tenant_id, id)
            ON DELETE SET NULL (card_id) NOT VALID;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
               WHERE conrelid = 'public.email_provider_failures'::regclass
                 AND conname = 'email_provider_failures_tenant_card_fkey' AND NOT convalidated) THEN
        BEGIN
            ALTER TABLE public.email_provider_failures VALIDATE CONSTRAINT email_provider_failures_tenant_card_fkey;
        EXCEPTION WHEN foreign_key_violation THEN
            RAISE WARNING 'email_provider_failures has rows naming a missing card; constraint kept NOT VALID (new rows are checked)';
        END;
    END IF;
END
$fk$;
CREATE INDEX IF NOT EXISTS email_provider_failures_tenant_card_idx
    ON public.email_provider_failures (tenant_id, card_id) WHERE card_id IS NOT NULL;

-- Error text without row contents ------------------------------------------------------------
-- PostgreSQL's DETAIL ("Failing row contains (...)", "Key (email)=(...)") carries the values
-- of the row; the binary strips it too, this is the backstop for every writer.
CREATE OR REPLACE FUNCTION public.autopilot_strip_row_contents(p_text text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
    SELECT pg_catalog.regexp_replace(p_text, '(^|\s)DETAIL:.*$', '', 's')
$$;
REVOKE ALL ON FUNCTION public.autopilot_strip_row_contents(text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.autopilot_strip_row_contents(text) TO service_role;

CREATE OR REPLACE FUNCTION public.autopilot_scrub_run_error()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF NEW.error_message IS NOT NULL THEN
        NEW.error_message := public.autopilot_strip_row_contents(NEW.error_message);
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION public.autopilot_scrub_run_error() FROM PUBLIC, anon, authenticated;

DROP TRIGGER IF EXISTS agent_autonomous_runs_scrub_error ON public.agent_autonomous_runs;
CREATE TRIGGER agent_autonomous_runs_scrub_error
    BEFORE INSERT OR UPDATE OF error_message ON public.agent_autonomous_runs
    FOR EACH ROW WHEN (NEW.error_message IS NOT NULL)
    EXECUTE FUNCTION public.autopilot_scrub_run_error();
UPDATE public.agent_autonomous_runs
SET error_message = public.autopilot_strip_row_contents(error_message)
WHERE error_message ~ '(^|\s)DETAIL:';
