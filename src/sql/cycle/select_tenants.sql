SELECT t.id, COALESCE(t.name, ''), COALESCE(t.agent_settings, '{}'), COALESCE(t.is_active, false),
       COALESCE(t.agent_enabled, false)
FROM public.tenants t
WHERE (cardinality($1::uuid[]) = 0 AND t.is_active AND t.agent_enabled
       AND ($3::bigint IS NULL OR (('x' || left(md5(t.id::text), 8))::bit(32)::bigint % $3::bigint) = $4::bigint))
   OR t.id = ANY($1)
ORDER BY (SELECT max(r.started_at) FROM public.agent_autonomous_runs r WHERE r.tenant_id = t.id) NULLS FIRST, t.id
LIMIT $2
