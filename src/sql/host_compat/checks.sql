-- CHECK constraints of public.<$1>: name, definition, the columns it reads.
SELECT k.conname::text,
       pg_catalog.pg_get_constraintdef(k.oid),
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) ORDER BY a.attnum)
FROM pg_catalog.pg_constraint k
WHERE k.conrelid = to_regclass('public.' || quote_ident($1::text)) AND k.contype = 'c'
ORDER BY k.conname
