//! One tenant's cycle (`tenant_cycle`): the host's inbox, then Plan → Act → React →
//! Reflect, each phase in its own file (`plan`, `act`, `react`, `reflect`), sharing the
//! cycle's running state ([`Cycle`]): its lease, clock, metrics and the lines of the
//! reflection. The phase marker on the run row is written here.

use std::time::Instant;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::report::CycleMetrics;
use super::{act, plan, react, reflect, Shared, TenantRow};
use crate::db::{Begin, Fence, Sql};
use crate::settings::TenantSettings;

const SET_PHASE: &str = crate::sql!("cycle/set_phase");

/// What a tenant's cycle carries from phase to phase.
pub(super) struct Cycle {
    pub(super) tenant: Uuid,
    pub(super) fence: Fence,
    pub(super) now: DateTime<Utc>,
    pub(super) m: CycleMetrics,
    /// Lines of the reflection: what changed, what was learned, what blocks progress.
    pub(super) changes: Vec<String>,
    pub(super) insights: Vec<String>,
    pub(super) blockers: Vec<String>,
    /// Wall time per phase, kept in the run's metrics (and logged at debug) for profiling.
    phase_ms: Vec<(&'static str, u64)>,
    phase_start: Instant,
}

impl Cycle {
    fn new(fence: Fence, now: DateTime<Utc>) -> Cycle {
        Cycle {
            tenant: fence.tenant_id,
            fence,
            now,
            m: CycleMetrics::default(),
            changes: Vec::new(),
            insights: Vec::new(),
            blockers: Vec::new(),
            phase_ms: Vec::new(),
            phase_start: Instant::now(),
        }
    }

    /// Close the timing of the phase that just ended.
    pub(super) fn lap(&mut self, name: &'static str) {
        let ms = self.phase_start.elapsed().as_millis() as u64;
        tracing::debug!(tenant = %self.tenant, phase = name, ms, "phase done");
        self.phase_ms.push((name, ms));
        self.phase_start = Instant::now();
    }

    pub(super) fn phase_ms(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .phase_ms
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        Value::Object(map)
    }

    /// Record on the run row that `phase` starts, with the metrics so far (fenced).
    async fn enter(
        &mut self,
        c: &mut impl Begin,
        phase: &'static str,
        ended: &'static str,
    ) -> Result<()> {
        tracing::debug!(phase, "phase started");
        let m = &self.m;
        let tx = self.fence.begin(c).await?;
        tx.execute(
            SET_PHASE,
            &[
                &self.tenant,
                &self.fence.run_id,
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
        self.lap(ended);
        Ok(())
    }
}

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
