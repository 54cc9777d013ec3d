-- The ids a host table's legacy `org_id` may hold for a tenant: the tenant itself, its
-- owner's profile and every profile of the tenant (Salesmod's `org_id` references
-- `profiles(id)`). `tenants.owner_id` is the host's column (absent without a host), so it is
-- read through the row's json.
SELECT DISTINCT x.id
FROM (
    SELECT $1::uuid::text AS id
    UNION ALL
    SELECT to_jsonb(t) ->> 'owner_id' FROM public.tenants t WHERE t.id = $1::uuid
    UNION ALL
    SELECT p.id::text FROM public.profiles p WHERE p.tenant_id = $1::uuid
) x
WHERE x.id IS NOT NULL
