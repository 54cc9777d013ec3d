-- The fence: raises AP001 unless the run holds the tenant's unexpired lease, and locks the
-- lease row (KEY SHARE) until the transaction ends.
SELECT public.assert_tenant_lease($1, $2)
