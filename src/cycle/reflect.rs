//! The Reflect phase: the hourly reflection (summary, what changed, metrics before and
//! after, blockers, insights, next priorities), the run's metrics and the alert rules of
//! SPEC section 7, written in one fenced transaction.

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use super::react::Reacted;
use super::state::Cycle;
use crate::alerts;
use crate::db::{Begin, Sql};
use crate::email::SendReport;
use crate::engagement::{self, TenantEngagement};

const LAST_REFLECTION: &str = crate::sql!("cycle/last_reflection");
const INSERT_REFLECTION: &str = crate::sql!("cycle/insert_reflection");
const STORE_METRICS: &str = crate::sql!("cycle/store_metrics");

/// What the earlier phases hand to the reflection.
pub(super) struct Facts {
    pub(super) cycle_number: i32,
    pub(super) clocks_created: u64,
    pub(super) sent: SendReport,
    pub(super) reacted: Reacted,
}

pub(super) async fn run(c: &mut impl Begin, cy: &mut Cycle, f: Facts) -> Result<()> {
    let report = engagement::tenant_report(&*c, cy.tenant, 5, cy.now).await?;
    let metrics_delta = metrics_delta(&*c, cy, &report, &f.reacted).await?;
    if report.total > 0 {
        cy.insights.push(format!(
            "engagement compliance {:.1} % ({} of {} clocks overdue, {:.1} days on average)",
            report.compliance_rate, report.overdue, report.total, report.avg_days_overdue
        ));
    }
    let m = &cy.m;
    let summary = format!(
        "Cycle {}: planned {}, executed {}, blocked {}; {} e-mail(s) sent, {} card(s) created; compliance {:.1} %, {} overdue.",
        f.cycle_number, m.actions_planned, m.actions_executed, m.actions_blocked, m.emails_sent, m.cards_created, report.compliance_rate, report.overdue
    );
    cy.lap("reflect_report");
    let run_metrics = json!({
        "phase_ms": cy.phase_ms(),
        "actions": cy.m,
        "orders": f.reacted.orders,
        "email": f.sent,
        "clocks_created": f.clocks_created,
    });
    let tx = cy.fence.begin(c).await?;
    tx.execute(
        INSERT_REFLECTION,
        &[
            &cy.tenant,
            &cy.fence.run_id,
            &summary,
            &json!(cy.changes),
            &metrics_delta,
            &json!(cy.blockers),
            &json!(cy.insights),
            &json!(priorities(&report)),
            &cy.now,
        ],
    )
    .await
    .context("writing the reflection")?;
    store_metrics(&tx, cy, &run_metrics).await?;
    let facts = alerts::CycleFacts {
        compliance_rate: report.compliance_rate,
    };
    alerts::evaluate_rules(&tx, cy.tenant, Some(facts), cy.now)
        .await
        .context("evaluating alert rules")?;
    tx.commit().await
}

/// Compliance and overdue before (the last reflection) and after this cycle.
async fn metrics_delta(
    c: &impl Sql,
    cy: &Cycle,
    report: &TenantEngagement,
    reacted: &Reacted,
) -> Result<Value> {
    let previous: Option<Value> = c
        .query_opt(LAST_REFLECTION, &[&cy.tenant])
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
    Ok(json!({
        "compliance_rate": {"before": prev_rate, "after": report.compliance_rate,
                            "delta": prev_rate.map(|p| round2(report.compliance_rate - p))},
        "overdue": {"before": prev_overdue, "after": report.overdue,
                    "delta": prev_overdue.map(|p| report.overdue - p)},
        "actions": cy.m,
        "orders": reacted.orders,
        "provider_failures_last_hour": reacted.provider_failures_last_hour,
    }))
}

/// The next hour's priorities: the five most overdue contacts.
fn priorities(report: &TenantEngagement) -> Vec<String> {
    report
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
        .collect()
}

async fn store_metrics(tx: &impl Sql, cy: &Cycle, run_metrics: &Value) -> Result<()> {
    let m = &cy.m;
    tx.execute(
        STORE_METRICS,
        &[
            &cy.tenant,
            &cy.fence.run_id,
            &m.actions_planned,
            &m.actions_executed,
            &m.actions_blocked,
            &m.emails_sent,
            &m.cards_created,
            run_metrics,
        ],
    )
    .await
    .context("storing run metrics")?;
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
