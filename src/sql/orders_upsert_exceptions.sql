-- One row per finding; (tenant_id, order_id, code) is the idempotency key. A finding seen again is
-- refreshed and reopened (it applies again), keeping its first created_at.
INSERT INTO public.order_processing_exceptions
    (tenant_id, order_id, queue_id, exception_type, severity, code, field, message, details,
     created_at, updated_at)
SELECT f.tenant_id, f.order_id, f.queue_id, f.exception_type, f.severity, f.code, f.field,
       f.message, f.details, $10::timestamptz, $10::timestamptz
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::jsonb[])
     AS f (tenant_id, order_id, queue_id, exception_type, severity, code, field, message, details)
ON CONFLICT (tenant_id, order_id, code) DO UPDATE
SET queue_id = EXCLUDED.queue_id,
    exception_type = EXCLUDED.exception_type,
    severity = EXCLUDED.severity,
    field = EXCLUDED.field,
    message = EXCLUDED.message,
    details = EXCLUDED.details,
    resolved = false,
    resolved_at = NULL,
    resolved_by = NULL,
    updated_at = EXCLUDED.updated_at
