SELECT value FROM public.system_config WHERE key = 'agent_config'
