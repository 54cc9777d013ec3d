-- SQL floor of `autopilot process-orders` (all tenants): the same work as the fewest
-- set-based statements, for the ratio autopilot/floor printed by scripts/bench.
--
-- Same rules as src/orders.rs::validate (SPEC §6), same writes as the binary's batches:
-- queue the orders without an entry, put back to pending the entries an older binary left
-- `processing` too long, then in one statement: lock the pending entries (the row lock is
-- the claim: no `processing` state is written), apply the auto-fixes to the orders, resolve
-- the agent's findings that no longer apply (only for orders that have open findings),
-- upsert one exception row per finding (idempotent on (order_id, code)), and record the
-- outcome on each entry (its only write). Messages and details are built like the
-- binary's (format(), jsonb_build_object()).
--
-- Used by bench/floor_run_cycle.sql too (\ir).

-- 1. Orders the trigger missed (none in the benchmark data, but the binary looks).
INSERT INTO public.order_processing_queue (tenant_id, order_id, queued_at)
SELECT o.tenant_id, o.id, now()
FROM public.orders o
WHERE o.tenant_id IS NOT NULL
  AND o.status IS DISTINCT FROM 'cancelled'
  AND NOT EXISTS (SELECT 1 FROM public.order_processing_queue q WHERE q.order_id = o.id)
ON CONFLICT (tenant_id, order_id) DO NOTHING;

-- 2. Entries an older binary left `processing` since before the stale limit.
UPDATE public.order_processing_queue
SET status = 'pending'
WHERE status = 'processing' AND (claimed_at IS NULL OR claimed_at < now() - interval '600 seconds');

-- 3. Claim, validate and write, in one statement.
BEGIN;
SET LOCAL synchronous_commit = off;
WITH claimed AS (
    SELECT q.id, q.tenant_id, q.order_id
    FROM public.order_processing_queue q
    WHERE q.status = 'pending'
    FOR UPDATE SKIP LOCKED
),
v AS MATERIALIZED (
    SELECT fc.id AS queue_id, o.id AS order_id, o.tenant_id,
       (lower(btrim(o.status)) = 'cancelled') AS cancelled,
       o.fee_amount AS fee, o.total_amount AS total0, o.tech_fee AS tech0,
       fx.total, fx.tech, fx.fixes,
       p.id AS product_id, p.min_price, p.max_price,
       c.id AS client_id, c.is_active, c.credit_limit, c.balance,
       coalesce(lower(btrim(o.payment_method)) = 'bill', false) AS billed,
       coalesce(btrim(o.property_address), '') = '' AS no_address,
       coalesce(btrim(o.borrower_email), '') = '' AND coalesce(btrim(o.borrower_phone), '') = '' AS no_borrower_contact,
       coalesce(btrim(o.property_city), '') = '' AS no_city,
       coalesce(btrim(o.property_state), '') = '' AS no_state,
       coalesce(btrim(o.property_zip), '') = '' AS no_zip,
       coalesce(btrim(o.borrower_name), '') = '' AS no_borrower_name,
       coalesce(btrim(o.property_contact_phone), '') = '' AS no_contact_phone,
       EXISTS (SELECT 1 FROM public.order_processing_exceptions e
               WHERE e.tenant_id = o.tenant_id AND e.order_id = o.id AND NOT e.resolved) AS has_open
FROM claimed fc
JOIN public.orders o ON o.tenant_id = fc.tenant_id AND o.id = fc.order_id
LEFT JOIN public.products p ON p.tenant_id = o.tenant_id AND p.id = o.product_id
LEFT JOIN public.clients c ON c.tenant_id = o.tenant_id AND c.id = o.client_id
CROSS JOIN LATERAL (
    SELECT CASE WHEN o.fee_amount > 0 AND (o.total_amount IS NULL OR o.total_amount < o.fee_amount)
                THEN o.fee_amount ELSE o.total_amount END AS total,
           CASE WHEN o.tech_fee < 0 THEN 0.00 ELSE o.tech_fee END AS tech,
           (SELECT coalesce(jsonb_agg(x.fix), '[]'::jsonb)
            FROM (VALUES
                (CASE WHEN o.fee_amount > 0 AND (o.total_amount IS NULL OR o.total_amount < o.fee_amount)
                      THEN jsonb_build_object('field', 'total_amount', 'from', o.total_amount::text,
                                              'to', o.fee_amount::text, 'rule', 'total_below_fee') END),
                (CASE WHEN o.tech_fee < 0
                      THEN jsonb_build_object('field', 'tech_fee', 'from', o.tech_fee::text,
                                              'to', '0.00', 'rule', 'negative_tech_fee') END)
            ) AS x (fix)
            WHERE x.fix IS NOT NULL) AS fixes
) fx
),
f (tenant_id, order_id, queue_id, exception_type, severity, code, field, message, details) AS MATERIALIZED (
    -- One SELECT per rule: a message is built only for the orders the rule fires on.
    SELECT v.tenant_id, v.order_id, v.queue_id, 'pricing', 'error', 'pricing.fee_not_positive', 'fee_amount',
           CASE WHEN v.fee IS NULL THEN 'Order has no fee' ELSE format('Order fee %s is not positive', v.fee) END,
           jsonb_build_object('fee_amount', v.fee::text)
    FROM v WHERE NOT v.cancelled AND (NOT coalesce(v.fee > 0, false))
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'pricing', 'warning', 'pricing.fee_outside_range', 'fee_amount',
           format('Order fee %s is %s the product''s price range (%s – %s)', v.fee,
            CASE WHEN v.fee < v.min_price THEN 'below' ELSE 'above' END, v.min_price, v.max_price),
           jsonb_build_object('fee_amount', v.fee::text, 'min_price', v.min_price::text,
                        'max_price', v.max_price::text, 'product_id', v.product_id)
    FROM v WHERE NOT v.cancelled AND (v.fee > 0 AND v.product_id IS NOT NULL AND (v.fee < v.min_price OR v.fee > v.max_price))
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'credit', 'error', 'credit.client_missing', 'client_id',
           'Billed order has no client to bill',
           jsonb_build_object('client_id', NULL)
    FROM v WHERE NOT v.cancelled AND (v.billed AND v.client_id IS NULL)
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'credit', 'critical', 'credit.client_inactive', 'client_id',
           'Billed order''s client is inactive',
           jsonb_build_object('client_id', v.client_id)
    FROM v WHERE NOT v.cancelled AND (v.billed AND v.client_id IS NOT NULL AND NOT v.is_active)
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'credit', 'error', 'credit.limit_exceeded', 'total_amount',
           format('Order total %s exceeds the client''s available credit %s', coalesce(v.total, 0), v.credit_limit - v.balance),
           jsonb_build_object('client_id', v.client_id, 'total_amount', coalesce(v.total, 0)::text,
                        'credit_limit', v.credit_limit::text, 'balance', v.balance::text,
                        'available_credit', (v.credit_limit - v.balance)::text)
    FROM v WHERE NOT v.cancelled AND (v.billed AND v.client_id IS NOT NULL AND coalesce(v.total, 0) > v.credit_limit - v.balance)
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'credit', 'warning', 'credit.high_utilization', 'total_amount',
           format('Order brings the client''s credit use above 80 %% (%s of %s)', v.balance + coalesce(v.total, 0), v.credit_limit),
           jsonb_build_object('client_id', v.client_id, 'total_amount', coalesce(v.total, 0)::text,
                        'credit_limit', v.credit_limit::text, 'balance', v.balance::text,
                        'available_credit', (v.credit_limit - v.balance)::text)
    FROM v WHERE NOT v.cancelled AND (v.billed AND v.client_id IS NOT NULL AND coalesce(v.total, 0) <= v.credit_limit - v.balance
     AND v.credit_limit > 0 AND (v.balance + coalesce(v.total, 0)) * 5 > v.credit_limit * 4)
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'requirements', 'error', 'requirements.property_address_missing', 'property_address',
           'Order has no property address',
           '{}'::jsonb
    FROM v WHERE NOT v.cancelled AND (v.no_address)
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'requirements', 'error', 'requirements.borrower_contact_missing', 'borrower_email',
           'Order has neither a borrower e-mail nor a borrower phone',
           '{"fields": ["borrower_email", "borrower_phone"]}'::jsonb
    FROM v WHERE NOT v.cancelled AND (v.no_borrower_contact)
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'requirements', 'warning', 'requirements.property_city_missing', 'property_city',
           'Order has no property city',
           '{}'::jsonb
    FROM v WHERE NOT v.cancelled AND (v.no_city)
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'requirements', 'warning', 'requirements.property_state_missing', 'property_state',
           'Order has no property state',
           '{}'::jsonb
    FROM v WHERE NOT v.cancelled AND (v.no_state)
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'requirements', 'warning', 'requirements.property_zip_missing', 'property_zip',
           'Order has no property ZIP code',
           '{}'::jsonb
    FROM v WHERE NOT v.cancelled AND (v.no_zip)
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'requirements', 'warning', 'requirements.borrower_name_missing', 'borrower_name',
           'Order has no borrower name',
           '{}'::jsonb
    FROM v WHERE NOT v.cancelled AND (v.no_borrower_name)
    UNION ALL
    SELECT v.tenant_id, v.order_id, v.queue_id, 'requirements', 'warning', 'requirements.property_contact_phone_missing', 'property_contact_phone',
           'Order has no property contact phone',
           '{}'::jsonb
    FROM v WHERE NOT v.cancelled AND (v.no_contact_phone)
),
fixed AS (
    UPDATE public.orders o
    SET total_amount = v.total, tech_fee = v.tech
    FROM v
    WHERE o.id = v.order_id AND NOT v.cancelled AND v.fixes <> '[]'::jsonb
),
resolved AS (
    UPDATE public.order_processing_exceptions e
    SET resolved = true, resolved_at = now(), updated_at = now()
    FROM v
    WHERE v.has_open AND e.order_id = v.order_id
      AND NOT e.resolved
      AND e.code LIKE ANY (ARRAY['pricing.%', 'credit.%', 'requirements.%'])
      AND NOT EXISTS (SELECT 1 FROM f WHERE f.order_id = e.order_id AND f.code = e.code)
),
recorded AS (
    INSERT INTO public.order_processing_exceptions
        (tenant_id, order_id, queue_id, exception_type, severity, code, field, message, details,
         created_at, updated_at)
    SELECT tenant_id, order_id, queue_id, exception_type, severity, code, field, message, details, now(), now()
    FROM f
    ON CONFLICT (tenant_id, order_id, code) DO UPDATE
    SET queue_id = EXCLUDED.queue_id, exception_type = EXCLUDED.exception_type,
        severity = EXCLUDED.severity, field = EXCLUDED.field, message = EXCLUDED.message,
        details = EXCLUDED.details, resolved = false, resolved_at = NULL, resolved_by = NULL,
        updated_at = EXCLUDED.updated_at
)
UPDATE public.order_processing_queue q
SET status = CASE WHEN v.cancelled THEN 'skipped'
                  -- every error/critical rule clears one of the three flags
                  WHEN NOT (coalesce(v.fee > 0, false) AND NOT v.no_address AND NOT v.no_borrower_contact
                            AND NOT (v.billed AND (v.client_id IS NULL OR NOT v.is_active
                                     OR coalesce(v.total, 0) > v.credit_limit - v.balance)))
                  THEN 'exception'
                  ELSE 'validated' END,
    processed_at = now(),
    attempts = q.attempts + 1,
    pricing_valid = CASE WHEN NOT v.cancelled THEN coalesce(v.fee > 0, false) END,
    credit_valid = CASE WHEN NOT v.cancelled THEN NOT (v.billed AND (v.client_id IS NULL OR NOT v.is_active
                         OR coalesce(v.total, 0) > v.credit_limit - v.balance)) END,
    requirements_valid = CASE WHEN NOT v.cancelled THEN NOT (v.no_address OR v.no_borrower_contact) END,
    auto_fixes = q.auto_fixes || CASE WHEN v.cancelled THEN '[]'::jsonb ELSE v.fixes END,
    last_error = NULL
FROM v
WHERE q.id = v.queue_id;
COMMIT;
