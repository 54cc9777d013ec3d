-- Unresolved error/critical findings, one per order (its most severe, then oldest), whose
-- order is not cancelled and has no open agent review card; most severe first, then oldest.
SELECT t.order_id, t.id, t.severity, t.exception_type, t.code, t.message, t.client_id
FROM (
    SELECT DISTINCT ON (e.order_id)
           e.order_id, e.id, e.severity, e.exception_type, e.code, e.message, o.client_id,
           e.created_at, (e.severity = 'critical') AS is_critical
    FROM public.order_processing_exceptions e
    JOIN public.orders o ON o.tenant_id = e.tenant_id AND o.id = e.order_id
    WHERE e.tenant_id = $1
      AND NOT e.resolved
      AND e.severity IN ('error', 'critical')
      AND o.status::text IS DISTINCT FROM 'cancelled'
      AND NOT EXISTS (
          SELECT 1 FROM public.kanban_cards k
          WHERE k.tenant_id = e.tenant_id
            AND k.type = 'create_task'
            AND k.agent_target = e.order_id
            AND k.state IN ('suggested', 'in_review', 'approved', 'executing'))
    ORDER BY e.order_id, (e.severity = 'critical') DESC, e.created_at, e.id
) t
ORDER BY t.is_critical DESC, t.created_at, t.id
LIMIT $2
