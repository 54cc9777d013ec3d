UPDATE public.agent_autonomous_runs
SET actions_planned = $3, actions_executed = $4, actions_blocked = $5, emails_sent = $6,
    cards_created = $7, metrics = $8
WHERE tenant_id = $1 AND id = $2
