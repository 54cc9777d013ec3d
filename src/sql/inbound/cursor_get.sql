SELECT last_at, last_id FROM public.inbound_mail_cursors WHERE tenant_id = $1 AND source = $2
