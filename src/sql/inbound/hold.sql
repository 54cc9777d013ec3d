-- The contact replied: automatic e-mail to it stops until a person resumes it.
INSERT INTO public.contact_email_holds (tenant_id, contact_id, email, reason, replied_at, event_id, created_at)
VALUES ($1, $2, lower($3), 'replied', $4, $5, $4)
ON CONFLICT (tenant_id, lower(email)) WHERE resumed_at IS NULL DO NOTHING
RETURNING id
