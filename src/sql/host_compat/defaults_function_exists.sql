SELECT to_regprocedure('public.autopilot_host_row_defaults()') IS NOT NULL
