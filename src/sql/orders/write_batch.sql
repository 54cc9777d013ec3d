-- Everything a validated batch writes, as one statement (its parts see the same snapshot and
-- touch disjoint rows):
-- * fixed: the auto-fixes, applied only where the order still has the values validation
--   read (the orders are not locked; a person editing one meanwhile wins, and the caller
--   sees fewer fixes than it sent and retries the batch);
-- * resolved: the agent's findings ($21 codes) that no longer apply, for the orders that had
--   open findings ($10) — first validations skip it;
-- * recorded: one row per finding, idempotent on (order_id, code) (a tenant-scoped key
--   would be (tenant_id, order_id, code): only the conflict target changes); a finding seen
--   again is refreshed and reopened, keeping its first created_at;
-- * done: the outcome on each entry, its only write (attempts counts validations).
-- Returns how many fixes and entries were written.
WITH fixed AS (
    UPDATE public.orders o
    SET total_amount = f.total_amount, tech_fee = f.tech_fee
    FROM unnest($7::uuid[], $8::numeric[], $9::numeric[], $22::numeric[], $23::numeric[])
         AS f (id, total_amount, tech_fee, old_total, old_tech)
    WHERE o.id = f.id
      AND o.total_amount::numeric IS NOT DISTINCT FROM f.old_total
      AND o.tech_fee::numeric IS NOT DISTINCT FROM f.old_tech
    RETURNING 1
),
resolved AS (
    UPDATE public.order_processing_exceptions e
    SET resolved = true, resolved_at = $20::timestamptz, updated_at = $20::timestamptz
    WHERE e.order_id = ANY ($10::uuid[])
      AND NOT e.resolved
      AND e.code = ANY ($21::text[])
      AND NOT EXISTS (
          SELECT 1 FROM unnest($12::uuid[], $16::text[]) AS cur (order_id, code)
          WHERE cur.order_id = e.order_id AND cur.code = e.code)
),
recorded AS (
    INSERT INTO public.order_processing_exceptions
        (tenant_id, order_id, queue_id, exception_type, severity, code, field, message, details,
         created_at, updated_at)
    SELECT f.tenant_id, f.order_id, f.queue_id, f.exception_type, f.severity, f.code, f.field,
           f.message, f.details, $20::timestamptz, $20::timestamptz
    FROM unnest($11::uuid[], $12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::text[],
                $17::text[], $18::text[], $19::jsonb[])
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
),
done AS (
    UPDATE public.order_processing_queue q
    SET status = f.status,
        processed_at = $20::timestamptz,
        attempts = q.attempts + 1,
        pricing_valid = f.pricing_valid,
        credit_valid = f.credit_valid,
        requirements_valid = f.requirements_valid,
        auto_fixes = CASE WHEN f.auto_fixes = '[]'::jsonb THEN q.auto_fixes
                          ELSE q.auto_fixes || f.auto_fixes END,
        last_error = NULL
    FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::bool[], $5::bool[], $6::jsonb[])
         AS f (id, status, pricing_valid, credit_valid, requirements_valid, auto_fixes)
    WHERE q.id = f.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM fixed), (SELECT count(*) FROM done)
