//! The React phase: what happened since the last cycle: the tenant's queued orders are
//! validated, the inbound-mail rates and the provider failures of the last hour are noted
//! for the reflection.

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::state::Cycle;
use crate::db::Begin;
use crate::{email, orders};

/// Orders validated per cycle and tenant; the rest wait for `process-orders` or the next
/// cycle.
const ORDERS_PER_CYCLE: u32 = 500;

/// What React found, for the reflection and the run's metrics.
#[derive(Debug, Serialize)]
pub(super) struct Reacted {
    pub(super) orders: orders::OrdersReport,
    pub(super) provider_failures_last_hour: i64,
}

pub(super) async fn run(c: &mut impl Begin, cy: &mut Cycle) -> Result<Reacted> {
    let fence = cy.fence;
    let o = orders::process_tenant(c, cy.tenant, ORDERS_PER_CYCLE, Some(&fence), cy.now)
        .await
        .context("processing queued orders")?;
    if o.processed > 0 {
        cy.changes.push(format!(
            "validated {} order(s): {} clean, {} with exceptions, {} skipped, {} auto-fix(es)",
            o.processed, o.validated, o.exception, o.skipped, o.auto_fixes
        ));
    }
    crate::inbound::host::react(&*c, cy.tenant, cy.now, &mut cy.insights).await?;
    let failures = email::provider_failures_last_hour(&*c, cy.tenant, cy.now).await?;
    if failures > 0 {
        cy.insights.push(format!(
            "{failures} e-mail provider failure(s) in the last hour"
        ));
    }
    Ok(Reacted {
        orders: o,
        provider_failures_last_hour: failures,
    })
}
