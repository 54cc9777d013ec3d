SELECT count(*) FROM public.agent_lease_stats t WHERE t.hour < $1::timestamptz
