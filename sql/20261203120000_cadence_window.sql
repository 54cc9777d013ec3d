-- Hourly cadence (issue 13, item 3): a tenant runs at most once per hourly window however
-- many runners start and however their starts are spread over the hour. Each run records
-- the window (the UTC hour, by the runner's clock when it took the lease) it belongs to;
-- a runner skips a tenant whose cycle already completed in the current window. Failed and
-- timed-out runs do not count: the next runner of the hour retries them.

ALTER TABLE public.agent_autonomous_runs ADD COLUMN IF NOT EXISTS cadence_window timestamptz;

CREATE INDEX IF NOT EXISTS agent_runs_completed_window_idx
    ON public.agent_autonomous_runs (tenant_id, cadence_window)
    WHERE status = 'completed';

-- Take the tenant's lease for a run in window p_window (unless p_force, NULL when the
-- tenant's cycle already completed in that window or the lease is held). The window is
-- checked again once this caller holds the lease, so it cannot race with a release: a
-- runner that completed the tenant a moment ago is seen, and the run just created is
-- removed again (it did nothing).
CREATE OR REPLACE FUNCTION public.acquire_tenant_lease_in_window(
    p_tenant_id uuid,
    p_holder text,
    p_lease interval,
    p_trigger text,
    p_window timestamptz,
    p_force boolean DEFAULT false,
    p_now timestamptz DEFAULT now()
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_run uuid;
BEGIN
    IF p_window IS NULL THEN
        RAISE EXCEPTION 'a cadence window is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT coalesce(p_force, false) AND EXISTS (
        SELECT 1 FROM public.agent_autonomous_runs r
        WHERE r.tenant_id = p_tenant_id AND r.status = 'completed' AND r.cadence_window = p_window
    ) THEN
        RETURN NULL;
    END IF;

    v_run := public.acquire_tenant_lease(p_tenant_id, p_holder, p_lease, p_trigger, p_now, NULL);
    IF v_run IS NULL THEN
        RETURN NULL;
    END IF;

    IF NOT coalesce(p_force, false) AND EXISTS (
        SELECT 1 FROM public.agent_autonomous_runs r
        WHERE r.tenant_id = p_tenant_id AND r.status = 'completed' AND r.cadence_window = p_window
    ) THEN
        DELETE FROM public.agent_tenant_locks WHERE tenant_id = p_tenant_id AND run_id = v_run;
        DELETE FROM public.agent_autonomous_runs WHERE id = v_run;
        RETURN NULL;
    END IF;

    UPDATE public.agent_autonomous_runs SET cadence_window = p_window WHERE id = v_run;
    RETURN v_run;
END
$$;

REVOKE ALL ON FUNCTION public.acquire_tenant_lease_in_window(uuid, text, interval, text, timestamptz, boolean, timestamptz)
    FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.acquire_tenant_lease_in_window(uuid, text, interval, text, timestamptz, boolean, timestamptz)
    TO service_role;
