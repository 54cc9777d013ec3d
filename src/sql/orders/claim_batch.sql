-- Claim up to $2 pending entries of the tenants $1 and load what validation reads. The row
-- lock is the claim: it lasts until the batch's transaction ends, SKIP LOCKED lets
-- concurrent runners take disjoint batches, and nothing is written to claim (a runner that
-- dies releases its entries by dying). An entry written back by another runner after this
-- statement's snapshot was taken is re-checked under the lock (status no longer pending)
-- and skipped. NO KEY UPDATE is the lock the write-back's update takes anyway; it leaves
-- the entry's key free for the foreign-key checks of exception rows that name it.
--
-- has_open says whether the order has unresolved findings (from an earlier validation or a
-- person): only those orders need their no-longer-applying findings resolved. The probe
-- names tenant_id and order_id, so it uses the uniqueness index whether it is (order_id,
-- code) or tenant-scoped (tenant_id, order_id, code).
SELECT q.id AS queue_id,
       o.id, o.tenant_id, o.client_id, o.product_id, o.status::text AS status,
       o.fee_amount::numeric AS fee_amount, o.total_amount::numeric AS total_amount,
       o.tech_fee::numeric AS tech_fee, o.payment_method::text AS payment_method,
       o.property_address, o.property_city, o.property_state, o.property_zip,
       o.borrower_name, o.borrower_email, o.borrower_phone,
       o.property_contact_name, o.property_contact_phone,
       p.id AS p_id, p.min_price::numeric AS min_price, p.max_price::numeric AS max_price,
       c.id AS c_id, c.is_active AS c_active, c.credit_limit::numeric AS credit_limit,
       c.balance::numeric AS balance,
       EXISTS (SELECT 1 FROM public.order_processing_exceptions e
               WHERE e.tenant_id = q.tenant_id AND e.order_id = q.order_id AND NOT e.resolved)
           AS has_open
FROM public.order_processing_queue q
JOIN public.orders o ON o.tenant_id = q.tenant_id AND o.id = q.order_id
LEFT JOIN public.products p ON p.tenant_id = o.tenant_id AND p.id = o.product_id
LEFT JOIN public.clients c ON c.tenant_id = o.tenant_id AND c.id = o.client_id
WHERE q.tenant_id = ANY ($1::uuid[])
  AND q.status = 'pending'
LIMIT $2
FOR NO KEY UPDATE OF q SKIP LOCKED
