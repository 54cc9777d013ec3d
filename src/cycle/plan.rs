//! What the Plan phase collects: the candidate actions (`Planned`), highest priority first
//! and capped at `max_actions_per_cycle`, after refreshing the engagement clocks and scores.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Sql;
use crate::engagement::{self, FollowUp};
use crate::orders::{self, ReviewTarget};
use crate::settings::TenantSettings;

/// One planned action, before the policies.
#[derive(Debug, Clone)]
pub(super) enum Planned {
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
    pub(super) fn describe(&self) -> String {
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
pub(super) struct Plan {
    pub(super) actions: Vec<Planned>,
    /// Actions found beyond max_actions_per_cycle.
    pub(super) deferred: usize,
    pub(super) blockers: Vec<String>,
}

/// Plan step 1: the tenant's missing clocks and fresh scores.
pub(super) async fn refresh_engagement(
    c: &impl Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<u64> {
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
pub(super) async fn collect_plan(
    c: &impl Sql,
    tenant: Uuid,
    settings: &TenantSettings,
    now: DateTime<Utc>,
) -> Result<Plan> {
    let cap = settings.max_actions_per_cycle.max(0) as i64;
    let mut plan = Plan::default();
    let mut all: Vec<Planned> = Vec::new();

    let approved = crate::cards::count_approved_sends(c, tenant).await?;
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
    let due = crate::cards::scheduled_due(c, tenant, now, cap).await?;
    all.extend(due.into_iter().map(Planned::Promote));

    all.sort_by(|a, b| b.priority().total_cmp(&a.priority()));
    let cap = cap as usize;
    if all.len() > cap {
        plan.deferred = all.len() - cap;
        all.truncate(cap);
    }
    plan.actions = all;
    Ok(plan)
}

/// The Plan phase: refresh the clocks (fenced), collect the actions; the reflection's lines
/// go to the cycle. Returns the actions and how many clocks were created.
pub(super) async fn run(
    c: &mut impl crate::db::Begin,
    cy: &mut super::state::Cycle,
    settings: &TenantSettings,
) -> Result<(Vec<Planned>, u64)> {
    let tx = cy.fence.begin(c).await?;
    let created = refresh_engagement(&tx, cy.tenant, cy.now).await?;
    tx.commit().await?;
    if created > 0 {
        cy.changes
            .push(format!("created {created} engagement clock(s)"));
    }
    let plan = collect_plan(&*c, cy.tenant, settings, cy.now).await?;
    if plan.deferred > 0 {
        cy.insights.push(format!(
            "{} more action(s) wait for the next cycle (max_actions_per_cycle = {})",
            plan.deferred, settings.max_actions_per_cycle
        ));
    }
    cy.blockers.extend(plan.blockers);
    cy.m.actions_planned = plan.actions.len() as i32;
    Ok((plan.actions, created))
}
