-- Host compatibility (issue 15): rows the agent writes into a host's own tables stay valid
-- when the host has columns the agent does not know.
--
-- Salesmod (Next.js on Supabase) gives kanban_cards and email_suppressions a legacy
-- `org_id uuid NOT NULL REFERENCES profiles(id)` (the owning profile), kanban_cards a
-- `rationale text NOT NULL` and a run_id that references its own agent_runs table, and
-- email_suppressions a `contact_id NOT NULL` with UNIQUE (org_id, contact_id).
--
-- The function below fills what the host needs and the agent does not know, and only what
-- is empty, so the host's own inserts are unchanged. `autopilot migrate` installs it as a
-- BEFORE INSERT trigger (autopilot_host_row_defaults) only on tables that have such columns,
-- and inspects every host table the agent writes before changing anything (see
-- src/host_compat.rs). Trigger arguments (set by migrate from the catalog):
--   detach_run_id        run_id references another table: an agent run id moves to
--                        agent_run_id instead
--   contact_id_required  a suppression needs a contact: an address no contact of the
--                        tenant has cannot be recorded, and a contact already suppressed is
--                        not suppressed twice

ALTER TABLE public.kanban_cards ADD COLUMN IF NOT EXISTS agent_run_id uuid;

CREATE OR REPLACE FUNCTION public.autopilot_host_row_defaults()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_row jsonb := pg_catalog.to_jsonb(NEW);
    v_set jsonb := '{}'::jsonb;
    v_tenant uuid := (v_row ->> 'tenant_id')::uuid;
    v_owner uuid;
    v_contact uuid;
BEGIN
    -- The caller's own visibility decides every lookup (SECURITY INVOKER): a host user can
    -- only ever fill values from rows of its own tenant.
    BEGIN
        IF v_tenant IS NULL AND v_row ? 'tenant_id' THEN
            IF v_row ->> 'contact_id' IS NOT NULL THEN
                SELECT c.tenant_id INTO v_tenant FROM public.contacts c
                WHERE c.id = (v_row ->> 'contact_id')::uuid;
            END IF;
            IF v_tenant IS NULL AND v_row ->> 'org_id' IS NOT NULL THEN
                SELECT p.tenant_id INTO v_tenant FROM public.profiles p
                WHERE p.id = (v_row ->> 'org_id')::uuid;
            END IF;
            IF v_tenant IS NOT NULL THEN
                v_set := v_set || pg_catalog.jsonb_build_object('tenant_id', v_tenant);
            END IF;
        END IF;

        -- Legacy owner column: the tenant's owner profile.
        IF v_row ? 'org_id' AND v_row ->> 'org_id' IS NULL AND v_tenant IS NOT NULL THEN
            SELECT (pg_catalog.to_jsonb(t) ->> 'owner_id')::uuid INTO v_owner
            FROM public.tenants t WHERE t.id = v_tenant;
            IF v_owner IS NOT NULL THEN
                v_set := v_set || pg_catalog.jsonb_build_object('org_id', v_owner);
            END IF;
        END IF;

        IF TG_TABLE_NAME = 'kanban_cards' THEN
            IF v_row ? 'rationale' AND v_row ->> 'rationale' IS NULL THEN
                v_set := v_set || pg_catalog.jsonb_build_object('rationale',
                    coalesce(nullif(v_row ->> 'description', ''), nullif(v_row ->> 'title', ''),
                             'Suggested by autopilot'));
            END IF;
            IF 'detach_run_id' = ANY (TG_ARGV) AND v_row ->> 'run_id' IS NOT NULL
               AND EXISTS (SELECT 1 FROM public.agent_autonomous_runs r
                           WHERE r.id = (v_row ->> 'run_id')::uuid) THEN
                v_set := v_set || pg_catalog.jsonb_build_object('run_id', NULL,
                    'agent_run_id', v_row ->> 'run_id');
            END IF;
        END IF;

        IF TG_TABLE_NAME = 'email_suppressions' AND v_row ? 'contact_id'
           AND v_row ->> 'contact_id' IS NULL AND v_row ->> 'email' IS NOT NULL AND v_tenant IS NOT NULL THEN
            SELECT c.id INTO v_contact FROM public.contacts c
            WHERE c.tenant_id = v_tenant AND lower(c.email) = lower(v_row ->> 'email')
            ORDER BY c.is_primary DESC, c.created_at, c.id
            LIMIT 1;
            IF 'contact_id_required' = ANY (TG_ARGV) THEN
                IF v_contact IS NULL THEN
                    RETURN NULL;
                END IF;
                IF EXISTS (SELECT 1 FROM public.email_suppressions s
                           WHERE s.contact_id = v_contact
                             AND (s.tenant_id = v_tenant OR s.tenant_id IS NULL)) THEN
                    RETURN NULL;
                END IF;
            END IF;
            IF v_contact IS NOT NULL THEN
                v_set := v_set || pg_catalog.jsonb_build_object('contact_id', v_contact);
            END IF;
        END IF;
    EXCEPTION WHEN insufficient_privilege THEN
        -- A host user without rights on a looked-up table: leave its row as it wrote it.
        RETURN NEW;
    END;

    IF v_set <> '{}'::jsonb THEN
        NEW := pg_catalog.jsonb_populate_record(NEW, v_set);
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION public.autopilot_host_row_defaults() FROM PUBLIC, anon, authenticated;

-- Suppressions and cards the host recorded before it had tenant_id (or without setting it)
-- belong to the tenant of their contact or owner; the agent looks them up by tenant.
DO $backfill$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
               WHERE attrelid = 'public.email_suppressions'::regclass AND attname = 'contact_id' AND NOT attisdropped) THEN
        UPDATE public.email_suppressions s
        SET tenant_id = c.tenant_id
        FROM public.contacts c
        WHERE s.tenant_id IS NULL AND c.id = s.contact_id AND c.tenant_id IS NOT NULL;
    END IF;
    -- The host's cards without a tenant belong to the tenant of their owning profile.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
               WHERE attrelid = 'public.kanban_cards'::regclass AND attname = 'org_id' AND NOT attisdropped) THEN
        EXECUTE 'UPDATE public.kanban_cards k SET tenant_id = p.tenant_id FROM public.profiles p
                 WHERE k.tenant_id IS NULL AND p.id = k.org_id AND p.tenant_id IS NOT NULL';
    END IF;
END
$backfill$;

-- A host whose kanban_cards.run_id references its own runs table (Salesmod: agent_runs)
-- writes those ids there: our foreign key from run_id to agent_autonomous_runs would reject
-- the host's own cards. The agent's run then goes to agent_run_id, which gets that key.
DO $runs$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_constraint k
        JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey)
        WHERE k.conrelid = 'public.kanban_cards'::regclass AND k.contype = 'f' AND a.attname = 'run_id'
          AND k.confrelid <> 'public.agent_autonomous_runs'::regclass
    ) THEN
        ALTER TABLE public.kanban_cards DROP CONSTRAINT IF EXISTS kanban_cards_tenant_run_fkey;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.kanban_cards'::regclass AND conname = 'kanban_cards_tenant_agent_run_fkey') THEN
        ALTER TABLE public.kanban_cards ADD CONSTRAINT kanban_cards_tenant_agent_run_fkey
            FOREIGN KEY (tenant_id, agent_run_id) REFERENCES public.agent_autonomous_runs (tenant_id, id)
            ON DELETE SET NULL (agent_run_id);
    END IF;
END
$runs$;
CREATE INDEX IF NOT EXISTS kanban_cards_tenant_agent_run_idx
    ON public.kanban_cards (tenant_id, agent_run_id) WHERE agent_run_id IS NOT NULL;
