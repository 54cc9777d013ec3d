//! `autopilot migrate`: applies the embedded `sql/` files in version order, one
//! transaction per file, recorded with a sha256 checksum in `autopilot_migrations`.
//! Concurrent invocations serialize on a session advisory lock (so `migrate` needs a
//! direct connection, not a transaction-mode pooler). An applied file whose checksum
//! changed stops everything (exit 1) and is never re-applied. `--status` and `--dry-run`
//! only list.

use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use super::tracking::{
    check_drift, read_applied, AppliedRow, CREATE_TRACKING_TABLE, INSERT_APPLIED,
};
use super::{embedded, Migration};
use crate::db::DbSettings;
use crate::error::AppError;
use crate::host_compat::Finding;

/// Key of the advisory lock that serializes `migrate` runs ("autopilot" in ASCII, truncated).
pub const MIGRATE_LOCK_KEY: i64 = 0x6175_746f_7069_6c6f;

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

pub async fn run(settings: &DbSettings, args: &MigrateOptions) -> Result<u8> {
    crate::db::require_session_connection(settings).await?;
    let mut client = settings.connect().await?;
    let embedded = embedded();

    if args.status || args.dry_run {
        return list(&mut client, &embedded, args).await;
    }
    client
        .execute(crate::sql!("schema/advisory_lock"), &[&MIGRATE_LOCK_KEY])
        .await
        .context("taking the migrate advisory lock")?;
    let result = apply_pending(&mut client, &embedded, args.json).await;
    // The lock dies with the session anyway; unlocking explicitly lets a waiting migrate
    // go on before our connection is torn down.
    let _ = client
        .execute(crate::sql!("schema/advisory_unlock"), &[&MIGRATE_LOCK_KEY])
        .await;
    result
}

/// `--status` (every migration, applied or not) or `--dry-run` (what would be applied):
/// changes nothing. Exit 1 for a changed file or a host finding.
async fn list(
    client: &mut tokio_postgres::Client,
    embedded: &[Migration],
    args: &MigrateOptions,
) -> Result<u8> {
    let applied = read_applied(client).await?;
    let findings = crate::host_compat::inspect(client).await?;
    let rows = status_rows(embedded, &applied, args.dry_run);
    print_rows(&rows, &findings, args);
    if args.dry_run {
        check_drift(embedded, &applied).map(|_| if findings.is_empty() { 0 } else { 1 })
    } else if rows.iter().any(|r| r.state == "changed") || !findings.is_empty() {
        Ok(1)
    } else {
        Ok(0)
    }
}

/// Each embedded migration with its state (`applied`, `changed`, `pending`), then applied
/// ones this binary does not know (`unknown`); for a dry run only the pending ones.
fn status_rows(embedded: &[Migration], applied: &[AppliedRow], dry_run: bool) -> Vec<StatusRow> {
    let mut rows = Vec::new();
    for m in embedded {
        let a = applied.iter().find(|a| a.version == m.version);
        let state = match a {
            Some(a) if a.checksum != m.checksum => "changed",
            Some(_) => "applied",
            None => "pending",
        };
        if dry_run && state != "pending" {
            continue;
        }
        rows.push(StatusRow {
            version: m.version,
            name: m.name.clone(),
            state,
            applied_at: a.map(|a| a.applied_at),
        });
    }
    if dry_run {
        return rows;
    }
    for a in applied
        .iter()
        .filter(|a| !embedded.iter().any(|m| m.version == a.version))
    {
        rows.push(StatusRow {
            version: a.version,
            name: a.name.clone(),
            state: "unknown",
            applied_at: Some(a.applied_at),
        });
    }
    rows
}

fn print_rows(rows: &[StatusRow], findings: &[Finding], args: &MigrateOptions) {
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
        return;
    }
    if args.dry_run {
        if rows.is_empty() {
            println!("nothing to apply: the database is up to date");
        }
        for r in rows {
            println!("would apply {} {}", r.version, r.name);
        }
    } else {
        for r in rows {
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
    for f in findings {
        println!("host     {f}");
    }
}

async fn apply_pending(
    client: &mut tokio_postgres::Client,
    embedded: &[Migration],
    json: bool,
) -> Result<u8> {
    // Before changing anything: would the agent's rows fit the host's own tables?
    let findings = crate::host_compat::inspect(client).await?;
    if !findings.is_empty() {
        return Err(refuse_host(&findings, json));
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
        let ms = apply_one(client, m).await?;
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

/// Nothing is applied when the host's tables would reject the agent's rows.
fn refuse_host(findings: &[Finding], json: bool) -> anyhow::Error {
    if json {
        println!(
            "{}",
            serde_json::json!({ "applied": [], "host_findings": findings })
        );
    }
    AppError::failed(format!(
        "nothing applied: the host's tables would reject rows autopilot writes ({} finding(s)): {}",
        findings.len(),
        findings
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

/// One migration in its own transaction, recorded; returns how long it took (ms).
async fn apply_one(client: &mut tokio_postgres::Client, m: &Migration) -> Result<i64> {
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
    Ok(ms)
}
