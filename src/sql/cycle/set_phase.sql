UPDATE public.agent_autonomous_runs
SET phase = $3, actions_planned = $4, actions_executed = $5, actions_blocked = $6,
    emails_sent = $7, cards_created = $8
WHERE tenant_id = $1 AND id = $2
