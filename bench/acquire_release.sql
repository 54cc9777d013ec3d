-- pgbench script: take a random tenant's lease with the original signature
-- (acquire_tenant_lock, the contested call of SPEC §3), then give it back when it was won,
-- so that both the winning and the "lease held" paths are exercised. Tenant i has id
-- md5('bench-tenant-' || i)::uuid (bench/generate.sql). Run with -M extended and
-- -D tenants=N. A transaction's latency (acquire + release) bounds the acquire's.
\set n random(1, :tenants)
SELECT public.acquire_tenant_lock(md5('bench-tenant-' || :n)::uuid, 'pgbench', 1) AS run \gset
SELECT public.release_tenant_lock(md5('bench-tenant-' || :n)::uuid, nullif(:run, '')::uuid);
