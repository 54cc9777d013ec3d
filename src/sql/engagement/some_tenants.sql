SELECT id, name FROM public.tenants WHERE id = ANY($1) ORDER BY id
