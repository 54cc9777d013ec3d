-- The server's version, whether it is a standby, and whether this session uses TLS (sent
-- as a simple query: text results, no statement kept).
SELECT pg_catalog.current_setting('server_version'), pg_catalog.pg_is_in_recovery()::text,
       (SELECT ssl::text FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid())
