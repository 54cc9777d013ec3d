-- Inbound mail: what comes back after the agent sends (issue 17, SPEC "ingest-mail").
--
-- inbound_mail_events   one row per recognised inbound message (a bounce, a complaint, a
--                       reply or an automatic answer about a card the agent sent); unique
--                       per tenant and message key, which makes ingestion idempotent.
-- contact_email_holds   "this contact replied": automatic e-mail to the contact (or the
--                       address) stops while a hold is open, until a person resumes it.
-- inbound_mail_cursors  how far the React phase has read the host's own inbox tables.
--
-- mail_feedback_rates() is the one definition of the reply, bounce and complaint rates over
-- a tenant's last 100 sends; every reflection row gets them (trigger below), `status` and
-- the metrics file read them through the same function.

CREATE TABLE IF NOT EXISTS public.inbound_mail_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    source text NOT NULL DEFAULT 'mail' CHECK (source IN ('mail', 'host_inbox', 'host_suppression')),
    -- The inbound message's Message-ID (with brackets), sha256:<hex> of the raw message when
    -- it has none, or <source>:<row id> for rows of the host's tables.
    message_key text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('bounce', 'soft_bounce', 'complaint', 'reply', 'auto_reply')),
    -- The agent's send_email card the message is about.
    card_id uuid,
    contact_id uuid,
    -- The address the agent sent to (lower case).
    email text,
    -- DSN status (5.1.1), ARF feedback type, or why an answer counts as automatic.
    status text,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inbound_mail_events_tenant_key_key UNIQUE (tenant_id, message_key),
    CONSTRAINT inbound_mail_events_tenant_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES public.contacts (tenant_id, id) ON DELETE SET NULL (contact_id)
);
CREATE INDEX IF NOT EXISTS inbound_mail_events_tenant_card_idx
    ON public.inbound_mail_events (tenant_id, card_id) WHERE card_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbound_mail_events_tenant_kind_email_idx
    ON public.inbound_mail_events (tenant_id, kind, email, received_at);

CREATE TABLE IF NOT EXISTS public.contact_email_holds (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    contact_id uuid,
    email text NOT NULL,
    reason text NOT NULL DEFAULT 'replied',
    replied_at timestamptz NOT NULL,
    event_id uuid REFERENCES public.inbound_mail_events(id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    resumed_at timestamptz,
    resumed_by uuid,
    resume_note text,
    CONSTRAINT contact_email_holds_tenant_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES public.contacts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT contact_email_holds_tenant_resumed_by_fkey FOREIGN KEY (tenant_id, resumed_by)
        REFERENCES public.profiles (tenant_id, id) ON DELETE SET NULL (resumed_by)
);
-- One open hold per address; the send path looks holds up by address and by contact.
CREATE UNIQUE INDEX IF NOT EXISTS contact_email_holds_one_open_idx
    ON public.contact_email_holds (tenant_id, lower(email)) WHERE resumed_at IS NULL;
CREATE INDEX IF NOT EXISTS contact_email_holds_open_contact_idx
    ON public.contact_email_holds (tenant_id, contact_id) WHERE resumed_at IS NULL AND contact_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS public.inbound_mail_cursors (
    tenant_id uuid NOT NULL REFERENCES public.tenants(id) ON DELETE CASCADE,
    source text NOT NULL,
    last_at timestamptz NOT NULL,
    last_id text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source)
);

-- The rates look at a tenant's last sends, newest first.
CREATE INDEX IF NOT EXISTS kanban_cards_tenant_sent_idx
    ON public.kanban_cards (tenant_id, executed_at DESC)
    WHERE type = 'send_email' AND message_id IS NOT NULL;
-- A reply without threading headers is matched by the address the agent sent to.
CREATE INDEX IF NOT EXISTS kanban_cards_sent_to_idx
    ON public.kanban_cards (lower(btrim(action_payload ->> 'to')), executed_at DESC)
    WHERE type = 'send_email' AND message_id IS NOT NULL;
-- Matching a returned Message-ID to its card.
CREATE INDEX IF NOT EXISTS kanban_cards_message_id_idx
    ON public.kanban_cards (message_id) WHERE message_id IS NOT NULL;

-- RLS and grants: people of the tenant read events and holds and may resume a hold; the
-- cursor is the agent's bookkeeping.
DO $sec$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['inbound_mail_events', 'contact_email_holds', 'inbound_mail_cursors'] LOOP
        EXECUTE pg_catalog.format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS tenant_isolation ON public.%I', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY tenant_isolation ON public.%I FOR ALL TO authenticated '
            'USING (tenant_id IN (SELECT p.tenant_id FROM public.profiles p WHERE p.id = (SELECT auth.uid()))) '
            'WITH CHECK (tenant_id IN (SELECT p.tenant_id FROM public.profiles p WHERE p.id = (SELECT auth.uid())))',
            t);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS service_role_all ON public.%I', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY service_role_all ON public.%I FOR ALL TO service_role USING (true) WITH CHECK (true)', t);
        EXECUTE pg_catalog.format('REVOKE ALL ON public.%I FROM PUBLIC, anon, authenticated', t);
        EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO service_role', t);
    END LOOP;
END
$sec$;
GRANT SELECT ON public.inbound_mail_events, public.contact_email_holds TO authenticated;
GRANT UPDATE (resumed_at, resumed_by, resume_note) ON public.contact_email_holds TO authenticated;

-- Reply, bounce and complaint rates over the tenant's last 100 sends at p_at: each counts
-- the sends (of those 100) that got at least one such answer. Rates are fractions (0..1).
CREATE OR REPLACE FUNCTION public.mail_feedback_rates(p_tenant_id uuid, p_at timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    WITH sends AS (
        SELECT k.id FROM public.kanban_cards k
        WHERE k.tenant_id = p_tenant_id AND k.type = 'send_email' AND k.message_id IS NOT NULL
          AND k.executed_at IS NOT NULL AND k.executed_at <= p_at
        ORDER BY k.executed_at DESC, k.id DESC
        LIMIT 100
    ), counted AS (
        SELECT (SELECT count(*) FROM sends) AS sends,
               count(DISTINCT e.card_id) FILTER (WHERE e.kind = 'reply') AS replies,
               count(DISTINCT e.card_id) FILTER (WHERE e.kind = 'bounce') AS bounces,
               count(DISTINCT e.card_id) FILTER (WHERE e.kind = 'complaint') AS complaints
        FROM public.inbound_mail_events e
        WHERE e.tenant_id = p_tenant_id AND e.card_id IN (SELECT id FROM sends)
          AND e.received_at <= p_at
    )
    SELECT pg_catalog.jsonb_build_object(
        'sends', c.sends, 'replies', c.replies, 'bounces', c.bounces, 'complaints', c.complaints,
        'reply_rate', CASE WHEN c.sends = 0 THEN 0 ELSE round(c.replies::numeric / c.sends, 4) END,
        'bounce_rate', CASE WHEN c.sends = 0 THEN 0 ELSE round(c.bounces::numeric / c.sends, 4) END,
        'complaint_rate', CASE WHEN c.sends = 0 THEN 0 ELSE round(c.complaints::numeric / c.sends, 4) END)
    FROM counted c
$$;

-- Every reflection carries the rates at its own time, whoever writes it. SECURITY DEFINER:
-- a person's role may insert a reflection of its own tenant (RLS checks that) without
-- rights on the cards and events the rates are computed from.
CREATE OR REPLACE FUNCTION public.reflection_add_mail_feedback()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    NEW.metrics_delta := coalesce(NEW.metrics_delta, '{}'::jsonb)
        || pg_catalog.jsonb_build_object('mail_feedback',
               public.mail_feedback_rates(NEW.tenant_id, coalesce(NEW.created_at, pg_catalog.now())));
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS agent_hourly_reflections_mail_feedback ON public.agent_hourly_reflections;
CREATE TRIGGER agent_hourly_reflections_mail_feedback
    BEFORE INSERT ON public.agent_hourly_reflections
    FOR EACH ROW EXECUTE FUNCTION public.reflection_add_mail_feedback();

REVOKE EXECUTE ON FUNCTION public.mail_feedback_rates(uuid, timestamptz),
                           public.reflection_add_mail_feedback()
    FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.mail_feedback_rates(uuid, timestamptz) TO service_role;
