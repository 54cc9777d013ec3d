SELECT version, name, checksum, applied_at FROM public.autopilot_migrations ORDER BY version
