//! `autopilot_migrations`, the record of applied migrations (version, name, sha256
//! checksum): reading it, refusing an applied file whose contents changed, and the check
//! that the schema is not behind this binary.

use anyhow::{Context, Result};

use super::{embedded, Migration};
use crate::db::{DbSettings, Object, Pool, Sql};
use crate::error::AppError;

pub(super) const CREATE_TRACKING_TABLE: &str = "
CREATE TABLE IF NOT EXISTS public.autopilot_migrations (
    version bigint PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    execution_ms bigint NOT NULL
)";

const TRACKING_TABLE_EXISTS: &str = crate::sql!("schema/tracking_table_exists");

const SELECT_APPLIED: &str = crate::sql!("schema/select_applied");

pub(super) const INSERT_APPLIED: &str = crate::sql!("schema/insert_applied");

const APPLIED_VERSIONS: &str = crate::sql!("schema/applied_versions");

/// One row of `autopilot_migrations`.
pub(super) struct AppliedRow {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    pub applied_at: chrono::DateTime<chrono::Utc>,
}

/// The applied migrations; none where the tracking table does not exist yet.
pub(super) async fn read_applied(client: &tokio_postgres::Client) -> Result<Vec<AppliedRow>> {
    let exists: bool = client.query_one(TRACKING_TABLE_EXISTS, &[]).await?.get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(SELECT_APPLIED, &[])
        .await
        .context("reading autopilot_migrations")?;
    Ok(rows
        .iter()
        .map(|r| AppliedRow {
            version: r.get(0),
            name: r.get(1),
            checksum: r.get(2),
            applied_at: r.get(3),
        })
        .collect())
}

/// Fails naming every applied file whose embedded contents changed.
pub(super) fn check_drift(embedded: &[Migration], applied: &[AppliedRow]) -> Result<()> {
    let drifted: Vec<String> = embedded
        .iter()
        .filter(|m| {
            applied
                .iter()
                .any(|a| a.version == m.version && a.checksum != m.checksum)
        })
        .map(|m| m.file.clone())
        .collect();
    if !drifted.is_empty() {
        return Err(AppError::failed(format!(
            "checksum mismatch: applied migration {} was changed after it was applied; restore the file or write a new migration",
            drifted.join(", ")
        )));
    }
    Ok(())
}

/// Refuse to work on a database whose schema is behind this binary (a new binary deployed
/// before `autopilot migrate` ran): one clear error instead of a failed cycle per tenant.
/// A database without the tracking table is left alone (its schema is managed elsewhere).
pub async fn ensure_current(client: &impl Sql) -> Result<()> {
    let exists: bool = client.query_one(TRACKING_TABLE_EXISTS, &[]).await?.get(0);
    if !exists {
        return Ok(());
    }
    let applied: Vec<i64> = client
        .query(APPLIED_VERSIONS, &[])
        .await
        .context("reading autopilot_migrations")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let pending: Vec<String> = embedded()
        .into_iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| m.file)
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    Err(AppError::failed(format!(
        "the database schema is behind this binary ({} pending migration(s): {}); run `autopilot migrate` first",
        pending.len(),
        pending.join(", ")
    )))
}

/// The first connection of a command: a pooled connection ([`crate::db::get`]) to a
/// database whose schema is not behind this binary ([`ensure_current`]).
pub async fn get_checked(pool: &Pool, settings: &DbSettings) -> Result<Object> {
    let conn = crate::db::get(pool, settings).await?;
    ensure_current(&*conn).await?;
    Ok(conn)
}
