-- Best effort after a failed batch (rolled back, so its entries are pending again): say why
-- on the entries $1 with the message $2. `last_error` is not indexed, so this is a HOT update.
UPDATE public.order_processing_queue q
SET last_error = $2::text
WHERE q.id = ANY ($1::uuid[]) AND q.status = 'pending'
