-- Whether public.<$1>.run_id has a foreign key to a table other than agent_autonomous_runs
-- (Salesmod: its own agent_runs), so an agent run id cannot be stored there.
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_constraint k
    JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey)
    WHERE k.conrelid = to_regclass('public.' || quote_ident($1::text)) AND k.contype = 'f'
      AND a.attname = 'run_id'
      AND k.confrelid IS DISTINCT FROM to_regclass('public.agent_autonomous_runs')::oid
)
