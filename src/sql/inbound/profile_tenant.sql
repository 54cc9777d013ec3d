SELECT tenant_id FROM public.profiles WHERE id = $1
