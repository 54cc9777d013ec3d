-- Row-level security and grants.
--
-- The ten tenant tables: `authenticated` sees and writes only rows of its own tenant (the
-- tenant of its profile), `service_role` everything, `anon` nothing. Policies are dropped
-- and re-created so this file can run again (the review's CREATE POLICY without a guard
-- could not). auth.uid() is wrapped in a scalar subquery so the planner evaluates it once
-- per statement, not once per row.
--
-- system_config holds the global kill switch: readable by service_role only, writable by
-- none of the three API roles (the review left it with default grants and no RLS).

DO $sec$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'agent_autonomous_runs', 'agent_tenant_locks', 'engagement_clocks',
        'agent_policy_violations', 'order_processing_queue', 'order_processing_exceptions',
        'agent_hourly_reflections', 'agent_rate_limits', 'agent_alerts', 'email_provider_failures'
    ] LOOP
        EXECUTE pg_catalog.format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS tenant_isolation ON public.%I', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY tenant_isolation ON public.%I FOR ALL TO authenticated '
            'USING (tenant_id IN (SELECT p.tenant_id FROM public.profiles p WHERE p.id = (SELECT auth.uid()))) '
            'WITH CHECK (tenant_id IN (SELECT p.tenant_id FROM public.profiles p WHERE p.id = (SELECT auth.uid())))',
            t);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS service_role_all ON public.%I', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY service_role_all ON public.%I FOR ALL TO service_role USING (true) WITH CHECK (true)', t);
        EXECUTE pg_catalog.format('REVOKE ALL ON public.%I FROM PUBLIC, anon', t);
        EXECUTE pg_catalog.format(
            'GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO authenticated, service_role', t);
    END LOOP;
END
$sec$;

-- The isolation policies read profiles as the calling role; authenticated gets only the two
-- columns they need, not the names and e-mail addresses of every tenant's users.
GRANT SELECT (id, tenant_id) ON public.profiles TO authenticated;
GRANT SELECT ON public.profiles TO service_role;
-- The functions granted to service_role read tenant settings and contacts as the caller.
GRANT SELECT ON public.tenants, public.contacts TO service_role;

ALTER TABLE public.system_config ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.system_config FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.system_config TO service_role;
DROP POLICY IF EXISTS service_role_read ON public.system_config;
CREATE POLICY service_role_read ON public.system_config FOR SELECT TO service_role USING (true);

-- The migration ledger is the operator's, not the API's.
REVOKE ALL ON public.autopilot_migrations FROM PUBLIC, anon, authenticated;
