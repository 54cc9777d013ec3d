-- For a rate alert of type $2 about events of kind $3: when it was last acknowledged, and
-- when the newest such event arrived. A rate over the threshold raises the alert again
-- after an acknowledgement only when a new event came in since.
SELECT (SELECT max(a.acknowledged_at) FROM public.agent_alerts a
        WHERE a.tenant_id = $1 AND a.alert_type = $2 AND a.acknowledged),
       (SELECT max(e.created_at) FROM public.inbound_mail_events e
        WHERE e.tenant_id = $1 AND e.kind = $3 AND e.created_at <= $4)
