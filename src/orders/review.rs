//! The findings that deserve a human review card ([`review_targets`]) and the card's
//! title and payload. The cycle creates the cards through the policy engine.

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::Sql;

const REVIEW_TARGETS_SQL: &str = crate::sql!("orders/review_targets");

/// An unresolved error/critical finding whose order has no open review card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewTarget {
    pub order_id: Uuid,
    pub exception_id: Uuid,
    pub severity: String,
    pub exception_type: String,
    pub code: String,
    pub message: String,
    pub client_id: Option<Uuid>,
}

/// At most `limit` orders needing a human review card, most severe first, then oldest;
/// one per order (its most severe finding), none for an order that already has an open
/// agent `create_task` card (`kanban_cards.agent_target` = order id).
pub async fn review_targets(
    client: &impl Sql,
    tenant: Uuid,
    limit: i64,
) -> Result<Vec<ReviewTarget>> {
    let rows = client
        .query(REVIEW_TARGETS_SQL, &[&tenant, &limit.max(0)])
        .await
        .context("listing order exceptions to review")?;
    rows.iter()
        .map(|r| {
            Ok(ReviewTarget {
                order_id: r.try_get(0)?,
                exception_id: r.try_get(1)?,
                severity: r.try_get(2)?,
                exception_type: r.try_get(3)?,
                code: r.try_get(4)?,
                message: r.try_get(5)?,
                client_id: r.try_get(6)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .context("reading an order exception to review")
}

/// The `create_task` card's payload: names the order and the exception.
pub fn review_card_payload(t: &ReviewTarget) -> Value {
    json!({
        "order_id": t.order_id,
        "exception_id": t.exception_id,
        "exception_type": t.exception_type,
        "severity": t.severity,
        "message": t.message,
    })
}

pub fn review_card_title(t: &ReviewTarget) -> String {
    let short = t.order_id.simple().to_string();
    format!(
        "Review order {} ({} {}): {}",
        &short[..8],
        t.severity,
        t.exception_type,
        t.message
    )
}
