SELECT status, error_message FROM public.agent_autonomous_runs WHERE id = $1
