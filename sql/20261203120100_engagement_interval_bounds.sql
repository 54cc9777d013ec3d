-- A tenant's engagement interval is bounded (1..=365 days), as the binary checks when it
-- reads agent_settings (issue 13, item 5): 2147483647 days made every later due date
-- overflow ("timestamp out of range") after an e-mail had gone out. Outside the bounds the
-- default (21) applies here; the binary refuses to run such a tenant anyway.
CREATE OR REPLACE FUNCTION public.tenant_engagement_interval_days(p_tenant_id uuid)
RETURNS integer
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT coalesce(
        (SELECT CASE WHEN pg_catalog.jsonb_typeof(t.agent_settings -> 'engagement_interval_days') = 'number'
                      AND (t.agent_settings ->> 'engagement_interval_days') ~ '^[0-9]{1,3}$'
                      AND (t.agent_settings ->> 'engagement_interval_days')::integer BETWEEN 1 AND 365
                     THEN (t.agent_settings ->> 'engagement_interval_days')::integer END
         FROM public.tenants t WHERE t.id = p_tenant_id),
        21)
$$;
