-- Record what the migration ($1 = version) created since the snapshot, and that it ran.
INSERT INTO public.autopilot_migration_objects (kind, identity, version)
SELECT x.kind, x.identity, $1::bigint
FROM (
    SELECT 'relation'::text AS kind, c.oid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS identity
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname IN ('public', 'auth') AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    UNION ALL
    SELECT 'function', p.oid,
           pg_catalog.format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes))
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname IN ('public', 'auth')
    UNION ALL
    SELECT 'migration', NULL::oid, $1::bigint::text
) x
WHERE x.kind = 'migration'
   OR NOT EXISTS (SELECT 1 FROM pg_temp.autopilot_objects_before b WHERE b.kind = x.kind AND b.oid = x.oid)
ON CONFLICT (kind, identity) DO NOTHING
