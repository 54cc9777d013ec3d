SELECT version FROM public.autopilot_migrations
