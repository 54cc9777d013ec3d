//! `autopilot status`: per tenant the last run, the lease, open alerts by severity,
//! engagement compliance and pending queue depth, read from the monitoring view's function
//! (`agent_tenant_health_at`) in one read-only statement for all reported tenants; the exit
//! code makes it a health check.
//!
//! Unhealthy (exit 1): a reported tenant's last run is `failed` or `timeout`, its last run
//! is still `running` although no unexpired lease covers it (a crashed runner: the next
//! acquirer will mark it `timeout`), or it has an open critical alert.

// Statements outside a transaction go through Sql for their bounded wait (crate::deadline).
#[allow(unused_imports)]
use crate::db::Sql;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::Context;

/// One row per reported tenant from `agent_tenant_health_at($2)`, the function behind the
/// `agent_tenant_health` view, so status and a Grafana panel read the same figures; it
/// takes the injected instant where the view takes now().
const STATUS: &str = crate::sql!("status/health");

#[derive(Debug, Serialize)]
pub struct LastRun {
    pub run_id: Uuid,
    pub cycle_number: i32,
    pub status: String,
    pub phase: String,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i32>,
    pub error_message: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Lease {
    /// An unexpired lease exists.
    pub held: bool,
    pub holder: Option<String>,
    pub run_id: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct OpenAlerts {
    pub info: i64,
    pub warning: i64,
    pub critical: i64,
}

#[derive(Debug, Serialize)]
pub struct TenantStatus {
    pub tenant_id: Uuid,
    pub name: String,
    pub is_active: bool,
    pub agent_enabled: bool,
    pub last_run: Option<LastRun>,
    pub lease: Lease,
    pub open_alerts: OpenAlerts,
    pub clocks: i64,
    pub overdue: i64,
    /// 100 × compliant / clocks, 2 decimals; 100 when there are no clocks.
    pub compliance_rate: f64,
    pub pending_orders: i64,
    /// `send_email` cards parked because their delivery is unknown, waiting for a person
    /// (`autopilot card requeue|close`). Not unhealthy by itself: an alert is open for them.
    pub delivery_unknown_cards: i64,
    pub healthy: bool,
    /// Why the tenant is unhealthy (empty when healthy).
    pub problems: Vec<String>,
    /// Reply, bounce and complaint rates over the last 100 sends, and the sending pause.
    pub mail_feedback: Option<crate::inbound::feedback::TenantFeedback>,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub tenants: Vec<TenantStatus>,
    pub healthy: bool,
    /// `system_config` agent_config.global_enabled (the database's kill switch).
    pub globally_enabled: bool,
}

fn tenant_status(r: &tokio_postgres::Row, now: DateTime<Utc>) -> TenantStatus {
    let last_run = r.get::<_, Option<Uuid>>(4).map(|id| LastRun {
        run_id: id,
        cycle_number: r.get(5),
        status: r.get(6),
        phase: r.get(7),
        started_at: r.get(8),
        completed_at: r.get(9),
        duration_ms: r.get(10),
        error_message: r.get(11),
    });
    let expires_at: Option<DateTime<Utc>> = r.get(14);
    let lease = Lease {
        held: expires_at.map(|e| e > now).unwrap_or(false),
        holder: r.get(13),
        run_id: r.get(12),
        expires_at,
    };
    let open_alerts = OpenAlerts {
        info: r.get(15),
        warning: r.get(16),
        critical: r.get(17),
    };
    let clocks: i64 = r.get(18);
    let compliant: i64 = r.get(19);
    let compliance_rate: f64 = r.get(20);

    let mut problems = Vec::new();
    if let Some(run) = &last_run {
        match run.status.as_str() {
            "failed" | "timeout" => problems.push(format!(
                "last run (cycle {}) {}{}",
                run.cycle_number,
                if run.status == "failed" {
                    "failed"
                } else {
                    "timed out"
                },
                run.error_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )),
            "running" if !(lease.held && lease.run_id == Some(run.run_id)) => {
                problems.push(format!(
                    "last run (cycle {}) is still running without a live lease (crashed runner?)",
                    run.cycle_number
                ))
            }
            _ => {}
        }
    }
    if open_alerts.critical > 0 {
        problems.push(format!("{} open critical alert(s)", open_alerts.critical));
    }
    TenantStatus {
        tenant_id: r.get(0),
        name: r.get(1),
        is_active: r.get(2),
        agent_enabled: r.get(3),
        last_run,
        lease,
        open_alerts,
        clocks,
        overdue: clocks - compliant,
        compliance_rate,
        pending_orders: r.get(21),
        delivery_unknown_cards: 0,
        healthy: problems.is_empty(),
        problems,
        mail_feedback: None,
    }
}

/// What `autopilot status` reports on.
#[derive(Debug, Clone, Default)]
pub struct StatusOptions {
    /// Only these tenants (each must exist); empty: every active tenant with the agent on.
    pub tenants: Vec<Uuid>,
    /// One JSON document instead of text.
    pub json: bool,
}

pub async fn run(ctx: &Context, args: &StatusOptions) -> Result<u8> {
    let pool = ctx.db.pool(1)?;
    let conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    crate::db::require_tenants(&*conn, &args.tenants).await?;
    let now = ctx.now();
    let rows = conn
        .query(STATUS, &[&args.tenants, &now])
        .await
        .context("reading tenant status")?;
    let globally_enabled = crate::tenant_admin::read_global(&*conn)
        .await?
        .global_enabled;
    let mut tenants: Vec<TenantStatus> = rows.iter().map(|r| tenant_status(r, now)).collect();
    let ids: Vec<Uuid> = tenants.iter().map(|t| t.tenant_id).collect();
    let parked = crate::email::delivery_unknown_counts(&*conn, &ids).await?;
    let mut feedback = crate::inbound::feedback::for_tenants(&*conn, &ids, now).await?;
    for t in tenants.iter_mut() {
        t.delivery_unknown_cards = parked.get(&t.tenant_id).copied().unwrap_or(0);
        if let Some(i) = feedback.iter().position(|f| f.tenant_id == t.tenant_id) {
            t.mail_feedback = Some(feedback.swap_remove(i));
        }
    }
    let report = StatusReport {
        healthy: tenants.iter().all(|t| t.healthy),
        tenants,
        globally_enabled,
    };

    tracing::info!(
        tenants = report.tenants.len(),
        unhealthy = report.tenants.iter().filter(|t| !t.healthy).count(),
        globally_enabled = report.globally_enabled,
        "status reported"
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report, now);
    }
    Ok(if report.healthy { 0 } else { 1 })
}

fn print_human(report: &StatusReport, now: DateTime<Utc>) {
    if !report.globally_enabled {
        println!("agent disabled globally (system_config agent_config.global_enabled is not true)");
    }
    if report.tenants.is_empty() {
        println!("no tenant with the agent enabled");
    }
    for t in &report.tenants {
        let name = if t.name.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.name)
        };
        let run = match &t.last_run {
            None => "never run".to_string(),
            Some(r) => format!(
                "cycle {} {} at {}{}",
                r.cycle_number,
                r.status,
                r.started_at.format("%Y-%m-%d %H:%M:%SZ"),
                r.duration_ms
                    .map(|d| format!(" ({d} ms)"))
                    .unwrap_or_default()
            ),
        };
        let lease = match (&t.lease.expires_at, t.lease.held) {
            (Some(e), true) => format!(
                "lease held by {} until {} ({} s left)",
                t.lease.holder.as_deref().unwrap_or("?"),
                e.format("%H:%M:%SZ"),
                (*e - now).num_seconds()
            ),
            (Some(e), false) => format!("lease expired at {}", e.format("%Y-%m-%d %H:%M:%SZ")),
            (None, _) => "no lease".to_string(),
        };
        let a = &t.open_alerts;
        let verdict = if t.healthy {
            "OK".to_string()
        } else {
            format!("UNHEALTHY: {}", t.problems.join("; "))
        };
        let mail = t
            .mail_feedback
            .as_ref()
            .map(|f| {
                format!(
                    "; last {} sends: {:.1} % replied, {:.1} % bounced, {:.2} % complained{}",
                    f.rates.sends,
                    f.rates.reply_rate * 100.0,
                    f.rates.bounce_rate * 100.0,
                    f.rates.complaint_rate * 100.0,
                    if f.sending_paused.is_some() {
                        " (sending paused)"
                    } else {
                        ""
                    }
                )
            })
            .unwrap_or_default();
        println!(
            "{}{name}: {run}; {lease}; open alerts {} critical, {} warning, {} info; compliance {:.1} % ({} of {} overdue); {} pending order(s){mail}; {verdict}",
            t.tenant_id, a.critical, a.warning, a.info, t.compliance_rate, t.overdue, t.clocks, t.pending_orders
        );
        if t.delivery_unknown_cards > 0 {
            println!(
                "  {} e-mail card(s) parked with delivery unknown: check the mailbox, then `autopilot card requeue|close CARD_ID`",
                t.delivery_unknown_cards
            );
        }
    }
}
