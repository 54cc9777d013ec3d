INSERT INTO public.agent_policy_violations
  (tenant_id, run_id, violation_type, action_type, action_data, reason, blocked, created_at)
  VALUES ($1, $2, $3, $4, $5, $6, true, $7)
