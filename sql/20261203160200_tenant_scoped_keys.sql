-- Citus readiness (issue 16): every primary key and unique constraint of the agent's
-- tables includes tenant_id, and every foreign key between tenant-owned tables pairs
-- tenant_id with tenant_id, so the tables can be distributed by tenant_id and co-located
-- (tests/scale.rs checks both from the catalog).
--
-- * PRIMARY KEY (id) becomes PRIMARY KEY (id, tenant_id): still the index a lookup by id
--   reads (id leads), and it names the distribution column. Ids stay uuids from
--   gen_random_uuid(), so they remain unique in practice; (tenant_id, id) stays unique
--   too, through the existing constraints the composite foreign keys use.
-- * contact_email_holds.event_id referenced inbound_mail_events (id) alone: it now
--   references (tenant_id, id), like every other reference to a tenant's row.
-- The host's tables (tenants, profiles, clients, ...) are the host's to key; the agent
-- only references them by (tenant_id, id) already.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.inbound_mail_events'::regclass
                     AND conname = 'inbound_mail_events_tenant_id_id_key') THEN
        ALTER TABLE public.inbound_mail_events
            ADD CONSTRAINT inbound_mail_events_tenant_id_id_key UNIQUE (tenant_id, id);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
               WHERE conrelid = 'public.contact_email_holds'::regclass
                 AND conname = 'contact_email_holds_event_id_fkey') THEN
        ALTER TABLE public.contact_email_holds DROP CONSTRAINT contact_email_holds_event_id_fkey;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.contact_email_holds'::regclass
                     AND conname = 'contact_email_holds_tenant_event_fkey') THEN
        ALTER TABLE public.contact_email_holds ADD CONSTRAINT contact_email_holds_tenant_event_fkey
            FOREIGN KEY (tenant_id, event_id) REFERENCES public.inbound_mail_events (tenant_id, id)
            ON DELETE SET NULL (event_id);
    END IF;
END
$$;

-- Re-key each agent table whose primary key lacks tenant_id. A foreign key some other
-- (host) table holds on that key would be dropped with it: such a table is left as it is,
-- with a warning, rather than losing the host's constraint.
DO $$
DECLARE
    v_table text;
    v_pkey name;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['agent_alerts', 'agent_hourly_reflections', 'agent_policy_violations',
        'agent_rate_limits', 'agent_switch_log', 'agent_tenant_locks', 'contact_email_holds', 'engagement_clocks',
        'inbound_mail_events', 'order_processing_exceptions', 'order_processing_queue'] LOOP
        CONTINUE WHEN pg_catalog.to_regclass('public.' || v_table) IS NULL;
        SELECT k.conname INTO v_pkey FROM pg_catalog.pg_constraint k
        WHERE k.conrelid = ('public.' || v_table)::regclass AND k.contype = 'p'
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                          WHERE a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) AND a.attname = 'tenant_id');
        CONTINUE WHEN v_pkey IS NULL;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f
                   WHERE f.contype = 'f' AND f.conindid = (SELECT k.conindid FROM pg_catalog.pg_constraint k
                                                          WHERE k.conrelid = ('public.' || v_table)::regclass
                                                            AND k.conname = v_pkey)) THEN
            RAISE WARNING '%: a foreign key references its primary key (id); key left as it is', v_table;
            CONTINUE;
        END IF;
        EXECUTE pg_catalog.format('ALTER TABLE public.%I DROP CONSTRAINT %I, ADD CONSTRAINT %I PRIMARY KEY (id, tenant_id)',
                                  v_table, v_pkey, v_pkey);
    END LOOP;
END
$$;
