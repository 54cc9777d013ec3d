//! The changes each kind of recognised message makes inside [`super::apply`]'s
//! transaction, after its event row went in: suppressing a bounced or complaining
//! address, counting transient failures, or holding a contact who replied.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{CardRef, Effect, Outcome, SOFT_BOUNCE_LIMIT};
use crate::db::Sql;

const SUPPRESS: &str = crate::sql!("inbound/suppress");
const SOFT_BOUNCES: &str = crate::sql!("inbound/soft_bounces");
const HOLD: &str = crate::sql!("inbound/hold");

/// The message being applied: where it came from, its key, what it said, and when.
pub(super) struct Received<'a> {
    pub source: &'a str,
    pub key: &'a str,
    pub details: &'a Value,
    pub now: DateTime<Utc>,
}

/// Make `effect`'s changes for `card`, saying what happened in `out`.
pub(super) async fn apply_effect(
    tx: &impl Sql,
    card: &CardRef,
    effect: &Effect,
    msg: &Received<'_>,
    event: Uuid,
    out: &mut Outcome,
) -> Result<()> {
    let email = card.email.clone().unwrap_or_default();
    let (tenant, now) = (card.tenant_id, msg.now);
    match effect {
        Effect::Bounce { status } => {
            if !email.is_empty() {
                out.suppressed = suppress(tx, tenant, None, &email, "bounce", now)
                    .await
                    .context("suppressing a bounced address")?;
            }
            out.reason = format!("permanent failure {status}: address suppressed (bounce)");
        }
        Effect::SoftBounce { status } => soft_bounce(tx, tenant, &email, status, now, out).await?,
        Effect::Complaint { feedback_type } => {
            if !email.is_empty() {
                out.suppressed = suppress(tx, tenant, card.contact_id, &email, "complaint", now)
                    .await
                    .context("suppressing a complaining address")?;
            }
            out.reason = format!(
                "complaint (feedback type {feedback_type}): address suppressed (complaint)"
            );
        }
        Effect::AutoReply { reason } => {
            out.reason = format!("automatic answer ({reason}): not a reply, nothing changed");
        }
        Effect::Reply => reply(tx, card, &email, msg, event, out).await?,
    }
    Ok(())
}

/// Whether the address was newly added to `email_suppressions`.
async fn suppress(
    tx: &impl Sql,
    tenant: Uuid,
    contact: Option<Uuid>,
    email: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    Ok(tx
        .execute(SUPPRESS, &[&tenant, &contact, &email, &reason, &now])
        .await?
        > 0)
}

/// A transient failure suppresses the address once it is the limit's within 30 days.
async fn soft_bounce(
    tx: &impl Sql,
    tenant: Uuid,
    email: &str,
    status: &str,
    now: DateTime<Utc>,
    out: &mut Outcome,
) -> Result<()> {
    let n: i64 = tx
        .query_one(SOFT_BOUNCES, &[&tenant, &email, &now])
        .await
        .context("counting transient failures")?
        .get(0);
    if n >= SOFT_BOUNCE_LIMIT && !email.is_empty() {
        out.suppressed = suppress(tx, tenant, None, email, "bounce", now)
            .await
            .context("suppressing an address after transient failures")?;
        out.reason =
            format!("transient failure {status}, {n} within 30 days: address suppressed (bounce)");
    } else {
        out.reason = format!(
            "transient failure {status}: {n} of {SOFT_BOUNCE_LIMIT} within 30 days before the address is suppressed"
        );
    }
    Ok(())
}

/// A reply holds automatic e-mail to the contact and the cards approved for them, creates
/// a card for a person to answer, and restarts the contact's clock.
async fn reply(
    tx: &impl Sql,
    card: &CardRef,
    email: &str,
    msg: &Received<'_>,
    event: Uuid,
    out: &mut Outcome,
) -> Result<()> {
    let (tenant, now) = (card.tenant_id, msg.now);
    if !email.is_empty() {
        tx.query_opt(HOLD, &[&tenant, &card.contact_id, &email, &now, &event])
            .await
            .context("holding automatic e-mail to the contact")?;
        let why =
            "held: the contact replied; a person answers (resume with `autopilot contact resume`)";
        out.held_cards =
            crate::cards::hold_for_reply(tx, tenant, card.contact_id, email, why, now).await?;
    }
    out.task_card_id = reply_task(tx, card, email, msg).await?;
    // The reply is engagement: the contact's clock restarts.
    crate::engagement::touch_by_email(tx, tenant, card.client_id, card.contact_id, now).await?;
    out.reason =
        format!(
        "reply: automatic e-mail to {} stops until a person resumes it; {} approved card(s) held",
        if email.is_empty() { "the contact" } else { email },
        out.held_cards.len()
    );
    Ok(())
}

/// The card asking a person to answer the reply.
async fn reply_task(
    tx: &impl Sql,
    card: &CardRef,
    email: &str,
    msg: &Received<'_>,
) -> Result<Option<Uuid>> {
    let subject = msg
        .details
        .get("subject")
        .and_then(Value::as_str)
        .unwrap_or("(no subject)")
        .to_string();
    let from = msg
        .details
        .get("from")
        .and_then(Value::as_str)
        .unwrap_or(email)
        .to_string();
    let title = format!("Reply from {from}: {subject}");
    let description = format!(
        "{from} answered the agent's e-mail \"{}\". Automatic e-mail to this contact is paused until a person resumes it.",
        card.subject.as_deref().unwrap_or("")
    );
    let payload = json!({
        "reply": {"from": from, "subject": subject, "message_key": msg.key,
                  "source": msg.source, "received_at": msg.now},
        "in_reply_to_card": card.id,
        "contact_id": card.contact_id,
        "email": email,
    });
    let task = crate::cards::ReplyTask {
        tenant: card.tenant_id,
        client_id: card.client_id,
        contact_id: card.contact_id,
        title: &title,
        description: &description,
        rationale: "the contact replied: a person should answer",
        payload: &payload,
    };
    crate::cards::insert_reply_task(tx, &task, msg.now).await
}
