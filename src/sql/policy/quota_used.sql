SELECT COALESCE((SELECT action_count FROM public.agent_rate_limits
  WHERE tenant_id = $1 AND action_type = $2 AND window_start = date_trunc('hour', $3::timestamptz, 'UTC')), 0)
