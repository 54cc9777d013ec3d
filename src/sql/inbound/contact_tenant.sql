SELECT tenant_id FROM public.contacts WHERE id = $1
