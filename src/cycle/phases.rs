//! One tenant's cycle (`tenant_cycle`): the host's inbox, then Plan → Act → React →
//! Reflect, each phase in its own file (`plan`, `act`, `react`, `reflect`), sharing the
//! cycle's running state (`state::Cycle`).

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::report::CycleMetrics;
use super::state::Cycle;
use super::{act, plan, react, reflect, Shared, TenantRow};
use crate::db::{Begin, Fence};
use crate::settings::TenantSettings;

#[allow(clippy::too_many_arguments)]
pub(super) async fn tenant_cycle(
    c: &mut impl Begin,
    sh: &Shared<'_>,
    t: &TenantRow,
    fence: Fence,
    settings: &TenantSettings,
    cycle_number: i32,
    now: DateTime<Utc>,
) -> Result<CycleMetrics> {
    let mut cy = Cycle::new(fence, now);
    // The host's inbox first: a reply found there holds its contact (and the contact's
    // approved cards) before Plan drafts and Act sends, within this cycle.
    crate::inbound::host::read_sources(c, cy.tenant, fence, now, &mut cy.changes, &mut cy.insights)
        .await?;
    let (planned, clocks_created) = plan::run(c, &mut cy, settings).await?;
    cy.enter(c, "act", "plan").await?;
    let sent = act::run(c, sh, t, &mut cy, settings, planned).await?;
    cy.enter(c, "react", "act").await?;
    let reacted = react::run(c, &mut cy).await?;
    cy.enter(c, "reflect", "react").await?;
    let facts = reflect::Facts {
        cycle_number,
        clocks_created,
        sent,
        reacted,
    };
    reflect::run(c, &mut cy, facts).await?;
    Ok(cy.m)
}
