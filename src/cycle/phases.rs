//! The Plan → Act → React → Reflect phases of one tenant's cycle (`tenant_cycle`), with
//! their fenced writes: the phase marker, policy blocks, review cards, the reflection and
//! the run's metrics.

use std::time::Instant;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::plan::{collect_plan, refresh_engagement, Planned};
use super::report::CycleMetrics;
use super::{Shared, TenantRow};
use crate::db::Fence;
#[allow(unused_imports)]
use crate::db::{Begin, Commit, Sql};
use crate::engagement;
use crate::orders::{self, ReviewTarget};
use crate::policy::{self, Action, Block};
use crate::settings::TenantSettings;
use crate::{alerts, email};

const SET_PHASE: &str = crate::sql!("cycle/set_phase");

const STORE_METRICS: &str = crate::sql!("cycle/store_metrics");

const LAST_REFLECTION: &str = crate::sql!("cycle/last_reflection");

const INSERT_REFLECTION: &str = crate::sql!("cycle/insert_reflection");

#[allow(clippy::too_many_arguments)]
pub(super) async fn tenant_cycle(
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

    // The host's inbox first: a reply found there holds its contact (and the contact's
    // approved cards) before Plan drafts and Act sends, within this cycle.
    crate::inbound::host::read_sources(c, tenant, fence, now, &mut changes, &mut insights).await?;

    // Plan ---------------------------------------------------------------------------------
    let created = {
        let tx = fence.begin(c).await?;
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
        let tx = fence.begin(c).await?;
        let drafted =
            engagement::insert_followup_cards(&tx, tenant, fence.run_id, &drafts).await? as i32;
        let reviewed = insert_review_cards(&tx, fence, &reviews, now).await? as i32;
        let promoted = crate::cards::promote_scheduled(&tx, tenant, &promotes, now).await? as i32;
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
    crate::inbound::host::react(&*c, tenant, now, &mut insights).await?;
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
        let tx = fence.begin(c).await?;
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

async fn set_phase(
    c: &mut impl crate::db::Begin,
    fence: Fence,
    phase: &str,
    m: &CycleMetrics,
) -> Result<()> {
    tracing::debug!(phase, "phase started");
    let tx = fence.begin(c).await?;
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
    let tx = fence.begin(c).await?;
    for (action, block) in blocks {
        policy::record(&tx, fence.tenant_id, Some(fence.run_id), action, block, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Review cards for order exceptions a person must look at (one open card per order).
async fn insert_review_cards(
    c: &impl Sql,
    fence: Fence,
    targets: &[ReviewTarget],
    now: DateTime<Utc>,
) -> Result<u64> {
    let cards: Vec<crate::cards::ReviewCard> = targets
        .iter()
        .map(|t| crate::cards::ReviewCard {
            order_id: t.order_id,
            client_id: t.client_id,
            title: orders::review_card_title(t),
            description: t.message.clone(),
            rationale: format!(
                "Unresolved {} {} exception on this order needs a person to review it.",
                t.severity, t.exception_type
            ),
            priority: if t.severity == "critical" {
                "high"
            } else {
                "medium"
            },
            payload: orders::review_card_payload(t),
        })
        .collect();
    crate::cards::insert_review_cards(c, fence.tenant_id, fence.run_id, &cards, now).await
}
