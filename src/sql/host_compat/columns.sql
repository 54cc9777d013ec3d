-- The live columns of public.<$1>: name, NOT NULL, whether the server fills it (default,
-- identity or generated), type. No rows when the table does not exist.
SELECT a.attname::text,
       a.attnotnull,
       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
       pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = to_regclass('public.' || quote_ident($1::text))
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
