//! The order queue: queueing orders the `queue_new_orders` trigger missed, putting back
//! entries an older binary abandoned in `processing`, and draining pending entries batch
//! by batch.
//!
//! Crash and race semantics: a batch is one transaction. Its claim is a row lock
//! (`FOR NO KEY UPDATE SKIP LOCKED`, nothing written to claim), so a concurrent runner
//! skips the entries without waiting, and a runner that dies (or whose batch fails)
//! releases them by ending its transaction: they are pending again, untouched. An order
//! edited between the claim and the write-back keeps the edit: the batch is rolled back and
//! claimed again (see [`super::batch`]).

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::batch::{self, Claimed};
use super::OrdersReport;
use crate::db::{Begin, Fence, FencedTx, Sql};

/// A `processing` entry claimed longer ago than this is assumed abandoned (its runner
/// crashed or hung) and is claimed again.
pub const STALE_CLAIM_SECS: i64 = 600;

/// A batch whose auto-fixes found an order edited meanwhile is rolled back and claimed again
/// (validated on the new values); this many times in a row is an error.
const MAX_BATCH_RETRIES: u32 = 3;

const QUEUE_MISSING_SQL: &str = crate::sql!("orders/queue_missing");
const RESET_STALE_CLAIMS_SQL: &str = crate::sql!("orders/reset_stale_claims");
const CLAIM_BATCH_SQL: &str = crate::sql!("orders/claim_batch");
const ASYNC_COMMIT_SQL: &str = crate::sql!("orders/async_commit");
const RECORD_ERROR_SQL: &str = crate::sql!("orders/record_error");

fn stale_before(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::seconds(STALE_CLAIM_SECS)
}

/// Queue the selected tenants' (all when empty) non-cancelled orders that have no entry.
pub async fn queue_missing(client: &impl Sql, tenants: &[Uuid], now: DateTime<Utc>) -> Result<u64> {
    client
        .execute(QUEUE_MISSING_SQL, &[&tenants, &now])
        .await
        .context("queueing orders without a queue entry")
}

/// Put back to pending the selected tenants' (all when empty) entries that an older binary
/// claimed by writing `processing` and then abandoned (claimed before the stale limit).
pub async fn reset_stale_claims(
    client: &impl Sql,
    tenants: &[Uuid],
    now: DateTime<Utc>,
) -> Result<u64> {
    client
        .execute(RESET_STALE_CLAIMS_SQL, &[&tenants, &stale_before(now)])
        .await
        .context("reclaiming entries abandoned in the processing state")
}

/// Validate every pending entry of `tenant`, batch by batch, after queueing the orders the
/// trigger missed. With a fence, every transaction first checks the lease.
pub async fn process_tenant(
    client: &mut impl Begin,
    tenant: Uuid,
    batch: u32,
    fence: Option<&Fence>,
    now: DateTime<Utc>,
) -> Result<OrdersReport> {
    let tx = FencedTx::begin(client, fence).await?;
    queue_missing(&tx, &[tenant], now).await?;
    reset_stale_claims(&tx, &[tenant], now).await?;
    tx.commit()
        .await
        .context("committing the queueing transaction")?;
    let mut reports = BTreeMap::new();
    drain(client, &[tenant], batch, fence, now, &mut reports).await?;
    Ok(reports.get(&tenant).copied().unwrap_or_default())
}

/// Validate batches of the pending entries of `tenants` until none is left (or only entries
/// other runners hold), adding the counts per tenant to `reports` (also those of the
/// batches committed before a failure).
pub(super) async fn drain(
    client: &mut impl Begin,
    tenants: &[Uuid],
    batch: u32,
    fence: Option<&Fence>,
    now: DateTime<Utc>,
    reports: &mut BTreeMap<Uuid, OrdersReport>,
) -> Result<()> {
    let limit = i64::from(batch.max(1));
    let mut retries = 0;
    loop {
        match run_batch(client, tenants, limit, fence, now, reports).await? {
            Batch::Written(n) => {
                retries = 0;
                if (n as i64) < limit {
                    return Ok(());
                }
            }
            Batch::Empty => return Ok(()),
            Batch::OrdersChanged => {
                retries += 1;
                if retries >= MAX_BATCH_RETRIES {
                    anyhow::bail!(
                        "orders kept changing while their batch was validated ({retries} attempts)"
                    );
                }
                tracing::info!(
                    "an order changed while its batch was validated; validating it again"
                );
            }
        }
    }
}

enum Batch {
    /// Nothing pending was free to claim.
    Empty,
    /// This many entries were validated and written back.
    Written(usize),
    /// An order was edited between reading and auto-fixing it: rolled back, to be re-run.
    OrdersChanged,
}

/// One batch, one transaction: claim (row locks), validate, write everything in one
/// statement, commit. A failure rolls the whole batch back: its entries are pending again,
/// and the error is noted on them (best effort).
async fn run_batch(
    client: &mut impl Begin,
    tenants: &[Uuid],
    limit: i64,
    fence: Option<&Fence>,
    now: DateTime<Utc>,
    reports: &mut BTreeMap<Uuid, OrdersReport>,
) -> Result<Batch> {
    let mut ids: Vec<Uuid> = Vec::new();
    let result = claim_and_write(client, tenants, limit, fence, now, &mut ids).await;
    match result {
        Ok((batch, batch_reports)) => {
            for (tenant, r) in batch_reports {
                reports.entry(tenant).or_default().add(&r);
            }
            Ok(batch)
        }
        Err(e) => {
            if !ids.is_empty() && !crate::db::is_lease_lost_err(&e) {
                let msg = format!("{e:#}");
                if let Err(e2) = client.execute(RECORD_ERROR_SQL, &[&ids, &msg]).await {
                    tracing::warn!(error = %e2, "could not record the batch failure on its entries");
                }
            }
            Err(e)
        }
    }
}

/// The transaction of [`run_batch`]; `ids` gets the claimed entries (for the error note).
async fn claim_and_write(
    client: &mut impl Begin,
    tenants: &[Uuid],
    limit: i64,
    fence: Option<&Fence>,
    now: DateTime<Utc>,
    ids: &mut Vec<Uuid>,
) -> Result<(Batch, BTreeMap<Uuid, OrdersReport>)> {
    // One round trip: the lease check, the relaxed commit and the claim are pipelined on
    // the connection (each still runs after the previous one, and a lost lease fails the
    // fence before the claim).
    let (tx, (_, rows)) = FencedTx::begin_with(client, fence, async |tx| {
        futures::try_join!(
            async {
                tx.execute(ASYNC_COMMIT_SQL, &[])
                    .await
                    .context("relaxing the batch's commit")
            },
            async {
                tx.query(
                    CLAIM_BATCH_SQL,
                    &[&tenants as &dyn crate::db::Param, &limit],
                )
                .await
                .context("claiming queued orders")
            },
        )
    })
    .await?;
    if rows.is_empty() {
        tx.commit().await.context("ending the empty batch")?;
        return Ok((Batch::Empty, BTreeMap::new()));
    }
    let mut claimed = Vec::with_capacity(rows.len());
    for r in &rows {
        let c = Claimed::from_row(r).context("reading a claimed order")?;
        ids.push(c.queue_id);
        claimed.push(c);
    }
    let (writes, batch_reports) = batch::validate_all(&claimed);
    match batch::write(&tx, &writes, now).await? {
        batch::Outcome::OrdersChanged => {
            tx.rollback()
                .await
                .context("rolling back the batch with an edited order")?;
            Ok((Batch::OrdersChanged, BTreeMap::new()))
        }
        batch::Outcome::Written => {
            tx.commit().await.context("committing the batch")?;
            Ok((Batch::Written(rows.len()), batch_reports))
        }
    }
}
