SELECT count(*) FROM public.agent_policy_violations
WHERE tenant_id = $1 AND blocked AND created_at > $2::timestamptz - interval '1 hour' AND created_at <= $2
