//! What a tenant's cycle carries from phase to phase ([`Cycle`]): its lease, clock,
//! metrics, the lines of the reflection and the time each phase took; and the phase marker
//! on the run row.

use std::time::Instant;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::report::CycleMetrics;
use crate::db::{Begin, Fence, Sql};

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
    pub(super) fn new(fence: Fence, now: DateTime<Utc>) -> Cycle {
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
    pub(super) async fn enter(
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
