SELECT public.release_tenant_lease($1, $2, $3, $4)
