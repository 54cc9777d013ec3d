SELECT public.acquire_tenant_lease_in_window($1, $2, make_interval(secs => $3), $4, $5, $6, now())
