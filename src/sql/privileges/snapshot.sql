-- The tables, views, sequences and functions that exist before a migration file runs
-- (dropped with the file's transaction: ON COMMIT DROP, and a rollback drops it too).
CREATE TEMP TABLE autopilot_objects_before ON COMMIT DROP AS
SELECT 'relation'::text AS kind, c.oid
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('public', 'auth') AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
UNION ALL
SELECT 'function', p.oid
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('public', 'auth');
