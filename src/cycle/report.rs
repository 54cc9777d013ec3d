//! The outcome of a cycle: per-tenant results (`TenantResult`, with the counters in
//! `CycleMetrics`), the invocation's `CycleReport`, the log line per tenant and the printed
//! report.

use std::time::Instant;

use serde::Serialize;
use uuid::Uuid;

use super::CycleOptions;
use super::TenantRow;
use crate::metrics::{CycleTotals, STATUSES};
use crate::Context;

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

pub(super) fn result(
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

/// One line per tenant outcome: info, or warn when it failed or timed out (so a default,
/// warn-level log still shows it).
pub(super) fn log_outcome(r: &TenantResult) {
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

impl CycleReport {
    /// The report of a cycle that ran, counted from its tenants' results.
    pub(super) fn finished(results: Vec<TenantResult>, duration_ms: u64) -> CycleReport {
        CycleReport {
            disabled: false,
            reason: None,
            total: results.len(),
            succeeded: results.iter().filter(|r| r.status == "completed").count(),
            failed: results
                .iter()
                .filter(|r| matches!(r.status, "failed" | "timeout"))
                .count(),
            skipped: results.iter().filter(|r| r.status == "skipped").count(),
            duration_ms,
            tenants: results,
        }
    }

    /// The report counted for the metrics file.
    pub fn totals(&self) -> CycleTotals {
        let mut totals = CycleTotals {
            disabled: self.disabled,
            duration_ms: self.duration_ms,
            ..CycleTotals::default()
        };
        for t in &self.tenants {
            if let Some(i) = STATUSES.iter().position(|s| *s == t.status) {
                totals.tenants[i] += 1;
            }
            totals.planned += i64::from(t.metrics.actions_planned);
            totals.executed += i64::from(t.metrics.actions_executed);
            totals.blocked += i64::from(t.metrics.actions_blocked);
            totals.emails_sent += i64::from(t.metrics.emails_sent);
            totals.cards_created += i64::from(t.metrics.cards_created);
            totals.tenant_ids.push(t.tenant_id);
        }
        totals
    }
}

/// The metrics file, when one is configured and the cycle was no dry run (which writes
/// nothing).
pub(super) async fn write_metrics(ctx: &Context, args: &CycleOptions, report: &CycleReport) {
    if let (Some(path), false) = (args.metrics_file.as_deref(), args.dry_run) {
        crate::metrics::after_cycle(ctx, path, &report.totals()).await;
    }
}

pub(super) fn print_report(report: &CycleReport, args: &CycleOptions) {
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
