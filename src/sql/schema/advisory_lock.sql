-- One migrate at a time (session-level: held across the per-file transactions).
SELECT pg_advisory_lock($1)
