SELECT cycle_number FROM public.agent_autonomous_runs WHERE id = $1
