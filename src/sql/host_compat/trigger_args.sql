SELECT t.tgargs FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = to_regclass($1) AND t.tgname = $2
