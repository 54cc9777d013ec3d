//! Order queue processing (SPEC §6) and `autopilot process-orders`.
//!
//! This module owns the command: its orchestration (tenants grouped into chunks drained in
//! parallel on their own connections) and its report. The parts:
//! - [`rules`]: the validation rules, pure and table-driven (their data in `model`);
//! - [`queue`]: queueing, claiming and draining batches (crash and race semantics);
//! - `batch`: one batch's validation and its set-based write-back;
//! - [`review`]: the findings that deserve a human review card.

pub mod queue;
pub mod review;
pub mod rules;

mod batch;
mod model;
mod report;
#[cfg(test)]
mod tests;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::Context;

pub use queue::{process_tenant, queue_missing, reset_stale_claims, STALE_CLAIM_SECS};
pub use review::{review_card_payload, review_card_title, review_targets, ReviewTarget};
pub use rules::*;

/// Default number of entries validated per batch (one transaction) by `process-orders`:
/// measured on 2 cores at 100,000 entries over 1,000 tenants, 1,000 beat 250 and 500 (fewer
/// statements) and 2,000 (fewer chunks to spread over the connections). Measured again
/// once the claim probed per entry: 500, 1,000 and 2,000 within run-to-run noise.
pub const DEFAULT_BATCH: u32 = 1000;

/// Connections (and chunks drained at once) of the `process-orders` command: the work is
/// bound by the server, and several backends keep both of its cores busy while each waits on
/// the client or on I/O. Measured on 2 cores at 100,000 entries over 1,000 tenants, once
/// the claim probed per entry: with the machine quiet (load ~4) 2, 3, 4 and 6 were within
/// run-to-run noise; with it busy (load ~7) 8 beat 4 in each of three back-to-back rounds
/// (22.3k/19.6k/27.5k vs 18.9k/17.5k/19.0k entries/s), 6 in between.
const COMMAND_WORKERS: usize = 8;

const TENANTS_WITH_WORK_SQL: &str = crate::sql!("orders/tenants_with_work");

/// Counts of one run (per tenant or in total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OrdersReport {
    pub processed: u64,
    pub validated: u64,
    pub exception: u64,
    pub skipped: u64,
    pub auto_fixes: u64,
}

impl OrdersReport {
    pub fn add(&mut self, other: &OrdersReport) {
        self.processed += other.processed;
        self.validated += other.validated;
        self.exception += other.exception;
        self.skipped += other.skipped;
        self.auto_fixes += other.auto_fixes;
    }
}

/// The database could not be reached or was lost (exit 75): the whole command stops.
fn unreachable(e: &anyhow::Error) -> bool {
    crate::error::exit_code_for(e) == crate::error::Exit::Unavailable as u8
}

/// Consecutive tenants grouped so that each group has at most `batch` pending entries (a
/// tenant with more is a group of its own).
fn chunk_tenants(pending: &[(Uuid, i64)], batch: i64) -> Vec<Vec<Uuid>> {
    let mut chunks: Vec<Vec<Uuid>> = Vec::new();
    let mut size = 0;
    for &(tenant, n) in pending {
        match chunks.last_mut() {
            Some(chunk) if size + n <= batch => {
                chunk.push(tenant);
                size += n;
            }
            _ => {
                chunks.push(vec![tenant]);
                size = n;
            }
        }
    }
    chunks
}

/// A chunk's counts per tenant, and the tenants whose processing failed.
type ChunkOutcome = (BTreeMap<Uuid, OrdersReport>, Vec<(Uuid, anyhow::Error)>);

/// Drain one chunk of tenants on a connection of its own. When a batch of several tenants
/// fails, each tenant is drained alone, so one tenant's failure leaves the others done.
async fn drain_chunk(
    pool: &crate::db::Pool,
    ctx: &Context,
    chunk: &[Uuid],
    batch: u32,
    now: DateTime<Utc>,
) -> ChunkOutcome {
    let mut reports = BTreeMap::new();
    let all_failed = |e: anyhow::Error| -> Vec<(Uuid, anyhow::Error)> {
        let msg = format!("{e:#}");
        let mut errs = vec![(chunk[0], e)];
        errs.extend(chunk[1..].iter().map(|t| (*t, anyhow::anyhow!("{msg}"))));
        errs
    };
    let mut conn = match crate::db::get(pool, &ctx.db).await {
        Ok(c) => c,
        Err(e) => return (reports, all_failed(e)),
    };
    let e = match queue::drain(&mut *conn, chunk, batch, None, now, &mut reports).await {
        Ok(()) => return (reports, Vec::new()),
        Err(e) => e,
    };
    if chunk.len() == 1 || unreachable(&e) {
        return (reports, all_failed(e));
    }
    tracing::warn!(error = %crate::error::redact(&format!("{e:#}")), tenants = chunk.len(), "a batch of several tenants failed; draining them one by one");
    let mut errors = Vec::new();
    for tenant in chunk {
        if let Err(e) = queue::drain(&mut *conn, &[*tenant], batch, None, now, &mut reports).await {
            errors.push((*tenant, e));
        }
    }
    (reports, errors)
}

/// Before draining: queue the orders the trigger missed, put back abandoned claims, and
/// list the pending entries per tenant.
async fn prepare(
    conn: &impl crate::db::Sql,
    tenants: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, i64)>> {
    crate::db::require_tenants(conn, tenants).await?;
    let queued = queue_missing(conn, tenants, now).await?;
    if queued > 0 {
        tracing::info!(queued, "queued orders that had no queue entry");
    }
    let reclaimed = reset_stale_claims(conn, tenants, now).await?;
    if reclaimed > 0 {
        tracing::info!(
            reclaimed,
            "reclaimed entries abandoned in the processing state"
        );
    }
    let mut pending: Vec<(Uuid, i64)> = Vec::new();
    for r in conn
        .query(TENANTS_WITH_WORK_SQL, &[&tenants])
        .await
        .context("listing tenants with queued orders")?
    {
        pending.push((
            r.try_get(0).context("reading a tenant id")?,
            r.try_get(1).context("reading a queue depth")?,
        ));
    }
    Ok(pending)
}

/// `autopilot process-orders`. Reports every tenant named with `--tenant` (zeros included);
/// without `--tenant`, every tenant that had queued work. A tenant whose processing fails
/// (other than the database becoming unreachable) is reported with its error, the others
/// go on, and the exit code is 1.
///
/// Tenants are grouped into chunks of about one batch of pending entries (most tenants
/// have far fewer entries than a batch, and the cost of a batch is mostly per statement,
/// not per entry), and the chunks are drained in parallel on their own connections.
/// What `autopilot process-orders` drains and how.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Only these tenants (each must exist); empty: every tenant with queued orders.
    pub tenants: Vec<Uuid>,
    /// Queue entries validated per batch (one transaction).
    pub batch: u32,
    /// One JSON document instead of text.
    pub json: bool,
}

pub async fn run(ctx: &Context, args: &ProcessOptions) -> Result<u8> {
    let now = ctx.now();
    let workers = COMMAND_WORKERS;
    let pool = ctx.db.pool(workers)?;
    let conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    let pending = prepare(&*conn, &args.tenants, now).await?;
    drop(conn);
    let chunks = chunk_tenants(&pending, i64::from(args.batch.max(1)));

    let outcomes: Vec<ChunkOutcome> = futures::stream::iter(chunks)
        .map(|chunk| {
            let pool = &pool;
            async move { drain_chunk(pool, ctx, &chunk, args.batch, now).await }
        })
        .buffer_unordered(workers)
        .collect()
        .await;

    let mut reports: BTreeMap<Uuid, OrdersReport> = BTreeMap::new();
    let mut errors: BTreeMap<Uuid, anyhow::Error> = BTreeMap::new();
    for (r, errs) in outcomes {
        for (tenant, report) in r {
            reports.entry(tenant).or_default().add(&report);
        }
        for (tenant, e) in errs {
            if unreachable(&e) {
                return Err(e);
            }
            errors.insert(tenant, e);
        }
    }
    let listed: Vec<Uuid> = if args.tenants.is_empty() {
        pending.iter().map(|(t, _)| *t).collect()
    } else {
        args.tenants.clone()
    };
    let summary = report::Summary::of(listed, &reports, errors);
    summary.print(args.json)?;
    Ok(if summary.failed() { 1 } else { 0 })
}
