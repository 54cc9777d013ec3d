-- Findings of an earlier validation of these orders that the current validation no longer
-- raises are resolved. Only the agent's own rule codes ($4) are touched: an exception
-- recorded by someone else is left alone.
UPDATE public.order_processing_exceptions e
SET resolved = true, resolved_at = $5::timestamptz, updated_at = $5::timestamptz
WHERE e.order_id = ANY ($1::uuid[])
  AND NOT e.resolved
  AND e.code = ANY ($4::text[])
  AND NOT EXISTS (
      SELECT 1 FROM unnest($2::uuid[], $3::text[]) AS cur (order_id, code)
      WHERE cur.order_id = e.order_id AND cur.code = e.code)
