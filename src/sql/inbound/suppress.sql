-- Suppress an address (case-insensitively, once); $2 names the contact for a complaint.
INSERT INTO public.email_suppressions (tenant_id, contact_id, email, reason, created_at)
SELECT $1, $2, lower($3), $4, $5
WHERE NOT EXISTS (SELECT 1 FROM public.email_suppressions s
                  WHERE s.tenant_id = $1 AND lower(s.email) = lower($3))
