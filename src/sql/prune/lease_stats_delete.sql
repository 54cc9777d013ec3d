-- Lease statistics of hours before the cutoff $1, at most $2 rows (no id column: the key).
WITH victims AS (
    SELECT t.tenant_id, t.hour, t.slot FROM public.agent_lease_stats t
    WHERE t.hour < $1::timestamptz LIMIT $2::bigint FOR UPDATE OF t SKIP LOCKED),
gone AS (
    DELETE FROM public.agent_lease_stats d USING victims v
    WHERE d.tenant_id = v.tenant_id AND d.hour = v.hour AND d.slot = v.slot RETURNING 1)
SELECT count(*) FROM gone
