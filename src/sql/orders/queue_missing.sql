-- Queue the non-cancelled orders that have no queue entry (orders older than the
-- queue_new_orders trigger, or inserted while it was disabled). $1: tenants (empty = all),
-- $2: queued_at.
INSERT INTO public.order_processing_queue (tenant_id, order_id, queued_at)
SELECT o.tenant_id, o.id, $2::timestamptz
FROM public.orders o
WHERE o.tenant_id IS NOT NULL
  AND (cardinality($1::uuid[]) = 0 OR o.tenant_id = ANY ($1::uuid[]))
  AND o.status::text IS DISTINCT FROM 'cancelled'
  AND NOT EXISTS (SELECT 1 FROM public.order_processing_queue q WHERE q.tenant_id = o.tenant_id AND q.order_id = o.id)
ON CONFLICT (tenant_id, order_id) DO NOTHING
