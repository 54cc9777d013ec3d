-- The columns of a host table, when the table exists (no rows when it does not).
SELECT a.attname::text
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
