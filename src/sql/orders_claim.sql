-- Claim up to $4 entries of tenant $1: pending ones, and ones left `processing` since before
-- $3 (a runner that crashed or hung). SKIP LOCKED lets concurrent runners take disjoint
-- batches; attempts doubles as the claim token checked at write-back.
UPDATE public.order_processing_queue q
SET status = 'processing',
    claimed_at = $2::timestamptz,
    attempts = q.attempts + 1
FROM (
    SELECT c.id
    FROM public.order_processing_queue c
    WHERE c.tenant_id = $1
      AND (c.status = 'pending'
           OR (c.status = 'processing' AND (c.claimed_at IS NULL OR c.claimed_at < $3::timestamptz)))
    ORDER BY c.queued_at, c.id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
) claimed
WHERE q.id = claimed.id
RETURNING q.id, q.attempts
