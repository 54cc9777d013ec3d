-- Entries an older binary left `processing` (it claimed by writing that state) since before
-- $2 are put back to pending, so the batch claim (which only takes pending entries) gets
-- them. Fresh ones are left to their runner: it may still write them back. $1: tenants
-- (empty = all). The partial index on processing entries keeps this cheap when there are
-- none, which is always the case once every runner is of the row-lock design.
UPDATE public.order_processing_queue
SET status = 'pending'
WHERE status = 'processing'
  AND (claimed_at IS NULL OR claimed_at < $2::timestamptz)
  AND (cardinality($1::uuid[]) = 0 OR tenant_id = ANY ($1::uuid[]))
