SELECT id FROM public.tenants WHERE id = ANY($1)
