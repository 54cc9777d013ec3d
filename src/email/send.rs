//! Sending approved `send_email` cards at most once: the claim, the policy check, the
//! outcome recorded per card, parking cards whose delivery is unknown, and the circuit
//! breaker between sends (see the `email` module documentation for the flow).

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::breaker::{raise_circuit_alert, PROVIDER};
use super::{build_message, message_id_for, CardToSend, Mailer, SendFailure};
use crate::alerts::provider_circuit;
#[allow(unused_imports)]
use crate::db::{Begin, Commit, Sql};
use crate::db::{Fence, FencedTx};
use crate::error::redact;
use crate::policy::{Action, Quota, Violation};
use crate::settings::TenantSettings;

/// A card `executing` for longer than this was left by an interrupted send.
pub const STUCK_AFTER_MINUTES: i64 = 10;

/// What one call of [`send_approved`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SendReport {
    /// Cards considered (approved `send_email` cards loaded, up to the limit).
    pub actions_planned: u64,
    /// SMTP transactions started (successful claims).
    pub attempted: u64,
    pub sent: u64,
    /// Cards moved to `blocked` by a policy (see `blocks`).
    pub blocked: u64,
    /// Cards left `approved` because the hourly quota was used up.
    pub deferred_rate_limited: u64,
    /// Failed SMTP transactions (each one an `email_provider_failures` row).
    pub failed: u64,
    /// Cards whose payload cannot be sent (no or bad `to`, no subject or body): `blocked`.
    pub invalid: u64,
    /// Sending is not configured (SMTP_URL/EMAIL_FROM): approved cards wait.
    pub provider_missing: bool,
    /// Too many recent provider failures: sending stopped for this cycle.
    pub circuit_open: bool,
    /// Cards found `executing` from an interrupted send, parked in `blocked`
    /// (`delivery_unknown`).
    pub recovered_stuck: u64,
    /// Cards whose SMTP transaction failed after the final dot of DATA (timeout, closed
    /// connection): the message may have been delivered, so they were parked in `blocked`
    /// with `blocked_code = 'delivery_unknown'` instead of being retried.
    pub delivery_unknown: u64,
    /// The tenant's cards parked with `delivery_unknown` after this call (this call's and
    /// earlier ones), waiting for a person to run `autopilot card requeue|close`.
    pub awaiting_person: u64,
    /// Every recorded policy violation, by card (a rate-limit block included).
    pub blocks: Vec<(Uuid, Violation)>,
}

const RECOVER_STUCK: &str = crate::sql!("email/recover_stuck");

/// The send failed after the final dot of DATA: park the card for a person, keeping its
/// Message-ID (the one to look for in the mailbox).
const PARK_DELIVERY_UNKNOWN: &str = crate::sql!("email/park_delivery_unknown");

const COUNT_AWAITING: &str = crate::sql!("email/count_awaiting");

/// Alert type raised when a card is parked because its delivery is unknown.
pub const DELIVERY_UNKNOWN_ALERT: &str = "email_delivery_unknown";
/// `kanban_cards.blocked_code` of a card whose e-mail may or may not have been delivered.
pub const DELIVERY_UNKNOWN: &str = "delivery_unknown";

const LOAD_APPROVED: &str = crate::sql!("email/load_approved");

const CLAIM: &str = crate::sql!("email/claim");

/// A quota unit taken for a card another sender claimed first goes back (same UTC hour
/// window as `rate_limit_take`).
const GIVE_BACK_QUOTA: &str = crate::sql!("email/give_back_quota");

// A card parked meanwhile as stuck was in fact sent: `done` is the truth.
const MARK_DONE: &str = crate::sql!("email/mark_done");

const TOUCH_CLOCK: &str = crate::sql!("email/touch_clock");

const BLOCK_CARD: &str = crate::sql!("email/block_card");

const RETURN_TO_APPROVED: &str = crate::sql!("email/return_to_approved");

const INSERT_FAILURE: &str = crate::sql!("email/insert_failure");

const SUPPRESS_BOUNCE: &str = crate::sql!("email/suppress_bounce");

const COUNT_AWAITING_BY_TENANT: &str = crate::sql!("email/count_awaiting_by_tenant");

/// Per tenant, the cards parked with delivery unknown (for `status`).
pub async fn delivery_unknown_counts(
    c: &impl crate::db::Sql,
    tenants: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, i64>> {
    let rows = c
        .query(COUNT_AWAITING_BY_TENANT, &[&tenants])
        .await
        .context("counting cards parked with delivery unknown")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Raise (or count another occurrence of) the tenant's `email_delivery_unknown` alert for
/// parked cards, inside the caller's transaction. Deduplicated while unacknowledged.
async fn raise_delivery_unknown_alert(
    tx: &impl crate::db::Sql,
    tenant: Uuid,
    run_id: Option<Uuid>,
    parked: &[(Uuid, Option<String>)],
    now: DateTime<Utc>,
) -> Result<()> {
    let waiting: i64 = tx
        .query_one(COUNT_AWAITING, &[&tenant])
        .await
        .context("counting cards parked with delivery unknown")?
        .get(0);
    let cards: Vec<Value> = parked
        .iter()
        .map(|(id, mid)| json!({"card_id": id, "message_id": mid}))
        .collect();
    let message = format!(
        "{waiting} e-mail card(s) parked with delivery unknown: the mail server may have delivered them. \
         Check the mailbox for each card's Message-ID, then run `autopilot card requeue CARD_ID` (not delivered) \
         or `autopilot card close CARD_ID` (delivered)"
    );
    crate::alerts::raise(
        tx,
        tenant,
        DELIVERY_UNKNOWN_ALERT,
        "warning",
        &message,
        json!({"parked_cards": waiting, "cards": cards, "run_id": run_id}),
        now,
    )
    .await?;
    Ok(())
}

/// Send the tenant's approved `send_email` cards (oldest first, at most `limit`), each at
/// most once. See the module documentation for the flow and the failure handling.
#[allow(clippy::too_many_arguments)]
pub async fn send_approved(
    c: &mut impl crate::db::Begin,
    tenant: Uuid,
    run_id: Option<Uuid>,
    fence: Option<&Fence>,
    settings: &TenantSettings,
    mailer: Option<&Mailer>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<SendReport> {
    let mut report = send_cards(c, tenant, run_id, fence, settings, mailer, limit, now).await?;
    report.awaiting_person = c
        .query_one(COUNT_AWAITING, &[&tenant])
        .await
        .context("counting cards parked with delivery unknown")?
        .get::<_, i64>(0)
        .max(0) as u64;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn send_cards(
    c: &mut impl crate::db::Begin,
    tenant: Uuid,
    run_id: Option<Uuid>,
    fence: Option<&Fence>,
    settings: &TenantSettings,
    mailer: Option<&Mailer>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<SendReport> {
    let mut report = SendReport::default();

    // a. Cards left executing by an interrupted send: park them for a human, never resend.
    {
        // Under the tenant's lease no other sender of this tenant can be delivering (a sender
        // whose lease was taken over can no longer record anything), so every card found
        // executing belongs to an interrupted send: park it now, not after a wait, so nothing
        // stays executing beyond one lease. Without a fence keep the grace period.
        let stuck_before = match fence {
            Some(_) => DateTime::<Utc>::MAX_UTC,
            None => now - chrono::Duration::minutes(STUCK_AFTER_MINUTES),
        };
        let tx = FencedTx::begin(c, fence)
            .await
            .context("starting the recovery transaction")?;
        let rows = tx
            .query(RECOVER_STUCK, &[&tenant, &now, &stuck_before])
            .await
            .context("parking cards left executing")?;
        if !rows.is_empty() {
            let parked: Vec<(Uuid, Option<String>)> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            raise_delivery_unknown_alert(&tx, tenant, run_id, &parked, now).await?;
        }
        tx.commit().await.context("committing the recovery")?;
        report.recovered_stuck = rows.len() as u64;
        for r in &rows {
            let id: Uuid = r.get(0);
            tracing::warn!(%tenant, card = %id, "send_email card found executing after an interrupted send: blocked for review");
        }
    }

    // b. No provider: approved cards wait; the caller names the missing provider.
    let Some(mailer) = mailer else {
        report.provider_missing = true;
        return Ok(report);
    };

    // c. Circuit breaker.
    let (failures, open) = provider_circuit(&*c, tenant, now).await?;
    if open {
        report.circuit_open = true;
        raise_circuit_alert(c, tenant, run_id, fence, failures, now).await?;
        return Ok(report);
    }

    // d. The cards.
    let rows = c
        .query(LOAD_APPROVED, &[&tenant, &limit.max(0)])
        .await
        .context("loading approved send_email cards")?;
    report.actions_planned = rows.len() as u64;
    let domain = mailer.config().from_domain().to_string();

    for (index, row) in rows.iter().enumerate() {
        let id: Uuid = row.get(0);
        let client_id: Option<Uuid> = row.get(1);
        let contact_id: Option<Uuid> = row.get(2);
        let payload: Value = row.get(3);

        let card = match CardToSend::from_payload(id, client_id, contact_id, payload) {
            Ok(card) => card,
            Err(problem) => {
                let tx = FencedTx::begin(c, fence).await?;
                tx.execute(BLOCK_CARD, &[&id, &format!("cannot send: {problem}"), &now])
                    .await
                    .context("blocking an invalid send_email card")?;
                tx.commit().await.context("committing the blocked card")?;
                report.invalid += 1;
                continue;
            }
        };

        let mut action = Action::new("send_email", card.payload.clone());
        action.recipient_email = Some(card.to.clone());
        action.recipient_contact = card.contact_id;
        action.quota = Some(Quota::EmailSend);
        // Outside any transaction: the suppression check fails closed on a query error,
        // which would abort a surrounding transaction.
        let verdict = crate::policy::evaluate(&*c, tenant, settings, &action, now).await?;

        if let Some(block) = verdict {
            let tx = FencedTx::begin(c, fence).await?;
            crate::policy::record(&tx, tenant, run_id, &action, &block, now).await?;
            if block.violation != Violation::RateLimit {
                tx.execute(BLOCK_CARD, &[&id, &block.reason, &now])
                    .await
                    .context("blocking a send_email card")?;
            }
            tx.commit().await.context("committing the policy block")?;
            report.blocks.push((id, block.violation));
            if block.violation == Violation::RateLimit {
                // The rest would be refused too: they stay approved for the next hour.
                report.deferred_rate_limited = (rows.len() - index) as u64;
                break;
            }
            report.blocked += 1;
            continue;
        }

        // Claim: approved → executing in one statement; only the winner sends.
        let message_id = message_id_for(id, &domain);
        let claimed = {
            let tx = FencedTx::begin(c, fence).await?;
            let won = tx
                .query_opt(CLAIM, &[&id, &message_id, &now])
                .await
                .context("claiming a send_email card")?
                .is_some();
            if !won {
                tx.execute(
                    GIVE_BACK_QUOTA,
                    &[&tenant, &Quota::EmailSend.action_type(), &now],
                )
                .await
                .context("giving back an unused e-mail quota unit")?;
            }
            tx.commit().await.context("committing the claim")?;
            won
        };
        if !claimed {
            continue;
        }
        report.attempted += 1;

        let outcome = match build_message(mailer.config(), tenant, &card, settings, now) {
            Ok(message) => mailer.deliver(message).await,
            Err(e) => Err(SendFailure::local(redact(&format!("{e:#}")))),
        };

        match outcome {
            Ok(()) => {
                let tx = FencedTx::begin(c, fence).await?;
                tx.execute(MARK_DONE, &[&id, &now])
                    .await
                    .context("marking a sent card done")?;
                if card.contact_id.is_some() || card.client_id.is_some() {
                    // touched_by NULL: the agent made this touch (defect 9).
                    tx.query_one(
                        TOUCH_CLOCK,
                        &[&tenant, &card.client_id, &card.contact_id, &now],
                    )
                    .await
                    .context("resetting the engagement clock after a send")?;
                }
                tx.commit().await.context("committing the sent card")?;
                report.sent += 1;
                tracing::info!(%tenant, card = %id, message_id = %message_id, "e-mail sent");
            }
            Err(failure) => {
                report.failed += 1;
                tracing::warn!(%tenant, card = %id, error_type = failure.error_type.as_str(),
                    smtp_code = ?failure.smtp_code, error = %failure.message, "e-mail send failed");
                let tx = FencedTx::begin(c, fence)
                    .await
                    .context("starting the failure transaction")?;
                let code = failure.smtp_code.map(i32::from);
                tx.execute(
                    INSERT_FAILURE,
                    &[
                        &tenant,
                        &failure.error_type.as_str(),
                        &failure.message,
                        &code,
                        &id,
                        &PROVIDER,
                        &now,
                    ],
                )
                .await
                .context("recording an e-mail provider failure")?;
                if failure.ambiguous {
                    let reason = format!(
                        "delivery unknown: {}. Check the mailbox for Message-ID {message_id}, then run \
                         autopilot card requeue {id} (not delivered) or autopilot card close {id} (delivered)",
                        failure.message
                    );
                    tx.execute(PARK_DELIVERY_UNKNOWN, &[&id, &reason, &now])
                        .await
                        .context("parking a card whose delivery is unknown")?;
                    raise_delivery_unknown_alert(
                        &tx,
                        tenant,
                        run_id,
                        &[(id, Some(message_id.clone()))],
                        now,
                    )
                    .await?;
                    report.delivery_unknown += 1;
                    tracing::error!(%tenant, card = %id, message_id = %message_id,
                        "delivery unknown after the end of the message: card parked for a person");
                } else if failure.is_permanent() {
                    let reason = format!(
                        "the mail server refused the message permanently: {}",
                        failure.message
                    );
                    tx.execute(BLOCK_CARD, &[&id, &reason, &now])
                        .await
                        .context("blocking a rejected card")?;
                    if failure.is_recipient_rejected() {
                        tx.execute(SUPPRESS_BOUNCE, &[&tenant, &card.to, &now])
                            .await
                            .context("suppressing a bounced address")?;
                    }
                } else {
                    tx.execute(RETURN_TO_APPROVED, &[&id, &now])
                        .await
                        .context("returning a card to approved after a transient failure")?;
                }
                tx.commit().await.context("committing the failure")?;

                let (failures, open) = provider_circuit(&*c, tenant, now).await?;
                if open {
                    report.circuit_open = true;
                    raise_circuit_alert(c, tenant, run_id, fence, failures, now).await?;
                    break;
                }
            }
        }
    }
    Ok(report)
}
