//! E-mail delivery (SPEC §5a): sending approved `send_email` cards over SMTP at most once,
//! classifying provider failures, the per-tenant circuit breaker, and bounce suppression.
//! (Drafting the follow-up cards belongs to `engagement`.)
//!
//! Configuration comes from the environment: `SMTP_URL` and `EMAIL_FROM` (both needed;
//! without them nothing is sent and approved cards wait), optionally `SMTP_TIMEOUT_SECS`
//! (default 30, fractions allowed), `SMTP_HELO_NAME` (default: the domain of `EMAIL_FROM`),
//! `SMTP_CA_FILE` (CA certificates trusted besides the system store) and `SSL_CERT_FILE`
//! (the system bundle to use); see `smtp` for the trust store.
//!
//! `SMTP_URL` forms:
//! - `smtp://[user:pass@]host[:port]`: plaintext, no TLS at all (port 25). Only for a
//!   trusted relay next to the agent (a local MTA, a sidecar, the test server).
//! - `smtp://…?tls=starttls`: STARTTLS required (port 587 unless given);
//!   `?tls=opportunistic` upgrades when offered and falls back to plaintext.
//! - `smtps://[user:pass@]host[:port]`: implicit TLS (port 465), certificates verified.
//!
//! User and password are percent-decoded; the password is registered for redaction and
//! never appears in a message.
//!
//! At most once. A card is sent only after one statement moved it `approved → executing`
//! (a claim two senders cannot both win), and it leaves `executing` only once the outcome is
//! recorded. A crash between the SMTP transaction and that record leaves the card
//! `executing`; the next run does not send it again blindly but parks it (`blocked`,
//! `blocked_code = 'delivery_unknown'`), telling a human which Message-ID to look for in the
//! mailbox. A cycle holds the tenant's lease, so it parks every card it finds executing at
//! once (a sender whose lease was taken over is fenced out and records nothing); without a
//! lease only cards untouched for [`STUCK_AFTER_MINUTES`] count as stuck, so a sender never
//! parks a card another sender is still delivering. The same parking, with an
//! `email_delivery_unknown` alert, follows a conversation that failed after the final dot
//! of DATA (timeout, closed connection): the relay may have the message. Only a person
//! moves a parked card on (`autopilot card requeue|close`, module `cards`).
//!
//! Policies (SPEC §5) are evaluated per card before the claim; the policy takes one unit of
//! the hourly quota for an allowed send. When the claim then loses (another sender took
//! the card) the unit is given back in the same transaction, so concurrent senders together
//! send exactly the hourly limit, not fewer.
//!
//! Failures: each is a row of `email_provider_failures` (auth, rate_limit, 5xx, 4xx,
//! timeout, connection, other). A failure before the final dot is clean: transient ones
//! (4xx, timeout, connection), provider-side ones (auth, other) and a 5xx before RCPT (about
//! the relay or the sender, not this card) put the card back to `approved` for a later
//! cycle; a permanent 5xx to RCPT, DATA or the end of the message parks it in `blocked` with
//! the reply, and a 5.1.x recipient rejection also suppresses the address (reason `bounce`). Five failures of a tenant within 15 minutes
//! open the circuit: sending stops for the cycle and a critical `email_provider_failure`
//! alert is raised (deduplicated while unacknowledged by `raise_agent_alert`).
//!
//! Layout: `config` (the environment), `mailer` (the SMTP client), `message` (building a
//! card's message), `classify` (failures), `breaker` (provider failures and the circuit
//! breaker), `send` (the at-most-once flow). Everything public is re-exported here.

mod breaker;
mod classify;
mod config;
mod html;
mod mailer;
mod message;
mod send;

pub use breaker::{provider_failures_last_hour, PROVIDER};
pub use classify::{classify_reply, ErrorType, SendFailure};
pub use config::{MailerConfig, SmtpSecurity};
pub use html::{html_to_text, looks_like_html};
pub use mailer::Mailer;
pub use message::{build_message, list_id, list_unsubscribe, message_id_for, CardToSend};
pub use send::{
    delivery_unknown_counts, send_approved, SendReport, DELIVERY_UNKNOWN, DELIVERY_UNKNOWN_ALERT,
    STUCK_AFTER_MINUTES,
};

/// Helpers shared by the unit tests of the submodules.
#[cfg(test)]
mod test_support {
    use super::MailerConfig;

    pub(super) fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            owned
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        }
    }

    pub(super) fn cfg() -> MailerConfig {
        MailerConfig::from_vars(vars(&[
            ("SMTP_URL", "smtp://127.0.0.1:2525"),
            ("EMAIL_FROM", "Agent <agent@amc.example>"),
        ]))
        .unwrap()
        .unwrap()
    }
}
