SELECT count(*) FILTER (WHERE status IN ('completed', 'failed', 'timeout'))          AS finished,
       count(*) FILTER (WHERE status IN ('failed', 'timeout'))                       AS failed,
       COALESCE(sum(actions_planned), 0)::bigint                                     AS planned,
       COALESCE(sum(actions_blocked), 0)::bigint                                     AS blocked,
       COALESCE(avg(duration_ms) FILTER (WHERE duration_ms IS NOT NULL), 0)::float8  AS avg_ms
FROM public.agent_autonomous_runs
WHERE tenant_id = $1 AND started_at > $2::timestamptz - interval '24 hours' AND started_at <= $2
