//! Engagement clocks (SPEC §4) and `autopilot check-engagement`.
//!
//! Owns: creating the missing clock of every contact, refreshing priority scores, the
//! per-tenant compliance report, and the follow-up data the cycle drafts cards from
//! (overdue contacts not yet covered by an open card or a suppression, the wording of the
//! follow-up e-mail, and the set-based insert of the cards that allows at most one open
//! card per contact).
//!
//! This file owns the clocks, scores and the compliance report; `followups` the follow-up
//! drafts, `command` the `check-engagement` command.
//!
//! Every query takes the current time as a parameter (`now`), never SQL `now()`, so the
//! cycle, the command and the tests all see one consistent instant and can replay time.

mod command;
mod followups;

use crate::db::Sql;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

pub use command::{run, CheckOptions};
pub use followups::{
    card_priority, draft_followup, insert_followup_cards, overdue_followups, Draft, FollowUp,
    GENTLE_BELOW_DAYS, VALUE_BELOW_DAYS,
};

/// States in which a card is "open": the unique index `kanban_cards_one_open_agent_card_idx`
/// allows one such agent card per tenant, type and target.
/// An e-mail touched the contact (the agent's delivered e-mail, or the contact's reply):
/// its clock restarts. Nothing to do for a card with neither client nor contact.
pub async fn touch_by_email(
    c: &impl Sql,
    tenant: Uuid,
    client: Option<Uuid>,
    contact: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<()> {
    if client.is_none() && contact.is_none() {
        return Ok(());
    }
    c.query_one(
        crate::sql!("engagement/touch_by_email"),
        &[&tenant, &client, &contact, &now],
    )
    .await
    .context("restarting the engagement clock after an e-mail")?;
    Ok(())
}

pub const OPEN_CARD_STATES: [&str; 4] = ["suggested", "in_review", "approved", "executing"];

/// Create the clock of every contact of the tenant that has none. A new clock names the
/// contact's client, takes the tenant's interval and is due at once (`next_touch_due = now`):
/// a contact nobody has touched yet is owed a touch.
const ENSURE_CLOCKS_SQL: &str = crate::sql!("engagement/ensure_clocks");

/// Recompute every clock's score for `now`, writing only the rows that change (see
/// `refresh_engagement_scores` in the migrations).
const REFRESH_SCORES_SQL: &str = crate::sql!("engagement/refresh_scores");

/// Compliance figures, rounded in SQL (numeric) so 2/3 reads 66.67 and not 66.66999….
const SUMMARY_SQL: &str = crate::sql!("engagement/summary");

/// The top violations, in the order `get_engagement_violations_at` defines (ordinality keeps
/// it explicit instead of relying on a set-returning function's output order).
const VIOLATIONS_SQL: &str = crate::sql!("engagement/violations");

/// Create the missing clock of every contact of `tenant`. Returns the clocks created.
pub async fn ensure_clocks(c: &impl Sql, tenant: Uuid, now: DateTime<Utc>) -> Result<u64> {
    c.execute(ENSURE_CLOCKS_SQL, &[&tenant, &now])
        .await
        .with_context(|| format!("creating the missing engagement clocks of tenant {tenant}"))
}

/// Recompute the priority score of the tenant's clocks for `now`. Returns the rows changed.
pub async fn refresh_scores(c: &impl Sql, tenant: Uuid, now: DateTime<Utc>) -> Result<u64> {
    let changed: i64 = c
        .query_one(REFRESH_SCORES_SQL, &[&tenant, &now])
        .await
        .with_context(|| format!("refreshing the engagement scores of tenant {tenant}"))?
        .get(0);
    Ok(changed as u64)
}

/// Clocks whose times are `infinity`/`-infinity` (possible in PostgreSQL, written by hand or
/// by another application): no arithmetic works on them ("cannot subtract infinite
/// timestamps"), so the tenant is refused with the clock named instead of failing mid-way.
const INFINITE_CLOCKS_SQL: &str = crate::sql!("engagement/infinite_clocks");

/// Refuse a tenant whose clocks hold times no arithmetic works on (see
/// [`INFINITE_CLOCKS_SQL`]), naming them and how to fix them.
pub async fn check_clocks_finite(c: &impl Sql, tenant: Uuid) -> Result<()> {
    let rows = c
        .query(INFINITE_CLOCKS_SQL, &[&tenant])
        .await
        .with_context(|| format!("checking the engagement clocks of tenant {tenant}"))?;
    if rows.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = rows
        .iter()
        .map(|r| {
            let id: Uuid = r.get(0);
            let due: Option<String> = r.get(1);
            format!("{id} (next_touch_due {})", due.unwrap_or_default())
        })
        .collect();
    Err(crate::error::AppError::failed(format!(
        "tenant {tenant} has engagement clocks with an infinite time: {}; set next_touch_due and last_touch_at to real times",
        named.join(", ")
    )))
}

/// One overdue clock as reported by `check-engagement`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    pub clock_id: Uuid,
    pub client_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub days_overdue: i32,
    pub priority_score: f64,
    pub next_touch_due: DateTime<Utc>,
}

/// A tenant's engagement compliance (the `tenants[]` element of the JSON report).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantEngagement {
    pub tenant_id: Uuid,
    /// Filled by the caller that created clocks; [`tenant_report`] leaves it 0.
    pub clocks_created: u64,
    pub total: i64,
    pub compliant: i64,
    pub overdue: i64,
    /// 100 × compliant / total, 2 decimals; 100 when the tenant has no clocks.
    pub compliance_rate: f64,
    /// Mean days overdue of the overdue clocks, 2 decimals; 0 when none is overdue.
    pub avg_days_overdue: f64,
    pub violations: Vec<Violation>,
}

/// Compliance figures of `tenant` at `now` and its top `limit` violations.
pub async fn tenant_report(
    c: &impl Sql,
    tenant: Uuid,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<TenantEngagement> {
    let s = c
        .query_one(SUMMARY_SQL, &[&tenant, &now])
        .await
        .with_context(|| format!("summarising the engagement of tenant {tenant}"))?;
    let rows = c
        .query(VIOLATIONS_SQL, &[&tenant, &now, &limit.max(0)])
        .await
        .with_context(|| format!("listing the engagement violations of tenant {tenant}"))?;
    let violations = rows
        .iter()
        .map(|r| Violation {
            clock_id: r.get("clock_id"),
            client_id: r.get("client_id"),
            contact_id: r.get("contact_id"),
            days_overdue: r.get("days_overdue"),
            priority_score: r.get("priority_score"),
            next_touch_due: r.get("next_touch_due"),
        })
        .collect();
    Ok(TenantEngagement {
        tenant_id: tenant,
        clocks_created: 0,
        total: s.get("total"),
        compliant: s.get("compliant"),
        overdue: s.get("overdue"),
        compliance_rate: s.get("compliance_rate"),
        avg_days_overdue: s.get("avg_days_overdue"),
        violations,
    })
}
