-- Who turned the agent on or off for a tenant, and why (`autopilot tenant enable|disable`).
-- One row per change; the global switch keeps its last change in system_config's
-- agent_config JSON (`changed_by`, `change_reason`, `changed_at`), since it belongs to no tenant.
--
-- Re-runnable: guarded DDL, policies dropped before they are created.

CREATE TABLE IF NOT EXISTS public.agent_switch_log (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    agent_enabled boolean NOT NULL,
    changed_by text NOT NULL CHECK (length(changed_by) BETWEEN 1 AND 1000),
    reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS agent_switch_log_tenant_created_idx
    ON public.agent_switch_log (tenant_id, created_at DESC);

ALTER TABLE public.agent_switch_log ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.agent_switch_log;
-- A person reads their own tenant's history; only the operator's command writes it.
CREATE POLICY tenant_isolation ON public.agent_switch_log FOR SELECT TO authenticated
    USING (tenant_id IN (SELECT p.tenant_id FROM public.profiles p WHERE p.id = (SELECT auth.uid())));
DROP POLICY IF EXISTS service_role_all ON public.agent_switch_log;
CREATE POLICY service_role_all ON public.agent_switch_log FOR ALL TO service_role
    USING (true) WITH CHECK (true);

REVOKE ALL ON public.agent_switch_log FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.agent_switch_log TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.agent_switch_log TO service_role;
