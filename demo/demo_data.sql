-- Demo dataset for `make demo` (scripts/demo loads it after `autopilot migrate`).
--
-- Two tenants:
--   Summit Appraisal Management (11111111-…)  agent_enabled = true
--   Harbor Valuation Group      (22222222-…)  agent_enabled = false
-- Each has 1 profile, 2 products, 3 clients (one near its credit limit, one
-- inactive), 6 contacts (one primary per client, one without e-mail) and 6
-- orders covering the order checks:
--   …0d00-…01 valid                      …0d00-…04 no property address
--   …0d00-…02 total below the fee        …0d00-…05 'bill' order over the client's credit
--   …0d00-…03 negative tech fee          …0d00-…06 cancelled
-- plus one e-mail suppression and engagement clocks, most of them overdue.
--
-- Ids are fixed so rows can reference each other; the pattern is
--   <tenant>-<kind>-4000-8000-<n>   kind: af00 profile, ad00 product,
--   c000 client, cc00 contact, 0d00 order, ec00 engagement clock.
-- All e-mail addresses use the reserved .example domain.

BEGIN;

-- ---------------------------------------------------------------- tenants
INSERT INTO tenants (id, name, is_active, agent_enabled, created_at) VALUES
  ('11111111-1111-1111-1111-111111111111', 'Summit Appraisal Management', true, true,  now() - interval '400 days'),
  ('22222222-2222-2222-2222-222222222222', 'Harbor Valuation Group',      true, false, now() - interval '200 days');

INSERT INTO profiles (id, tenant_id, email, full_name, created_at) VALUES
  ('11111111-af00-4000-8000-000000000001', '11111111-1111-1111-1111-111111111111',
   'rachel.moreno@summit-amc.example', 'Rachel Moreno', now() - interval '400 days'),
  ('22222222-af00-4000-8000-000000000001', '22222222-2222-2222-2222-222222222222',
   'owen.gallagher@harbor-valuation.example', 'Owen Gallagher', now() - interval '200 days');

INSERT INTO products (id, tenant_id, name, price, min_price, max_price) VALUES
  ('11111111-ad00-4000-8000-000000000001', '11111111-1111-1111-1111-111111111111', 'Full Appraisal (1004)',    450.00, 400.00, 650.00),
  ('11111111-ad00-4000-8000-000000000002', '11111111-1111-1111-1111-111111111111', 'Desktop Appraisal (1004D)', 250.00, 200.00, 350.00),
  ('22222222-ad00-4000-8000-000000000001', '22222222-2222-2222-2222-222222222222', 'Full Appraisal (1004)',    475.00, 425.00, 700.00),
  ('22222222-ad00-4000-8000-000000000002', '22222222-2222-2222-2222-222222222222', 'Condo Appraisal (1073)',   500.00, 450.00, 725.00);

-- ---------------------------------------------------------------- clients
-- …c000-…01 healthy, …c000-…02 near its credit limit, …c000-…03 inactive.
INSERT INTO clients (id, tenant_id, company_name, is_active, credit_limit, balance, created_at) VALUES
  ('11111111-c000-4000-8000-000000000001', '11111111-1111-1111-1111-111111111111', 'Cascade Mortgage Partners', true,  25000.00,  3200.00, now() - interval '380 days'),
  ('11111111-c000-4000-8000-000000000002', '11111111-1111-1111-1111-111111111111', 'Ridgeline Home Loans',      true,   5000.00,  4850.00, now() - interval '300 days'),
  ('11111111-c000-4000-8000-000000000003', '11111111-1111-1111-1111-111111111111', 'Old Mill Credit Union',     false, 10000.00,     0.00, now() - interval '390 days'),
  ('22222222-c000-4000-8000-000000000001', '22222222-2222-2222-2222-222222222222', 'Bayside Lending Co.',       true,  30000.00, 12000.00, now() - interval '190 days'),
  ('22222222-c000-4000-8000-000000000002', '22222222-2222-2222-2222-222222222222', 'Lighthouse Funding',        true,   8000.00,  7600.00, now() - interval '150 days'),
  ('22222222-c000-4000-8000-000000000003', '22222222-2222-2222-2222-222222222222', 'Pier 9 Mortgage',           false, 15000.00,   500.00, now() - interval '180 days');

-- ---------------------------------------------------------------- contacts
-- Two per client, the first one primary; …cc00-…04 has no e-mail.
INSERT INTO contacts (id, tenant_id, client_id, first_name, last_name, email, title, is_primary, created_at) VALUES
  ('11111111-cc00-4000-8000-000000000001', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000001',
   'Dana',   'Whitfield', 'dana.whitfield@cascade-mortgage.example',   'President',          true,  now() - interval '380 days'),
  ('11111111-cc00-4000-8000-000000000002', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000001',
   'Marcus', 'Lee',       'marcus.lee@cascade-mortgage.example',       'Loan Officer',       false, now() - interval '350 days'),
  ('11111111-cc00-4000-8000-000000000003', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000002',
   'Priya',  'Natarajan', 'priya.natarajan@ridgeline-loans.example',   'Operations Manager', true,  now() - interval '300 days'),
  ('11111111-cc00-4000-8000-000000000004', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000002',
   'Tom',    'Becker',    NULL,                                        'Loan Officer',       false, now() - interval '120 days'),
  ('11111111-cc00-4000-8000-000000000005', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000003',
   'Helen',  'Ortiz',     'helen.ortiz@oldmill-cu.example',            'Team Lead',          true,  now() - interval '390 days'),
  ('11111111-cc00-4000-8000-000000000006', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000003',
   'Sam',    'Iverson',   'sam.iverson@oldmill-cu.example',            'Loan Officer',       false, now() - interval '200 days'),

  ('22222222-cc00-4000-8000-000000000001', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000001',
   'Grace',  'Holloway',  'grace.holloway@bayside-lending.example',    'President',          true,  now() - interval '190 days'),
  ('22222222-cc00-4000-8000-000000000002', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000001',
   'Victor', 'Chen',      'victor.chen@bayside-lending.example',       'Loan Officer',       false, now() - interval '160 days'),
  ('22222222-cc00-4000-8000-000000000003', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000002',
   'Nadia',  'Petrova',   'nadia.petrova@lighthouse-funding.example',  'Operations Manager', true,  now() - interval '150 days'),
  ('22222222-cc00-4000-8000-000000000004', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000002',
   'Luis',   'Alvarez',   NULL,                                        'Loan Officer',       false, now() - interval '90 days'),
  ('22222222-cc00-4000-8000-000000000005', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000003',
   'Erin',   'McBride',   'erin.mcbride@pier9-mortgage.example',       'Team Lead',          true,  now() - interval '180 days'),
  ('22222222-cc00-4000-8000-000000000006', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000003',
   'Jamal',  'Wright',    'jamal.wright@pier9-mortgage.example',       'Loan Officer',       false, now() - interval '170 days');

-- ---------------------------------------------------------------- orders
INSERT INTO orders (id, tenant_id, client_id, product_id, status, fee_amount, total_amount, tech_fee, payment_method,
                    property_address, property_city, property_state, property_zip,
                    borrower_name, borrower_email, borrower_phone, property_contact_name, property_contact_phone,
                    created_at) VALUES
  -- Summit ------------------------------------------------------------
  -- 1: valid (billed, well within Cascade's credit)
  ('11111111-0d00-4000-8000-000000000001', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000001',
   '11111111-ad00-4000-8000-000000000001', 'new', 450.00, 475.00, 25.00, 'bill',
   '1840 NW Everett St', 'Portland', 'OR', '97209',
   'Jordan Blake', 'jordan.blake@mail.example', '503-555-0142', 'Jordan Blake', '503-555-0142',
   now() - interval '2 hours'),
  -- 2: total below the fee
  ('11111111-0d00-4000-8000-000000000002', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000001',
   '11111111-ad00-4000-8000-000000000001', 'new', 450.00, 400.00, 0.00, 'card',
   '77 Alder Ln', 'Beaverton', 'OR', '97005',
   'Casey Nguyen', 'casey.nguyen@mail.example', '503-555-0177', 'Casey Nguyen', '503-555-0177',
   now() - interval '90 minutes'),
  -- 3: negative tech fee
  ('11111111-0d00-4000-8000-000000000003', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000001',
   '11111111-ad00-4000-8000-000000000002', 'new', 250.00, 250.00, -15.00, 'card',
   '905 Maple Ct', 'Lake Oswego', 'OR', '97034',
   'Morgan Ellis', 'morgan.ellis@mail.example', '503-555-0118', 'Pat Ellis', '503-555-0119',
   now() - interval '75 minutes'),
  -- 4: no property address
  ('11111111-0d00-4000-8000-000000000004', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000001',
   '11111111-ad00-4000-8000-000000000002', 'new', 250.00, 275.00, 25.00, 'card',
   NULL, 'Tigard', 'OR', '97223',
   'Riley Shaw', 'riley.shaw@mail.example', '503-555-0163', NULL, NULL,
   now() - interval '60 minutes'),
  -- 5: billed to Ridgeline (balance 4850 of 5000) -> over the credit limit
  ('11111111-0d00-4000-8000-000000000005', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000002',
   '11111111-ad00-4000-8000-000000000001', 'new', 550.00, 575.00, 25.00, 'bill',
   '3120 SE Division St', 'Portland', 'OR', '97202',
   'Avery Brooks', 'avery.brooks@mail.example', '503-555-0190', 'Avery Brooks', '503-555-0190',
   now() - interval '45 minutes'),
  -- 6: cancelled (otherwise valid)
  ('11111111-0d00-4000-8000-000000000006', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000001',
   '11111111-ad00-4000-8000-000000000001', 'cancelled', 450.00, 475.00, 25.00, 'card',
   '12 Cedar Hills Blvd', 'Beaverton', 'OR', '97005',
   'Quinn Harper', 'quinn.harper@mail.example', '503-555-0104', 'Quinn Harper', '503-555-0104',
   now() - interval '3 days'),

  -- Harbor ------------------------------------------------------------
  -- 1: valid
  ('22222222-0d00-4000-8000-000000000001', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000001',
   '22222222-ad00-4000-8000-000000000001', 'new', 475.00, 500.00, 25.00, 'bill',
   '48 Harbor View Dr', 'San Diego', 'CA', '92101',
   'Taylor Reyes', 'taylor.reyes@mail.example', '619-555-0131', 'Taylor Reyes', '619-555-0131',
   now() - interval '3 hours'),
  -- 2: total below the fee
  ('22222222-0d00-4000-8000-000000000002', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000001',
   '22222222-ad00-4000-8000-000000000002', 'new', 500.00, 450.00, 0.00, 'card',
   '2201 Kettner Blvd Unit 5', 'San Diego', 'CA', '92101',
   'Jesse Park', 'jesse.park@mail.example', '619-555-0155', 'Jesse Park', '619-555-0155',
   now() - interval '150 minutes'),
  -- 3: negative tech fee
  ('22222222-0d00-4000-8000-000000000003', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000001',
   '22222222-ad00-4000-8000-000000000001', 'new', 475.00, 475.00, -20.00, 'card',
   '615 Coronado Ave', 'Coronado', 'CA', '92118',
   'Drew Collins', 'drew.collins@mail.example', '619-555-0122', 'Drew Collins', '619-555-0122',
   now() - interval '2 hours'),
  -- 4: no property address
  ('22222222-0d00-4000-8000-000000000004', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000001',
   '22222222-ad00-4000-8000-000000000001', 'new', 475.00, 500.00, 25.00, 'card',
   NULL, 'Chula Vista', 'CA', '91910',
   'Skyler James', 'skyler.james@mail.example', '619-555-0187', NULL, NULL,
   now() - interval '100 minutes'),
  -- 5: billed to Lighthouse (balance 7600 of 8000) -> over the credit limit
  ('22222222-0d00-4000-8000-000000000005', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000002',
   '22222222-ad00-4000-8000-000000000002', 'new', 500.00, 525.00, 25.00, 'bill',
   '930 Sunset Cliffs Blvd', 'San Diego', 'CA', '92107',
   'Rowan Fisher', 'rowan.fisher@mail.example', '619-555-0149', 'Rowan Fisher', '619-555-0149',
   now() - interval '80 minutes'),
  -- 6: cancelled
  ('22222222-0d00-4000-8000-000000000006', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000001',
   '22222222-ad00-4000-8000-000000000001', 'cancelled', 475.00, 500.00, 25.00, 'bill',
   '5 Shelter Island Dr', 'San Diego', 'CA', '92106',
   'Parker Lane', 'parker.lane@mail.example', '619-555-0110', 'Parker Lane', '619-555-0110',
   now() - interval '5 days');

-- ---------------------------------------------------------------- suppressions
-- Marcus Lee (Summit / Cascade) unsubscribed; he also has an overdue clock.
INSERT INTO email_suppressions (tenant_id, contact_id, email, reason, created_at) VALUES
  ('11111111-1111-1111-1111-111111111111', '11111111-cc00-4000-8000-000000000002',
   'marcus.lee@cascade-mortgage.example', 'unsubscribe', now() - interval '30 days');

-- ---------------------------------------------------------------- engagement clocks
-- last_touch_by, when set, is the tenant's profile.
INSERT INTO engagement_clocks (id, tenant_id, client_id, contact_id, last_touch_at, last_touch_type, last_touch_by,
                               next_touch_due, engagement_interval_days, priority_score) VALUES
  -- Summit: five overdue (one suppressed, one without e-mail, one at an inactive client), one not due
  ('11111111-ec00-4000-8000-000000000001', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000001',
   '11111111-cc00-4000-8000-000000000001', now() - interval '26 days', 'email', '11111111-af00-4000-8000-000000000001',
   now() - interval '5 days', 21, 72.50),
  ('11111111-ec00-4000-8000-000000000002', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000001',
   '11111111-cc00-4000-8000-000000000002', now() - interval '24 days', 'call', NULL,
   now() - interval '3 days', 21, 40.00),
  ('11111111-ec00-4000-8000-000000000003', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000002',
   '11111111-cc00-4000-8000-000000000003', now() - interval '33 days', 'call', '11111111-af00-4000-8000-000000000001',
   now() - interval '12 days', 21, 88.00),
  ('11111111-ec00-4000-8000-000000000004', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000002',
   '11111111-cc00-4000-8000-000000000004', now() - interval '35 days', 'meeting', NULL,
   now() - interval '7 days', 28, 55.00),
  ('11111111-ec00-4000-8000-000000000005', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000003',
   '11111111-cc00-4000-8000-000000000005', now() - interval '61 days', 'meeting', NULL,
   now() - interval '40 days', 21, 30.00),
  ('11111111-ec00-4000-8000-000000000006', '11111111-1111-1111-1111-111111111111', '11111111-c000-4000-8000-000000000003',
   '11111111-cc00-4000-8000-000000000006', now() - interval '4 days', 'task', NULL,
   now() + interval '17 days', 21, 15.00),
  -- Harbor (agent disabled): one overdue, one not due
  ('22222222-ec00-4000-8000-000000000001', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000001',
   '22222222-cc00-4000-8000-000000000001', now() - interval '29 days', 'email', '22222222-af00-4000-8000-000000000001',
   now() - interval '8 days', 21, 65.00),
  ('22222222-ec00-4000-8000-000000000002', '22222222-2222-2222-2222-222222222222', '22222222-c000-4000-8000-000000000002',
   '22222222-cc00-4000-8000-000000000003', now() - interval '14 days', 'call', '22222222-af00-4000-8000-000000000001',
   now() + interval '7 days', 21, 20.00);

COMMIT;
