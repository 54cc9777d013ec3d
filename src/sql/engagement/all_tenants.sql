SELECT id, name FROM public.tenants ORDER BY id
