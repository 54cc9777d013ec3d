//! `autopilot migrate`: applies the embedded `sql/` files in version order, one
//! transaction per file, recorded with a sha256 checksum in `autopilot_migrations`.
//! Concurrent invocations serialize on a session advisory lock (so `migrate` needs a
//! direct connection, not a transaction-mode pooler). An applied file whose checksum
//! changed stops everything (exit 1) and is never re-applied.

use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::DbSettings;
use crate::error::AppError;

/// The migrations compiled into this binary: (file name, contents), in version order.
pub const MIGRATIONS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Key of the advisory lock that serializes `migrate` runs ("autopilot" in ASCII, truncated).
pub const MIGRATE_LOCK_KEY: i64 = 0x6175_746f_7069_6c6f;

const CREATE_TRACKING_TABLE: &str = "
CREATE TABLE IF NOT EXISTS public.autopilot_migrations (
    version bigint PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    execution_ms bigint NOT NULL
)";

const TRACKING_TABLE_EXISTS: &str = "SELECT to_regclass('public.autopilot_migrations') IS NOT NULL";

const SELECT_APPLIED: &str =
    "SELECT version, name, checksum, applied_at FROM public.autopilot_migrations ORDER BY version";

const INSERT_APPLIED: &str =
    "INSERT INTO public.autopilot_migrations (version, name, checksum, execution_ms)
VALUES ($1, $2, $3, $4)";

#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub file: String,
    pub checksum: String,
    #[serde(skip)]
    pub sql: &'static str,
}

/// The embedded migrations, parsed (version = the numeric prefix of the file name).
pub fn embedded() -> Vec<Migration> {
    MIGRATIONS
        .iter()
        .map(|(file, sql)| {
            let stem = file.trim_end_matches(".sql");
            let (version, name) = stem.split_once('_').unwrap_or((stem, ""));
            Migration {
                version: version
                    .parse()
                    .unwrap_or_else(|_| panic!("migration {file} lacks a numeric version")),
                name: name.to_string(),
                file: file.to_string(),
                checksum: checksum(sql),
                sql,
            }
        })
        .collect()
}

/// What `migrate` is asked to do: apply (the default), or only list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrateOptions {
    /// List applied and pending migrations, change nothing.
    pub status: bool,
    /// List what would be applied, change nothing.
    pub dry_run: bool,
    /// Print one JSON document.
    pub json: bool,
}

pub fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

#[derive(Debug, Serialize)]
struct Applied {
    version: i64,
    name: String,
    execution_ms: i64,
}

#[derive(Debug, Serialize)]
struct StatusRow {
    version: i64,
    name: String,
    state: &'static str,
    applied_at: Option<chrono::DateTime<chrono::Utc>>,
}

struct AppliedRow {
    version: i64,
    name: String,
    checksum: String,
    applied_at: chrono::DateTime<chrono::Utc>,
}

async fn read_applied(client: &tokio_postgres::Client) -> Result<Vec<AppliedRow>> {
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
fn check_drift(embedded: &[Migration], applied: &[AppliedRow]) -> Result<()> {
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

pub async fn run(settings: &DbSettings, args: &MigrateOptions) -> Result<u8> {
    crate::db::require_session_connection(settings).await?;
    let mut client = settings.connect().await?;
    let embedded = embedded();

    if args.status || args.dry_run {
        let applied = read_applied(&client).await?;
        let findings = crate::host_compat::inspect(&mut client).await?;
        let mut rows = Vec::new();
        for m in &embedded {
            let a = applied.iter().find(|a| a.version == m.version);
            let state = match a {
                Some(a) if a.checksum != m.checksum => "changed",
                Some(_) => "applied",
                None => "pending",
            };
            if args.dry_run && state != "pending" {
                continue;
            }
            rows.push(StatusRow {
                version: m.version,
                name: m.name.clone(),
                state,
                applied_at: a.map(|a| a.applied_at),
            });
        }
        for a in applied
            .iter()
            .filter(|a| !embedded.iter().any(|m| m.version == a.version))
        {
            if !args.dry_run {
                rows.push(StatusRow {
                    version: a.version,
                    name: a.name.clone(),
                    state: "unknown",
                    applied_at: Some(a.applied_at),
                });
            }
        }
        if args.json {
            let key = if args.dry_run {
                "would_apply"
            } else {
                "migrations"
            };
            println!(
                "{}",
                serde_json::json!({ key: rows, "host_findings": findings })
            );
        } else if args.dry_run {
            if rows.is_empty() {
                println!("nothing to apply: the database is up to date");
            }
            for r in &rows {
                println!("would apply {} {}", r.version, r.name);
            }
        } else {
            for r in &rows {
                match r.applied_at {
                    Some(at) => println!(
                        "{:<8} {} {}  (applied {})",
                        r.state,
                        r.version,
                        r.name,
                        at.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                    None => println!("{:<8} {} {}", r.state, r.version, r.name),
                }
            }
        }
        if !args.json {
            for f in &findings {
                println!("host     {f}");
            }
        }
        return if args.dry_run {
            check_drift(&embedded, &applied).map(|_| if findings.is_empty() { 0 } else { 1 })
        } else {
            Ok(
                if rows.iter().any(|r| r.state == "changed") || !findings.is_empty() {
                    1
                } else {
                    0
                },
            )
        };
    }

    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK_KEY])
        .await
        .context("taking the migrate advisory lock")?;
    let result = apply_pending(&mut client, &embedded, args.json).await;
    // The lock dies with the session anyway; unlocking explicitly lets a waiting migrate
    // go on before our connection is torn down.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK_KEY])
        .await;
    result
}

async fn apply_pending(
    client: &mut tokio_postgres::Client,
    embedded: &[Migration],
    json: bool,
) -> Result<u8> {
    // Before changing anything: would the agent's rows fit the host's own tables?
    let findings = crate::host_compat::inspect(client).await?;
    if !findings.is_empty() {
        if json {
            println!(
                "{}",
                serde_json::json!({ "applied": [], "host_findings": findings })
            );
        }
        return Err(AppError::failed(format!(
            "nothing applied: the host's tables would reject rows autopilot writes ({} finding(s)): {}",
            findings.len(),
            findings
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    client
        .batch_execute(CREATE_TRACKING_TABLE)
        .await
        .context("creating autopilot_migrations")?;
    client
        .batch_execute(crate::privileges::CREATE_LEDGER)
        .await
        .context("creating autopilot_migration_objects")?;
    let applied = read_applied(client).await?;
    check_drift(embedded, &applied)?;

    let mut done = Vec::new();
    for m in embedded
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
    {
        let started = Instant::now();
        let tx = client.transaction().await?;
        // Objects the file creates get only the grants the file makes (not the role's
        // default privileges), and are recorded for the privilege-closing step.
        crate::privileges::snapshot(&tx).await?;
        let defaults = crate::privileges::DefaultPrivileges::suspend(&tx).await?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| anyhow::anyhow!("{}", crate::db::error_text(&e)))
            .with_context(|| format!("applying migration {}", m.file))?;
        defaults.restore(&tx).await?;
        crate::privileges::record_new(&tx, m.version).await?;
        let ms = started.elapsed().as_millis() as i64;
        tx.execute(INSERT_APPLIED, &[&m.version, &m.name, &m.checksum, &ms])
            .await
            .with_context(|| format!("recording migration {}", m.file))?;
        tx.commit()
            .await
            .with_context(|| format!("committing migration {}", m.file))?;
        if !json {
            println!("applied {} {} ({ms} ms)", m.version, m.name);
        }
        done.push(Applied {
            version: m.version,
            name: m.name.clone(),
            execution_ms: ms,
        });
    }
    // Every run, also when nothing was pending: close what the migrations created and fit the
    // host's tables (both idempotent).
    let tx = client.transaction().await?;
    crate::privileges::close(&tx).await?;
    crate::host_compat::install(&tx).await?;
    tx.commit()
        .await
        .context("committing the privilege-closing step")?;
    tracing::info!(applied = done.len(), "migrations applied");
    if json {
        println!("{}", serde_json::json!({ "applied": done }));
    } else if done.is_empty() {
        println!("nothing to apply: the database is up to date");
    }
    Ok(0)
}

const APPLIED_VERSIONS: &str = "SELECT version FROM public.autopilot_migrations";

/// Refuse to work on a database whose schema is behind this binary (a new binary deployed
/// before `autopilot migrate` ran): one clear error instead of a failed cycle per tenant.
/// A database without the tracking table is left alone (its schema is managed elsewhere).
pub async fn ensure_current(client: &impl crate::db::Sql) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_in_strictly_increasing_version_order() {
        let m = embedded();
        assert!(!m.is_empty());
        for pair in m.windows(2) {
            assert!(
                pair[0].version < pair[1].version,
                "{} !< {}",
                pair[0].file,
                pair[1].file
            );
        }
    }
}
