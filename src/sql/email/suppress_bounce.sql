INSERT INTO public.email_suppressions (tenant_id, email, reason, created_at)
SELECT $1, lower($2), 'bounce', $3
 WHERE NOT EXISTS (SELECT 1 FROM public.email_suppressions s
                    WHERE s.tenant_id = $1 AND lower(s.email) = lower($2))
