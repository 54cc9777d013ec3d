-- One row per inbound message and tenant: a second ingestion of the same message finds the
-- row (or waits for a concurrent first one to commit) and changes nothing.
INSERT INTO public.inbound_mail_events
    (tenant_id, source, message_key, kind, card_id, contact_id, email, status, details, received_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
ON CONFLICT (tenant_id, message_key) DO NOTHING
RETURNING id
