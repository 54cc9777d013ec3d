-- Drop the history partitions wholly before the cutoff $1 (kept rows move to DEFAULT).
SELECT table_name, partitions_dropped, rows_removed FROM public.agent_history_drop_partitions($1::timestamptz)
