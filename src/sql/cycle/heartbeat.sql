SELECT public.extend_tenant_lease($1, $2, make_interval(secs => $3))
