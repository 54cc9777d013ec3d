//! Provider failures and the per-tenant circuit breaker: counting a tenant's recent
//! `email_provider_failures` and raising the critical `email_provider_failure` alert.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

#[allow(unused_imports)]
use crate::db::{Begin, Commit, Sql};
use crate::db::{Fence, FencedTx};

/// Failures of a tenant within this window that open the circuit breaker.
pub const CIRCUIT_FAILURES: i64 = 5;
pub const CIRCUIT_WINDOW_MINUTES: i64 = 15;
/// Recorded as `email_provider_failures.provider`.
pub const PROVIDER: &str = "smtp";

const RECENT_FAILURES: &str = "SELECT count(*) FROM public.email_provider_failures
 WHERE tenant_id = $1 AND created_at > $2 AND created_at <= $3";

const RAISE_ALERT: &str =
    "SELECT * FROM public.raise_agent_alert($1, 'email_provider_failure', 'critical', $2, $3, $4)";

const FAILURES_LAST_HOUR: &str = "SELECT count(*) FROM public.email_provider_failures
 WHERE tenant_id = $1 AND created_at > $2::timestamptz - interval '1 hour' AND created_at <= $2";

/// Provider failures of the tenant in the hour before `now` (the cycle's React phase).
pub async fn provider_failures_last_hour(
    c: &impl crate::db::Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<i64> {
    Ok(c.query_one(FAILURES_LAST_HOUR, &[&tenant, &now])
        .await
        .context("counting e-mail provider failures")?
        .get(0))
}

pub(super) async fn recent_failures(
    c: &impl crate::db::Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<i64> {
    let since = now - chrono::Duration::minutes(CIRCUIT_WINDOW_MINUTES);
    Ok(c.query_one(RECENT_FAILURES, &[&tenant, &since, &now])
        .await
        .context("counting recent e-mail provider failures")?
        .get(0))
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
    tx.query(RAISE_ALERT, &[&tenant, &message, &metadata, &now])
        .await
        .context("raising the e-mail provider alert")?;
    tx.commit().await.context("committing the alert")?;
    Ok(())
}
