-- Work that is stuck or waits for a person. $1: seconds after which a queue claim or an
-- executing card counts as stuck.
SELECT
    (SELECT count(*) FROM public.agent_autonomous_runs r
      WHERE r.status = 'running'
        AND NOT EXISTS (SELECT 1 FROM public.agent_tenant_locks l
                         WHERE l.run_id = r.id AND l.expires_at > now())),
    (SELECT count(*) FROM public.order_processing_queue
      WHERE status = 'processing' AND (claimed_at IS NULL OR claimed_at < now() - make_interval(secs => $1))),
    (SELECT count(*) FROM public.kanban_cards
      WHERE state = 'executing' AND updated_at < now() - make_interval(secs => $2)),
    (SELECT count(*) FROM public.kanban_cards
      WHERE state = 'blocked' AND type IN ('send_email', 'create_task'))
