//! `autopilot run-cycle`: the hourly Plan → Act → React → Reflect cycle, per tenant.
//!
//! Owns tenant selection and the kill switch (failing closed), the hourly cadence (a tenant
//! whose cycle completed in the current UTC hour is skipped), bounded concurrency, the lease
//! lifecycle (acquire, heartbeat every lease/3, fenced writes, release with the final
//! status), the per-tenant timeout and the invocation's `--deadline` (in-flight queries are
//! cancelled, not abandoned), riding out a lost database connection within
//! `--retry-window` (exit 75 when it does not come back), SIGTERM/SIGINT handling, and the
//! report. The phases call the modules that own each concern:
//! `engagement` (clocks, follow-up drafts), `orders` (queue, review targets), `email`
//! (sending approved cards), `policy` (every action), `alerts` (rules at the end).
//!
//! The module is split by concern: `lease` (one tenant's lease lifecycle around its cycle,
//! and the heartbeat), `retry` (riding out a lost connection), `phases` (the Plan, Act,
//! React and Reflect phases), `plan` (what the Plan phase collects), `dry_run`, `signals`,
//! `options` (what the command line asks for) and `report` (the per-tenant results and the printed report).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use crate::db::{Begin, Commit, Sql};
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::db;
use crate::{email, Context};

#[macro_use]
mod retry;
mod act;
mod dry_run;
mod lease;
mod options;
mod phases;
mod plan;
mod react;
mod reflect;
mod report;
mod signals;
mod state;
mod tenant;

pub use options::{CycleOptions, Trigger};
pub use report::{CycleMetrics, CycleReport, TenantResult};

use dry_run::dry_run_tenant;
use lease::heartbeat_loop;
use report::{print_report, write_metrics};
use signals::Signals;
use tenant::run_tenant;

/// Enabled tenants (or the listed ones), those not run for the longest time first so that
/// `--max-tenants` rotates through an installation. $3/$4: this runner's shard count and
/// index (NULL: all), see `shard.rs`.
const SELECT_TENANTS: &str = crate::sql!("cycle/select_tenants");

#[derive(Debug, Clone)]
struct TenantRow {
    id: Uuid,
    name: String,
    settings: Result<Value, crate::settings::SettingsError>,
    runnable: Option<&'static str>,
}

/// What the runner shares with every tenant task.
struct Shared<'a> {
    ctx: &'a Context,
    args: &'a CycleOptions,
    pool: db::Pool,
    mailer: Option<email::Mailer>,
    holder: String,
    stop: watch::Receiver<bool>,
    /// Set by a second signal: in-flight tenants stop without waiting for the grace.
    stop_now: watch::Receiver<bool>,
    /// Set when the database was lost and did not come back within the retry window: no
    /// new tenant starts and the invocation exits 75.
    db_gone: AtomicBool,
    /// The invocation's `--deadline`: no tenant starts after it, in-flight ones stop.
    deadline_at: Instant,
    /// run id → (tenant id, lost-lease signal), renewed by the heartbeat task.
    leases: Mutex<HashMap<Uuid, (Uuid, Arc<Notify>)>>,
}

pub async fn run(ctx: &Context, args: &CycleOptions) -> Result<u8> {
    let started = Instant::now();
    let shard = crate::shard::resolve(args.shard)?;
    let signals = Signals::install();
    // Configuration errors are bad input: refuse before connecting or writing anything.
    let mailer = email::MailerConfig::from_env()?
        .map(email::Mailer::new)
        .transpose()?;
    let pool = ctx.db.pool(args.concurrency as usize + 1)?;

    let conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    db::require_tenants(&*conn, &args.tenants).await?;
    if let Some(reason) = kill_switch_reason(&*conn).await? {
        return disabled(ctx, args, reason, started).await;
    }
    let tenants = select_tenants(&*conn, args, shard).await?;
    drop(conn);

    let (stop, stop_now) = forward_signals(signals);
    let shared = Shared {
        ctx,
        args,
        pool,
        mailer,
        holder: holder_name(),
        db_gone: AtomicBool::new(false),
        deadline_at: started + Duration::from_secs(args.deadline),
        stop,
        stop_now,
        leases: Mutex::new(HashMap::new()),
    };
    let results = run_tenants(&shared, &tenants).await;

    if shared.db_gone.load(Ordering::SeqCst) {
        return Err(database_gone(args, &results));
    }
    let interrupted = *shared.stop.borrow();
    let report = CycleReport::finished(results, started.elapsed().as_millis() as u64);
    tracing::info!(
        total = report.total,
        succeeded = report.succeeded,
        failed = report.failed,
        skipped = report.skipped,
        duration_ms = report.duration_ms,
        dry_run = args.dry_run,
        interrupted,
        "cycle finished"
    );
    print_report(&report, args);
    write_metrics(ctx, args, &report).await;
    // After SIGTERM/SIGINT, in-flight tenants that completed within the grace period are
    // success (exit 0); one marked failed ("interrupted") makes it 1. Tenants not started
    // because of the signal are skipped, and the next runner of the hour runs them.
    Ok(if report.failed > 0 { 1 } else { 0 })
}

/// The kill switch is on: nothing runs, and the report says why.
async fn disabled(
    ctx: &Context,
    args: &CycleOptions,
    reason: String,
    started: Instant,
) -> Result<u8> {
    let report = CycleReport {
        disabled: true,
        reason: Some(reason.clone()),
        total: 0,
        succeeded: 0,
        failed: 0,
        skipped: 0,
        duration_ms: started.elapsed().as_millis() as u64,
        tenants: Vec::new(),
    };
    tracing::info!(reason = %reason, "cycle not run: agent disabled");
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("agent disabled: {reason}; nothing ran");
    }
    write_metrics(ctx, args, &report).await;
    Ok(0)
}

/// The tenants this runner takes (see [`SELECT_TENANTS`]).
async fn select_tenants(
    conn: &impl Sql,
    args: &CycleOptions,
    shard: Option<crate::shard::Shard>,
) -> Result<Vec<TenantRow>> {
    let limit = args.max_tenants.map(i64::from).unwrap_or(i64::MAX);
    let rows = conn
        .query(
            SELECT_TENANTS,
            &[
                &args.tenants,
                &limit,
                &shard.map(|s| i64::from(s.count)),
                &shard.map(|s| i64::from(s.index)),
            ],
        )
        .await
        .context("selecting tenants")?;
    Ok(rows.iter().map(tenant_row).collect())
}

fn tenant_row(r: &tokio_postgres::Row) -> TenantRow {
    let active: bool = r.get(3);
    let enabled: bool = r.get(4);
    TenantRow {
        id: r.get(0),
        name: r.get(1),
        // Decoding can fail on the tenant's data (JSON nested deeper than serde_json's
        // recursion limit): that tenant is refused with the reason, the others run.
        settings: r
            .try_get::<_, Value>(2)
            .map_err(|e| crate::settings::SettingsError {
                key: "(root)".to_string(),
                problem: format!("cannot be decoded: {}", db::error_text(&e)),
            }),
        runnable: if !active {
            Some("tenant is not active")
        } else if !enabled {
            Some("agent is not enabled for this tenant")
        } else {
            None
        },
    }
}

/// The first signal stops new tenants (first receiver), the second in-flight ones (second).
fn forward_signals(mut signals: Signals) -> (watch::Receiver<bool>, watch::Receiver<bool>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stop_now_tx, stop_now_rx) = watch::channel(false);
    tokio::spawn(async move {
        signals.recv().await;
        tracing::warn!(
            "signal received: starting no new tenant, giving in-flight tenants a grace period (signal again to stop now)"
        );
        let _ = stop_tx.send(true);
        // An operator who signals twice does not want to wait for the grace period.
        signals.recv().await;
        tracing::warn!("second signal: stopping in-flight tenants now");
        let _ = stop_now_tx.send(true);
    });
    (stop_rx, stop_now_rx)
}

/// Every tenant's cycle, `--concurrency` at a time with the leases' heartbeat (a dry run:
/// one after the other, nothing written).
async fn run_tenants(shared: &Shared<'_>, tenants: &[TenantRow]) -> Vec<TenantResult> {
    if shared.args.dry_run {
        let mut out = Vec::new();
        for t in tenants {
            out.push(dry_run_tenant(shared, t).await);
        }
        return out;
    }
    let heartbeat = heartbeat_loop(shared);
    let work = futures::stream::iter(tenants.iter())
        .map(|t| {
            // Every line of a tenant's cycle carries its tenant and (once taken) run id.
            let span =
                tracing::info_span!("tenant", tenant_id = %t.id, run_id = tracing::field::Empty);
            tracing::Instrument::instrument(run_tenant(shared, t), span)
        })
        .buffer_unordered(shared.args.concurrency as usize)
        .collect::<Vec<_>>();
    tokio::select! {
        r = work => r,
        _ = heartbeat => unreachable!("the heartbeat loop never ends"),
    }
}

/// The database was lost and did not come back within the retry window: exit 75.
fn database_gone(args: &CycleOptions, results: &[TenantResult]) -> anyhow::Error {
    let left = results
        .iter()
        .filter(|r| r.reason.as_deref() == Some("database unreachable: left for the next run"))
        .count();
    crate::error::AppError::Unavailable(format!(
        "lost the database connection and it did not come back within {} s (--retry-window): {} of {} tenant(s) left for the next run, none marked failed for it",
        args.retry_window,
        left,
        results.len()
    ))
    .into()
}

async fn kill_switch_reason(c: &impl Sql) -> Result<Option<String>> {
    // Fails closed (SPEC §1): anything but an explicit off value stops the agent; the same
    // reading as `doctor` and `agent status`.
    if let Some(v) = crate::tenant_admin::env_kill_switch() {
        return Ok(Some(format!(
            "AGENT_KILL_SWITCH={v} is set in the environment"
        )));
    }
    let g = crate::tenant_admin::read_global(c).await?;
    if g.global_enabled {
        return Ok(None);
    }
    let why = g
        .kill_switch_reason
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    Ok(Some(format!(
        "global kill switch is on (system_config agent_config.global_enabled is not true){why}"
    )))
}

/// The hourly cadence window `now` falls in: the UTC hour (SPEC §1, "at most once per
/// hourly window").
pub fn cadence_window(now: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{DurationRound, TimeDelta};
    now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now)
}

fn holder_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Error text for a run row and a report line: one line, no secrets.
fn one_line(text: &str) -> String {
    crate::error::redact(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
