SELECT severity, count(*) FROM public.agent_alerts
WHERE NOT acknowledged GROUP BY severity
