//! The lease fence every cycle write passes ([`Fence`]), lease-lost detection, and
//! [`require_tenants`].

use anyhow::{Context, Result};
use uuid::Uuid;

use super::statements::Sql;
use crate::error::AppError;

/// SQLSTATE raised by `assert_tenant_lease` when a run lost its lease.
pub const LEASE_LOST_SQLSTATE: &str = "AP001";

/// A cycle's claim on its tenant: every write transaction of the cycle calls
/// [`Fence::check`] first, so nothing is written once the lease has been taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub tenant_id: Uuid,
    pub run_id: Uuid,
}

impl Fence {
    pub async fn check(&self, client: &impl Sql) -> Result<()> {
        match client
            .execute(
                "SELECT public.assert_tenant_lease($1, $2)",
                &[&self.tenant_id, &self.run_id],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_lease_lost(&e) => Err(AppError::LeaseLost(format!(
                "run {} no longer holds the lease of tenant {}",
                self.run_id, self.tenant_id
            ))
            .into()),
            Err(e) => Err(e).context("checking the tenant lease"),
        }
    }
}

/// Check the fence when there is one (cycle writes) and do nothing otherwise (commands).
pub async fn check_fence(fence: Option<&Fence>, client: &impl Sql) -> Result<()> {
    match fence {
        Some(f) => f.check(client).await,
        None => Ok(()),
    }
}

pub fn is_lease_lost(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .map(|d| d.code().code() == LEASE_LOST_SQLSTATE)
        .unwrap_or(false)
}

/// True when an anyhow error is (or wraps) a lost lease.
pub fn is_lease_lost_err(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(c.downcast_ref::<AppError>(), Some(AppError::LeaseLost(_)))
            || c.downcast_ref::<tokio_postgres::Error>()
                .map(is_lease_lost)
                .unwrap_or(false)
    })
}

/// Look up which of `ids` are tenants; an unknown id is bad input (exit 2).
pub async fn require_tenants(client: &impl Sql, ids: &[Uuid]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let rows = client
        .query("SELECT id FROM public.tenants WHERE id = ANY($1)", &[&ids])
        .await
        .context("looking up tenants")?;
    let found: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    if let Some(missing) = ids.iter().find(|id| !found.contains(id)) {
        return Err(AppError::usage(format!("unknown tenant {missing}")));
    }
    Ok(())
}
