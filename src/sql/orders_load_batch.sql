-- The claimed entries still held by this runner (id and attempts unchanged, still
-- processing), with their orders, products and clients. Locks the entries and the orders so
-- neither another runner nor a concurrent edit slips in between validation and write-back.
SELECT q.id AS queue_id,
       o.id, o.tenant_id, o.client_id, o.product_id, o.status::text AS status,
       o.fee_amount::numeric AS fee_amount, o.total_amount::numeric AS total_amount,
       o.tech_fee::numeric AS tech_fee, o.payment_method::text AS payment_method,
       o.property_address, o.property_city, o.property_state, o.property_zip,
       o.borrower_name, o.borrower_email, o.borrower_phone,
       o.property_contact_name, o.property_contact_phone,
       p.id AS p_id, p.min_price::numeric AS min_price, p.max_price::numeric AS max_price,
       c.id AS c_id, c.is_active AS c_active, c.credit_limit::numeric AS credit_limit,
       c.balance::numeric AS balance
FROM unnest($1::uuid[], $2::int[]) AS mine (id, attempts)
JOIN public.order_processing_queue q
  ON q.id = mine.id AND q.attempts = mine.attempts AND q.status = 'processing'
JOIN public.orders o ON o.tenant_id = q.tenant_id AND o.id = q.order_id
LEFT JOIN public.products p ON p.tenant_id = o.tenant_id AND p.id = o.product_id
LEFT JOIN public.clients c ON c.tenant_id = o.tenant_id AND c.id = o.client_id
ORDER BY q.queued_at, q.id
FOR UPDATE OF q, o
