-- Pending entries per tenant (all tenants when $1 is empty), from the pending index.
SELECT tenant_id, count(*) FROM public.order_processing_queue
WHERE (cardinality($1::uuid[]) = 0 OR tenant_id = ANY ($1::uuid[]))
  AND status = 'pending'
GROUP BY tenant_id
ORDER BY tenant_id
