-- What the server says about this session: version, database, user, TLS, address.
SELECT current_setting('server_version'), current_setting('server_version_num')::int,
       current_database(), current_user::text,
       COALESCE(s.ssl, false), s.version,
       inet_server_addr()::text, inet_server_port()
FROM (SELECT 1) one
LEFT JOIN pg_catalog.pg_stat_ssl s ON s.pid = pg_catalog.pg_backend_pid()
