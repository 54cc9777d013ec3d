SELECT EXISTS (SELECT 1 FROM public.email_suppressions s
  WHERE s.tenant_id = $1
    AND ((s.email IS NOT NULL AND lower(s.email) = lower($2)) OR (s.contact_id IS NOT NULL AND s.contact_id = $3)))
  OR EXISTS (SELECT 1 FROM public.contact_email_holds h
  WHERE h.tenant_id = $1 AND h.resumed_at IS NULL
    AND (lower(h.email) = lower($2) OR (h.contact_id IS NOT NULL AND h.contact_id = $3)))
