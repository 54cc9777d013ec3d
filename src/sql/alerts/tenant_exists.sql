SELECT EXISTS (SELECT 1 FROM public.tenants WHERE id = $1)
