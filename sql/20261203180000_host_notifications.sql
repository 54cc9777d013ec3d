-- Salesmod's `email_notifications` (hard and soft bounce notices) is read as a third host
-- source by the cycle, recorded as its own event source.
ALTER TABLE public.inbound_mail_events
    DROP CONSTRAINT IF EXISTS inbound_mail_events_source_check;
ALTER TABLE public.inbound_mail_events
    ADD CONSTRAINT inbound_mail_events_source_check
    CHECK (source IN ('mail', 'host_inbox', 'host_suppression', 'host_notification'));
