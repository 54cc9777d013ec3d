-- SQL floor of `autopilot run-cycle` over every enabled tenant (first cycle on the
-- benchmark data): the same database work as the fewest set-based statements, for the
-- ratio autopilot/floor printed by scripts/bench.
--
-- Not in the floor: the SMTP conversation of each send (the binary talks to
-- scripts/smtp-sink; the floor only records the sends), heartbeats, and the binary's
-- per-phase bookkeeping beyond one phase update. Review cards: on the first cycle the Plan
-- sees no order exception yet (the orders are validated in React), so neither the binary
-- nor the floor creates any.
--
-- Run with psql from the repository root (it includes bench/floor_process_orders.sql).

-- Tenants to run, with their caps (kill switch honoured).
CREATE TEMP TABLE fr_t AS
SELECT t.id, t.name,
       coalesce((t.agent_settings ->> 'max_actions_per_cycle')::int, 50) AS cap,
       coalesce((t.agent_settings ->> 'max_emails_per_hour')::int, 20) AS mail_cap,
       public.tenant_engagement_interval_days(t.id) AS days
FROM public.tenants t
WHERE t.is_active AND t.agent_enabled
  AND (SELECT value ->> 'global_enabled' FROM public.system_config WHERE key = 'agent_config') = 'true';
CREATE UNIQUE INDEX ON fr_t (id);
ANALYZE fr_t;

-- Leases: one run and one lock per tenant.
CREATE TEMP TABLE fr_run AS
SELECT t.id AS tenant_id, gen_random_uuid() AS run_id,
       coalesce((SELECT max(r.cycle_number) FROM public.agent_autonomous_runs r WHERE r.tenant_id = t.id), 0) + 1 AS cycle
FROM fr_t t;
BEGIN;
INSERT INTO public.agent_tenant_locks (tenant_id, run_id, locked_at, expires_at, lock_holder, lease_duration)
SELECT tenant_id, run_id, now(), now() + interval '60 seconds', 'floor', interval '60 seconds' FROM fr_run
ON CONFLICT (tenant_id) DO NOTHING;
INSERT INTO public.agent_autonomous_runs (id, tenant_id, cycle_number, started_at, phase, status, trigger, lock_holder)
SELECT run_id, tenant_id, cycle, now(), 'plan', 'running', 'scheduled', 'floor' FROM fr_run;
COMMIT;

-- Plan 1: missing clocks and fresh scores.
INSERT INTO public.engagement_clocks AS ec
    (tenant_id, client_id, contact_id, next_touch_due, engagement_interval_days,
     priority_score, created_at, updated_at)
SELECT ct.tenant_id, ct.client_id, ct.id, now(), t.days,
       (least(2 * greatest(coalesce(0, 0), 0), 50) + CASE WHEN coalesce(ct.is_primary, false) THEN 20 ELSE 0 END + CASE WHEN ct.title ~* '\m(president|ceo|owner|director)' THEN 15 WHEN ct.title ~* '\m(manager|lead|head)' THEN 10 ELSE 0 END)::numeric(5,2), now(), now()
FROM public.contacts ct
JOIN fr_t t ON t.id = ct.tenant_id
WHERE NOT EXISTS (SELECT 1 FROM public.engagement_clocks e WHERE e.contact_id = ct.id)
ON CONFLICT (tenant_id, contact_id) WHERE contact_id IS NOT NULL DO NOTHING;

UPDATE public.engagement_clocks ec
SET priority_score = s.score, updated_at = now()
FROM (
    SELECT e.id,
           (least(2 * greatest(coalesce((CASE WHEN e.next_touch_due <= now() THEN floor(extract(epoch FROM (now() - e.next_touch_due)) / 86400)::int ELSE 0 END), 0), 0), 50) + CASE WHEN coalesce(ct.is_primary, false) THEN 20 ELSE 0 END + CASE WHEN ct.title ~* '\m(president|ceo|owner|director)' THEN 15 WHEN ct.title ~* '\m(manager|lead|head)' THEN 10 ELSE 0 END)::numeric(5,2) AS score
    FROM public.engagement_clocks e
    JOIN fr_t t ON t.id = e.tenant_id
    LEFT JOIN public.contacts ct ON ct.id = e.contact_id AND ct.tenant_id = e.tenant_id
) s
WHERE ec.id = s.id AND ec.priority_score IS DISTINCT FROM s.score;

-- Plan 2 + Act: approved sends take the first plan slots; overdue contacts not covered by
-- an open card nor suppressed, in violation order, the first `cap` of them considered, the
-- ones with an address drafted up to the remaining slots.
CREATE TEMP TABLE fr_send AS
SELECT k.id, k.tenant_id, k.client_id, k.contact_id
FROM (
    SELECT k.*, row_number() OVER (PARTITION BY k.tenant_id ORDER BY k.created_at, k.id) AS rn
    FROM public.kanban_cards k
    JOIN fr_t t ON t.id = k.tenant_id
    WHERE k.type = 'send_email' AND k.state = 'approved'
) k
JOIN fr_t t ON t.id = k.tenant_id
WHERE k.rn <= least(t.cap, t.mail_cap);
ANALYZE fr_send;

INSERT INTO public.kanban_cards
    (tenant_id, run_id, client_id, contact_id, agent_target, type, title, description,
     rationale, priority, state, action_payload)
SELECT f.tenant_id, r.run_id, f.client_id, f.contact_id, f.contact_id, 'send_email',
       format('Follow up with %s (%s)', f.name, f.company_name),
       f.body,
       format('%s is %s days overdue for a touch (priority %s).', f.name, f.days_overdue, f.priority_score),
       CASE WHEN f.priority_score >= 50 THEN 'high' WHEN f.priority_score >= 20 THEN 'medium' ELSE 'low' END,
       'suggested',
       jsonb_build_object('to', f.email, 'subject', f.subject, 'body', f.body,
                          'contact_id', f.contact_id, 'clock_id', f.clock_id, 'days_overdue', f.days_overdue)
FROM (
    SELECT c.*,
           row_number() OVER (PARTITION BY c.tenant_id ORDER BY c.rn) AS mail_rn,
           CASE WHEN c.days_overdue < 7 THEN format('Checking in from %s', c.sender)
                WHEN c.days_overdue < 30 THEN format('A few ideas for %s', c.company_name)
                ELSE format('Reconnecting with %s', c.company_name) END AS subject,
           format(E'Hi %s,\n\n%s\n\nBest regards,\n%s\n', c.first_name,
                  CASE WHEN c.days_overdue < 7 THEN format('I wanted to check in and see how things are going at %s. Is there anything on your pipeline where we can help with appraisals or turn times?', c.company_name)
                       WHEN c.days_overdue < 30 THEN format('I have been thinking about %s''s upcoming volume and wanted to share how we can help: faster turnaround on rush orders, proactive status updates, and a single point of contact for revisions. Would a short call this week be useful?', c.company_name)
                       ELSE format('It has been a while since we last spoke, and I would like to reconnect. A lot has changed on our side, and I would welcome the chance to hear what %s needs today and whether we can support you again.', c.company_name) END,
                  c.sender) AS body
    FROM (
        SELECT v.tenant_id, v.id AS clock_id, v.contact_id, coalesce(ct.client_id, v.client_id) AS client_id,
               nullif(btrim(ct.email), '') AS email, ct.first_name,
               concat_ws(' ', ct.first_name, ct.last_name) AS name, cl.company_name, t.name AS sender,
               (CASE WHEN v.next_touch_due <= now() THEN floor(extract(epoch FROM (now() - v.next_touch_due)) / 86400)::int ELSE 0 END) AS days_overdue, v.priority_score,
               t.cap,
               row_number() OVER (PARTITION BY v.tenant_id
                                  ORDER BY (CASE WHEN v.next_touch_due <= now() THEN floor(extract(epoch FROM (now() - v.next_touch_due)) / 86400)::int ELSE 0 END) DESC,
                                           v.priority_score DESC, v.next_touch_due, v.id) AS rn
        FROM public.engagement_clocks v
        JOIN fr_t t ON t.id = v.tenant_id
        JOIN public.contacts ct ON ct.id = v.contact_id AND ct.tenant_id = v.tenant_id
        LEFT JOIN public.clients cl ON cl.id = coalesce(ct.client_id, v.client_id) AND cl.tenant_id = v.tenant_id
        WHERE v.next_touch_due <= now()
          AND NOT EXISTS (SELECT 1 FROM public.kanban_cards k
                          WHERE k.tenant_id = v.tenant_id AND k.type = 'send_email' AND k.agent_target = v.contact_id
                            AND k.state IN ('suggested', 'in_review', 'approved', 'executing'))
          AND NOT EXISTS (SELECT 1 FROM public.email_suppressions s
                          WHERE s.tenant_id = v.tenant_id
                            AND (s.contact_id = v.contact_id OR lower(s.email) = lower(nullif(btrim(ct.email), ''))))
    ) c
    WHERE c.rn <= c.cap AND c.email IS NOT NULL
) f
JOIN fr_run r ON r.tenant_id = f.tenant_id
WHERE f.mail_rn <= f.cap - (SELECT count(*) FROM fr_send s WHERE s.tenant_id = f.tenant_id)
ON CONFLICT (tenant_id, type, agent_target)
    WHERE agent_target IS NOT NULL AND state IN ('suggested', 'in_review', 'approved', 'executing')
DO NOTHING;

-- Sends (recorded; the SMTP part is not in the floor): quota, card done, clocks touched.
BEGIN;
INSERT INTO public.agent_rate_limits AS rl (tenant_id, action_type, window_start, window_end, action_count)
SELECT tenant_id, 'email_send', date_trunc('hour', now(), 'UTC'), date_trunc('hour', now(), 'UTC') + interval '1 hour', count(*)
FROM fr_send GROUP BY tenant_id
ON CONFLICT (tenant_id, action_type, window_start) DO UPDATE SET action_count = rl.action_count + EXCLUDED.action_count;
UPDATE public.kanban_cards k
SET state = 'done', executed_at = now(), updated_at = now(), message_id = '<' || k.id || '@bench.example.test>'
FROM fr_send s WHERE k.id = s.id;
INSERT INTO public.engagement_clocks AS ec
    (tenant_id, client_id, contact_id, last_touch_at, last_touch_type, next_touch_due,
     engagement_interval_days, priority_score, updated_at)
SELECT DISTINCT s.tenant_id, s.client_id, NULL::uuid, now(), 'email', now() + make_interval(days => t.days), t.days, 0, now()
FROM fr_send s JOIN fr_t t ON t.id = s.tenant_id
WHERE s.client_id IS NOT NULL
ON CONFLICT (tenant_id, client_id) WHERE contact_id IS NULL
DO UPDATE SET last_touch_at = EXCLUDED.last_touch_at, last_touch_type = 'email', last_touch_by = NULL,
              next_touch_due = EXCLUDED.last_touch_at + make_interval(days => ec.engagement_interval_days),
              priority_score = 0, updated_at = EXCLUDED.updated_at;
UPDATE public.engagement_clocks ec
SET last_touch_at = now(), last_touch_type = 'email', last_touch_by = NULL,
    next_touch_due = now() + make_interval(days => ec.engagement_interval_days),
    priority_score = (least(2 * greatest(coalesce(0, 0), 0), 50) + CASE WHEN coalesce(ct.is_primary, false) THEN 20 ELSE 0 END + CASE WHEN ct.title ~* '\m(president|ceo|owner|director)' THEN 15 WHEN ct.title ~* '\m(manager|lead|head)' THEN 10 ELSE 0 END)::numeric(5,2), updated_at = now()
FROM fr_send s JOIN public.contacts ct ON ct.id = s.contact_id
WHERE ec.contact_id = s.contact_id;
COMMIT;

UPDATE public.agent_autonomous_runs r SET phase = 'react' FROM fr_run f WHERE r.id = f.run_id;

-- React: the queued orders.
\ir floor_process_orders.sql

-- Reflect: compliance, top violations, one reflection per tenant, alert rules, release.
CREATE TEMP TABLE fr_sum AS
SELECT e.tenant_id, count(*) AS total,
       count(*) FILTER (WHERE e.next_touch_due <= now()) AS overdue,
       round(100.0 * count(*) FILTER (WHERE e.next_touch_due > now()) / count(*), 2) AS compliance_rate,
       coalesce(round(avg((CASE WHEN e.next_touch_due <= now() THEN floor(extract(epoch FROM (now() - e.next_touch_due)) / 86400)::int ELSE 0 END))
                      FILTER (WHERE e.next_touch_due <= now()), 2), 0) AS avg_days_overdue
FROM public.engagement_clocks e JOIN fr_t t ON t.id = e.tenant_id
GROUP BY e.tenant_id;

CREATE TEMP TABLE fr_top AS
SELECT tenant_id, jsonb_agg(format('contact %s is %s days overdue (priority %s)', contact_id, days_overdue, priority_score)) AS priorities
FROM (
    SELECT e.tenant_id, e.contact_id, (CASE WHEN e.next_touch_due <= now() THEN floor(extract(epoch FROM (now() - e.next_touch_due)) / 86400)::int ELSE 0 END) AS days_overdue, e.priority_score,
           row_number() OVER (PARTITION BY e.tenant_id ORDER BY (CASE WHEN e.next_touch_due <= now() THEN floor(extract(epoch FROM (now() - e.next_touch_due)) / 86400)::int ELSE 0 END) DESC,
                              e.priority_score DESC, e.next_touch_due, e.id) AS rn
    FROM public.engagement_clocks e JOIN fr_t t ON t.id = e.tenant_id
    WHERE e.next_touch_due <= now()
) x WHERE rn <= 5
GROUP BY tenant_id;

BEGIN;
INSERT INTO public.agent_hourly_reflections
    (tenant_id, run_id, summary, changes, metrics_delta, blockers, insights, next_hour_priorities, created_at)
SELECT r.tenant_id, r.run_id,
       format('Cycle %s: compliance %s %%, %s overdue.', r.cycle, s.compliance_rate, s.overdue),
       jsonb_build_array('drafted follow-up e-mail cards', 'validated orders'),
       jsonb_build_object('compliance_rate', jsonb_build_object('before', prev.rate, 'after', s.compliance_rate),
                          'overdue', jsonb_build_object('before', prev.overdue, 'after', s.overdue)),
       '[]'::jsonb,
       jsonb_build_array(format('engagement compliance %s %% (%s of %s clocks overdue, %s days on average)',
                                s.compliance_rate, s.overdue, s.total, s.avg_days_overdue)),
       coalesce(tp.priorities, '[]'::jsonb), now()
FROM fr_run r
LEFT JOIN fr_sum s ON s.tenant_id = r.tenant_id
LEFT JOIN fr_top tp ON tp.tenant_id = r.tenant_id
LEFT JOIN LATERAL (
    SELECT (h.metrics_delta #>> '{compliance_rate,after}')::numeric AS rate,
           (h.metrics_delta #>> '{overdue,after}')::int AS overdue
    FROM public.agent_hourly_reflections h WHERE h.tenant_id = r.tenant_id
    ORDER BY h.created_at DESC LIMIT 1
) prev ON true;

UPDATE public.agent_autonomous_runs r
SET metrics = jsonb_build_object('clocks_created', 0), phase = 'reflect'
FROM fr_run f WHERE r.id = f.run_id;

-- Alert rules over the last 24 hours (one aggregate), then the compliance alert.
\o /dev/null
SELECT t.id,
       (SELECT count(*) FILTER (WHERE r.status IN ('failed', 'timeout'))::float8 / nullif(count(*), 0)
          FROM public.agent_autonomous_runs r WHERE r.tenant_id = t.id AND r.started_at > now() - interval '24 hours'),
       (SELECT avg(r.duration_ms) FROM public.agent_autonomous_runs r
         WHERE r.tenant_id = t.id AND r.started_at > now() - interval '24 hours' AND r.duration_ms IS NOT NULL),
       (SELECT count(*) FROM public.agent_policy_violations v WHERE v.tenant_id = t.id AND v.created_at > now() - interval '1 hour'),
       (SELECT count(*) FROM public.email_provider_failures p WHERE p.tenant_id = t.id AND p.created_at > now() - interval '15 minutes')
FROM fr_t t;
\o
INSERT INTO public.agent_alerts AS a (tenant_id, alert_type, severity, message, metadata, created_at, last_seen_at)
SELECT s.tenant_id, 'low_engagement_compliance', 'warning',
       format('engagement compliance %s %% is below 80 %%', s.compliance_rate),
       jsonb_build_object('compliance_rate', s.compliance_rate), now(), now()
FROM fr_sum s WHERE s.compliance_rate < 80
ON CONFLICT (tenant_id, alert_type) WHERE NOT acknowledged
DO UPDATE SET occurrences = a.occurrences + 1, last_seen_at = EXCLUDED.last_seen_at,
              message = EXCLUDED.message, metadata = EXCLUDED.metadata;

DELETE FROM public.agent_tenant_locks l USING fr_run f WHERE l.tenant_id = f.tenant_id AND l.run_id = f.run_id;
UPDATE public.agent_autonomous_runs r
SET status = 'completed', phase = 'completed', completed_at = now(),
    duration_ms = (EXTRACT(EPOCH FROM (now() - r.started_at)) * 1000)::int
FROM fr_run f WHERE r.id = f.run_id;
COMMIT;
