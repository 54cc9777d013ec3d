-- Tenant-scoped uniqueness (issue 15): a unique constraint on a tenant's data answers
-- "does this value exist in another tenant" (23505 where a foreign key would say 23503).
-- Every uniqueness rule of the agent's tables now includes tenant_id; the composite foreign
-- keys to (tenant_id, id) already tie each row to its tenant's order or contact, so the
-- data rule is unchanged. Plain (non-unique) indexes keep the lookups by order and contact.
-- The functions and statements that named the old rules in ON CONFLICT name the new ones.

CREATE UNIQUE INDEX IF NOT EXISTS order_processing_exceptions_tenant_order_code_key
    ON public.order_processing_exceptions (tenant_id, order_id, code);
ALTER TABLE public.order_processing_exceptions DROP CONSTRAINT IF EXISTS order_processing_exceptions_order_code_key;
CREATE INDEX IF NOT EXISTS order_processing_exceptions_order_idx
    ON public.order_processing_exceptions (order_id);

-- (tenant_id, order_id) is unique already (order_processing_queue_tenant_order_key).
ALTER TABLE public.order_processing_queue DROP CONSTRAINT IF EXISTS order_processing_queue_order_id_key;
CREATE INDEX IF NOT EXISTS order_processing_queue_order_idx ON public.order_processing_queue (order_id);

CREATE UNIQUE INDEX IF NOT EXISTS engagement_clocks_tenant_contact_key
    ON public.engagement_clocks (tenant_id, contact_id) WHERE contact_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS engagement_clocks_tenant_client_level_key
    ON public.engagement_clocks (tenant_id, client_id) WHERE contact_id IS NULL;
DROP INDEX IF EXISTS public.engagement_clocks_contact_key;
DROP INDEX IF EXISTS public.engagement_clocks_client_level_key;
CREATE INDEX IF NOT EXISTS engagement_clocks_contact_idx
    ON public.engagement_clocks (contact_id) WHERE contact_id IS NOT NULL;

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
        ON CONFLICT (tenant_id, client_id) WHERE contact_id IS NULL
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
        ON CONFLICT (tenant_id, contact_id) WHERE contact_id IS NOT NULL
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

CREATE OR REPLACE FUNCTION public.queue_new_orders()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    INSERT INTO public.order_processing_queue (tenant_id, order_id)
    SELECT n.tenant_id, n.id FROM new_orders n WHERE n.tenant_id IS NOT NULL
    ON CONFLICT (tenant_id, order_id) DO NOTHING;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION public.touch_engagement_clock(uuid, uuid, uuid, text, uuid, timestamptz) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.touch_engagement_clock(uuid, uuid, uuid, text, uuid, timestamptz) TO service_role;
REVOKE ALL ON FUNCTION public.queue_new_orders() FROM PUBLIC, anon, authenticated;
