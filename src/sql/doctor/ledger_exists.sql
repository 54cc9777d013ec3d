SELECT to_regclass('public.autopilot_migrations') IS NOT NULL
