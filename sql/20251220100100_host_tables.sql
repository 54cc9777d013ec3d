-- Host application tables the agent reads and writes.
--
-- The host (the CRM) usually owns these already, possibly with more columns. We create a
-- table only when it is missing and otherwise add just the columns the agent needs, leaving
-- everything else of the host alone. Constraints that protect tenant isolation are added
-- NOT VALID first and validated when the existing data allows it, so a migration never
-- fails on a host's historical rows but every new row is checked.

CREATE OR REPLACE FUNCTION pg_temp.ensure_constraint(tbl regclass, cname text, def text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid = tbl AND conname = cname) THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, cname, def);
    END IF;
END $$;

-- Foreign keys on host tables: added NOT VALID, then validated if the host's data allows.
CREATE OR REPLACE FUNCTION pg_temp.ensure_fk(tbl regclass, cname text, def text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid = tbl AND conname = cname) THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s NOT VALID', tbl, cname, def);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid = tbl AND conname = cname AND NOT convalidated) THEN
        BEGIN
            EXECUTE pg_catalog.format('ALTER TABLE %s VALIDATE CONSTRAINT %I', tbl, cname);
        EXCEPTION WHEN foreign_key_violation THEN
            RAISE WARNING 'existing rows of % violate %; constraint kept NOT VALID (new rows are checked)', tbl, cname;
        END;
    END IF;
END $$;

-- tenants ---------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.tenants (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    agent_enabled boolean NOT NULL DEFAULT false,
    agent_settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.tenants
    ADD COLUMN IF NOT EXISTS name text,
    ADD COLUMN IF NOT EXISTS is_active boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS agent_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS agent_settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();

-- profiles --------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.profiles (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    email text,
    full_name text,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.profiles
    ADD COLUMN IF NOT EXISTS tenant_id uuid REFERENCES public.tenants(id) ON DELETE CASCADE,
    ADD COLUMN IF NOT EXISTS email text,
    ADD COLUMN IF NOT EXISTS full_name text,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
SELECT pg_temp.ensure_constraint('public.profiles', 'profiles_tenant_id_id_key', 'UNIQUE (tenant_id, id)');
CREATE INDEX IF NOT EXISTS profiles_tenant_id_idx ON public.profiles (tenant_id);

-- clients ---------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.clients (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    company_name text NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    credit_limit numeric(12,2) NOT NULL DEFAULT 0,
    balance numeric(12,2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.clients
    ADD COLUMN IF NOT EXISTS tenant_id uuid REFERENCES public.tenants(id) ON DELETE CASCADE,
    ADD COLUMN IF NOT EXISTS company_name text,
    ADD COLUMN IF NOT EXISTS is_active boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS credit_limit numeric(12,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS balance numeric(12,2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
SELECT pg_temp.ensure_constraint('public.clients', 'clients_tenant_id_id_key', 'UNIQUE (tenant_id, id)');

-- contacts --------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.contacts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    client_id uuid,
    first_name text,
    last_name text,
    email text,
    title text,
    is_primary boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.contacts
    ADD COLUMN IF NOT EXISTS tenant_id uuid REFERENCES public.tenants(id) ON DELETE CASCADE,
    ADD COLUMN IF NOT EXISTS client_id uuid,
    ADD COLUMN IF NOT EXISTS first_name text,
    ADD COLUMN IF NOT EXISTS last_name text,
    ADD COLUMN IF NOT EXISTS email text,
    ADD COLUMN IF NOT EXISTS title text,
    ADD COLUMN IF NOT EXISTS is_primary boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
SELECT pg_temp.ensure_constraint('public.contacts', 'contacts_tenant_id_id_key', 'UNIQUE (tenant_id, id)');
SELECT pg_temp.ensure_fk('public.contacts', 'contacts_tenant_client_fkey',
    'FOREIGN KEY (tenant_id, client_id) REFERENCES public.clients (tenant_id, id) ON DELETE CASCADE');
CREATE INDEX IF NOT EXISTS contacts_tenant_client_idx ON public.contacts (tenant_id, client_id);

-- products --------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.products (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    name text NOT NULL,
    price numeric(12,2),
    min_price numeric(12,2),
    max_price numeric(12,2)
);
ALTER TABLE public.products
    ADD COLUMN IF NOT EXISTS tenant_id uuid REFERENCES public.tenants(id) ON DELETE CASCADE,
    ADD COLUMN IF NOT EXISTS name text,
    ADD COLUMN IF NOT EXISTS price numeric(12,2),
    ADD COLUMN IF NOT EXISTS min_price numeric(12,2),
    ADD COLUMN IF NOT EXISTS max_price numeric(12,2);
SELECT pg_temp.ensure_constraint('public.products', 'products_tenant_id_id_key', 'UNIQUE (tenant_id, id)');

-- orders ----------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.orders (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    client_id uuid,
    product_id uuid,
    status text NOT NULL DEFAULT 'new',
    fee_amount numeric(12,2),
    total_amount numeric(12,2),
    tech_fee numeric(12,2) DEFAULT 0,
    payment_method text,
    property_address text,
    property_city text,
    property_state text,
    property_zip text,
    borrower_name text,
    borrower_email text,
    borrower_phone text,
    property_contact_name text,
    property_contact_phone text,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.orders
    ADD COLUMN IF NOT EXISTS tenant_id uuid REFERENCES public.tenants(id) ON DELETE CASCADE,
    ADD COLUMN IF NOT EXISTS client_id uuid,
    ADD COLUMN IF NOT EXISTS product_id uuid,
    ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'new',
    ADD COLUMN IF NOT EXISTS fee_amount numeric(12,2),
    ADD COLUMN IF NOT EXISTS total_amount numeric(12,2),
    ADD COLUMN IF NOT EXISTS tech_fee numeric(12,2) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS payment_method text,
    ADD COLUMN IF NOT EXISTS property_address text,
    ADD COLUMN IF NOT EXISTS property_city text,
    ADD COLUMN IF NOT EXISTS property_state text,
    ADD COLUMN IF NOT EXISTS property_zip text,
    ADD COLUMN IF NOT EXISTS borrower_name text,
    ADD COLUMN IF NOT EXISTS borrower_email text,
    ADD COLUMN IF NOT EXISTS borrower_phone text,
    ADD COLUMN IF NOT EXISTS property_contact_name text,
    ADD COLUMN IF NOT EXISTS property_contact_phone text,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
SELECT pg_temp.ensure_constraint('public.orders', 'orders_tenant_id_id_key', 'UNIQUE (tenant_id, id)');
SELECT pg_temp.ensure_fk('public.orders', 'orders_tenant_client_fkey',
    'FOREIGN KEY (tenant_id, client_id) REFERENCES public.clients (tenant_id, id) ON DELETE SET NULL (client_id)');
SELECT pg_temp.ensure_fk('public.orders', 'orders_tenant_product_fkey',
    'FOREIGN KEY (tenant_id, product_id) REFERENCES public.products (tenant_id, id) ON DELETE SET NULL (product_id)');
CREATE INDEX IF NOT EXISTS orders_tenant_client_idx ON public.orders (tenant_id, client_id);

-- kanban_cards ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.kanban_cards (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    run_id uuid,
    client_id uuid,
    contact_id uuid,
    type text NOT NULL,
    title text NOT NULL,
    description text,
    rationale text,
    priority text NOT NULL DEFAULT 'medium' CHECK (priority IN ('low', 'medium', 'high')),
    state text NOT NULL DEFAULT 'suggested'
        CHECK (state IN ('scheduled', 'suggested', 'in_review', 'approved', 'executing', 'done', 'blocked', 'rejected')),
    action_payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    due_at timestamptz,
    executed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.kanban_cards
    ADD COLUMN IF NOT EXISTS tenant_id uuid REFERENCES public.tenants(id) ON DELETE CASCADE,
    ADD COLUMN IF NOT EXISTS run_id uuid,
    ADD COLUMN IF NOT EXISTS client_id uuid,
    ADD COLUMN IF NOT EXISTS contact_id uuid,
    ADD COLUMN IF NOT EXISTS type text,
    ADD COLUMN IF NOT EXISTS title text,
    ADD COLUMN IF NOT EXISTS description text,
    ADD COLUMN IF NOT EXISTS rationale text,
    ADD COLUMN IF NOT EXISTS priority text DEFAULT 'medium',
    ADD COLUMN IF NOT EXISTS state text DEFAULT 'suggested',
    ADD COLUMN IF NOT EXISTS action_payload jsonb DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS due_at timestamptz,
    ADD COLUMN IF NOT EXISTS executed_at timestamptz,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now(),
    -- Agent bookkeeping (not part of the host's contract):
    -- agent_target: the contact (send_email) or order (create_task) an agent card is about;
    --   the unique index below allows one open agent card per target and type.
    -- message_id: the deterministic Message-ID of the e-mail sent for the card.
    -- blocked_reason: why the agent parked the card for a human.
    ADD COLUMN IF NOT EXISTS agent_target uuid,
    ADD COLUMN IF NOT EXISTS message_id text,
    ADD COLUMN IF NOT EXISTS blocked_reason text;
SELECT pg_temp.ensure_fk('public.kanban_cards', 'kanban_cards_tenant_client_fkey',
    'FOREIGN KEY (tenant_id, client_id) REFERENCES public.clients (tenant_id, id) ON DELETE SET NULL (client_id)');
SELECT pg_temp.ensure_fk('public.kanban_cards', 'kanban_cards_tenant_contact_fkey',
    'FOREIGN KEY (tenant_id, contact_id) REFERENCES public.contacts (tenant_id, id) ON DELETE SET NULL (contact_id)');
CREATE UNIQUE INDEX IF NOT EXISTS kanban_cards_one_open_agent_card_idx
    ON public.kanban_cards (tenant_id, type, agent_target)
    WHERE agent_target IS NOT NULL AND state IN ('suggested', 'in_review', 'approved', 'executing');
CREATE INDEX IF NOT EXISTS kanban_cards_tenant_state_idx ON public.kanban_cards (tenant_id, state, type);
-- Deleting (pruning) a run nulls its cards' run_id through the foreign key.
CREATE INDEX IF NOT EXISTS kanban_cards_tenant_run_idx ON public.kanban_cards (tenant_id, run_id) WHERE run_id IS NOT NULL;

-- email_suppressions ----------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.email_suppressions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    contact_id uuid,
    email text,
    reason text NOT NULL DEFAULT 'manual' CHECK (reason IN ('unsubscribe', 'bounce', 'complaint', 'manual')),
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.email_suppressions
    ADD COLUMN IF NOT EXISTS tenant_id uuid REFERENCES public.tenants(id) ON DELETE CASCADE,
    ADD COLUMN IF NOT EXISTS contact_id uuid,
    ADD COLUMN IF NOT EXISTS email text,
    ADD COLUMN IF NOT EXISTS reason text DEFAULT 'manual',
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
SELECT pg_temp.ensure_fk('public.email_suppressions', 'email_suppressions_tenant_contact_fkey',
    'FOREIGN KEY (tenant_id, contact_id) REFERENCES public.contacts (tenant_id, id) ON DELETE CASCADE');
-- Suppression matches case-insensitively, so the lookup index is on lower(email).
CREATE INDEX IF NOT EXISTS email_suppressions_tenant_lower_email_idx
    ON public.email_suppressions (tenant_id, lower(email));
CREATE INDEX IF NOT EXISTS email_suppressions_tenant_contact_idx
    ON public.email_suppressions (tenant_id, contact_id) WHERE contact_id IS NOT NULL;
