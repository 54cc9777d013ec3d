-- Foreign keys of public.<$1>: name, its columns, the referenced table's name.
SELECT k.conname::text,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) ORDER BY a.attnum),
       c.relname::text
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.confrelid
WHERE k.conrelid = to_regclass('public.' || quote_ident($1::text)) AND k.contype = 'f'
ORDER BY k.conname
