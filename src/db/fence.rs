//! The lease fence every cycle write passes: [`FencedTx`] is the only way to write tenant
//! state under a lease ([`Fence::begin`]); lease-lost detection; [`require_tenants`].

use anyhow::{Context, Result};
use tokio_postgres::Row;
use uuid::Uuid;

use super::params::Param;
use super::statements::{Begin, Commit, Sql};
use crate::error::AppError;
use tokio_postgres::Error as PgError;

/// SQLSTATE raised by `assert_tenant_lease` when a run lost its lease.
pub const LEASE_LOST_SQLSTATE: &str = "AP001";

/// A cycle's claim on its tenant: every write transaction of the cycle is a [`FencedTx`]
/// opened with [`Fence::begin`], so nothing is written once the lease has been taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub tenant_id: Uuid,
    pub run_id: Uuid,
}

impl Fence {
    /// Open a transaction that holds this lease (see [`FencedTx`]).
    pub async fn begin<'c, B: Begin>(&self, c: &'c mut B) -> Result<FencedTx<B::Tx<'c>>> {
        FencedTx::begin(c, Some(self)).await
    }

    /// Runs inside the transaction it guards: `assert_tenant_lease` locks the lease row
    /// (KEY SHARE) until that transaction ends.
    async fn check(&self, client: &impl Sql) -> Result<()> {
        match client
            .execute(
                crate::sql!("db/assert_lease"),
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

/// A write transaction under a tenant's lease, or, with no fence, one of a command that
/// holds no lease (`ack-alert`, `card`, `ingest-mail`), so the write code is the same.
///
/// The lease is checked when the transaction begins, inside it: `assert_tenant_lease`
/// takes the lease row KEY SHARE until the transaction ends, and a takeover of an expired
/// lease needs that row FOR UPDATE, so it waits for this commit. The lease therefore cannot
/// change hands between the check and the commit, and a second check at commit would only
/// repeat the first (a heartbeat, which updates no key, is not blocked).
pub struct FencedTx<T> {
    tx: T,
    fence: Option<Fence>,
}

impl<T: Sql + Commit> FencedTx<T> {
    /// Open a transaction on `c` and check the fence in it, when there is one.
    pub async fn begin<'c, B>(c: &'c mut B, fence: Option<&Fence>) -> Result<FencedTx<T>>
    where
        B: Begin<Tx<'c> = T>,
    {
        let tx = c.begin().await.context("opening a transaction")?;
        if let Some(f) = fence {
            f.check(&tx).await?;
        }
        Ok(FencedTx {
            tx,
            fence: fence.copied(),
        })
    }

    /// [`begin`](Self::begin) with the transaction's first statements sent in the same
    /// round trip as the lease check (pipelined on the connection, each still run after the
    /// one before, so a lost lease fails before they run): for hot loops such as the orders
    /// batch.
    pub async fn begin_with<'c, B, R>(
        c: &'c mut B,
        fence: Option<&Fence>,
        first: impl AsyncFnOnce(&T) -> Result<R>,
    ) -> Result<(FencedTx<T>, R)>
    where
        B: Begin<Tx<'c> = T>,
    {
        let tx = c.begin().await.context("opening a transaction")?;
        let check = async {
            match fence {
                Some(f) => f.check(&tx).await,
                None => Ok(()),
            }
        };
        let (_, r) = futures::try_join!(check, first(&tx))?;
        Ok((
            FencedTx {
                tx,
                fence: fence.copied(),
            },
            r,
        ))
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await.context("committing")?;
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await.context("rolling back")?;
        Ok(())
    }

    /// The lease this transaction holds, if any.
    pub fn fence(&self) -> Option<Fence> {
        self.fence
    }
}

impl<T: Sql> Sql for FencedTx<T> {
    async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
        self.tx.query(sql, params).await
    }
    async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
        self.tx.query_one(sql, params).await
    }
    async fn query_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, PgError> {
        self.tx.query_opt(sql, params).await
    }
    async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
        self.tx.execute(sql, params).await
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
        .query(crate::sql!("db/existing_tenants"), &[&ids])
        .await
        .context("looking up tenants")?;
    let found: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    if let Some(missing) = ids.iter().find(|id| !found.contains(id)) {
        return Err(AppError::usage(format!("unknown tenant {missing}")));
    }
    Ok(())
}
