-- A person resumes automatic e-mail to a contact: every open hold of the contact or of its
-- address ends.
UPDATE public.contact_email_holds h
SET resumed_at = $3, resumed_by = $4, resume_note = $5
FROM public.contacts ct
WHERE ct.id = $1 AND h.tenant_id = ct.tenant_id AND h.resumed_at IS NULL
  AND (h.contact_id = ct.id OR lower(h.email) = lower(btrim(ct.email)))
  AND ($2::uuid IS NULL OR ct.tenant_id = $2)
RETURNING h.id
