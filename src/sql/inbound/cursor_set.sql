INSERT INTO public.inbound_mail_cursors (tenant_id, source, last_at, last_id, updated_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id, source)
DO UPDATE SET last_at = EXCLUDED.last_at, last_id = EXCLUDED.last_id, updated_at = EXCLUDED.updated_at
