-- Flip the switch of the given tenants and record who and why, in one statement.
WITH changed AS (
    UPDATE public.tenants SET agent_enabled = $2
    WHERE id = ANY($1::uuid[]) AND agent_enabled IS DISTINCT FROM $2
    RETURNING id
)
INSERT INTO public.agent_switch_log (tenant_id, agent_enabled, changed_by, reason, created_at)
SELECT id, $2, $3, $4, $5 FROM changed
RETURNING tenant_id
