//! The one repository of `kanban_cards`: every statement that reads the queue of cards or
//! moves a card between states lives here (SQL in `src/sql/cards/`), so the card life cycle
//! of SPEC section 5 (suggested → approved → executing → done | blocked) can be read in one
//! place. Callers pass the transaction ([`crate::db::FencedTx`] under a lease).
//!
//! `autopilot card requeue|close` (what a person does with a parked card) is [`command`].

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::db::Sql;

pub mod command;

pub use command::{run, CardChange, CardReport, Resolution};

/// Why a card is parked with its delivery unknown (`kanban_cards.blocked_code`).
pub const DELIVERY_UNKNOWN: &str = "delivery_unknown";

/// An approved `send_email` card as the sender loads it.
#[derive(Debug, Clone)]
pub struct ApprovedSend {
    pub id: Uuid,
    pub client_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub payload: Value,
}

/// The tenant's approved `send_email` cards, oldest first, at most `limit`.
pub async fn approved_sends(c: &impl Sql, tenant: Uuid, limit: i64) -> Result<Vec<ApprovedSend>> {
    let rows = c
        .query(
            crate::sql!("cards/load_approved"),
            &[&tenant, &limit.max(0)],
        )
        .await
        .context("loading approved send_email cards")?;
    Ok(rows
        .iter()
        .map(|r| ApprovedSend {
            id: r.get(0),
            client_id: r.get(1),
            contact_id: r.get(2),
            payload: r.get(3),
        })
        .collect())
}

/// How many approved `send_email` cards wait (the plan's send actions).
pub async fn count_approved_sends(c: &impl Sql, tenant: Uuid) -> Result<i64> {
    Ok(
        c.query_one(crate::sql!("cards/count_approved_sends"), &[&tenant])
            .await
            .context("counting approved send_email cards")?
            .get(0),
    )
}

/// Approved → executing in one statement, recording the Message-ID: only the winner sends.
pub async fn claim_send(
    tx: &impl Sql,
    id: Uuid,
    message_id: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    Ok(tx
        .query_opt(crate::sql!("cards/claim"), &[&id, &message_id, &now])
        .await
        .context("claiming a send_email card")?
        .is_some())
}

/// Executing → done after the server accepted the message.
pub async fn mark_sent(tx: &impl Sql, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    tx.execute(crate::sql!("cards/mark_done"), &[&id, &now])
        .await
        .context("marking a sent card done")?;
    Ok(())
}

/// Park a card for a person (`blocked`) with the reason shown to them.
pub async fn block(tx: &impl Sql, id: Uuid, reason: &str, now: DateTime<Utc>) -> Result<()> {
    tx.execute(crate::sql!("cards/block_card"), &[&id, &reason, &now])
        .await
        .context("blocking a card")?;
    Ok(())
}

/// Park a card whose delivery is unknown (`blocked_code = 'delivery_unknown'`): never
/// re-sent by the agent.
pub async fn park_delivery_unknown(
    tx: &impl Sql,
    id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        crate::sql!("cards/park_delivery_unknown"),
        &[&id, &reason, &now],
    )
    .await
    .context("parking a card whose delivery is unknown")?;
    Ok(())
}

/// Executing → approved after a clean (retryable) failure before the end of the message.
pub async fn return_to_approved(tx: &impl Sql, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    tx.execute(crate::sql!("cards/return_to_approved"), &[&id, &now])
        .await
        .context("returning a card to approved after a transient failure")?;
    Ok(())
}

/// Park every `send_email` card of the tenant left `executing` since before `before` (an
/// interrupted send); returns each card with its Message-ID.
pub async fn park_interrupted_sends(
    tx: &impl Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Result<Vec<(Uuid, Option<String>)>> {
    let rows = tx
        .query(
            crate::sql!("cards/recover_stuck"),
            &[&tenant, &now, &before],
        )
        .await
        .context("parking cards left executing")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The tenant's cards parked with delivery unknown.
pub async fn delivery_unknown_count(c: &impl Sql, tenant: Uuid) -> Result<i64> {
    Ok(c.query_one(crate::sql!("cards/count_awaiting"), &[&tenant])
        .await
        .context("counting cards parked with delivery unknown")?
        .get(0))
}

/// Per tenant, the cards parked with delivery unknown (for `status`).
pub async fn delivery_unknown_counts(c: &impl Sql, tenants: &[Uuid]) -> Result<HashMap<Uuid, i64>> {
    let rows = c
        .query(crate::sql!("cards/count_awaiting_by_tenant"), &[&tenants])
        .await
        .context("counting cards parked with delivery unknown")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Scheduled cards whose time has come, at most `cap`.
pub async fn scheduled_due(
    c: &impl Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
    cap: i64,
) -> Result<Vec<Uuid>> {
    let rows = c
        .query(crate::sql!("cards/scheduled_due"), &[&tenant, &now, &cap])
        .await
        .context("reading scheduled cards that are due")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Scheduled → suggested for the given cards.
pub async fn promote_scheduled(
    tx: &impl Sql,
    tenant: Uuid,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    tx.execute(
        crate::sql!("cards/promote_scheduled"),
        &[&tenant, &ids, &now],
    )
    .await
    .context("promoting scheduled cards")
}

/// A card the agent suggests to a person: a follow-up e-mail draft (`send_email`, its
/// target the contact) or a review task (`create_task`, its target the order).
#[derive(Debug, Clone)]
pub struct NewCard {
    /// What the card is about; one open agent card per type and target.
    pub target: Uuid,
    pub client_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub title: String,
    pub description: String,
    pub rationale: String,
    pub priority: &'static str,
    pub payload: Value,
}

/// Insert suggested cards of one type; a target that already has an open agent card of
/// that type gets none. Returns how many were new.
pub async fn insert_suggested(
    tx: &impl Sql,
    tenant: Uuid,
    run_id: Uuid,
    card_type: &str,
    cards: &[NewCard],
    now: DateTime<Utc>,
) -> Result<u64> {
    if cards.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&NewCard) -> String| cards.iter().map(f).collect::<Vec<String>>();
    let targets: Vec<Uuid> = cards.iter().map(|c| c.target).collect();
    let client_ids: Vec<Option<Uuid>> = cards.iter().map(|c| c.client_id).collect();
    let contact_ids: Vec<Option<Uuid>> = cards.iter().map(|c| c.contact_id).collect();
    let payloads: Vec<Value> = cards.iter().map(|c| c.payload.clone()).collect();
    tx.execute(
        crate::sql!("cards/insert_suggested"),
        &[
            &tenant,
            &run_id,
            &card_type,
            &now,
            &targets,
            &client_ids,
            &contact_ids,
            &col(|c| c.title.clone()),
            &col(|c| c.description.clone()),
            &col(|c| c.rationale.clone()),
            &col(|c| c.priority.to_string()),
            &payloads,
        ],
    )
    .await
    .with_context(|| format!("inserting suggested {card_type} cards"))
}

/// Approved `send_email` cards to a contact (or its address) that replied: held
/// (`blocked`) for a person; returns the held cards.
pub async fn hold_for_reply(
    tx: &impl Sql,
    tenant: Uuid,
    contact: Option<Uuid>,
    email: &str,
    why: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>> {
    let rows = tx
        .query(
            crate::sql!("cards/hold_cards"),
            &[&tenant, &contact, &email, &why, &now],
        )
        .await
        .context("holding approved cards of the contact")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A `create_task` card for a person to answer a contact's reply.
#[derive(Debug, Clone)]
pub struct ReplyTask<'a> {
    pub tenant: Uuid,
    pub client_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub title: &'a str,
    pub description: &'a str,
    pub rationale: &'a str,
    pub payload: &'a Value,
}

/// Insert the reply task; `None` when the contact already has an open one.
pub async fn insert_reply_task(
    tx: &impl Sql,
    task: &ReplyTask<'_>,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>> {
    Ok(tx
        .query_opt(
            crate::sql!("cards/task_card"),
            &[
                &task.tenant,
                &task.client_id,
                &task.contact_id,
                &task.title,
                &task.description,
                &task.rationale,
                task.payload,
                &now,
            ],
        )
        .await
        .context("creating the reply task card")?
        .map(|r| r.get(0)))
}
