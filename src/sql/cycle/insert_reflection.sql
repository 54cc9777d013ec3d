INSERT INTO public.agent_hourly_reflections
    (tenant_id, run_id, summary, changes, metrics_delta, blockers, insights, next_hour_priorities, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
