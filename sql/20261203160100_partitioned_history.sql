-- Partitioned history (issue 16): agent_autonomous_runs by UTC month of started_at,
-- email_provider_failures by UTC week (Monday) of created_at, with PostgreSQL's declarative
-- partitioning (no pg_partman). `prune` creates the next partitions ahead and drops whole
-- partitions past retention (agent_history_ensure_partitions / agent_history_drop_partitions).
--
-- Layout: the partitions live in schema autopilot_history, which no API role may use: the
-- tables are read and written through their parents in public, whose grants and row-level
-- security apply (a partition is never reachable directly by anon or authenticated). Each
-- parent has a DEFAULT partition: it holds rows outside every monthly/weekly range (a
-- timestamp far in the past or future) and the few runs prune must keep after their month
-- is dropped (running, leased, or a tenant's latest run). It stays small.
--
-- Keys: a primary key or unique constraint of a partitioned table must contain the
-- partition key. agent_autonomous_runs: PRIMARY KEY (tenant_id, id, started_at), plus a
-- plain index on (id) for lookups by id; email_provider_failures: PRIMARY KEY (tenant_id,
-- id, created_at). (tenant_id, cycle_number) can no longer be a unique constraint: it
-- becomes an index plus a trigger that refuses a duplicate (runs of a tenant are only
-- created under its lease row's lock, so the check cannot race).
--
-- Foreign keys to runs: agent_tenant_locks, agent_policy_violations,
-- agent_hourly_reflections and kanban_cards referenced agent_autonomous_runs (tenant_id,
-- id). A foreign key to a partitioned table must name its whole unique key, i.e. carry
-- started_at in every referencing row: every writer of those run ids (the lease functions,
-- the cycle, the host's own card writers) would have to know the run's start time, and a
-- partition could not be dropped while rows elsewhere reference it. Instead each such key
-- becomes a constraint trigger of the same name that checks, on insert and on update of
-- the reference, that the run exists for the row's tenant (deferred where the key was).
-- What is given up is the action on delete (CASCADE / SET NULL): prune deletes a run's
-- reflections before the run and never prunes a leased run, so a violation's or a card's
-- run_id is what may name a pruned run (history outlives its run). See docs/scale.md.
--
-- Conversion: each table is rebuilt as a partitioned table under the same name, every row
-- moved (the counts are compared before the old table is dropped), then its indexes,
-- outgoing foreign keys, triggers, policies, grants and dependent views are recreated from
-- what the catalog held.

CREATE SCHEMA IF NOT EXISTS autopilot_history;
REVOKE ALL ON SCHEMA autopilot_history FROM PUBLIC;

-- Partition bounds ------------------------------------------------------------------------

-- The partitioned history tables, their key, period and how far ahead partitions exist.
CREATE OR REPLACE FUNCTION public.agent_history_tables()
RETURNS TABLE (parent regclass, key_column name, period text, ahead interval)
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $$
    VALUES ('public.agent_autonomous_runs'::regclass, 'started_at'::name, 'month', interval '3 months'),
           ('public.email_provider_failures'::regclass, 'created_at'::name, 'week', interval '4 weeks')
$$;

-- Start of the UTC period (month, or ISO week starting Monday) containing p_at.
CREATE OR REPLACE FUNCTION public.agent_history_period_start(p_period text, p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $$
    SELECT pg_catalog.date_trunc(p_period, p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- The range partitions of a parent with their bounds (the DEFAULT partition excluded).
CREATE OR REPLACE FUNCTION public.agent_history_partitions(p_parent regclass)
RETURNS TABLE (partition regclass, range_from timestamptz, range_to timestamptz)
LANGUAGE sql STABLE
SET search_path = ''
SET TimeZone = 'UTC'
AS $$
    SELECT c.oid::regclass,
           pg_catalog.substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)')::timestamptz,
           pg_catalog.substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)')::timestamptz
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = p_parent
      AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
    ORDER BY 2
$$;

-- Name a partition's indexes after the parent's (`<index>_p2026_12`, `<index>_default`),
-- so a plan names the index it reads by the name the schema documents.
CREATE OR REPLACE FUNCTION public.agent_history_name_indexes(p_partition regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_suffix text;
    r record;
BEGIN
    SELECT pg_catalog.substring(c.relname, '_(p[0-9_]+|default)$') INTO v_suffix
    FROM pg_catalog.pg_class c WHERE c.oid = p_partition;
    FOR r IN SELECT ci.oid::regclass AS idx, pc.relname AS parent_name, ci.relname AS name
             FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
             JOIN pg_catalog.pg_inherits h ON h.inhrelid = i.indexrelid
             JOIN pg_catalog.pg_class pc ON pc.oid = h.inhparent
             WHERE i.indrelid = p_partition LOOP
        IF r.name <> r.parent_name || '_' || v_suffix THEN
            EXECUTE pg_catalog.format('ALTER INDEX %s RENAME TO %I', r.idx, r.parent_name || '_' || v_suffix);
        END IF;
    END LOOP;
END
$$;

-- Create the partition of p_parent for the period starting at p_from (nothing when it
-- exists). Rows of that range already in the DEFAULT partition move into it, so creating a
-- partition never fails on rows written before it existed. Returns the partition created.
CREATE OR REPLACE FUNCTION public.agent_history_create_partition(p_parent regclass, p_from timestamptz)
RETURNS regclass
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_key name;
    v_period text;
    v_to timestamptz;
    v_name text;
    v_default regclass;
    v_rel regclass;
BEGIN
    SELECT h.key_column, h.period INTO v_key, v_period
    FROM public.agent_history_tables() h WHERE h.parent = p_parent;
    IF v_key IS NULL THEN
        RAISE EXCEPTION '% is not a partitioned history table', p_parent;
    END IF;
    p_from := public.agent_history_period_start(v_period, p_from);
    v_to := p_from + CASE v_period WHEN 'month' THEN interval '1 month' ELSE interval '1 week' END;
    IF EXISTS (SELECT 1 FROM public.agent_history_partitions(p_parent) p
               WHERE p.range_from < v_to AND p.range_to > p_from) THEN
        RETURN NULL;
    END IF;
    SELECT c.relname || CASE v_period WHEN 'month' THEN pg_catalog.to_char(p_from, '"_p"YYYY_MM')
                                      ELSE pg_catalog.to_char(p_from, '"_p"YYYY_MM_DD') END
    INTO v_name FROM pg_catalog.pg_class c WHERE c.oid = p_parent;
    SELECT i.inhrelid::regclass INTO v_default
    FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = p_parent AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';

    EXECUTE pg_catalog.format('CREATE TABLE autopilot_history.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                              v_name, p_parent);
    v_rel := pg_catalog.format('autopilot_history.%I', v_name)::regclass;
    IF v_default IS NOT NULL THEN
        EXECUTE pg_catalog.format(
            'WITH moved AS (DELETE FROM %s WHERE %I >= %L AND %I < %L RETURNING *) INSERT INTO %s SELECT * FROM moved',
            v_default, v_key, p_from, v_key, v_to, v_rel);
    END IF;
    EXECUTE pg_catalog.format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                              p_parent, v_rel, p_from, v_to);
    PERFORM public.agent_history_name_indexes(v_rel);
    -- Reached only through the parent: no direct right for anyone but the owner.
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC, anon, authenticated, service_role', v_rel);
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_rel);
    RETURN v_rel;
END
$$;

-- Partitions from the period of p_now up to p_now + the table's `ahead`, for every
-- partitioned history table. Returns the partitions it created.
CREATE OR REPLACE FUNCTION public.agent_history_ensure_partitions(p_now timestamptz)
RETURNS SETOF regclass
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET TimeZone = 'UTC'
SET lock_timeout = '5s'
AS $$
DECLARE
    h record;
    v_at timestamptz;
    v_rel regclass;
BEGIN
    FOR h IN SELECT t.* FROM public.agent_history_tables() t
             JOIN pg_catalog.pg_class c ON c.oid = t.parent WHERE c.relkind = 'p' LOOP
        v_at := public.agent_history_period_start(h.period, p_now);
        WHILE v_at <= p_now + h.ahead LOOP
            v_rel := public.agent_history_create_partition(h.parent, v_at);
            IF v_rel IS NOT NULL THEN
                RETURN NEXT v_rel;
            END IF;
            v_at := v_at + CASE h.period WHEN 'month' THEN interval '1 month' ELSE interval '1 week' END;
        END LOOP;
    END LOOP;
END
$$;

-- Drop every range partition whose whole range lies before p_cutoff. Rows prune must keep
-- move to the DEFAULT partition first (runs: running, leased, a tenant's latest, or
-- finished after the cutoff; the same rule as prune's row delete). Returns per table the
-- rows removed. A partition whose lock is not granted within lock_timeout is left for the
-- next prune (its rows are then deleted row by row).
CREATE OR REPLACE FUNCTION public.agent_history_drop_partitions(p_cutoff timestamptz)
RETURNS TABLE (table_name text, partitions_dropped integer, rows_removed bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET TimeZone = 'UTC'
SET lock_timeout = '5s'
AS $$
DECLARE
    h record;
    p record;
    v_total bigint;
    v_kept bigint;
    v_keep text;
BEGIN
    FOR h IN SELECT * FROM public.agent_history_tables() LOOP
        table_name := (SELECT c.relname::text FROM pg_catalog.pg_class c WHERE c.oid = h.parent);
        rows_removed := 0;
        partitions_dropped := 0;
        v_keep := CASE WHEN h.parent = 'public.agent_autonomous_runs'::regclass THEN
            'r.status = ''running'' OR COALESCE(r.completed_at, r.started_at) >= $1
             OR EXISTS (SELECT 1 FROM public.agent_tenant_locks l WHERE l.run_id = r.id)
             OR r.cycle_number >= (SELECT max(x.cycle_number) FROM (
                    SELECT r2.cycle_number FROM public.agent_autonomous_runs r2 WHERE r2.tenant_id = r.tenant_id
                    UNION ALL SELECT r3.cycle_number FROM %2$s r3 WHERE r3.tenant_id = r.tenant_id) x)'
            ELSE 'false' END;
        FOR p IN SELECT * FROM public.agent_history_partitions(h.parent) WHERE range_to <= p_cutoff LOOP
            BEGIN
                EXECUTE pg_catalog.format('SELECT count(*) FROM %s', p.partition) INTO v_total;
                EXECUTE pg_catalog.format('ALTER TABLE %s DETACH PARTITION %s', h.parent, p.partition);
                EXECUTE pg_catalog.format('INSERT INTO %s SELECT r.* FROM %s r WHERE ' || v_keep,
                                          h.parent, p.partition) USING p_cutoff;
                GET DIAGNOSTICS v_kept = ROW_COUNT;
                EXECUTE pg_catalog.format('DROP TABLE %s', p.partition);
                rows_removed := rows_removed + v_total - v_kept;
                partitions_dropped := partitions_dropped + 1;
            EXCEPTION WHEN lock_not_available THEN
                RAISE WARNING 'partition % is busy; left for the next prune', p.partition;
            END;
        END LOOP;
        RETURN NEXT;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION public.agent_history_name_indexes(regclass) FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION public.agent_history_tables(), public.agent_history_period_start(text, timestamptz),
    public.agent_history_partitions(regclass), public.agent_history_create_partition(regclass, timestamptz),
    public.agent_history_ensure_partitions(timestamptz), public.agent_history_drop_partitions(timestamptz)
FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.agent_history_tables(), public.agent_history_period_start(text, timestamptz),
    public.agent_history_partitions(regclass), public.agent_history_ensure_partitions(timestamptz),
    public.agent_history_drop_partitions(timestamptz)
TO service_role;

-- References to a run ----------------------------------------------------------------------

-- What the foreign keys to agent_autonomous_runs checked on write, as constraint triggers of
-- the same names (see the header): the run a row names must exist for the row's tenant.
-- TG_ARGV: the referenced table, the tenant column, the reference column. SECURITY DEFINER
-- like a foreign key's own check, which does not depend on the writer's row-level security.
CREATE OR REPLACE FUNCTION public.agent_history_check_reference()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    v_row jsonb := pg_catalog.to_jsonb(NEW);
    v_tenant uuid := (v_row ->> TG_ARGV[1])::uuid;
    v_ref uuid := (v_row ->> TG_ARGV[2])::uuid;
    v_found boolean;
BEGIN
    IF v_tenant IS NULL OR v_ref IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %s r WHERE r.tenant_id = $1 AND r.id = $2)', TG_ARGV[0])
        INTO v_found USING v_tenant, v_ref;
    IF NOT v_found THEN
        -- A deferred check of a row deleted or changed since (a lease taken and given back in
        -- one transaction) has nothing to check, as with a foreign key.
        EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %I.%I t WHERE t.id = $1 AND t.%I = $2 AND t.%I = $3)',
                                  TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[1], TG_ARGV[2])
            INTO v_found USING (v_row ->> 'id')::uuid, v_tenant, v_ref;
        IF NOT v_found THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%"', TG_TABLE_NAME, TG_NAME
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = TG_NAME, TABLE = TG_TABLE_NAME,
                  DETAIL = pg_catalog.format('Key (%s, %s)=(%s, %s) is not present in table %s.',
                                             TG_ARGV[1], TG_ARGV[2], v_tenant, v_ref, TG_ARGV[0]);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION public.agent_history_check_reference() FROM PUBLIC, anon, authenticated;

-- Conversion ------------------------------------------------------------------------------

-- Rebuild public.<p_table> as a table partitioned by range on p_key with primary key
-- p_pk, moving every row. Unique constraints other than the new primary key become plain
-- indexes unless named in p_drop (covered by the new key). Partitions: DEFAULT plus one per
-- period from the oldest row (at most p_back before now) to now + ahead.
CREATE OR REPLACE FUNCTION pg_temp.partition_history(p_table text, p_key text, p_pk text, p_drop text[], p_back interval)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_old regclass := pg_catalog.format('public.%I', p_table)::regclass;
    v_new regclass;
    v_indexes text[];
    v_fkeys text[];
    v_triggers text[];
    v_policies text[];
    v_grants text[];
    v_views text[];
    v_view_grants text[];
    v_refs text[];
    v_rls boolean;
    v_force boolean;
    v_min timestamptz;
    v_at timestamptz;
    v_period text;
    v_before bigint;
    v_after bigint;
    s text;
BEGIN
    IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = v_old) = 'p' THEN
        RETURN;
    END IF;
    SELECT h.period INTO v_period FROM public.agent_history_tables() h WHERE h.parent = v_old;

    -- What the catalog holds about the old table, as statements naming public.<p_table>.
    SELECT coalesce(array_agg(CASE WHEN i.indisunique THEN pg_catalog.replace(pg_catalog.pg_get_indexdef(i.indexrelid),
                                                                             'CREATE UNIQUE INDEX', 'CREATE INDEX')
                                   ELSE pg_catalog.pg_get_indexdef(i.indexrelid) END), '{}')
    INTO v_indexes
    FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
    WHERE i.indrelid = v_old AND NOT (ic.relname = ANY (p_drop));
    SELECT coalesce(array_agg(pg_catalog.format('ALTER TABLE public.%I ADD CONSTRAINT %I %s', p_table, k.conname,
                                                pg_catalog.pg_get_constraintdef(k.oid))), '{}')
    INTO v_fkeys
    FROM pg_catalog.pg_constraint k WHERE k.conrelid = v_old AND k.contype = 'f';
    SELECT coalesce(array_agg(pg_catalog.pg_get_triggerdef(t.oid)), '{}') INTO v_triggers
    FROM pg_catalog.pg_trigger t WHERE t.tgrelid = v_old AND NOT t.tgisinternal;
    SELECT coalesce(array_agg(pg_catalog.format('CREATE POLICY %I ON public.%I AS %s FOR %s TO %s%s%s',
               p.polname, p_table,
               CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                             WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
               (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r)) END, ', ')
                FROM unnest(p.polroles) r),
               CASE WHEN p.polqual IS NULL THEN '' ELSE ' USING (' || pg_catalog.pg_get_expr(p.polqual, p.polrelid) || ')' END,
               CASE WHEN p.polwithcheck IS NULL THEN '' ELSE ' WITH CHECK (' || pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) || ')' END)), '{}')
    INTO v_policies
    FROM pg_catalog.pg_policy p WHERE p.polrelid = v_old;
    SELECT coalesce(array_agg(pg_catalog.format('GRANT %s ON public.%I TO %s', a.privilege_type, p_table,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END)), '{}')
    INTO v_grants
    FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
    WHERE c.oid = v_old AND a.grantee <> c.relowner;
    -- Views reading the table directly (a view on such a view makes DROP VIEW fail: the
    -- migration then stops with the name of that view, and nothing has changed).
    SELECT coalesce(array_agg(pg_catalog.format('CREATE VIEW %s%s AS %s', v.oid::regclass,
               CASE WHEN v.reloptions IS NULL THEN '' ELSE ' WITH (' || pg_catalog.array_to_string(v.reloptions, ', ') || ')' END,
               pg_catalog.pg_get_viewdef(v.oid))), '{}'),
           coalesce(array_agg(v.oid::regclass::text), '{}')
    INTO v_views, v_view_grants
    FROM pg_catalog.pg_class v
    WHERE v.relkind = 'v' AND v.oid IN (
        SELECT rw.ev_class FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refobjid = v_old AND rw.ev_class <> v_old);
    SELECT coalesce(array_agg(s2), '{}') INTO v_view_grants FROM (
        SELECT pg_catalog.format('GRANT %s ON %s TO %s', a.privilege_type, v.oid::regclass,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END) AS s2
        FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
        WHERE v.oid::regclass::text = ANY (v_view_grants) AND a.grantee <> v.relowner) g;
    SELECT c.relrowsecurity, c.relforcerowsecurity INTO v_rls, v_force FROM pg_catalog.pg_class c WHERE c.oid = v_old;

    -- Foreign keys referencing it (on (tenant_id, id)) become constraint triggers.
    SELECT coalesce(array_agg(pg_catalog.format(
               'CREATE CONSTRAINT TRIGGER %I AFTER INSERT OR UPDATE OF %I, %I ON %s %s FOR EACH ROW '
               'EXECUTE FUNCTION public.agent_history_check_reference(%L, %L, %L)',
               k.conname, ta.attname, ra.attname, k.conrelid::regclass,
               CASE WHEN k.condeferrable AND k.condeferred THEN 'DEFERRABLE INITIALLY DEFERRED'
                    WHEN k.condeferrable THEN 'DEFERRABLE' ELSE '' END,
               pg_catalog.format('public.%I', p_table), ta.attname, ra.attname)), '{}')
    INTO v_refs
    FROM pg_catalog.pg_constraint k
    JOIN pg_catalog.pg_attribute ta ON ta.attrelid = k.conrelid AND ta.attnum = k.conkey[1]
    JOIN pg_catalog.pg_attribute ra ON ra.attrelid = k.conrelid AND ra.attnum = k.conkey[2]
    WHERE k.confrelid = v_old AND k.contype = 'f' AND k.conrelid <> v_old
      AND pg_catalog.array_length(k.conkey, 1) = 2 AND ta.attname = 'tenant_id';

    -- Out of the way: views reading it, foreign keys referencing it.
    FOR s IN SELECT pg_catalog.format('DROP VIEW %s', v.oid::regclass)
             FROM pg_catalog.pg_class v
             WHERE v.relkind = 'v' AND v.oid IN (
                 SELECT rw.ev_class FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid
                 WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refobjid = v_old AND rw.ev_class <> v_old) LOOP
        EXECUTE s;
    END LOOP;
    FOR s IN SELECT pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', k.conrelid::regclass, k.conname)
             FROM pg_catalog.pg_constraint k WHERE k.confrelid = v_old AND k.contype = 'f' AND k.conrelid <> v_old LOOP
        EXECUTE s;
    END LOOP;

    EXECUTE pg_catalog.format('ALTER TABLE public.%I RENAME TO %I', p_table, p_table || '_unpartitioned');
    EXECUTE pg_catalog.format(
        'CREATE TABLE public.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (%I)',
        p_table, v_old, p_key);
    v_new := pg_catalog.format('public.%I', p_table)::regclass;
    EXECUTE pg_catalog.format('CREATE TABLE autopilot_history.%I PARTITION OF %s DEFAULT', p_table || '_default', v_new);
    EXECUTE pg_catalog.format('REVOKE ALL ON autopilot_history.%I FROM PUBLIC, anon, authenticated, service_role', p_table || '_default');
    EXECUTE pg_catalog.format('ALTER TABLE autopilot_history.%I ENABLE ROW LEVEL SECURITY', p_table || '_default');
    EXECUTE pg_catalog.format('SELECT min(%I) FROM %s', p_key, v_old) INTO v_min;
    v_at := public.agent_history_period_start(v_period, greatest(coalesce(v_min, now()), now() - p_back));
    WHILE v_at <= now() + (SELECT h.ahead FROM public.agent_history_tables() h WHERE h.parent = v_new) LOOP
        PERFORM public.agent_history_create_partition(v_new, v_at);
        v_at := v_at + CASE v_period WHEN 'month' THEN interval '1 month' ELSE interval '1 week' END;
    END LOOP;

    EXECUTE pg_catalog.format('INSERT INTO %s SELECT * FROM %s', v_new, v_old);
    EXECUTE pg_catalog.format('SELECT count(*) FROM %s', v_old) INTO v_before;
    EXECUTE pg_catalog.format('SELECT count(*) FROM %s', v_new) INTO v_after;
    IF v_before <> v_after THEN
        RAISE EXCEPTION 'partitioning %: % rows before, % after', p_table, v_before, v_after;
    END IF;
    EXECUTE pg_catalog.format('DROP TABLE %s', v_old);

    EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY (%s)', v_new, p_table || '_pkey', p_pk);
    FOREACH s IN ARRAY v_indexes LOOP
        EXECUTE s;
    END LOOP;
    FOREACH s IN ARRAY v_fkeys LOOP
        BEGIN
            EXECUTE s;
        EXCEPTION WHEN foreign_key_violation THEN
            -- It was NOT VALID on the old table (rows predating it); a partitioned table
            -- cannot hold a NOT VALID key, so the rule goes until those rows are pruned.
            RAISE WARNING 'partitioning %: % not recreated, existing rows violate it', p_table, s;
        END;
    END LOOP;
    FOREACH s IN ARRAY v_triggers LOOP
        EXECUTE s;
    END LOOP;
    IF v_rls THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_new);
    END IF;
    IF v_force THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', v_new);
    END IF;
    FOREACH s IN ARRAY v_policies LOOP
        EXECUTE s;
    END LOOP;
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', v_new);
    FOREACH s IN ARRAY v_grants LOOP
        EXECUTE s;
    END LOOP;
    FOREACH s IN ARRAY v_views LOOP
        EXECUTE s;
    END LOOP;
    FOREACH s IN ARRAY v_view_grants LOOP
        EXECUTE s;
    END LOOP;
    FOREACH s IN ARRAY v_refs LOOP
        EXECUTE s;
    END LOOP;
    FOR s IN SELECT i.inhrelid::regclass::text FROM pg_catalog.pg_inherits i WHERE i.inhparent = v_new LOOP
        PERFORM public.agent_history_name_indexes(s::regclass);
    END LOOP;
    EXECUTE pg_catalog.format('ANALYZE %s', v_new);
END $$;

SELECT pg_temp.partition_history('agent_autonomous_runs', 'started_at', 'tenant_id, id, started_at',
                                 ARRAY['agent_autonomous_runs_pkey', 'agent_autonomous_runs_tenant_id_id_key'],
                                 interval '13 months');
CREATE INDEX IF NOT EXISTS agent_runs_id_idx ON public.agent_autonomous_runs (id);
SELECT public.agent_history_name_indexes(i.inhrelid::regclass)
FROM pg_catalog.pg_inherits i WHERE i.inhparent = 'public.agent_autonomous_runs'::regclass;

SELECT pg_temp.partition_history('email_provider_failures', 'created_at', 'tenant_id, id, created_at',
                                 ARRAY['email_provider_failures_pkey'], interval '27 weeks');

-- One cycle number per tenant (was UNIQUE (tenant_id, cycle_number), which a partitioned
-- table cannot enforce across partitions). The unique index of old is now the plain index
-- agent_autonomous_runs_tenant_cycle_key, which this check reads.
CREATE OR REPLACE FUNCTION public.agent_runs_unique_cycle()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM public.agent_autonomous_runs r
               WHERE r.tenant_id = NEW.tenant_id AND r.cycle_number = NEW.cycle_number
                 AND (r.id, r.started_at) IS DISTINCT FROM (NEW.id, NEW.started_at)) THEN
        RAISE EXCEPTION 'duplicate key value violates unique constraint "agent_autonomous_runs_tenant_cycle_key"'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'agent_autonomous_runs_tenant_cycle_key',
                  DETAIL = pg_catalog.format('Key (tenant_id, cycle_number)=(%s, %s) already exists.',
                                             NEW.tenant_id, NEW.cycle_number);
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION public.agent_runs_unique_cycle() FROM PUBLIC, anon, authenticated;
DROP TRIGGER IF EXISTS agent_autonomous_runs_unique_cycle ON public.agent_autonomous_runs;
CREATE TRIGGER agent_autonomous_runs_unique_cycle
    BEFORE INSERT OR UPDATE OF tenant_id, cycle_number ON public.agent_autonomous_runs
    FOR EACH ROW EXECUTE FUNCTION public.agent_runs_unique_cycle();
