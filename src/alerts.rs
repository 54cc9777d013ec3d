//! Alerts (SPEC §7): the rules evaluated per tenant at the end of each cycle, and
//! `autopilot ack-alert`.
//!
//! Deduplication lives in the database (`raise_agent_alert` and the unique index on open
//! alerts per tenant and type): while an alert of a type is unacknowledged, the same
//! condition only counts another occurrence on it.

use crate::db::Sql;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::error::AppError;
use crate::Context;

pub const CYCLE_FAILURE_RATE: &str = "cycle_failure_rate";
pub const LOW_ENGAGEMENT_COMPLIANCE: &str = "low_engagement_compliance";
pub const HIGH_BLOCK_RATE: &str = "high_block_rate";
pub const SLOW_CYCLES: &str = "slow_cycles";
pub const POLICY_BLOCK_SPIKE: &str = "policy_block_spike";
pub const EMAIL_PROVIDER_FAILURE: &str = "email_provider_failure";
pub const INVALID_SETTINGS: &str = "invalid_agent_settings";

const RAISE: &str = crate::sql!("alerts/raise");

/// Figures of the last 24 hours the rules look at (finished runs plus the current one).
const WINDOW_FIGURES: &str = crate::sql!("alerts/window_figures");

const POLICY_BLOCKS_LAST_HOUR: &str = crate::sql!("alerts/policy_blocks_last_hour");

const PROVIDER_FAILURES_BETWEEN: &str = crate::sql!("alerts/provider_failures_between");

/// Provider failures of a tenant within this window open the e-mail circuit breaker and
/// raise the critical `email_provider_failure` alert (SPEC section 7).
pub const CIRCUIT_FAILURES: i64 = 5;
pub const CIRCUIT_WINDOW_MINUTES: i64 = 15;

/// A tenant's e-mail provider failures in the `window` before `now`.
pub async fn provider_failures(
    c: &impl Sql,
    tenant: Uuid,
    window: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<i64> {
    let since = now - window;
    Ok(
        c.query_one(PROVIDER_FAILURES_BETWEEN, &[&tenant, &since, &now])
            .await
            .context("counting e-mail provider failures")?
            .get(0),
    )
}

/// Failures within the circuit window, and whether they open the circuit.
pub async fn provider_circuit(
    c: &impl Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<(i64, bool)> {
    let window = chrono::Duration::minutes(CIRCUIT_WINDOW_MINUTES);
    let failures = provider_failures(c, tenant, window, now).await?;
    Ok((failures, failures >= CIRCUIT_FAILURES))
}

/// Raise (or count another occurrence of) an alert. Returns true when a new alert opened.
pub async fn raise(
    c: &impl Sql,
    tenant: Uuid,
    alert_type: &str,
    severity: &str,
    message: &str,
    metadata: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<bool> {
    let row = c
        .query_one(
            RAISE,
            &[&tenant, &alert_type, &severity, &message, &metadata, &now],
        )
        .await
        .with_context(|| format!("raising alert {alert_type}"))?;
    Ok(row.get(1))
}

/// Inputs of the rules that the cycle already knows.
#[derive(Debug, Clone, Copy)]
pub struct CycleFacts {
    /// Engagement compliance after this cycle (percent).
    pub compliance_rate: f64,
}

/// An alert a rule asks for: type, severity, message and metadata.
type Candidate = (&'static str, &'static str, String, serde_json::Value);

fn fire(
    cond: bool,
    t: &'static str,
    sev: &'static str,
    msg: String,
    meta: serde_json::Value,
) -> Option<Candidate> {
    cond.then_some((t, sev, msg, meta))
}

/// Evaluate every rule of SPEC §7 for a tenant; returns the alert types that opened.
pub async fn evaluate_rules(
    c: &impl Sql,
    tenant: Uuid,
    facts: Option<CycleFacts>,
    now: DateTime<Utc>,
) -> Result<Vec<&'static str>> {
    let f = c
        .query_one(WINDOW_FIGURES, &[&tenant, &now])
        .await
        .context("reading 24-hour run figures")?;
    let window = WindowFigures {
        finished: f.get(0),
        failed: f.get(1),
        planned: f.get(2),
        blocked: f.get(3),
        avg_ms: f.get(4),
    };
    let mut candidates = window_rules(&window, facts);
    candidates.extend(recent_rules(c, tenant, now).await?);
    let mut opened = Vec::new();
    for (t, sev, msg, meta) in candidates.into_iter().flatten() {
        if raise(c, tenant, t, sev, &msg, meta, now).await? {
            opened.push(t);
        }
    }
    Ok(opened)
}

/// The tenant's runs of the last 24 hours.
struct WindowFigures {
    finished: i64,
    failed: i64,
    planned: i64,
    blocked: i64,
    avg_ms: f64,
}

/// The rules over the last 24 hours and this cycle's facts.
fn window_rules(w: &WindowFigures, facts: Option<CycleFacts>) -> Vec<Option<Candidate>> {
    let mut candidates = vec![failure_rate_rule(w.finished, w.failed)];
    if let Some(facts) = facts {
        candidates.push(fire(
            facts.compliance_rate < 80.0,
            LOW_ENGAGEMENT_COMPLIANCE,
            "warning",
            format!(
                "engagement compliance is {:.1} % (threshold 80 %)",
                facts.compliance_rate
            ),
            json!({"compliance_rate": facts.compliance_rate}),
        ));
    }
    let (planned, blocked) = (w.planned, w.blocked);
    if planned > 0 {
        let share = blocked as f64 * 100.0 / planned as f64;
        candidates.push(fire(
            share > 30.0,
            HIGH_BLOCK_RATE,
            "warning",
            format!("{blocked} of {planned} planned actions in the last 24 h were blocked ({share:.0} %, threshold 30 %)"),
            json!({"blocked": blocked, "planned": planned, "share": share}),
        ));
    }
    candidates.push(fire(
        w.avg_ms > 300_000.0,
        SLOW_CYCLES,
        "warning",
        format!(
            "average cycle took {:.0} s in the last 24 h (threshold 300 s)",
            w.avg_ms / 1000.0
        ),
        json!({"avg_duration_ms": w.avg_ms}),
    ));
    candidates
}

/// The rules over the last hour (policy blocks) and the last 15 minutes (provider failures).
async fn recent_rules(
    c: &impl Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<Option<Candidate>>> {
    let blocks: i64 = c
        .query_one(POLICY_BLOCKS_LAST_HOUR, &[&tenant, &now])
        .await?
        .get(0);
    let (failures, open) = provider_circuit(c, tenant, now).await?;
    Ok(vec![
        fire(
            blocks >= 10,
            POLICY_BLOCK_SPIKE,
            "warning",
            format!("{blocks} actions were blocked by policies in the last hour (threshold 10)"),
            json!({"blocks_last_hour": blocks}),
        ),
        fire(
            open,
            EMAIL_PROVIDER_FAILURE,
            "critical",
            format!("{failures} e-mail provider failures in the last {CIRCUIT_WINDOW_MINUTES} minutes; sending paused"),
            json!({"failures_15_min": failures}),
        ),
    ])
}

/// Cycle failure rate above 20 % over the last 24 hours: critical.
fn failure_rate_rule(finished: i64, failed: i64) -> Option<Candidate> {
    if finished == 0 {
        return None;
    }
    let rate = failed as f64 * 100.0 / finished as f64;
    (rate > 20.0).then(|| {
        (
            CYCLE_FAILURE_RATE,
            "critical",
            format!("{failed} of {finished} cycles in the last 24 h failed ({rate:.0} %, threshold 20 %)"),
            json!({"failed": failed, "finished": finished, "rate": rate}),
        )
    })
}

/// Only the failure-rate rule: evaluated after a cycle that failed before Reflect.
pub async fn evaluate_failure_rate(c: &impl Sql, tenant: Uuid, now: DateTime<Utc>) -> Result<bool> {
    let f = c.query_one(WINDOW_FIGURES, &[&tenant, &now]).await?;
    match failure_rate_rule(f.get(0), f.get(1)) {
        Some((t, sev, msg, meta)) => raise(c, tenant, t, sev, &msg, meta, now).await,
        None => Ok(false),
    }
}

// ack-alert -------------------------------------------------------------------------------

const LOCK_ALERTS: &str = crate::sql!("alerts/lock_alerts");
const PROFILE_TENANT: &str = crate::sql!("alerts/profile_tenant");
const TENANT_EXISTS: &str = crate::sql!("alerts/tenant_exists");
const ACK_BY_IDS: &str = crate::sql!("alerts/ack_by_ids");
const ACK_ALL: &str = crate::sql!("alerts/ack_all");

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AckReport {
    pub acknowledged: u64,
    pub already_acknowledged: u64,
}

/// `--all`: every open alert of one tenant. `by`: the acknowledging profile and its tenant.
async fn ack_all(
    tx: &impl Sql,
    tenant: Uuid,
    alert_type: &Option<String>,
    severity: Option<Severity>,
    by: Option<(Uuid, Uuid)>,
    now: DateTime<Utc>,
) -> Result<AckReport> {
    let exists: bool = tx.query_one(TENANT_EXISTS, &[&tenant]).await?.get(0);
    if !exists {
        return Err(AppError::usage(format!("unknown tenant {tenant}")));
    }
    if let Some((profile, profile_tenant)) = by {
        if profile_tenant != tenant {
            return Err(AppError::usage(format!(
                "profile {profile} (--by) does not belong to tenant {tenant}"
            )));
        }
    }
    let severity = severity.map(|s| s.as_str());
    let profile = by.map(|(p, _)| p);
    let n = tx
        .execute(ACK_ALL, &[&tenant, &now, &profile, alert_type, &severity])
        .await
        .context("acknowledging alerts")?;
    Ok(AckReport {
        acknowledged: n,
        already_acknowledged: 0,
    })
}

/// Alerts by id, all or nothing. `by`: the acknowledging profile and its tenant.
async fn ack_ids(
    tx: &impl Sql,
    ids: &[Uuid],
    by: Option<(Uuid, Uuid)>,
    now: DateTime<Utc>,
) -> Result<AckReport> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    let rows = tx
        .query(LOCK_ALERTS, &[&ids])
        .await
        .context("reading alerts")?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !rows.iter().any(|r| r.get::<_, Uuid>(0) == **id))
        .map(|id| id.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(AppError::failed(format!(
            "alert {} not found; no alert was acknowledged",
            missing.join(", ")
        )));
    }
    if let Some((profile, profile_tenant)) = by {
        if let Some(r) = rows.iter().find(|r| r.get::<_, Uuid>(1) != profile_tenant) {
            return Err(AppError::usage(format!(
                "profile {profile} (--by) does not belong to the tenant of alert {}",
                r.get::<_, Uuid>(0)
            )));
        }
    }
    let already = rows.iter().filter(|r| r.get::<_, bool>(2)).count() as u64;
    let profile = by.map(|(p, _)| p);
    let n = tx
        .execute(ACK_BY_IDS, &[&ids, &now, &profile])
        .await
        .context("acknowledging alerts")?;
    Ok(AckReport {
        acknowledged: n,
        already_acknowledged: already,
    })
}

/// The severities of `agent_alerts.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which alerts `ack-alert` acknowledges.
#[derive(Debug, Clone)]
pub enum AckTarget {
    /// These alerts, all or nothing.
    Ids(Vec<Uuid>),
    /// Every open alert of the tenant, narrowed by type and severity.
    AllOf {
        tenant: Uuid,
        alert_type: Option<String>,
        severity: Option<Severity>,
    },
}

/// `autopilot ack-alert`.
#[derive(Debug, Clone)]
pub struct AckOptions {
    pub target: AckTarget,
    /// Profile that acknowledges (must belong to the alerts' tenant).
    pub by: Option<Uuid>,
    /// Print one JSON document.
    pub json: bool,
}

pub async fn run_ack(ctx: &Context, args: &AckOptions) -> Result<u8> {
    let pool = ctx.db.pool(1)?;
    let mut conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    let now = ctx.now();
    let tx = crate::db::Begin::begin(&mut *conn).await?;

    let by_tenant: Option<Uuid> = match args.by {
        Some(p) => match tx.query_opt(PROFILE_TENANT, &[&p]).await? {
            Some(row) => Some(row.get(0)),
            None => return Err(AppError::usage(format!("unknown profile {p} (--by)"))),
        },
        None => None,
    };
    let by = args.by.zip(by_tenant);
    let report = match &args.target {
        AckTarget::AllOf {
            tenant,
            alert_type,
            severity,
        } => ack_all(&tx, *tenant, alert_type, *severity, by, now).await?,
        AckTarget::Ids(ids) => ack_ids(&tx, ids, by, now).await?,
    };
    tx.commit().await.context("committing acknowledgements")?;
    tracing::info!(
        acknowledged = report.acknowledged,
        already_acknowledged = report.already_acknowledged,
        "alerts acknowledged"
    );

    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "acknowledged {} alert(s); {} already acknowledged",
            report.acknowledged, report.already_acknowledged
        );
    }
    Ok(0)
}
