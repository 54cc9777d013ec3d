-- The privilege-closing step `autopilot migrate` runs after the migrations, every time.
-- Idempotent; a change (RLS, policy) is made only where it is missing, so a steady-state run
-- takes no strong lock. Covers every object the migrations created (the ledger
-- autopilot_migration_objects), including ones added by migration files this code does not
-- know, plus the known objects of installs that predate the ledger.
DO $close$
DECLARE
    o record;
    v_rel regclass;
    v_fn regprocedure;
    v_kind "char";
    v_rls boolean;
    v_invoker boolean;
    v_anon oid := (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = 'anon');
    v_auth oid := (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = 'authenticated');
    v_service oid := (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = 'service_role');
    v_default boolean;
    v_tenant_policy text := '(tenant_id IN (SELECT p.tenant_id FROM public.profiles p WHERE p.id = (SELECT auth.uid())))';
    t text;
BEGIN
    IF v_anon IS NULL OR v_auth IS NULL OR v_service IS NULL THEN
        RETURN;
    END IF;

    -- Installs migrated before the ledger existed: the known agent objects, and, when the
    -- host-tables migration ran before the ledger (so what it created is unknown), the host
    -- tables of SPEC §2 that have no RLS (created by migrate, or open to everyone anyway).
    INSERT INTO public.autopilot_migration_objects (kind, identity)
    SELECT 'relation', pg_catalog.format('%I.%I', n.nspname, c.relname)
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public'
      AND (c.relname IN ('agent_autonomous_runs', 'agent_tenant_locks', 'engagement_clocks',
                         'agent_policy_violations', 'order_processing_queue', 'order_processing_exceptions',
                         'agent_hourly_reflections', 'agent_rate_limits', 'agent_alerts',
                         'email_provider_failures', 'system_config', 'engagement_clock_status')
           OR (c.relname IN ('tenants', 'profiles', 'clients', 'contacts', 'products', 'orders',
                             'kanban_cards', 'email_suppressions')
               AND c.relkind = 'r' AND NOT c.relrowsecurity
               AND EXISTS (SELECT 1 FROM public.autopilot_migrations m WHERE m.version = 20251220100100)
               AND NOT EXISTS (SELECT 1 FROM public.autopilot_migration_objects l
                               WHERE l.kind = 'migration' AND l.identity = '20251220100100')))
    ON CONFLICT DO NOTHING;
    INSERT INTO public.autopilot_migration_objects (kind, identity)
    SELECT 'function', pg_catalog.format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes))
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'public'
      AND (p.proname LIKE 'autopilot\_%'
           OR p.proname IN ('engagement_days_overdue', 'engagement_contact_points', 'engagement_priority',
                'tenant_engagement_interval_days', 'acquire_tenant_lease', 'acquire_tenant_lock',
                'assert_tenant_lease', 'extend_tenant_lease', 'extend_tenant_lock',
                'release_tenant_lease', 'release_tenant_lock', 'rate_limit_take',
                'check_and_increment_rate_limit', 'touch_engagement_clock', 'update_engagement_clock',
                'get_engagement_violations_at', 'get_engagement_violations', 'refresh_engagement_scores',
                'raise_agent_alert', 'queue_new_orders'))
    ON CONFLICT DO NOTHING;

    FOR o IN SELECT l.kind, l.identity FROM public.autopilot_migration_objects l
             WHERE l.kind IN ('relation', 'function') ORDER BY l.kind, l.identity LOOP
        IF o.kind = 'function' THEN
            v_fn := pg_catalog.to_regprocedure(o.identity);
            CONTINUE WHEN v_fn IS NULL;
            -- auth.uid() (our shim) is evaluated by every policy: executable by the API roles.
            IF v_fn = pg_catalog.to_regprocedure('auth.uid()') THEN
                REVOKE ALL ON FUNCTION auth.uid() FROM PUBLIC;
                GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, service_role;
                CONTINUE;
            END IF;
            -- EXECUTE held by anon can only come from default privileges (no migration grants
            -- anon anything): authenticated's then came from there too.
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
                       WHERE p.oid = v_fn AND a.grantee = v_anon) THEN
                EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM authenticated', v_fn);
            END IF;
            EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon', v_fn);
            CONTINUE;
        END IF;

        v_rel := pg_catalog.to_regclass(o.identity);
        CONTINUE WHEN v_rel IS NULL;
        SELECT c.relkind, c.relrowsecurity,
               coalesce('security_invoker=true' = ANY (c.reloptions) OR 'security_invoker=on' = ANY (c.reloptions), false),
               EXISTS (SELECT 1 FROM pg_catalog.aclexplode(c.relacl) a
                       WHERE a.grantee = v_anon
                          OR (a.grantee = v_auth AND a.privilege_type = 'TRUNCATE'))
        INTO v_kind, v_rls, v_invoker, v_default
        FROM pg_catalog.pg_class c WHERE c.oid = v_rel;
        -- Privileges held by anon, or TRUNCATE held by authenticated, come from default
        -- privileges (Supabase: GRANT ALL ... TO anon, authenticated): none of them stays.
        IF v_default THEN
            EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM authenticated', v_rel);
        END IF;
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC, anon', v_rel);

        IF v_kind IN ('r', 'p') THEN
            EXECUTE pg_catalog.format('REVOKE TRUNCATE, REFERENCES, TRIGGER ON %s FROM authenticated', v_rel);
            IF NOT v_rls THEN
                EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_rel);
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                           WHERE p.polrelid = v_rel AND (v_service = ANY (p.polroles) OR 0 = ANY (p.polroles))) THEN
                EXECUTE pg_catalog.format(
                    'CREATE POLICY service_role_all ON %s FOR ALL TO service_role USING (true) WITH CHECK (true)', v_rel);
            END IF;
            IF v_rel NOT IN ('public.tenants'::regclass, 'public.profiles'::regclass)
               AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                           WHERE a.attrelid = v_rel AND a.attname = 'tenant_id' AND NOT a.attisdropped)
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                               WHERE p.polrelid = v_rel AND (v_auth = ANY (p.polroles) OR 0 = ANY (p.polroles))) THEN
                EXECUTE pg_catalog.format(
                    'CREATE POLICY tenant_isolation ON %s FOR ALL TO authenticated USING %s WITH CHECK %s',
                    v_rel, v_tenant_policy, v_tenant_policy);
            END IF;
        ELSIF v_kind = 'v' THEN
            -- A view that runs as its owner would bypass the tables' RLS.
            IF NOT v_invoker THEN
                EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM authenticated', v_rel);
            ELSE
                EXECUTE pg_catalog.format(
                    'REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON %s FROM authenticated', v_rel);
            END IF;
        ELSE
            -- Sequences, materialized views, foreign tables: no row security, no API access.
            EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM authenticated', v_rel);
        END IF;
    END LOOP;

    -- Host tables migrate created (they are in the ledger): people use them through the host,
    -- confined to their tenant.
    FOR v_rel IN
        SELECT c.oid::regclass FROM pg_catalog.pg_class c
        JOIN public.autopilot_migration_objects l
          ON l.kind = 'relation' AND pg_catalog.to_regclass(l.identity) = c.oid
        WHERE c.relnamespace = 'public'::regnamespace
          AND c.relname IN ('clients', 'contacts', 'products', 'orders', 'kanban_cards', 'email_suppressions')
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO authenticated, service_role', v_rel);
    END LOOP;
    IF EXISTS (SELECT 1 FROM public.autopilot_migration_objects l
               WHERE l.kind = 'relation' AND pg_catalog.to_regclass(l.identity) = 'public.tenants'::regclass) THEN
        GRANT SELECT ON public.tenants TO authenticated;
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenants TO service_role;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                       WHERE p.polrelid = 'public.tenants'::regclass AND p.polname = 'autopilot_own_tenant') THEN
            CREATE POLICY autopilot_own_tenant ON public.tenants FOR SELECT TO authenticated
                USING (id IN (SELECT public.autopilot_caller_tenant_ids()));
        END IF;
    END IF;

    -- The agent's tables: exact grants of SPEC §2.
    FOREACH t IN ARRAY ARRAY[
        'agent_autonomous_runs', 'agent_tenant_locks', 'engagement_clocks',
        'agent_policy_violations', 'order_processing_queue', 'order_processing_exceptions',
        'agent_hourly_reflections', 'agent_rate_limits', 'agent_alerts', 'email_provider_failures'
    ] LOOP
        CONTINUE WHEN pg_catalog.to_regclass('public.' || t) IS NULL;
        EXECUTE pg_catalog.format('REVOKE ALL ON public.%I FROM PUBLIC, anon, authenticated', t);
        EXECUTE pg_catalog.format('GRANT SELECT ON public.%I TO authenticated', t);
        EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO service_role', t);
    END LOOP;
    IF pg_catalog.to_regclass('public.order_processing_exceptions') IS NOT NULL THEN
        GRANT UPDATE (resolved, resolved_at, resolved_by) ON public.order_processing_exceptions TO authenticated;
    END IF;
    IF pg_catalog.to_regclass('public.agent_alerts') IS NOT NULL THEN
        GRANT UPDATE (acknowledged, acknowledged_at, acknowledged_by) ON public.agent_alerts TO authenticated;
    END IF;
    IF pg_catalog.to_regclass('public.system_config') IS NOT NULL THEN
        REVOKE ALL ON public.system_config FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT ON public.system_config TO service_role;
    END IF;

    -- The migration ledgers are the operator's.
    REVOKE ALL ON public.autopilot_migrations, public.autopilot_migration_objects
        FROM PUBLIC, anon, authenticated, service_role;
    GRANT SELECT ON public.autopilot_migrations, public.autopilot_migration_objects TO service_role;
END
$close$;
