-- Claim up to $2 pending entries of the tenants $1 and load what validation reads. The row
-- lock is the claim: it lasts until the batch's transaction ends, SKIP LOCKED lets
-- concurrent runners take disjoint batches, and nothing is written to claim (a runner that
-- dies releases its entries by dying). An entry written back by another runner after this
-- statement's snapshot was taken is re-checked under the lock (status no longer pending)
-- and skipped. NO KEY UPDATE is the lock the write-back's update takes anyway; it leaves
-- the entry's key free for the foreign-key checks of exception rows that name it.
--
-- Only the entries are locked (the CTE); the order, its product and client are then looked
-- up one by one through their keys (LATERAL … LIMIT 1 keeps each a per-entry index probe:
-- as plain joins the planner hashed the whole orders table for every batch).
--
-- has_open says whether the order has unresolved findings (from an earlier validation or a
-- person): only those orders need their no-longer-applying findings resolved. It is a
-- scalar subquery, so it stays a per-entry probe of the (tenant_id, order_id, code) index
-- (an EXISTS was planned as a hash of every unresolved finding, rebuilt for every batch).
WITH claimed AS (
    SELECT q.id, q.tenant_id, q.order_id
    FROM public.order_processing_queue q
    WHERE q.tenant_id = ANY ($1::uuid[])
      AND q.status = 'pending'
    LIMIT $2
    FOR NO KEY UPDATE OF q SKIP LOCKED
)
SELECT cl.id AS queue_id,
       o.id, o.tenant_id, o.client_id, o.product_id, o.status,
       o.fee_amount, o.total_amount, o.tech_fee, o.payment_method,
       o.property_address, o.property_city, o.property_state, o.property_zip,
       o.borrower_name, o.borrower_email, o.borrower_phone,
       o.property_contact_name, o.property_contact_phone,
       p.id AS p_id, p.min_price, p.max_price,
       c.id AS c_id, c.is_active AS c_active, c.credit_limit, c.balance,
       (SELECT true FROM public.order_processing_exceptions e
        WHERE e.tenant_id = cl.tenant_id AND e.order_id = cl.order_id AND NOT e.resolved
        LIMIT 1) IS NOT NULL AS has_open
FROM claimed cl
CROSS JOIN LATERAL (
    SELECT o.id, o.tenant_id, o.client_id, o.product_id, o.status::text AS status,
           o.fee_amount::numeric AS fee_amount, o.total_amount::numeric AS total_amount,
           o.tech_fee::numeric AS tech_fee, o.payment_method::text AS payment_method,
           o.property_address, o.property_city, o.property_state, o.property_zip,
           o.borrower_name, o.borrower_email, o.borrower_phone,
           o.property_contact_name, o.property_contact_phone
    FROM public.orders o
    WHERE o.tenant_id = cl.tenant_id AND o.id = cl.order_id
    LIMIT 1
) o
LEFT JOIN LATERAL (
    SELECT p.id, p.min_price::numeric AS min_price, p.max_price::numeric AS max_price
    FROM public.products p
    WHERE p.tenant_id = o.tenant_id AND p.id = o.product_id
    LIMIT 1
) p ON true
LEFT JOIN LATERAL (
    SELECT c.id, c.is_active, c.credit_limit::numeric AS credit_limit,
           c.balance::numeric AS balance
    FROM public.clients c
    WHERE c.tenant_id = o.tenant_id AND c.id = o.client_id
    LIMIT 1
) c ON true
