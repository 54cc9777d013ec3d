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
use crate::cards::{self, ApprovedSend};
use crate::db::{Begin, Fence, FencedTx, Sql};
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

/// Alert type raised when a card is parked because its delivery is unknown.
pub const DELIVERY_UNKNOWN_ALERT: &str = "email_delivery_unknown";
/// `kanban_cards.blocked_code` of a card whose e-mail may or may not have been delivered.
pub use crate::cards::DELIVERY_UNKNOWN;

const GIVE_BACK_QUOTA: &str = crate::sql!("email/give_back_quota");
const INSERT_FAILURE: &str = crate::sql!("email/insert_failure");
const SUPPRESS_BOUNCE: &str = crate::sql!("email/suppress_bounce");

/// Per tenant, the cards parked with delivery unknown (for `status`).
pub use crate::cards::delivery_unknown_counts;

/// The sender's context for one tenant: where to write and under which lease.
struct Sender<'a> {
    tenant: Uuid,
    run_id: Option<Uuid>,
    fence: Option<&'a Fence>,
    settings: &'a TenantSettings,
    now: DateTime<Utc>,
}

/// Raise (or count another occurrence of) the tenant's `email_delivery_unknown` alert for
/// parked cards, inside the caller's transaction. Deduplicated while unacknowledged.
async fn raise_delivery_unknown_alert(
    tx: &impl Sql,
    s: &Sender<'_>,
    parked: &[(Uuid, Option<String>)],
) -> Result<()> {
    let waiting = cards::delivery_unknown_count(tx, s.tenant).await?;
    let list: Vec<Value> = parked
        .iter()
        .map(|(id, mid)| json!({"card_id": id, "message_id": mid}))
        .collect();
    let message = format!(
        "{waiting} e-mail card(s) parked with delivery unknown: the mail server may have delivered them. \
         Check the mailbox for each card's Message-ID, then run `autopilot card requeue CARD_ID` (not delivered) \
         or `autopilot card close CARD_ID` (delivered)"
    );
    let metadata = json!({"parked_cards": waiting, "cards": list, "run_id": s.run_id});
    crate::alerts::raise(
        tx,
        s.tenant,
        DELIVERY_UNKNOWN_ALERT,
        "warning",
        &message,
        metadata,
        s.now,
    )
    .await?;
    Ok(())
}

/// Send the tenant's approved `send_email` cards (oldest first, at most `limit`), each at
/// most once. See the module documentation for the flow and the failure handling.
#[allow(clippy::too_many_arguments)]
pub async fn send_approved(
    c: &mut impl Begin,
    tenant: Uuid,
    run_id: Option<Uuid>,
    fence: Option<&Fence>,
    settings: &TenantSettings,
    mailer: Option<&Mailer>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<SendReport> {
    let s = Sender {
        tenant,
        run_id,
        fence,
        settings,
        now,
    };
    let mut report = SendReport {
        recovered_stuck: park_interrupted(c, &s).await?,
        ..SendReport::default()
    };
    match mailer {
        // No provider: approved cards wait; the caller names the missing provider.
        None => report.provider_missing = true,
        Some(mailer) => send_cards(c, &s, mailer, limit, &mut report).await?,
    }
    report.awaiting_person = cards::delivery_unknown_count(&*c, tenant).await?.max(0) as u64;
    Ok(report)
}

/// Cards left executing by an interrupted send: parked for a person, never re-sent.
async fn park_interrupted(c: &mut impl Begin, s: &Sender<'_>) -> Result<u64> {
    // Under the tenant's lease no other sender of this tenant can be delivering (a sender
    // whose lease was taken over can no longer record anything), so every card found
    // executing belongs to an interrupted send: park it now, not after a wait, so nothing
    // stays executing beyond one lease. Without a fence keep the grace period.
    let before = match s.fence {
        Some(_) => DateTime::<Utc>::MAX_UTC,
        None => s.now - chrono::Duration::minutes(STUCK_AFTER_MINUTES),
    };
    let tx = FencedTx::begin(c, s.fence).await?;
    let parked = cards::park_interrupted_sends(&tx, s.tenant, s.now, before).await?;
    if !parked.is_empty() {
        raise_delivery_unknown_alert(&tx, s, &parked).await?;
    }
    tx.commit().await?;
    for (id, _) in &parked {
        tracing::warn!(tenant = %s.tenant, card = %id, "send_email card found executing after an interrupted send: blocked for review");
    }
    Ok(parked.len() as u64)
}

/// What became of one approved card.
enum Step {
    Next,
    /// Stop sending this cycle (hourly quota used up, or the circuit opened).
    Stop,
}

async fn send_cards(
    c: &mut impl Begin,
    s: &Sender<'_>,
    mailer: &Mailer,
    limit: i64,
    report: &mut SendReport,
) -> Result<()> {
    if circuit_opens(c, s, report).await? {
        return Ok(());
    }
    let approved = cards::approved_sends(&*c, s.tenant, limit).await?;
    report.actions_planned = approved.len() as u64;
    for (index, card) in approved.into_iter().enumerate() {
        if let Step::Stop = send_one(c, s, mailer, card, report).await? {
            if report.circuit_open {
                break;
            }
            // The rest would be refused too: they stay approved for the next hour.
            report.deferred_rate_limited = (report.actions_planned as usize - index) as u64;
            break;
        }
    }
    Ok(())
}

/// The circuit breaker: too many recent provider failures stop sending and raise the alert.
async fn circuit_opens(
    c: &mut impl Begin,
    s: &Sender<'_>,
    report: &mut SendReport,
) -> Result<bool> {
    let (failures, open) = provider_circuit(&*c, s.tenant, s.now).await?;
    if open {
        report.circuit_open = true;
        raise_circuit_alert(c, s.tenant, s.run_id, s.fence, failures, s.now).await?;
    }
    Ok(open)
}

async fn send_one(
    c: &mut impl Begin,
    s: &Sender<'_>,
    mailer: &Mailer,
    row: ApprovedSend,
    report: &mut SendReport,
) -> Result<Step> {
    let id = row.id;
    let card = match CardToSend::from_payload(id, row.client_id, row.contact_id, row.payload) {
        Ok(card) => card,
        Err(problem) => {
            let tx = FencedTx::begin(c, s.fence).await?;
            cards::block(&tx, id, &format!("cannot send: {problem}"), s.now).await?;
            tx.commit().await?;
            report.invalid += 1;
            return Ok(Step::Next);
        }
    };
    if let Some(step) = policy_blocks(c, s, &card, report).await? {
        return Ok(step);
    }
    let message_id = message_id_for(id, mailer.config().from_domain());
    if !claim(c, s, id, &message_id).await? {
        return Ok(Step::Next);
    }
    report.attempted += 1;
    let outcome = match build_message(mailer.config(), s.tenant, &card, s.settings, s.now) {
        Ok(message) => mailer.deliver(message).await,
        Err(e) => Err(SendFailure::local(redact(&format!("{e:#}")))),
    };
    match outcome {
        Ok(()) => {
            record_sent(c, s, &card).await?;
            report.sent += 1;
            tracing::info!(tenant = %s.tenant, card = %id, message_id = %message_id, "e-mail sent");
            Ok(Step::Next)
        }
        Err(failure) => {
            report.failed += 1;
            tracing::warn!(tenant = %s.tenant, card = %id, error_type = failure.error_type.as_str(),
                smtp_code = ?failure.smtp_code, error = %failure.message, "e-mail send failed");
            record_failure(c, s, &card, &message_id, &failure, report).await?;
            Ok(if circuit_opens(c, s, report).await? {
                Step::Stop
            } else {
                Step::Next
            })
        }
    }
}

/// The policies (suppression, hourly quota, ...): a blocked card is recorded and parked;
/// the quota leaves it approved and stops this cycle's sending.
async fn policy_blocks(
    c: &mut impl Begin,
    s: &Sender<'_>,
    card: &CardToSend,
    report: &mut SendReport,
) -> Result<Option<Step>> {
    let mut action = Action::new("send_email", card.payload.clone());
    action.recipient_email = Some(card.to.clone());
    action.recipient_contact = card.contact_id;
    action.quota = Some(Quota::EmailSend);
    // Outside any transaction: the suppression check fails closed on a query error,
    // which would abort a surrounding transaction.
    let Some(block) = crate::policy::evaluate(&*c, s.tenant, s.settings, &action, s.now).await?
    else {
        return Ok(None);
    };
    let tx = FencedTx::begin(c, s.fence).await?;
    crate::policy::record(&tx, s.tenant, s.run_id, &action, &block, s.now).await?;
    let rate_limited = block.violation == Violation::RateLimit;
    if !rate_limited {
        cards::block(&tx, card.id, &block.reason, s.now).await?;
    }
    tx.commit().await?;
    report.blocks.push((card.id, block.violation));
    if rate_limited {
        return Ok(Some(Step::Stop));
    }
    report.blocked += 1;
    Ok(Some(Step::Next))
}

/// Claim: approved → executing in one statement; only the winner sends. A loser gives
/// back the quota unit its policy check took.
async fn claim(c: &mut impl Begin, s: &Sender<'_>, id: Uuid, message_id: &str) -> Result<bool> {
    let tx = FencedTx::begin(c, s.fence).await?;
    let won = cards::claim_send(&tx, id, message_id, s.now).await?;
    if !won {
        tx.execute(
            GIVE_BACK_QUOTA,
            &[&s.tenant, &Quota::EmailSend.action_type(), &s.now],
        )
        .await
        .context("giving back an unused e-mail quota unit")?;
    }
    tx.commit().await?;
    Ok(won)
}

async fn record_sent(c: &mut impl Begin, s: &Sender<'_>, card: &CardToSend) -> Result<()> {
    let tx = FencedTx::begin(c, s.fence).await?;
    cards::mark_sent(&tx, card.id, s.now).await?;
    crate::engagement::touch_by_email(&tx, s.tenant, card.client_id, card.contact_id, s.now)
        .await?;
    tx.commit().await
}

/// A failed SMTP transaction: recorded as a provider failure; after the final dot the
/// card is parked with delivery unknown (never re-sent by the agent), a permanent refusal
/// blocks it (and suppresses a refused recipient), anything else returns it to approved.
async fn record_failure(
    c: &mut impl Begin,
    s: &Sender<'_>,
    card: &CardToSend,
    message_id: &str,
    failure: &SendFailure,
    report: &mut SendReport,
) -> Result<()> {
    let id = card.id;
    let tx = FencedTx::begin(c, s.fence).await?;
    let code = failure.smtp_code.map(i32::from);
    let kind = failure.error_type.as_str();
    tx.execute(
        INSERT_FAILURE,
        &[
            &s.tenant,
            &kind,
            &failure.message,
            &code,
            &id,
            &PROVIDER,
            &s.now,
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
        cards::park_delivery_unknown(&tx, id, &reason, s.now).await?;
        raise_delivery_unknown_alert(&tx, s, &[(id, Some(message_id.to_string()))]).await?;
        report.delivery_unknown += 1;
        tracing::error!(tenant = %s.tenant, card = %id, message_id = %message_id,
            "delivery unknown after the end of the message: card parked for a person");
    } else if failure.is_permanent() {
        let reason = format!(
            "the mail server refused the message permanently: {}",
            failure.message
        );
        cards::block(&tx, id, &reason, s.now).await?;
        if failure.is_recipient_rejected() {
            tx.execute(SUPPRESS_BOUNCE, &[&s.tenant, &card.to, &s.now])
                .await
                .context("suppressing a bounced address")?;
        }
    } else {
        cards::return_to_approved(&tx, id, s.now).await?;
    }
    tx.commit().await
}
