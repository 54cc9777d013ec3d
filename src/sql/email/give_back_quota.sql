UPDATE public.agent_rate_limits
   SET action_count = action_count - 1
 WHERE tenant_id = $1 AND action_type = $2
   AND window_start = date_trunc('hour', $3::timestamptz, 'UTC') AND action_count > 0
