//! `autopilot doctor`: the first thing an operator runs. One line per check (ok, warn or
//! fail, with a fix for each failure), `--json` for one document.
//!
//! Checks: where and how it connects (host or socket, port, database, user, TLS and its
//! verification, server version), migrations (applied, pending, changed), the global
//! switch and the environment's kill switch, how many tenants have the agent enabled, SMTP
//! (see [`smtp`]), the last run of each status, stuck or parked work, and the clock drift
//! between this host and the server.
//!
//! This file runs the checks and prints the report; `connection` checks the way to the
//! database, `agent` what the database says about the agent, `smtp` the relay.
//!
//! Exit code: 0 when no check fails, 1 when one does. When the database cannot be used at
//! all, the exit code is the one every other command gives for that cause (2 for bad
//! settings or rejected credentials, 75 for an unreachable server), so a wrapper can tell
//! "retry later" from "fix the configuration"; the report is printed in full either way.
//!
//! Doctor only reads: it never writes to the database and never sends a message.

mod agent;
mod connection;
pub mod smtp;

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::db::DbSettings;
use crate::error::{exit_code_for, redact};
use agent::{
    clock_check, kill_switch_check, last_runs_check, migrations_check, stuck_check, tenants_check,
};
use connection::{connection_check, host_tables_check, pooler_check, target_details};

pub use agent::{DRIFT_FAIL_SECS, DRIFT_WARN_SECS};

/// No check may hang the doctor.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub summary: String,
    /// How to fix it (every warn and fail has one).
    pub hint: Option<String>,
    pub details: Value,
}

impl Check {
    pub fn new(
        name: &'static str,
        status: Status,
        summary: String,
        hint: Option<&str>,
        details: Value,
    ) -> Check {
        Check {
            name,
            status,
            summary,
            hint: hint.map(str::to_string),
            details,
        }
    }
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    failed: usize,
    warnings: usize,
    checks: Vec<Check>,
}

/// What doctor checks against: the database it was pointed at and the host's clock.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// `--database-url`; `None`: the libpq PG* variables.
    pub database_url: Option<String>,
    /// The host's time when injected (tests); the wall clock otherwise.
    pub now: Option<DateTime<Utc>>,
    /// Print one JSON document.
    pub json: bool,
}

pub async fn run(args: &DoctorOptions) -> Result<u8> {
    let mut checks = Vec::new();
    // Exit code when the database could not be used at all (see the module doc).
    let mut db_exit: Option<u8> = None;
    match DbSettings::resolve(args.database_url.as_deref()) {
        Err(e) => {
            db_exit = Some(exit_code_for(&e));
            checks.push(Check::new(
                "connection",
                Status::Fail,
                redact(&format!("{e:#}")),
                Some("set DATABASE_URL (or --database-url, or PGHOST/PGPORT/PGUSER/PGDATABASE); see docs/configuration.md"),
                json!({}),
            ));
        }
        Ok(db) => {
            let host_now = args.now;
            match database_checks(&db, host_now, &mut checks).await {
                Ok(()) => {}
                Err(e) => {
                    db_exit = Some(exit_code_for(&e));
                    checks.push(Check::new(
                        "connection",
                        Status::Fail,
                        redact(&format!("{e:#}")),
                        Some(connection_hint(exit_code_for(&e))),
                        target_details(&db),
                    ));
                }
            }
        }
    }
    checks.push(smtp::check().await);

    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warnings = checks.iter().filter(|c| c.status == Status::Warn).count();
    let report = Report {
        ok: failed == 0,
        failed,
        warnings,
        checks,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report);
    }
    tracing::info!(
        checks = report.checks.len(),
        failed,
        warnings,
        "doctor finished"
    );
    Ok(match db_exit {
        Some(code) if code != 0 && code != 1 => code,
        _ if failed > 0 => 1,
        _ => 0,
    })
}

fn connection_hint(code: u8) -> &'static str {
    if code == crate::error::Exit::Usage as u8 {
        "the settings or credentials are wrong: fix DATABASE_URL / the PG* variables (user, password, sslmode, sslrootcert)"
    } else {
        "the server cannot be reached: check host, port, firewall and that PostgreSQL runs; the other database checks were not run"
    }
}

fn print_human(report: &Report) {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        println!(
            "[{:<4}] {:<width$}  {}",
            c.status.label(),
            c.name,
            c.summary
        );
        if c.status != Status::Ok {
            if let Some(h) = &c.hint {
                println!("       {:<width$}  fix: {h}", "");
            }
        }
    }
    println!(
        "{} check(s): {} failed, {} warning(s)",
        report.checks.len(),
        report.failed,
        report.warnings
    );
}

/// Every check that needs the database; an error means no connection at all.
async fn database_checks(
    db: &DbSettings,
    host_now: Option<DateTime<Utc>>,
    checks: &mut Vec<Check>,
) -> Result<()> {
    let pool = db.pool(1)?;
    let conn = crate::db::get(&pool, db).await?;
    let c: &crate::db::Conn = &conn;
    checks.push(bounded("connection", connection_check(c, db)).await);
    checks.push(bounded("pooler", pooler_check(db)).await);
    checks.push(bounded("migrations", migrations_check(c)).await);
    checks.push(bounded("host tables", host_tables_check(db)).await);
    checks.push(bounded("kill switch", kill_switch_check(c)).await);
    checks.push(bounded("tenants", tenants_check(c)).await);
    checks.push(bounded("last runs", last_runs_check(c)).await);
    checks.push(bounded("stuck work", stuck_check(c)).await);
    checks.push(bounded("clock", clock_check(c, host_now)).await);
    Ok(())
}

/// A check that errs or takes too long is a failed check, not a failed doctor.
async fn bounded(
    name: &'static str,
    check: impl std::future::Future<Output = Result<Check>>,
) -> Check {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => Check::new(
            name,
            Status::Fail,
            redact(&format!("{e:#}")).replace('\n', " "),
            Some("the check's query failed: is the schema migrated (`autopilot migrate`)?"),
            json!({}),
        ),
        Err(_) => Check::new(
            name,
            Status::Fail,
            format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
            Some("the server is overloaded or a lock blocks the query: look at pg_stat_activity"),
            json!({}),
        ),
    }
}
