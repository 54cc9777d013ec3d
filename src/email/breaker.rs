//! Provider failures and the per-tenant circuit breaker: counting a tenant's recent
//! `email_provider_failures` and raising the critical `email_provider_failure` alert.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::alerts::{self, CIRCUIT_FAILURES, CIRCUIT_WINDOW_MINUTES};
use crate::db::{Fence, FencedTx, Sql};

/// Recorded as `email_provider_failures.provider`.
pub const PROVIDER: &str = "smtp";

/// Provider failures of the tenant in the hour before `now` (the cycle's React phase).
pub async fn provider_failures_last_hour(
    c: &impl Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<i64> {
    alerts::provider_failures(c, tenant, chrono::Duration::hours(1), now).await
}

pub(super) async fn raise_circuit_alert(
    c: &mut impl crate::db::Begin,
    tenant: Uuid,
    run_id: Option<Uuid>,
    fence: Option<&Fence>,
    failures: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    let message = format!(
        "{failures} e-mail provider failures within {CIRCUIT_WINDOW_MINUTES} minutes: sending is paused; check the SMTP provider"
    );
    let metadata = json!({
        "failures": failures,
        "window_minutes": CIRCUIT_WINDOW_MINUTES,
        "threshold": CIRCUIT_FAILURES,
        "provider": PROVIDER,
        "run_id": run_id,
    });
    let tx = FencedTx::begin(c, fence).await?;
    alerts::raise(
        &tx,
        tenant,
        alerts::EMAIL_PROVIDER_FAILURE,
        "critical",
        &message,
        metadata,
        now,
    )
    .await?;
    tx.commit().await.context("committing the alert")?;
    Ok(())
}
