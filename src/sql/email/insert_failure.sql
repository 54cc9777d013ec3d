INSERT INTO public.email_provider_failures
  (tenant_id, error_type, error_message, smtp_code, card_id, provider, created_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7)
