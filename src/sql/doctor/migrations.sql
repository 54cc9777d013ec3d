-- The migration ledger, when it exists (NULL rows otherwise).
SELECT version, name, checksum FROM public.autopilot_migrations ORDER BY version
