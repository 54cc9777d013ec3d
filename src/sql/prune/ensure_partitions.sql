-- Create the partitions of the history tables from the period of $1 to their create-ahead horizon.
SELECT p::text FROM public.agent_history_ensure_partitions($1::timestamptz) p
