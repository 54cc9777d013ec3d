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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use crate::db::{Begin, Commit, Sql};
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::cli::RunCycleArgs;
use crate::db::{self, Fence};
use crate::engagement::{self, FollowUp};
use crate::orders::{self, ReviewTarget};
use crate::policy::{self, Action, Block};
use crate::settings::TenantSettings;
use crate::{alerts, email, Context};

const KILL_SWITCH: &str = "SELECT value FROM public.system_config WHERE key = 'agent_config'";

/// Enabled tenants (or the listed ones), those not run for the longest time first so that
/// `--max-tenants` rotates through an installation. $3/$4: this runner's shard count and
/// index (NULL: all), see `shard.rs`.
const SELECT_TENANTS: &str = "
SELECT t.id, COALESCE(t.name, ''), COALESCE(t.agent_settings, '{}'), COALESCE(t.is_active, false),
       COALESCE(t.agent_enabled, false)
FROM public.tenants t
WHERE (cardinality($1::uuid[]) = 0 AND t.is_active AND t.agent_enabled
       AND ($3::bigint IS NULL OR (('x' || left(md5(t.id::text), 8))::bit(32)::bigint % $3::bigint) = $4::bigint))
   OR t.id = ANY($1)
ORDER BY (SELECT max(r.started_at) FROM public.agent_autonomous_runs r WHERE r.tenant_id = t.id) NULLS FIRST, t.id
LIMIT $2";

/// `$5`: the cadence window (the UTC hour) this run belongs to; a tenant whose cycle
/// completed in it is not run again, whatever runner ran it and whenever (`$6` = `--force`).
const ACQUIRE: &str = "SELECT public.acquire_tenant_lease_in_window($1, $2, make_interval(secs => $3), $4, $5, $6, now())";
const COMPLETED_IN_WINDOW: &str = "SELECT max(completed_at) FROM public.agent_autonomous_runs
WHERE tenant_id = $1 AND status = 'completed' AND cadence_window = $2";
/// The lease this runner holds on a tenant, if any (see the acquire retry).
const OWN_LEASE: &str =
    "SELECT run_id FROM public.agent_tenant_locks WHERE tenant_id = $1 AND lock_holder = $2";
const RUN_CYCLE_NUMBER: &str =
    "SELECT cycle_number FROM public.agent_autonomous_runs WHERE id = $1";
const HEARTBEAT: &str = "SELECT public.extend_tenant_lease($1, $2, make_interval(secs => $3))";
const RELEASE: &str = "SELECT public.release_tenant_lease($1, $2, $3, $4)";
const RUN_STATUS: &str =
    "SELECT status, error_message FROM public.agent_autonomous_runs WHERE id = $1";

const SET_PHASE: &str = "UPDATE public.agent_autonomous_runs
SET phase = $3, actions_planned = $4, actions_executed = $5, actions_blocked = $6,
    emails_sent = $7, cards_created = $8
WHERE tenant_id = $1 AND id = $2";

const STORE_METRICS: &str = "UPDATE public.agent_autonomous_runs
SET actions_planned = $3, actions_executed = $4, actions_blocked = $5, emails_sent = $6,
    cards_created = $7, metrics = $8
WHERE tenant_id = $1 AND id = $2";

const COUNT_APPROVED_SENDS: &str = "SELECT count(*) FROM public.kanban_cards
WHERE tenant_id = $1 AND type = 'send_email' AND state = 'approved'";

const SCHEDULED_DUE: &str = "SELECT id FROM public.kanban_cards
WHERE tenant_id = $1 AND state = 'scheduled' AND due_at <= $2 ORDER BY due_at, id LIMIT $3";

const PROMOTE_SCHEDULED: &str =
    "UPDATE public.kanban_cards SET state = 'suggested', updated_at = $3
WHERE tenant_id = $1 AND id = ANY($2) AND state = 'scheduled'";

const INSERT_REVIEW_CARDS: &str = "
INSERT INTO public.kanban_cards
    (tenant_id, run_id, client_id, type, title, description, rationale, priority, state,
     action_payload, agent_target, created_at, updated_at)
SELECT $1, $2, u.client_id, 'create_task', u.title, u.description, u.rationale, u.priority,
       'suggested', u.payload, u.order_id, $3, $3
FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[])
     AS u(order_id, client_id, title, description, rationale, priority, payload)
ON CONFLICT (tenant_id, type, agent_target)
    WHERE agent_target IS NOT NULL AND state IN ('suggested', 'in_review', 'approved', 'executing')
DO NOTHING";

const LAST_REFLECTION: &str = "SELECT metrics_delta FROM public.agent_hourly_reflections
WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 1";

const INSERT_REFLECTION: &str = "INSERT INTO public.agent_hourly_reflections
    (tenant_id, run_id, summary, changes, metrics_delta, blockers, insights, next_hour_priorities, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Counters of one tenant's cycle (the SPEC's `metrics`).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CycleMetrics {
    pub actions_planned: i32,
    pub actions_executed: i32,
    pub actions_blocked: i32,
    pub emails_sent: i32,
    pub cards_created: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantResult {
    pub tenant_id: Uuid,
    #[serde(skip)]
    pub name: String,
    pub run_id: Option<Uuid>,
    pub cycle_number: Option<i32>,
    pub status: &'static str,
    pub reason: Option<String>,
    pub duration_ms: u64,
    pub metrics: CycleMetrics,
}

#[derive(Debug, Serialize)]
pub struct CycleReport {
    pub disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub duration_ms: u64,
    pub tenants: Vec<TenantResult>,
}

#[derive(Debug, Clone)]
struct TenantRow {
    id: Uuid,
    name: String,
    settings: Result<Value, crate::settings::SettingsError>,
    runnable: Option<&'static str>,
}

/// One planned action, before the policies.
#[derive(Debug, Clone)]
enum Planned {
    /// Send the approved cards (one action per card; the email module picks them).
    Send,
    Review(ReviewTarget),
    FollowUp(FollowUp),
    Promote(Uuid),
}

impl Planned {
    /// Higher goes first: human-approved sends, then review tasks (critical before error),
    /// then follow-ups by engagement priority, then scheduled cards falling due.
    fn priority(&self) -> f64 {
        match self {
            Planned::Send => 300.0,
            Planned::Review(t) if t.severity == "critical" => 250.0,
            Planned::Review(_) => 200.0,
            Planned::FollowUp(f) => 100.0 + f.priority_score,
            Planned::Promote(_) => 50.0,
        }
    }
    fn describe(&self) -> String {
        match self {
            Planned::Send => "send an approved e-mail card".to_string(),
            Planned::Review(t) => format!(
                "open a review task for order {} ({} {})",
                t.order_id, t.severity, t.exception_type
            ),
            Planned::FollowUp(f) => format!(
                "draft a follow-up to {} ({} days overdue)",
                f.display_name(),
                f.days_overdue
            ),
            Planned::Promote(id) => format!("move scheduled card {id} to suggested"),
        }
    }
}

#[derive(Debug, Default)]
struct Plan {
    actions: Vec<Planned>,
    /// Actions found beyond max_actions_per_cycle.
    deferred: usize,
    blockers: Vec<String>,
}

/// What the runner shares with every tenant task.
struct Shared<'a> {
    ctx: &'a Context,
    args: &'a RunCycleArgs,
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

pub async fn run(ctx: &Context, args: &RunCycleArgs) -> Result<u8> {
    let started = Instant::now();
    let shard = crate::shard::resolve(args.shard)?;
    let mut signals = Signals::install();
    // Configuration errors are bad input: refuse before connecting or writing anything.
    let mailer = email::MailerConfig::from_env()?
        .map(email::Mailer::new)
        .transpose()?;
    let pool = ctx.db.pool(args.concurrency as usize + 1)?;

    let conn = db::get_checked(&pool, &ctx.db).await?;
    db::require_tenants(&*conn, &args.tenants).await?;
    if let Some(reason) = kill_switch_reason(&*conn).await? {
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
        crate::metrics::after_cycle(ctx, args, &report).await;
        return Ok(0);
    }
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
    drop(conn);
    let tenants: Vec<TenantRow> = rows
        .iter()
        .map(|r| {
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
        })
        .collect();

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

    let shared = Shared {
        ctx,
        args,
        pool,
        mailer,
        holder: holder_name(),
        db_gone: AtomicBool::new(false),
        deadline_at: started + Duration::from_secs(args.deadline),
        stop: stop_rx,
        stop_now: stop_now_rx,
        leases: Mutex::new(HashMap::new()),
    };
    let results: Vec<TenantResult> = if args.dry_run {
        let mut out = Vec::new();
        for t in &tenants {
            out.push(dry_run_tenant(&shared, t).await);
        }
        out
    } else {
        let heartbeat = heartbeat_loop(&shared);
        let work = futures::stream::iter(tenants.iter())
            .map(|t| {
                // Every line of a tenant's cycle carries its tenant and (once taken) run id.
                let span = tracing::info_span!("tenant", tenant_id = %t.id, run_id = tracing::field::Empty);
                tracing::Instrument::instrument(run_tenant(&shared, t), span)
            })
            .buffer_unordered(args.concurrency as usize)
            .collect::<Vec<_>>();
        tokio::select! {
            r = work => r,
            _ = heartbeat => unreachable!("the heartbeat loop never ends"),
        }
    };

    if shared.db_gone.load(Ordering::SeqCst) {
        let left = results
            .iter()
            .filter(|r| r.reason.as_deref() == Some("database unreachable: left for the next run"))
            .count();
        return Err(crate::error::AppError::Unavailable(format!(
            "lost the database connection and it did not come back within {} s (--retry-window): {} of {} tenant(s) left for the next run, none marked failed for it",
            args.retry_window,
            left,
            results.len()
        ))
        .into());
    }
    let interrupted = *shared.stop.borrow();
    let report = CycleReport {
        disabled: false,
        reason: None,
        total: results.len(),
        succeeded: results.iter().filter(|r| r.status == "completed").count(),
        failed: results
            .iter()
            .filter(|r| matches!(r.status, "failed" | "timeout"))
            .count(),
        skipped: results.iter().filter(|r| r.status == "skipped").count(),
        duration_ms: started.elapsed().as_millis() as u64,
        tenants: results,
    };
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
    crate::metrics::after_cycle(ctx, args, &report).await;
    // After SIGTERM/SIGINT, in-flight tenants that completed within the grace period are
    // success (exit 0); one marked failed ("interrupted") makes it 1. Tenants not started
    // because of the signal are skipped, and the next runner of the hour runs them.
    Ok(if report.failed > 0 { 1 } else { 0 })
}

fn print_report(report: &CycleReport, args: &RunCycleArgs) {
    if args.json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
        return;
    }
    if args.dry_run {
        return;
    }
    for t in &report.tenants {
        let m = &t.metrics;
        let name = if t.name.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.name)
        };
        match t.status {
            "completed" => println!(
                "{}{name}: completed cycle {} in {} ms: planned {}, executed {}, blocked {}, e-mails {}, cards {}",
                t.tenant_id,
                t.cycle_number.unwrap_or(0),
                t.duration_ms,
                m.actions_planned,
                m.actions_executed,
                m.actions_blocked,
                m.emails_sent,
                m.cards_created
            ),
            status => println!(
                "{}{name}: {status} in {} ms: {}",
                t.tenant_id,
                t.duration_ms,
                t.reason.as_deref().unwrap_or("")
            ),
        }
    }
    if report.total == 0 {
        println!("no tenant to run: none is active with the agent enabled (tenants.agent_enabled)");
    }
    println!(
        "{} tenant(s): {} completed, {} failed, {} skipped in {} ms",
        report.total, report.succeeded, report.failed, report.skipped, report.duration_ms
    );
}

async fn kill_switch_reason(c: &impl Sql) -> Result<Option<String>> {
    // Fails closed (SPEC §1): anything but an explicit off value stops the agent; the same
    // reading as `doctor` and `agent status`.
    if let Some(v) = crate::tenant_admin::env_kill_switch() {
        return Ok(Some(format!(
            "AGENT_KILL_SWITCH={v} is set in the environment"
        )));
    }
    let row = c
        .query_opt(KILL_SWITCH, &[])
        .await
        .context("reading the kill switch")?;
    // A value that cannot be decoded (NULL, nested too deeply) counts as "not enabled".
    let value: Value = row
        .and_then(|r| r.try_get::<_, Option<Value>>(0).ok().flatten())
        .unwrap_or(Value::Null);
    if value.get("global_enabled") == Some(&Value::Bool(true)) {
        return Ok(None);
    }
    let why = value
        .get("kill_switch_reason")
        .and_then(Value::as_str)
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

/// The environment kill switch fails closed: anything but an explicit off value (`0`,
/// `false`, `off`, `no`, empty; trimmed, any case) stops the agent, so a typo or an
/// unexpected spelling (`yes`, `on`, ` true`) never leaves it running. Returns the value
/// that stopped it.
pub fn env_kill_switch(value: Option<std::ffi::OsString>) -> Option<String> {
    let value = value?;
    let text = value.to_string_lossy();
    let off = matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "false" | "off" | "no"
    );
    (!off).then(|| text.into_owned())
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

/// SIGTERM and SIGINT, listened to from the start of the invocation until it ends: the
/// streams are created once, so a signal that arrives early (while connecting) or a second
/// one right after the first is never missed (a listener created after the fact would not
/// see it).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = one(&mut self.term) => {},
                _ = one(&mut self.int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Renews every held lease each lease/3 seconds on one connection; a renewal that finds a
/// lease lost wakes that tenant's task, which stops at once.
async fn heartbeat_loop(sh: &Shared<'_>) {
    let every = Duration::from_millis(sh.args.lease * 1000 / 3);
    let lease_secs = sh.args.lease as f64;
    loop {
        tokio::time::sleep(every).await;
        let held: Vec<(Uuid, Uuid, Arc<Notify>)> = match sh.leases.lock() {
            Ok(l) => l
                .iter()
                .map(|(run, (tenant, n))| (*run, *tenant, n.clone()))
                .collect(),
            Err(_) => continue,
        };
        if held.is_empty() {
            continue;
        }
        let conn = match db::get(&sh.pool, &sh.ctx.db).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "heartbeat could not get a connection");
                continue;
            }
        };
        for (run, tenant, lost) in held {
            match conn
                .query_one(HEARTBEAT, &[&tenant, &run, &lease_secs])
                .await
            {
                Ok(row) if row.get::<_, bool>(0) => {}
                Ok(_) => {
                    tracing::warn!(%tenant, %run, "lease lost: stopping this tenant's cycle");
                    lost.notify_one();
                }
                Err(e) => tracing::warn!(%tenant, error = %db::error_text(&e), "heartbeat failed"),
            }
        }
    }
}

enum Ending {
    Done(CycleMetrics),
    Failed(String),
    /// Stopped by a time limit (tenant timeout, invocation deadline, a bounded wait).
    TimedOut(String),
    Lost,
    Interrupted,
    /// The connection was lost mid-cycle (retried, never final).
    DbLost(anyhow::Error),
}

fn result(
    t: &TenantRow,
    started: Instant,
    status: &'static str,
    reason: Option<String>,
) -> TenantResult {
    TenantResult {
        tenant_id: t.id,
        name: t.name.clone(),
        run_id: None,
        cycle_number: None,
        status,
        reason,
        duration_ms: started.elapsed().as_millis() as u64,
        metrics: CycleMetrics::default(),
    }
}

async fn run_tenant(sh: &Shared<'_>, t: &TenantRow) -> TenantResult {
    let started = Instant::now();
    if *sh.stop.borrow() {
        return result(
            t,
            started,
            "skipped",
            Some("interrupted before start".into()),
        );
    }
    if sh.db_gone.load(Ordering::SeqCst) {
        return result(
            t,
            started,
            "skipped",
            Some("database unreachable: left for the next run".into()),
        );
    }
    if Instant::now() >= sh.deadline_at {
        return result(
            t,
            started,
            "skipped",
            Some(format!(
                "the invocation's --deadline of {} s passed before this tenant started",
                sh.args.deadline
            )),
        );
    }
    if let Some(why) = t.runnable {
        return result(t, started, "skipped", Some(why.into()));
    }
    let r = match run_tenant_inner(sh, t, started).await {
        Ok(r) => r,
        // A database that went away and did not come back is not this tenant's failure:
        // its run (if any) is left to the lease expiry and the next invocation.
        Err(e) if is_db_lost(&e) => {
            sh.db_gone.store(true, Ordering::SeqCst);
            result(
                t,
                started,
                "skipped",
                Some("database unreachable: left for the next run".into()),
            )
        }
        Err(e) => {
            let msg = one_line(&format!("{e:#}"));
            tracing::error!(tenant = %t.id, error = %msg, "tenant cycle failed");
            result(t, started, "failed", Some(msg))
        }
    };
    log_outcome(&r);
    r
}

/// One line per tenant outcome: info, or warn when it failed or timed out (so a default,
/// warn-level log still shows it).
fn log_outcome(r: &TenantResult) {
    let m = &r.metrics;
    macro_rules! outcome {
        ($level:expr) => {
            tracing::event!(
                $level,
                status = r.status,
                cycle_number = r.cycle_number,
                duration_ms = r.duration_ms,
                actions_planned = m.actions_planned,
                actions_executed = m.actions_executed,
                actions_blocked = m.actions_blocked,
                emails_sent = m.emails_sent,
                cards_created = m.cards_created,
                reason = r.reason.as_deref(),
                "tenant finished"
            )
        };
    }
    if matches!(r.status, "failed" | "timeout") {
        outcome!(tracing::Level::WARN);
    } else {
        outcome!(tracing::Level::INFO);
    }
}

/// True when an error means the database connection was lost or cannot be made (as
/// opposed to an error of a statement): worth reconnecting and retrying.
fn is_db_lost(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(
            c.downcast_ref::<crate::error::AppError>(),
            Some(crate::error::AppError::Unavailable(_))
        ) || c
            .downcast_ref::<tokio_postgres::Error>()
            .map(crate::error::is_connection_error)
            .unwrap_or(false)
    })
}

/// After a lost connection: a working connection again, trying with backoff (100 ms
/// doubling to 2 s) until `--retry-window` has passed since `since`, when the invocation
/// gives up (exit 75). A server restart takes a few seconds; this rides it out.
async fn reconnect(sh: &Shared<'_>, since: Instant, cause: &anyhow::Error) -> Result<db::Object> {
    let window = Duration::from_secs(sh.args.retry_window);
    tracing::warn!(
        error = %one_line(&format!("{cause:#}")),
        "lost the database connection; reconnecting (retrying for up to {} s, --retry-window)",
        window.as_secs()
    );
    let mut delay = Duration::from_millis(100);
    loop {
        if !sh.db_gone.load(Ordering::SeqCst) {
            if let Ok(conn) = db::get(&sh.pool, &sh.ctx.db).await {
                if conn.query_one("SELECT 1", &[]).await.is_ok() {
                    tracing::warn!(
                        "database connection back after {} ms",
                        since.elapsed().as_millis()
                    );
                    return Ok(conn);
                }
                let _ = db::Object::take(conn);
            }
        }
        if sh.db_gone.load(Ordering::SeqCst) || since.elapsed() + delay > window {
            sh.db_gone.store(true, Ordering::SeqCst);
            return Err(crate::error::AppError::Unavailable(format!(
                "lost the database connection and it did not come back within {} s (--retry-window)",
                window.as_secs()
            ))
            .into());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Run `$e` (which uses the connection `$conn`); when the connection was lost, reconnect
/// (within the retry window) into `$conn` and run it again. For statements that are safe to
/// repeat (reads, and the lease functions, which check what they change).
macro_rules! retry_db {
    ($sh:expr, $conn:ident, $e:expr) => {{
        let mut since: Option<Instant> = None;
        loop {
            let r: Result<_> = $e;
            match r {
                Err(err) if is_db_lost(&err) => {
                    let s = *since.get_or_insert_with(Instant::now);
                    let _ = db::Object::take($conn);
                    $conn = reconnect($sh, s, &err).await?;
                }
                other => break other,
            }
        }
    }};
}

async fn run_tenant_inner(
    sh: &Shared<'_>,
    t: &TenantRow,
    started: Instant,
) -> Result<TenantResult> {
    let args = sh.args;
    let mut conn = match db::get(&sh.pool, &sh.ctx.db).await {
        Ok(c) => c,
        Err(e) if is_db_lost(&e) => reconnect(sh, Instant::now(), &e).await?,
        Err(e) => return Err(e),
    };
    let lease_secs = args.lease as f64;
    // The tenant's own limit, never past the invocation's deadline.
    let tenant_deadline = (started + Duration::from_secs(args.tenant_timeout)).min(sh.deadline_at);
    let timeout_reason = || {
        if tenant_deadline == sh.deadline_at {
            format!(
                "the invocation's --deadline of {} s passed; in-flight query cancelled",
                args.deadline
            )
        } else {
            format!(
                "exceeded --tenant-timeout of {} s; in-flight query cancelled",
                args.tenant_timeout
            )
        }
    };
    let trigger = args.trigger.as_str();
    let window = cadence_window(sh.ctx.now());
    let params: [&dyn db::Param; 6] = [
        &t.id,
        &sh.holder,
        &lease_secs,
        &trigger,
        &window,
        &args.force,
    ];
    // Taking the lease is bounded by the tenant timeout too: a lease row locked by someone
    // else (a stuck session, an operator's open transaction) must not hang the runner.
    let run_id: Option<Uuid> = retry_db!(sh, conn, {
        let cancel = conn.cancel_token();
        match tokio::time::timeout_at(tenant_deadline.into(), conn.query_one(ACQUIRE, &params))
            .await
        {
            Ok(row) => row
                .with_context(|| format!("acquiring lease for tenant {}", t.id))
                .map(|r| Some(r.get::<_, Option<Uuid>>(0))),
            Err(_) => {
                abandon(sh, cancel, conn).await;
                return Ok(result(
                    t,
                    started,
                    "timeout",
                    Some(format!(
                        "could not take the lease within the tenant's time limit ({}) (its row is locked by another session)",
                        timeout_reason()
                    )),
                ));
            }
        }
    })?
    .flatten();
    let run_id = match run_id {
        Some(id) => Some(id),
        // The connection may have been lost after the server took the lease for this
        // runner and before the answer arrived: the lease is then ours (the holder name is
        // unique per invocation).
        None => retry_db!(
            sh,
            conn,
            conn.query_opt(OWN_LEASE, &[&t.id, &sh.holder])
                .await
                .map_err(anyhow::Error::from)
        )?
        .map(|r| r.get(0)),
    };
    let Some(run_id) = run_id else {
        let completed: Option<DateTime<Utc>> = retry_db!(
            sh,
            conn,
            conn.query_one(COMPLETED_IN_WINDOW, &[&t.id, &window])
                .await
                .map_err(anyhow::Error::from)
        )?
        .get(0);
        let reason = match completed {
            Some(at) => format!(
                "already ran in this hour (window {}, completed {}); --force runs it again",
                window.format("%Y-%m-%d %H:00 UTC"),
                at.format("%H:%M:%S UTC")
            ),
            None => "lease held by another runner".to_string(),
        };
        return Ok(result(t, started, "skipped", Some(reason)));
    };
    let cycle_number: i32 = retry_db!(
        sh,
        conn,
        conn.query_one(RUN_CYCLE_NUMBER, &[&run_id])
            .await
            .map_err(anyhow::Error::from)
    )?
    .get(0);
    tracing::Span::current().record("run_id", tracing::field::display(run_id));
    tracing::debug!(cycle_number, "lease taken");
    let fence = Fence {
        tenant_id: t.id,
        run_id,
    };
    let lost = Arc::new(Notify::new());
    if let Ok(mut l) = sh.leases.lock() {
        l.insert(run_id, (t.id, lost.clone()));
    }
    let now = sh.ctx.now();

    let ending = match t.settings.clone().and_then(|v| TenantSettings::parse(&v)) {
        Err(e) => {
            let msg = e.to_string();
            // Recorded as a failed run plus an alert; the other tenants go on.
            retry_db!(
                sh,
                conn,
                alerts::raise(
                    &*conn,
                    t.id,
                    alerts::INVALID_SETTINGS,
                    "critical",
                    &format!("agent not run: {msg}"),
                    json!({"key": e.key, "problem": e.problem}),
                    now,
                )
                .await
                .map(|_| ())
            )?;
            Ending::Failed(msg)
        }
        Ok(settings) => {
            // A lost connection re-runs the cycle on a new one, under the same run and
            // lease: every step checks what exists (cards, clocks, sends already claimed),
            // so what completed before the loss is not done twice.
            let mut lost_since: Option<Instant> = None;
            loop {
                let cancel = conn.cancel_token();
                let ending = {
                    let work = tenant_cycle(&mut *conn, sh, t, fence, &settings, cycle_number, now);
                    let mut stop = sh.stop.clone();
                    let mut stop_now = sh.stop_now.clone();
                    let grace = Duration::from_secs(args.grace);
                    let interrupted = async move {
                        let _ = stop.wait_for(|s| *s).await;
                        tokio::select! {
                            _ = tokio::time::sleep(grace) => {},
                            _ = stop_now.wait_for(|s| *s) => {},
                        }
                    };
                    tokio::select! {
                        r = tokio::time::timeout_at(tenant_deadline.into(), work) => match r {
                            Ok(Ok(m)) => Ending::Done(m),
                            Ok(Err(e)) if db::is_lease_lost_err(&e) => Ending::Lost,
                            Ok(Err(e)) if is_db_lost(&e) => Ending::DbLost(e),
                            Ok(Err(e)) if crate::deadline::is_timeout(&e) => Ending::TimedOut(
                                format!(
                                    "a database wait passed its bound (lock_timeout {} s, statement_timeout {} s): {}",
                                    crate::deadline::bounds().lock_timeout.as_secs_f64(),
                                    crate::deadline::bounds().statement_timeout.as_secs_f64(),
                                    one_line(&format!("{e:#}"))
                                ),
                            ),
                            Ok(Err(e)) => Ending::Failed(one_line(&format!("{e:#}"))),
                            Err(_) => Ending::TimedOut(timeout_reason()),
                        },
                        _ = lost.notified() => Ending::Lost,
                        _ = interrupted => Ending::Interrupted,
                    }
                };
                match ending {
                    Ending::Done(m) => break Ending::Done(m),
                    Ending::DbLost(e) => {
                        let since = *lost_since.get_or_insert_with(Instant::now);
                        let _ = db::Object::take(conn);
                        conn = reconnect(sh, since, &e).await?;
                    }
                    other => {
                        abandon(sh, cancel, conn).await;
                        conn = match db::get(&sh.pool, &sh.ctx.db).await {
                            Ok(c) => c,
                            Err(e) if is_db_lost(&e) => reconnect(sh, Instant::now(), &e).await?,
                            Err(e) => return Err(e),
                        };
                        break other;
                    }
                }
            }
        }
    };
    if let Ok(mut l) = sh.leases.lock() {
        l.remove(&run_id);
    }

    let (status, error): (&str, Option<String>) = match &ending {
        Ending::Done(_) => ("completed", None),
        Ending::Failed(m) => ("failed", Some(m.clone())),
        Ending::TimedOut(m) => ("timeout", Some(m.clone())),
        Ending::Interrupted => ("failed", Some("interrupted".to_string())),
        Ending::Lost => ("failed", Some("lease lost to another runner".to_string())),
        Ending::DbLost(_) => unreachable!("a lost connection is retried above"),
    };
    // Releasing twice is harmless: a second call finds the lease gone and reports false,
    // and the run row then says what the first one recorded.
    let released: bool = retry_db!(
        sh,
        conn,
        conn.query_one(RELEASE, &[&t.id, &run_id, &status, &error])
            .await
            .with_context(|| format!("releasing lease for tenant {}", t.id))
    )?
    .get(0);
    let (final_status, reason) = if released {
        (status, error)
    } else {
        let row = retry_db!(
            sh,
            conn,
            conn.query_opt(RUN_STATUS, &[&run_id])
                .await
                .map_err(anyhow::Error::from)
        )?;
        let Some(row) = row else {
            // The server lost the run in a crash (its commit was not yet durable, e.g.
            // synchronous_commit = off): nothing of it survived; the next run does the work.
            return Ok(result(
                t,
                started,
                "skipped",
                Some("the database lost this run in a crash; left for the next run".into()),
            ));
        };
        let s: String = row.get(0);
        let recorded: Option<String> = row.get(1);
        match s.as_str() {
            // Our own release whose answer was lost with the connection.
            "completed" => ("completed", None),
            st if recorded.as_deref() == error.as_deref() && st == status => (status, error),
            // Fenced out: the run row says what the taker decided (normally `timeout`).
            "timeout" => (
                "timeout",
                Some("lease lost to another runner; nothing more was written".to_string()),
            ),
            _ => (
                "failed",
                Some("lease lost to another runner; nothing more was written".to_string()),
            ),
        }
    };
    if released && final_status != "completed" {
        if let Err(e) = alerts::evaluate_failure_rate(&*conn, t.id, sh.ctx.now()).await {
            tracing::warn!(tenant = %t.id, error = %format!("{e:#}"), "evaluating the failure-rate alert");
        }
    }
    let metrics = match ending {
        Ending::Done(m) => m,
        _ => CycleMetrics::default(),
    };
    Ok(TenantResult {
        tenant_id: t.id,
        name: t.name.clone(),
        run_id: Some(run_id),
        cycle_number: Some(cycle_number),
        status: final_status,
        reason,
        duration_ms: started.elapsed().as_millis() as u64,
        metrics,
    })
}

/// A future that used `conn` was dropped mid-statement: cancel what may still run on the
/// server, and keep the connection out of the pool.
async fn abandon(sh: &Shared<'_>, cancel: tokio_postgres::CancelToken, conn: db::Object) {
    sh.ctx.db.cancel(&cancel).await;
    let _ = db::Object::take(conn);
}

async fn set_phase(
    c: &mut impl crate::db::Begin,
    fence: Fence,
    phase: &str,
    m: &CycleMetrics,
) -> Result<()> {
    tracing::debug!(phase, "phase started");
    let tx = c.begin().await?;
    fence.check(&tx).await?;
    tx.execute(
        SET_PHASE,
        &[
            &fence.tenant_id,
            &fence.run_id,
            &phase,
            &m.actions_planned,
            &m.actions_executed,
            &m.actions_blocked,
            &m.emails_sent,
            &m.cards_created,
        ],
    )
    .await
    .with_context(|| format!("recording phase {phase}"))?;
    tx.commit().await?;
    Ok(())
}

/// Plan step 1: the tenant's missing clocks and fresh scores.
async fn refresh_engagement(c: &impl Sql, tenant: Uuid, now: DateTime<Utc>) -> Result<u64> {
    engagement::check_clocks_finite(c, tenant).await?;
    let created = engagement::ensure_clocks(c, tenant, now)
        .await
        .context("creating engagement clocks")?;
    engagement::refresh_scores(c, tenant, now)
        .await
        .context("refreshing priority scores")?;
    Ok(created)
}

/// Plan step 2: collect every candidate action, highest priority first, capped.
async fn collect_plan(
    c: &impl Sql,
    tenant: Uuid,
    settings: &TenantSettings,
    now: DateTime<Utc>,
) -> Result<Plan> {
    let cap = settings.max_actions_per_cycle.max(0) as i64;
    let mut plan = Plan::default();
    let mut all: Vec<Planned> = Vec::new();

    let approved: i64 = c.query_one(COUNT_APPROVED_SENDS, &[&tenant]).await?.get(0);
    all.extend((0..approved.min(cap)).map(|_| Planned::Send));

    for target in orders::review_targets(c, tenant, cap)
        .await
        .context("collecting review targets")?
    {
        all.push(Planned::Review(target));
    }
    for f in engagement::overdue_followups(c, tenant, now, cap)
        .await
        .context("collecting overdue follow-ups")?
    {
        if f.email.as_deref().map(str::trim).unwrap_or("").is_empty() {
            plan.blockers.push(format!(
                "{} is {} days overdue but has no e-mail address",
                f.display_name(),
                f.days_overdue
            ));
        } else {
            all.push(Planned::FollowUp(f));
        }
    }
    let due = c.query(SCHEDULED_DUE, &[&tenant, &now, &cap]).await?;
    all.extend(due.iter().map(|r| Planned::Promote(r.get(0))));

    all.sort_by(|a, b| b.priority().total_cmp(&a.priority()));
    let cap = cap as usize;
    if all.len() > cap {
        plan.deferred = all.len() - cap;
        all.truncate(cap);
    }
    plan.actions = all;
    Ok(plan)
}

/// Record policy blocks (fenced).
async fn record_blocks(
    c: &mut impl crate::db::Begin,
    fence: Fence,
    blocks: &[(Action, Block)],
    now: DateTime<Utc>,
) -> Result<()> {
    if blocks.is_empty() {
        return Ok(());
    }
    let tx = c.begin().await?;
    fence.check(&tx).await?;
    for (action, block) in blocks {
        policy::record(&tx, fence.tenant_id, Some(fence.run_id), action, block, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn tenant_cycle(
    c: &mut impl crate::db::Begin,
    sh: &Shared<'_>,
    t: &TenantRow,
    fence: Fence,
    settings: &TenantSettings,
    cycle_number: i32,
    now: DateTime<Utc>,
) -> Result<CycleMetrics> {
    let tenant = t.id;
    let mut m = CycleMetrics::default();
    let mut changes: Vec<String> = Vec::new();
    let mut insights: Vec<String> = Vec::new();

    // Wall time per phase, kept in the run's metrics (and logged at debug) for profiling.
    let mut phase_ms: Vec<(&str, u64)> = Vec::new();
    let mut phase_start = Instant::now();
    let mut lap = |name: &'static str, start: &mut Instant| {
        let ms = start.elapsed().as_millis() as u64;
        tracing::debug!(%tenant, phase = name, ms, "phase done");
        phase_ms.push((name, ms));
        *start = Instant::now();
    };

    // Plan ---------------------------------------------------------------------------------
    let created = {
        let tx = c.begin().await?;
        fence.check(&tx).await?;
        let created = refresh_engagement(&tx, tenant, now).await?;
        tx.commit().await?;
        created
    };
    if created > 0 {
        changes.push(format!("created {created} engagement clock(s)"));
    }
    let mut plan = collect_plan(&*c, tenant, settings, now).await?;
    if plan.deferred > 0 {
        insights.push(format!(
            "{} more action(s) wait for the next cycle (max_actions_per_cycle = {})",
            plan.deferred, settings.max_actions_per_cycle
        ));
    }
    m.actions_planned = plan.actions.len() as i32;
    set_phase(c, fence, "act", &m).await?;
    lap("plan", &mut phase_start);

    // Act ----------------------------------------------------------------------------------
    let mut blocks: Vec<(Action, Block)> = Vec::new();
    let mut drafts = Vec::new();
    let mut reviews: Vec<ReviewTarget> = Vec::new();
    let mut promotes: Vec<Uuid> = Vec::new();
    let mut sends = 0i64;
    for p in plan.actions.drain(..) {
        match p {
            Planned::Send => sends += 1,
            Planned::FollowUp(f) => {
                let sender = t.name.as_str();
                let draft = engagement::draft_followup(&f, sender);
                // Drafting a card is not a send: no quota (defect 11); suppressed contacts
                // were already left out of the follow-ups.
                let action = Action::new(
                    "send_email",
                    json!({"to": f.email, "subject": draft.subject, "contact_id": f.contact_id, "draft": true}),
                );
                match policy::evaluate(&*c, tenant, settings, &action, now).await? {
                    Some(block) => blocks.push((action, block)),
                    None => drafts.push((f, draft)),
                }
            }
            Planned::Review(target) => {
                let mut action = Action::new("create_task", orders::review_card_payload(&target));
                action.justification.escalates_order_exception =
                    matches!(target.severity.as_str(), "error" | "critical");
                match policy::evaluate(&*c, tenant, settings, &action, now).await? {
                    Some(block) => blocks.push((action, block)),
                    None => reviews.push(target),
                }
            }
            Planned::Promote(id) => {
                let action = Action::new("move_card", json!({"card_id": id, "to": "suggested"}));
                match policy::evaluate(&*c, tenant, settings, &action, now).await? {
                    Some(block) => blocks.push((action, block)),
                    None => promotes.push(id),
                }
            }
        }
    }
    m.actions_blocked += blocks.len() as i32;
    record_blocks(c, fence, &blocks, now).await?;

    if !drafts.is_empty() || !reviews.is_empty() || !promotes.is_empty() {
        let tx = c.begin().await?;
        fence.check(&tx).await?;
        let drafted =
            engagement::insert_followup_cards(&tx, tenant, fence.run_id, &drafts).await? as i32;
        let reviewed = insert_review_cards(&tx, fence, &reviews, now).await? as i32;
        let promoted = if promotes.is_empty() {
            0
        } else {
            tx.execute(PROMOTE_SCHEDULED, &[&tenant, &promotes, &now])
                .await? as i32
        };
        tx.commit().await?;
        m.cards_created += drafted + reviewed;
        m.actions_executed += drafted + reviewed + promoted;
        if drafted > 0 {
            changes.push(format!("drafted {drafted} follow-up e-mail card(s)"));
        }
        if reviewed > 0 {
            changes.push(format!(
                "opened {reviewed} review task(s) for order exceptions"
            ));
        }
        if promoted > 0 {
            changes.push(format!("moved {promoted} scheduled card(s) to suggested"));
        }
    }

    // Called even with nothing to send: it also parks cards left `executing` by an
    // interrupted send.
    let send_report = email::send_approved(
        c,
        tenant,
        Some(fence.run_id),
        Some(&fence),
        settings,
        sh.mailer.as_ref(),
        sends,
        now,
    )
    .await
    .context("sending approved e-mails")?;
    m.emails_sent += send_report.sent as i32;
    m.actions_executed += send_report.sent as i32;
    m.actions_blocked += (send_report.blocked
        + send_report.invalid
        + send_report.deferred_rate_limited.min(1)) as i32;
    if send_report.sent > 0 {
        changes.push(format!("sent {} e-mail(s)", send_report.sent));
    }
    if send_report.provider_missing && sends > 0 {
        plan.blockers.push(format!(
            "no e-mail provider configured (SMTP_URL and EMAIL_FROM): {sends} approved card(s) wait"
        ));
    }
    if send_report.circuit_open {
        plan.blockers
            .push("e-mail sending paused: 5 or more provider failures in 15 minutes".to_string());
    }
    if send_report.deferred_rate_limited > 0 {
        plan.blockers.push(format!(
            "hourly e-mail limit ({}) reached; {} approved card(s) wait for the next hour",
            settings.max_emails_per_hour, send_report.deferred_rate_limited
        ));
    }
    if send_report.recovered_stuck > 0 {
        plan.blockers.push(format!(
            "{} card(s) were found executing after an interrupted send and were parked for a human",
            send_report.recovered_stuck
        ));
    }
    if send_report.awaiting_person > 0 {
        plan.blockers.push(format!(
            "{} e-mail card(s) parked with delivery unknown wait for a person: check the mailbox for their Message-IDs, then run `autopilot card requeue CARD_ID` or `autopilot card close CARD_ID`",
            send_report.awaiting_person
        ));
    }
    set_phase(c, fence, "react", &m).await?;
    lap("act", &mut phase_start);

    // React --------------------------------------------------------------------------------
    let orders_report = orders::process_tenant(c, tenant, 500, Some(&fence), now)
        .await
        .context("processing queued orders")?;
    if orders_report.processed > 0 {
        changes.push(format!(
            "validated {} order(s): {} clean, {} with exceptions, {} skipped, {} auto-fix(es)",
            orders_report.processed,
            orders_report.validated,
            orders_report.exception,
            orders_report.skipped,
            orders_report.auto_fixes
        ));
    }
    crate::inbound::host::react(c, tenant, fence, now, &mut changes, &mut insights).await?;
    let provider_failures = email::provider_failures_last_hour(&*c, tenant, now).await?;
    if provider_failures > 0 {
        insights.push(format!(
            "{provider_failures} e-mail provider failure(s) in the last hour"
        ));
    }
    set_phase(c, fence, "reflect", &m).await?;
    lap("react", &mut phase_start);

    // Reflect ------------------------------------------------------------------------------
    let report = engagement::tenant_report(&*c, tenant, 5, now).await?;
    let previous: Option<Value> = c
        .query_opt(LAST_REFLECTION, &[&tenant])
        .await?
        .and_then(|r| r.try_get::<_, Option<Value>>(0).ok().flatten());
    let prev_rate = previous
        .as_ref()
        .and_then(|p| p.pointer("/compliance_rate/after"))
        .and_then(Value::as_f64);
    let prev_overdue = previous
        .as_ref()
        .and_then(|p| p.pointer("/overdue/after"))
        .and_then(Value::as_i64);
    let metrics_delta = json!({
        "compliance_rate": {"before": prev_rate, "after": report.compliance_rate,
                            "delta": prev_rate.map(|p| round2(report.compliance_rate - p))},
        "overdue": {"before": prev_overdue, "after": report.overdue,
                    "delta": prev_overdue.map(|p| report.overdue as i64 - p)},
        "actions": m,
        "orders": orders_report,
        "provider_failures_last_hour": provider_failures,
    });
    if report.total > 0 {
        insights.push(format!(
            "engagement compliance {:.1} % ({} of {} clocks overdue, {:.1} days on average)",
            report.compliance_rate, report.overdue, report.total, report.avg_days_overdue
        ));
    }
    let priorities: Vec<String> = report
        .violations
        .iter()
        .take(5)
        .map(|v| {
            format!(
                "contact {} is {} days overdue (priority {})",
                v.contact_id
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                v.days_overdue,
                v.priority_score
            )
        })
        .collect();
    let summary = format!(
        "Cycle {cycle_number}: planned {}, executed {}, blocked {}; {} e-mail(s) sent, {} card(s) created; compliance {:.1} %, {} overdue.",
        m.actions_planned, m.actions_executed, m.actions_blocked, m.emails_sent, m.cards_created, report.compliance_rate, report.overdue
    );
    lap("reflect_report", &mut phase_start);
    let phase_ms: serde_json::Map<String, Value> = phase_ms
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let run_metrics = json!({
        "phase_ms": phase_ms,
        "actions": m,
        "orders": orders_report,
        "email": send_report,
        "clocks_created": created,
    });
    {
        let tx = c.begin().await?;
        fence.check(&tx).await?;
        tx.execute(
            INSERT_REFLECTION,
            &[
                &tenant,
                &fence.run_id,
                &summary,
                &json!(changes),
                &metrics_delta,
                &json!(plan.blockers),
                &json!(insights),
                &json!(priorities),
                &now,
            ],
        )
        .await
        .context("writing the reflection")?;
        tx.execute(
            STORE_METRICS,
            &[
                &tenant,
                &fence.run_id,
                &m.actions_planned,
                &m.actions_executed,
                &m.actions_blocked,
                &m.emails_sent,
                &m.cards_created,
                &run_metrics,
            ],
        )
        .await
        .context("storing run metrics")?;
        alerts::evaluate_rules(
            &tx,
            tenant,
            Some(alerts::CycleFacts {
                compliance_rate: report.compliance_rate,
            }),
            now,
        )
        .await
        .context("evaluating alert rules")?;
        tx.commit().await?;
    }
    Ok(m)
}

/// Error text for a run row and a report line: one line, no secrets.
fn one_line(text: &str) -> String {
    crate::error::redact(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

async fn insert_review_cards(
    c: &impl Sql,
    fence: Fence,
    targets: &[ReviewTarget],
    now: DateTime<Utc>,
) -> Result<u64> {
    if targets.is_empty() {
        return Ok(0);
    }
    let order_ids: Vec<Uuid> = targets.iter().map(|t| t.order_id).collect();
    let client_ids: Vec<Option<Uuid>> = targets.iter().map(|t| t.client_id).collect();
    let titles: Vec<String> = targets.iter().map(orders::review_card_title).collect();
    let descriptions: Vec<String> = targets.iter().map(|t| t.message.clone()).collect();
    let rationales: Vec<String> = targets
        .iter()
        .map(|t| {
            format!(
                "Unresolved {} {} exception on this order needs a person to review it.",
                t.severity, t.exception_type
            )
        })
        .collect();
    let priorities: Vec<&str> = targets
        .iter()
        .map(|t| {
            if t.severity == "critical" {
                "high"
            } else {
                "medium"
            }
        })
        .collect();
    let payloads: Vec<Value> = targets.iter().map(orders::review_card_payload).collect();
    let n = c
        .execute(
            INSERT_REVIEW_CARDS,
            &[
                &fence.tenant_id,
                &fence.run_id,
                &now,
                &order_ids,
                &client_ids,
                &titles,
                &descriptions,
                &rationales,
                &priorities,
                &payloads,
            ],
        )
        .await
        .context("creating review cards")?;
    Ok(n)
}

/// `--dry-run`: the Plan inside a transaction that is rolled back, printed; no lease, no
/// write survives.
async fn dry_run_tenant(sh: &Shared<'_>, t: &TenantRow) -> TenantResult {
    let started = Instant::now();
    if let Some(why) = t.runnable {
        if !sh.args.json {
            println!("{}: skipped ({why})", t.id);
        }
        return result(t, started, "skipped", Some(why.into()));
    }
    let outcome: Result<(Plan, CycleMetrics)> = async {
        let settings = t
            .settings
            .clone()
            .and_then(|v| TenantSettings::parse(&v))
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        let mut conn = db::get(&sh.pool, &sh.ctx.db).await?;
        let client: &mut tokio_postgres::Client = &mut conn;
        let tx = client.begin().await?;
        let now = sh.ctx.now();
        refresh_engagement(&tx, t.id, now).await?;
        let plan = collect_plan(&tx, t.id, &settings, now).await?;
        tx.rollback().await?;
        let m = CycleMetrics {
            actions_planned: plan.actions.len() as i32,
            ..Default::default()
        };
        Ok((plan, m))
    }
    .await;
    match outcome {
        Ok((plan, m)) => {
            if !sh.args.json {
                println!(
                    "{}{}: would take {} action(s)",
                    t.id,
                    if t.name.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", t.name)
                    },
                    plan.actions.len()
                );
                for a in &plan.actions {
                    println!("  - {}", a.describe());
                }
                for b in &plan.blockers {
                    println!("  ! {b}");
                }
                if plan.deferred > 0 {
                    println!("  ({} more beyond max_actions_per_cycle)", plan.deferred);
                }
            }
            TenantResult {
                metrics: m,
                ..result(
                    t,
                    started,
                    "completed",
                    Some("dry run: nothing written".into()),
                )
            }
        }
        Err(e) => result(t, started, "failed", Some(one_line(&format!("{e:#}")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_kill_switch_fails_closed_on_anything_but_an_explicit_off_value() {
        let on = |v: &str| env_kill_switch(Some(v.into())).is_some();
        for v in ["yes", "on", "1", " true", "TRUE", "true", "Y", "stop", "2"] {
            assert!(on(v), "{v:?} must stop the agent");
        }
        for v in ["", " ", "0", "false", "FALSE", " off ", "No", "no"] {
            assert!(!on(v), "{v:?} is an explicit off value");
        }
        assert!(env_kill_switch(None).is_none());
    }
}
