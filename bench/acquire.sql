-- pgbench script: 64 callers racing for random tenants' leases with acquire_tenant_lock
-- (one statement per transaction, never released: after the first call per tenant every
-- call finds the lease held and returns NULL). Run with -M extended and -D tenants=N.
\set n random(1, :tenants)
SELECT public.acquire_tenant_lock(md5('bench-tenant-' || :n)::uuid, 'pgbench', 1);
