//! `autopilot card requeue|close CARD_ID`: what a person does with a `send_email` card the
//! agent parked because its delivery is unknown (`state = 'blocked'`,
//! `blocked_code = 'delivery_unknown'`; see `email`). The agent never re-sends such a card by
//! itself: the mail server may already have delivered it. After checking the mailbox for
//! the card's Message-ID, the operator either re-queues it (not delivered: back to
//! `approved`, sent by the next cycle with the same Message-ID) or closes it (delivered:
//! `done`, and the contact's engagement clock counts the touch).
//!
//! Exit codes: 2 for a malformed id (clap), 1 for a card that does not exist or is not
//! parked with delivery unknown (nothing changed).

use anyhow::{Context as _, Result};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{Sql, Tx};
use crate::error::AppError;
use crate::Context;

/// The card, locked, whatever its state (to say why it cannot be changed).
const LOCK_CARD: &str = crate::sql!("cards/lock_card");

const REQUEUE: &str = crate::sql!("cards/requeue");

const CLOSE: &str = crate::sql!("cards/close");

#[derive(Debug, Serialize)]
pub struct CardReport {
    pub card_id: Uuid,
    pub tenant_id: Uuid,
    /// `requeued` or `closed`.
    pub action: &'static str,
    /// The card's state now: `approved` or `done`.
    pub state: &'static str,
    pub message_id: Option<String>,
}

/// What a person found out about a parked card's e-mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Not delivered: back to approved, the next cycle sends it.
    Requeue,
    /// Delivered: the card is done and the touch counts.
    Close,
}

/// `autopilot card requeue|close CARD_ID`.
#[derive(Debug, Clone)]
pub struct CardChange {
    pub card_id: Uuid,
    pub resolution: Resolution,
    /// Print one JSON document.
    pub json: bool,
}

pub async fn run(ctx: &Context, change: &CardChange) -> Result<u8> {
    let (id, json) = (change.card_id, change.json);
    let requeue = change.resolution == Resolution::Requeue;
    let pool = ctx.db.pool(1)?;
    let mut conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    let now = ctx.now();
    let tx = conn.transaction().await?;
    let card = lock_parked(&tx, id).await?;
    let tenant = card.tenant;
    resolve(&tx, id, &card, requeue, now).await?;
    tx.commit().await.context("committing the card change")?;

    let report = CardReport {
        card_id: id,
        tenant_id: tenant,
        action: if requeue { "requeued" } else { "closed" },
        state: if requeue { "approved" } else { "done" },
        message_id: card.message_id,
    };
    tracing::info!(card = %id, tenant = %tenant, action = report.action, "parked e-mail card resolved by an operator");
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else if requeue {
        println!(
            "card {id} re-queued: approved again, the next cycle sends it (Message-ID {})",
            report.message_id.as_deref().unwrap_or("(none)")
        );
    } else {
        println!(
            "card {id} closed as delivered (done); the contact's engagement clock counts the touch"
        );
    }
    Ok(0)
}

/// A card parked with delivery unknown, as locked.
struct ParkedCard {
    tenant: Uuid,
    message_id: Option<String>,
    client_id: Option<Uuid>,
    contact_id: Option<Uuid>,
}

/// Lock the card; one that does not exist or is not parked with delivery unknown is
/// refused (exit 1) saying what it is.
async fn lock_parked(tx: &Tx<'_>, id: Uuid) -> Result<ParkedCard> {
    let Some(row) = tx
        .query_opt(LOCK_CARD, &[&id])
        .await
        .context("reading the card")?
    else {
        return Err(AppError::failed(format!("card {id} not found")));
    };
    let card_type: String = row.get(1);
    let state: String = row.get(2);
    let code: Option<String> = row.get(3);
    if card_type != "send_email"
        || state != "blocked"
        || code.as_deref() != Some(super::DELIVERY_UNKNOWN)
    {
        return Err(AppError::failed(format!(
            "card {id} is not parked with delivery unknown (type {card_type}, state {state}{}); nothing changed",
            code.map(|c| format!(", blocked_code {c}")).unwrap_or_default()
        )));
    }
    Ok(ParkedCard {
        tenant: row.get(0),
        message_id: row.get(4),
        client_id: row.get(5),
        contact_id: row.get(6),
    })
}

/// Back to approved, or done with the contact's touch counted.
async fn resolve(
    tx: &Tx<'_>,
    id: Uuid,
    card: &ParkedCard,
    requeue: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    if requeue {
        tx.execute(REQUEUE, &[&id, &now]).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                AppError::failed(format!(
                    "card {id} cannot be re-queued: the contact has another open e-mail card; reject or close that one first"
                ))
            } else {
                anyhow::Error::new(e).context("re-queueing the card")
            }
        })?;
        return Ok(());
    }
    tx.execute(CLOSE, &[&id, &now])
        .await
        .context("closing the card")?;
    // The e-mail was delivered: it counts as the contact's touch.
    crate::engagement::touch_by_email(tx, card.tenant, card.client_id, card.contact_id, now).await
}
