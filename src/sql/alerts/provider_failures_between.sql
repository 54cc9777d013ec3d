-- A tenant's e-mail provider failures in (since, until].
SELECT count(*) FROM public.email_provider_failures
WHERE tenant_id = $1 AND created_at > $2 AND created_at <= $3
