//! `autopilot run-cycle`: the hourly Plan → Act → React → Reflect cycle, per tenant.
//!
//! Owns tenant selection and the kill switch, bounded concurrency, the lease lifecycle
//! (acquire, heartbeat every lease/3, fenced writes, release with the final status), the
//! per-tenant timeout (in-flight queries are cancelled, not abandoned), SIGTERM/SIGINT
//! handling, and the report. The phases call the modules that own each concern:
//! `engagement` (clocks, follow-up drafts), `orders` (queue, review targets), `email`
//! (sending approved cards), `policy` (every action), `alerts` (rules at the end).

use std::collections::HashMap;
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
SELECT t.id, COALESCE(t.name, ''), t.agent_settings, t.is_active, t.agent_enabled
FROM public.tenants t
WHERE (cardinality($1::uuid[]) = 0 AND t.is_active AND t.agent_enabled
       AND ($3::bigint IS NULL OR (('x' || left(md5(t.id::text), 8))::bit(32)::bigint % $3::bigint) = $4::bigint))
   OR t.id = ANY($1)
ORDER BY (SELECT max(r.started_at) FROM public.agent_autonomous_runs r WHERE r.tenant_id = t.id) NULLS FIRST, t.id
LIMIT $2";

/// `$5`: when this invocation started; a tenant another runner finished since is not run
/// again (two runners started together run each tenant once).
const ACQUIRE: &str =
    "SELECT public.acquire_tenant_lease($1, $2, make_interval(secs => $3), $4, now(), $5)";
const FINISHED_SINCE: &str = "SELECT EXISTS (SELECT 1 FROM public.agent_autonomous_runs
WHERE tenant_id = $1 AND completed_at >= $2)";
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
    settings: Value,
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
    pool: deadpool_postgres::Pool,
    mailer: Option<email::Mailer>,
    holder: String,
    /// When this invocation started (database clock): tenants another runner finished
    /// since are not run again.
    invoked_at: DateTime<Utc>,
    stop: watch::Receiver<bool>,
    /// Set by a second signal: in-flight tenants stop without waiting for the grace.
    stop_now: watch::Receiver<bool>,
    /// run id → (tenant id, lost-lease signal), renewed by the heartbeat task.
    leases: Mutex<HashMap<Uuid, (Uuid, Arc<Notify>)>>,
}

pub async fn run(ctx: &Context, args: &RunCycleArgs) -> Result<u8> {
    let started = Instant::now();
    let shard = crate::shard::resolve(args.shard)?;
    // Configuration errors are bad input: refuse before connecting or writing anything.
    let mailer = email::MailerConfig::from_env()?
        .map(email::Mailer::new)
        .transpose()?;
    let pool = ctx.db.pool(args.concurrency as usize + 1)?;

    let conn = db::get_checked(&pool, &ctx.db).await?;
    let invoked_at: DateTime<Utc> = conn.query_one("SELECT now()", &[]).await?.get(0);
    db::require_tenants(&**conn, &args.tenants).await?;
    if let Some(reason) = kill_switch_reason(&**conn).await? {
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
                settings: r.get(2),
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
        wait_for_signal().await;
        tracing::warn!(
            "signal received: starting no new tenant, giving in-flight tenants a grace period (signal again to stop now)"
        );
        let _ = stop_tx.send(true);
        // An operator who signals twice does not want to wait for the grace period.
        wait_for_signal().await;
        tracing::warn!("second signal: stopping in-flight tenants now");
        let _ = stop_now_tx.send(true);
    });

    let shared = Shared {
        ctx,
        args,
        pool,
        mailer,
        holder: holder_name(),
        invoked_at,
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
            .map(|t| run_tenant(&shared, t))
            .buffer_unordered(args.concurrency as usize)
            .collect::<Vec<_>>();
        tokio::select! {
            r = work => r,
            _ = heartbeat => unreachable!("the heartbeat loop never ends"),
        }
    };
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
    print_report(&report, args);
    crate::metrics::after_cycle(ctx, args, &report).await;
    Ok(if report.failed > 0 || interrupted {
        1
    } else {
        0
    })
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
    if std::env::var("AGENT_KILL_SWITCH")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false)
    {
        return Ok(Some(
            "AGENT_KILL_SWITCH=true is set in the environment".to_string(),
        ));
    }
    let row = c
        .query_opt(KILL_SWITCH, &[])
        .await
        .context("reading the kill switch")?;
    let value: Value = row.map(|r| r.get(0)).unwrap_or(Value::Null);
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

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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
    TimedOut,
    Lost,
    Interrupted,
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
    if let Some(why) = t.runnable {
        return result(t, started, "skipped", Some(why.into()));
    }
    match run_tenant_inner(sh, t, started).await {
        Ok(r) => r,
        Err(e) => {
            let msg = one_line(&format!("{e:#}"));
            tracing::error!(tenant = %t.id, error = %msg, "tenant cycle failed");
            result(t, started, "failed", Some(msg))
        }
    }
}

async fn run_tenant_inner(
    sh: &Shared<'_>,
    t: &TenantRow,
    started: Instant,
) -> Result<TenantResult> {
    let args = sh.args;
    let mut conn = db::get(&sh.pool, &sh.ctx.db).await?;
    let lease_secs = args.lease as f64;
    // Taking the lease is bounded by the tenant timeout too: a lease row locked by someone
    // else (a stuck session, an operator's open transaction) must not hang the runner.
    let cancel = conn.cancel_token();
    let trigger = args.trigger.as_str();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&t.id, &sh.holder, &lease_secs, &trigger, &sh.invoked_at];
    let acquire = conn.query_one(ACQUIRE, &params);
    let run_id: Option<Uuid> = match tokio::time::timeout(
        Duration::from_secs(args.tenant_timeout),
        acquire,
    )
    .await
    {
        Ok(row) => row
            .with_context(|| format!("acquiring lease for tenant {}", t.id))?
            .get(0),
        Err(_) => {
            abandon(sh, cancel, conn).await;
            return Ok(result(
                    t,
                    started,
                    "timeout",
                    Some(format!(
                        "could not take the lease within --tenant-timeout of {} s (its row is locked by another session)",
                        args.tenant_timeout
                    )),
                ));
        }
    };
    let Some(run_id) = run_id else {
        let finished: bool = conn
            .query_one(FINISHED_SINCE, &[&t.id, &sh.invoked_at])
            .await?
            .get(0);
        let reason = if finished {
            "another runner completed this tenant's cycle after this one started"
        } else {
            "lease held by another runner"
        };
        return Ok(result(t, started, "skipped", Some(reason.into())));
    };
    let cycle_number: i32 = conn.query_one(RUN_CYCLE_NUMBER, &[&run_id]).await?.get(0);
    let fence = Fence {
        tenant_id: t.id,
        run_id,
    };
    let lost = Arc::new(Notify::new());
    if let Ok(mut l) = sh.leases.lock() {
        l.insert(run_id, (t.id, lost.clone()));
    }
    let now = sh.ctx.now();

    let ending = match TenantSettings::parse(&t.settings) {
        Err(e) => {
            let msg = e.to_string();
            // Recorded as a failed run plus an alert; the other tenants go on.
            alerts::raise(
                &**conn,
                t.id,
                alerts::INVALID_SETTINGS,
                "critical",
                &format!("agent not run: {msg}"),
                json!({"key": e.key, "problem": e.problem}),
                now,
            )
            .await?;
            Ending::Failed(msg)
        }
        Ok(settings) => {
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
                    r = tokio::time::timeout(Duration::from_secs(args.tenant_timeout), work) => match r {
                        Ok(Ok(m)) => Ending::Done(m),
                        Ok(Err(e)) if db::is_lease_lost_err(&e) => Ending::Lost,
                        Ok(Err(e)) => Ending::Failed(one_line(&format!("{e:#}"))),
                        Err(_) => Ending::TimedOut,
                    },
                    _ = lost.notified() => Ending::Lost,
                    _ = interrupted => Ending::Interrupted,
                }
            };
            if !matches!(ending, Ending::Done(_)) {
                abandon(sh, cancel, conn).await;
                conn = db::get(&sh.pool, &sh.ctx.db).await?;
            }
            ending
        }
    };
    if let Ok(mut l) = sh.leases.lock() {
        l.remove(&run_id);
    }

    let (status, error): (&str, Option<String>) = match &ending {
        Ending::Done(_) => ("completed", None),
        Ending::Failed(m) => ("failed", Some(m.clone())),
        Ending::TimedOut => (
            "timeout",
            Some(format!(
                "exceeded --tenant-timeout of {} s; in-flight query cancelled",
                args.tenant_timeout
            )),
        ),
        Ending::Interrupted => ("failed", Some("interrupted".to_string())),
        Ending::Lost => ("failed", Some("lease lost to another runner".to_string())),
    };
    let released: bool = conn
        .query_one(RELEASE, &[&t.id, &run_id, &status, &error])
        .await
        .with_context(|| format!("releasing lease for tenant {}", t.id))?
        .get(0);
    let (final_status, reason) = if released {
        (status, error)
    } else {
        // Fenced out: the run row says what the taker decided (normally `timeout`).
        let row = conn.query_one(RUN_STATUS, &[&run_id]).await?;
        let s: String = row.get(0);
        let st = match s.as_str() {
            "completed" => "completed",
            "timeout" => "timeout",
            _ => "failed",
        };
        (
            st,
            Some("lease lost to another runner; nothing more was written".to_string()),
        )
    };
    if released && final_status != "completed" {
        if let Err(e) = alerts::evaluate_failure_rate(&**conn, t.id, sh.ctx.now()).await {
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
async fn abandon(
    sh: &Shared<'_>,
    cancel: tokio_postgres::CancelToken,
    conn: deadpool_postgres::Object,
) {
    if let Ok(tls) = sh.ctx.db.tls() {
        let _ = cancel.cancel_query(tls).await;
    }
    let _ = deadpool_postgres::Object::take(conn);
}

async fn set_phase(
    c: &mut impl crate::db::Begin,
    fence: Fence,
    phase: &str,
    m: &CycleMetrics,
) -> Result<()> {
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
        .map(|r| r.get(0));
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
        let settings =
            TenantSettings::parse(&t.settings).map_err(|e| anyhow::anyhow!(e.to_string()))?;
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
