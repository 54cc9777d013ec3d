-- Benchmark data generator (issue 8, item 1).
--
--   psql -X -v ON_ERROR_STOP=1 -v tenants=1000 -v contacts=1000 -v orders=100000 -f bench/generate.sql
--
-- Fills a migrated, empty database with :tenants tenants, :contacts contacts per tenant and
-- :orders orders, set-based (one INSERT … SELECT over generate_series per table).
--
-- Deterministic: every id and every property is a function of the generate_series numbers
-- (ids are md5('bench-<kind>-<numbers>')::uuid, properties are hashes of the same numbers),
-- no random(). Times are relative to the generation instant (now()), so clocks are overdue
-- by the same amounts whenever the data is generated. Tenant i has id
-- md5('bench-tenant-' || i)::uuid (bench/acquire*.sql rely on that).
--
-- What it makes:
-- * tenants: agent_enabled, settings mostly {} with a small mix (every 10th tenant
--   max_actions_per_cycle 25; every 10th, offset 5, a 30-day interval and 50 e-mails/hour);
--   one profile each.
-- * clients: 10 per tenant; client 8 runs at 79.9 % credit use (orders to it raise the
--   high-utilisation warning), client 9 is inactive.
-- * contacts: :contacts per tenant spread over the clients, titles mixed (President, CEO,
--   Director, Manager, Team Lead, Head of Ops, Loan Officer, Processor), 1 in 10 primary,
--   1 in 20 without an e-mail address.
-- * email_suppressions: ~1 % of the addresses, half by address only in UPPER case (the
--   match is case-insensitive), half naming the contact too.
-- * engagement_clocks: for 95 % of the contacts (check-engagement creates the other 5 %);
--   a third are overdue by 0–59 days, the rest due within 21 days; scores as of one day
--   earlier (the state after yesterday's refresh), so a refresh has real work to do.
-- * products: 3 per tenant (price range 300–800).
-- * orders: :orders spread evenly over the tenants, queued by the orders trigger
--   (queue_new_orders, one statement) as status pending. By order number mod 100:
--     0–49 clean; 50–54 total below fee (auto-fix); 55–57 negative tech fee (auto-fix);
--     58–61 fee above the product's range (warning); 62–65 a missing city/zip/borrower
--     name/contact phone (warning); 66–69 billed to the 80 % client (warning)
--     → 70 % end `validated`;
--     70–73 fee 0; 74–77 billed without client; 78–80 billed to the inactive client
--     (critical); 81–85 total above the available credit; 86–90 no property address;
--     91–95 neither borrower e-mail nor phone; 96–97 cancelled (skipped);
--     98–99 fee 0 and no address (two errors) → 28 % `exception`, 2 % `skipped`.
-- * kanban_cards: one approved send_email card per tenant (to a contact that has an
--   address and is not suppressed), so that run-cycle sends one e-mail per tenant.
-- * system_config agent_config.global_enabled = true.

\set ON_ERROR_STOP 1
\timing off
SET client_min_messages = warning;
-- Bulk load: no need to wait for the WAL flush of each statement.
SET synchronous_commit = off;
-- Every reference below is built consistent (ids are the same md5 expressions), so the
-- per-row foreign-key checks are skipped for the bulk inserts (superuser only; scripts/bench
-- runs as the cluster's superuser). Switched back before the orders, whose trigger queues them.
SET session_replication_role = replica;

BEGIN;

INSERT INTO public.tenants (id, name, is_active, agent_enabled, agent_settings, created_at)
SELECT md5('bench-tenant-' || t)::uuid,
       'Bench AMC ' || t,
       true,
       true,
       CASE t % 10
           WHEN 0 THEN '{"max_actions_per_cycle": 25}'::jsonb
           WHEN 5 THEN '{"engagement_interval_days": 30, "max_emails_per_hour": 50}'::jsonb
           ELSE '{}'::jsonb
       END,
       now() - interval '400 days'
FROM generate_series(1, :tenants) AS t;

INSERT INTO public.profiles (id, tenant_id, email, full_name)
SELECT md5('bench-profile-' || t)::uuid, md5('bench-tenant-' || t)::uuid,
       'ops' || t || '@amc.example.test', 'Ops Manager ' || t
FROM generate_series(1, :tenants) AS t;

INSERT INTO public.clients (id, tenant_id, company_name, is_active, credit_limit, balance, created_at)
SELECT md5('bench-client-' || t || '-' || k)::uuid,
       md5('bench-tenant-' || t)::uuid,
       (ARRAY['Acme Lending', 'Summit Mortgage', 'Harbor Bank', 'Prairie Credit Union',
              'Keystone Home Loans', 'Bluebird Financial', 'Cedar Capital', 'Northgate Mortgage',
              'Granite Savings', 'Old Mill Lending'])[k + 1] || ' ' || t,
       k <> 9,
       100000.00,
       CASE WHEN k = 8 THEN 79900.00 ELSE (t * 37 + k * 101) % 20000 END,
       now() - interval '300 days'
FROM generate_series(1, :tenants) AS t
CROSS JOIN generate_series(0, 9) AS k;

INSERT INTO public.products (id, tenant_id, name, price, min_price, max_price)
SELECT md5('bench-product-' || t || '-' || p)::uuid,
       md5('bench-tenant-' || t)::uuid,
       (ARRAY['1004 URAR', '2055 Exterior', '1073 Condo'])[p + 1],
       450.00, 300.00, 800.00
FROM generate_series(1, :tenants) AS t
CROSS JOIN generate_series(0, 2) AS p;

-- h: a per-contact hash in [0, 2^31) that decides the random-looking properties.
INSERT INTO public.contacts (id, tenant_id, client_id, first_name, last_name, email, title, is_primary, created_at)
SELECT md5('bench-contact-' || t || '-' || j)::uuid,
       md5('bench-tenant-' || t)::uuid,
       md5('bench-client-' || t || '-' || (j % 10))::uuid,
       fn, ln,
       CASE WHEN h % 20 = 7 AND j <> 1 THEN NULL
            ELSE lower(fn || '.' || ln || '.' || t || '.' || j) || '@lender' || (j % 10) || '.example.test' END,
       (ARRAY['President', 'CEO', 'Director of Lending', 'Branch Manager', 'Team Lead',
              'Head of Ops', 'Loan Officer', 'Processor', 'Loan Officer', 'Processor'])[(h / 20) % 10 + 1],
       j % 10 = 0,
       now() - interval '200 days'
FROM (
    SELECT t, j,
           ('x' || substr(md5('bench-h-' || t || '-' || j), 1, 8))::bit(32)::int & 2147483647 AS h,
           (ARRAY['Pat', 'Sam', 'Alex', 'Jordan', 'Casey', 'Morgan', 'Riley', 'Taylor', 'Jamie', 'Drew',
                  'Avery', 'Quinn', 'Robin', 'Lee', 'Dana', 'Kim', 'Chris', 'Jess', 'Terry', 'Blake'])[j % 20 + 1] AS fn,
           (ARRAY['Doe', 'Smith', 'Garcia', 'Nguyen', 'Patel', 'Kowalski', 'Okafor', 'Rossi', 'Schmidt', 'Tanaka',
                  'Silva', 'Murphy', 'Cohen', 'Larsen', 'Novak', 'Haddad', 'Ivanova', 'Moreau', 'Walker', 'Young'])[(j / 20) % 20 + 1] AS ln
    FROM generate_series(1, :tenants) AS t
    CROSS JOIN generate_series(0, :contacts - 1) AS j
) s;

-- ~1 % of the addresses; never contact 1 of a tenant (first/last name Sam Doe, contacts
-- 1, 401, 801 …), who receives the approved card below.
INSERT INTO public.email_suppressions (tenant_id, contact_id, email, reason, created_at)
SELECT c.tenant_id,
       CASE WHEN x.h % 2 = 0 THEN c.id END,
       CASE WHEN x.h % 2 = 0 THEN c.email ELSE upper(c.email) END,
       (ARRAY['unsubscribe', 'bounce', 'complaint', 'manual'])[(x.h / 2) % 4 + 1],
       now() - interval '30 days'
FROM public.contacts c
CROSS JOIN LATERAL (SELECT ('x' || substr(md5('bench-s-' || c.id), 1, 8))::bit(32)::int & 2147483647 AS h) x
WHERE c.email IS NOT NULL
  AND NOT (c.first_name = 'Sam' AND c.last_name = 'Doe')
  AND (x.h / 8) % 100 = 0;

-- Clocks for 95 % of the contacts: a third overdue by 0–59 days, the others due within 21.
INSERT INTO public.engagement_clocks
    (tenant_id, client_id, contact_id, last_touch_at, last_touch_type, next_touch_due,
     engagement_interval_days, priority_score, created_at, updated_at)
SELECT c.tenant_id, c.client_id, c.id,
       d.due - make_interval(days => iv.days), 'email', d.due, iv.days,
       -- engagement_priority(days overdue as of yesterday, is_primary, title), spelled out for
       -- the generator's eight titles (the function's regular expressions cost 10 s per 1 M).
       (least(2 * greatest(floor(extract(epoch FROM (now() - interval '1 day' - d.due)) / 86400), 0), 50)
        + CASE WHEN c.is_primary THEN 20 ELSE 0 END
        + CASE WHEN c.title IN ('President', 'CEO', 'Director of Lending') THEN 15
               WHEN c.title IN ('Branch Manager', 'Team Lead', 'Head of Ops') THEN 10 ELSE 0 END)::numeric(5,2),
       now() - interval '200 days', now() - interval '1 day'
FROM public.contacts c
JOIN public.tenants tn ON tn.id = c.tenant_id
CROSS JOIN LATERAL (SELECT ('x' || substr(md5('bench-c-' || c.id), 1, 8))::bit(32)::int & 2147483647 AS h) x
CROSS JOIN LATERAL (
    SELECT CASE WHEN x.h % 3 = 0
                THEN now() - make_interval(days => (x.h / 3) % 60, hours => (x.h / 180) % 24)
                ELSE now() + make_interval(days => (x.h / 3) % 21, hours => 1 + (x.h / 180) % 23)
           END AS due
) d
CROSS JOIN LATERAL (SELECT coalesce((tn.agent_settings ->> 'engagement_interval_days')::int, 21) AS days) iv
WHERE x.h % 20 <> 19;

-- Orders: the trigger queues them (one statement, transition table).
SET session_replication_role = origin;
INSERT INTO public.orders
    (id, tenant_id, client_id, product_id, status, fee_amount, total_amount, tech_fee,
     payment_method, property_address, property_city, property_state, property_zip,
     borrower_name, borrower_email, borrower_phone, property_contact_name,
     property_contact_phone, created_at)
SELECT md5('bench-order-' || i)::uuid,
       md5('bench-tenant-' || t)::uuid,
       CASE WHEN b BETWEEN 74 AND 77 THEN NULL
            ELSE md5('bench-client-' || t || '-' ||
                     CASE WHEN b BETWEEN 66 AND 69 THEN 8
                          WHEN b BETWEEN 78 AND 80 THEN 9
                          ELSE i % 8 END)::uuid END,
       md5('bench-product-' || t || '-' || (i % 3))::uuid,
       CASE WHEN b IN (96, 97) THEN 'cancelled' ELSE 'new' END,
       CASE WHEN b BETWEEN 70 AND 73 OR b >= 98 THEN 0.00
            WHEN b BETWEEN 58 AND 61 THEN 950.00
            ELSE 400.00 + (i % 7) * 25 END,
       CASE WHEN b BETWEEN 50 AND 54 THEN 100.00
            WHEN b BETWEEN 81 AND 85 THEN 250000.00
            WHEN b BETWEEN 58 AND 61 THEN 975.00
            ELSE 425.00 + (i % 7) * 25 END,
       CASE WHEN b BETWEEN 55 AND 57 THEN -25.00 ELSE 25.00 END,
       CASE WHEN b BETWEEN 66 AND 95 OR i % 3 <> 0 THEN 'bill' ELSE 'card' END,
       CASE WHEN b BETWEEN 86 AND 90 OR b >= 98 THEN NULL ELSE (100 + i % 9000) || ' Main St' END,
       CASE WHEN b = 62 THEN NULL ELSE 'Springfield' END,
       'IL',
       CASE WHEN b = 63 THEN NULL ELSE lpad((60000 + i % 3000)::text, 5, '0') END,
       CASE WHEN b = 64 THEN NULL ELSE 'Borrower ' || i END,
       CASE WHEN b BETWEEN 91 AND 95 THEN NULL ELSE 'borrower' || i || '@mail.example.test' END,
       CASE WHEN b BETWEEN 91 AND 95 OR i % 2 = 0 THEN NULL ELSE '555-01' || lpad((i % 100)::text, 2, '0') END,
       'Site Contact ' || i,
       CASE WHEN b = 65 THEN NULL ELSE '555-02' || lpad((i % 100)::text, 2, '0') END,
       now() - make_interval(mins => i % 600)
FROM (
    SELECT i, (i % :tenants) + 1 AS t, (i / :tenants) % 100 AS b
    FROM generate_series(0, :orders - 1) AS i
) o;

-- One approved send_email card per tenant, to contact 1 (has an address unless hashed out;
-- then no card for that tenant).
INSERT INTO public.kanban_cards
    (tenant_id, client_id, contact_id, agent_target, type, title, description, rationale,
     priority, state, action_payload, created_at, updated_at)
SELECT c.tenant_id, c.client_id, c.id, c.id, 'send_email',
       'Follow up with ' || c.first_name || ' ' || c.last_name,
       'Approved by a person', 'benchmark', 'medium', 'approved',
       jsonb_build_object('to', c.email, 'subject', 'Checking in',
                          'body', 'Hi ' || c.first_name || E',\n\nChecking in.\n\nBest regards,\nBench AMC\n',
                          'contact_id', c.id),
       now() - interval '1 hour', now() - interval '1 hour'
FROM generate_series(1, :tenants) AS t
JOIN public.contacts c ON c.id = md5('bench-contact-' || t || '-1')::uuid
WHERE c.email IS NOT NULL;

UPDATE public.system_config
SET value = jsonb_set(value, '{global_enabled}', 'true'::jsonb), updated_at = now()
WHERE key = 'agent_config';

COMMIT;

-- A freshly loaded table has no visibility map and no statistics: give the planner and
-- index-only scans what a production table would have.
VACUUM ANALYZE;
