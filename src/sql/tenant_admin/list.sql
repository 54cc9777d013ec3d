-- Every tenant (or only those with the agent enabled) with the last recorded change of its switch.
SELECT t.id, COALESCE(t.name, ''), t.is_active, t.agent_enabled,
       l.agent_enabled, l.changed_by, l.reason, l.created_at
FROM public.tenants t
LEFT JOIN LATERAL (
    SELECT agent_enabled, changed_by, reason, created_at
    FROM public.agent_switch_log WHERE tenant_id = t.id
    ORDER BY created_at DESC, id DESC LIMIT 1) l ON true
WHERE NOT $1::boolean OR t.agent_enabled
ORDER BY COALESCE(t.name, ''), t.id
