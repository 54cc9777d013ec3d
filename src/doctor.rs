//! `autopilot doctor`: the first thing an operator runs. One line per check (ok, warn or
//! fail, with a fix for each failure), `--json` for one document.
//!
//! Checks: where and how it connects (host or socket, port, database, user, TLS and its
//! verification, server version), migrations (applied, pending, changed), the global
//! switch and the environment's kill switch, how many tenants have the agent enabled, SMTP
//! (see [`smtp`]), the last run of each status, stuck or parked work, and the clock drift
//! between this host and the server.
//!
//! Exit code: 0 when no check fails, 1 when one does. When the database cannot be used at
//! all, the exit code is the one every other command gives for that cause (2 for bad
//! settings or rejected credentials, 75 for an unreachable server), so a wrapper can tell
//! "retry later" from "fix the configuration"; the report is printed in full either way.
//!
//! Doctor only reads: it never writes to the database and never sends a message.

pub mod smtp;

use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::db::{DbSettings, Sql, SslMode};
use crate::error::{exit_code_for, redact};

const CONNECTION: &str = include_str!("sql/doctor/connection.sql");
const MIGRATIONS: &str = include_str!("sql/doctor/migrations.sql");
const TENANTS: &str = include_str!("sql/doctor/tenants.sql");
const LAST_RUNS: &str = include_str!("sql/doctor/last_runs.sql");
const STUCK: &str = include_str!("sql/doctor/stuck.sql");
const CLOCK: &str = include_str!("sql/doctor/clock.sql");
const LEDGER_EXISTS: &str = "SELECT to_regclass('public.autopilot_migrations') IS NOT NULL";

/// Clock drift up to this is fine; leases and hourly windows are minutes long.
pub const DRIFT_WARN_SECS: f64 = 2.0;
/// Beyond this the host's notion of the hour may differ from the server's.
pub const DRIFT_FAIL_SECS: f64 = 30.0;
/// No check may hang the doctor.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// With the agent on, a run is expected at least this often (hourly cron plus slack).
const RUN_EXPECTED_SECS: i64 = 2 * 3600;

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

/// Where the settings point, from the configuration alone (never the password).
fn target_details(db: &DbSettings) -> Value {
    use tokio_postgres::config::Host;
    let hosts: Vec<Value> = db
        .targets
        .iter()
        .map(|t| match &t.host {
            Host::Tcp(h) => json!({"host": h}),
            #[cfg(unix)]
            Host::Unix(p) => json!({"socket_dir": p.display().to_string()}),
        })
        .collect();
    let ports: Vec<u16> = db.targets.iter().map(|t| t.port).collect();
    json!({
        "hosts": hosts,
        "ports": ports,
        "database": db.dbname(),
        "user": db.user(),
        "sslmode": sslmode_text(db.ssl_mode),
        "sslrootcert": db.ssl_root_cert.as_ref().map(|p| p.to_string()),
    })
}

fn sslmode_text(m: SslMode) -> &'static str {
    match m {
        SslMode::Disable => "disable",
        SslMode::Allow => "allow",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// What the certificate check amounts to, as `DbSettings::tls` configures it.
fn verification_text(db: &DbSettings) -> &'static str {
    match (db.ssl_mode, db.ssl_root_cert.is_some()) {
        (SslMode::Disable, _) => "no TLS",
        (SslMode::VerifyFull, _) => "certificate chain and host name verified",
        (SslMode::VerifyCa, _) | (SslMode::Require, true) => {
            "certificate chain verified, host name not checked"
        }
        _ => "certificate not verified",
    }
}

fn is_local(db: &DbSettings) -> bool {
    use tokio_postgres::config::Host;
    db.targets.iter().all(|t| match &t.host {
        Host::Tcp(h) => h == "localhost" || h.starts_with("127.") || h == "::1",
        #[cfg(unix)]
        Host::Unix(_) => true,
    })
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

/// Through a transaction-mode pooler or not (the same probe the commands use to choose
/// how they send statements; `AUTOPILOT_POOLER` overrides it).
async fn pooler_check(db: &DbSettings) -> Result<Check> {
    use crate::db::{PoolerSetting, Pooling};
    let (summary, mode) = match db.pooler {
        PoolerSetting::Transaction => (
            "transaction-mode pooler (AUTOPILOT_POOLER=transaction): unnamed statements; \
             `migrate` needs the direct or session port"
                .to_string(),
            "transaction",
        ),
        PoolerSetting::Session => (
            "own server session (AUTOPILOT_POOLER=session): prepared statements reused".to_string(),
            "session",
        ),
        PoolerSetting::Auto => match crate::db::probe_pooling(db).await? {
            Pooling::Transaction { evidence } => (
                format!(
                    "transaction-mode pooler detected ({evidence}): unnamed statements; \
                     `migrate` needs the direct or session port"
                ),
                "transaction",
            ),
            Pooling::Session => (
                "direct connection or session-mode pooler (`migrate` may use it; statements are sent unnamed unless AUTOPILOT_POOLER=session)".to_string(),
                "session",
            ),
        },
    };
    Ok(Check::new(
        "pooler",
        Status::Ok,
        summary,
        None::<&str>,
        json!({ "pooling": mode }),
    ))
}

async fn connection_check(c: &impl Sql, db: &DbSettings) -> Result<Check> {
    let r = c
        .query_one(CONNECTION, &[])
        .await
        .context("reading the session's settings")?;
    let version: String = r.get(0);
    let version_num: i32 = r.get(1);
    let database: String = r.get(2);
    let user: String = r.get(3);
    let tls: bool = r.get(4);
    let tls_version: Option<String> = r.get(5);
    let server_addr: Option<String> = r.get(6);
    let server_port: Option<i32> = r.get(7);
    let mut details = target_details(db);
    let where_ = {
        use tokio_postgres::config::Host;
        match db.targets.first() {
            #[cfg(unix)]
            Some(crate::db::Target {
                host: Host::Unix(p),
                port,
                ..
            }) => format!("socket {}/.s.PGSQL.{port}", p.display()),
            Some(crate::db::Target {
                host: Host::Tcp(h),
                port,
                ..
            }) => format!("{h}:{port}"),
            None => "localhost:5432".to_string(),
        }
    };
    let tls_text = if tls {
        format!(
            "TLS on ({}, sslmode={}, {})",
            tls_version.as_deref().unwrap_or("?"),
            sslmode_text(db.ssl_mode),
            verification_text(db)
        )
    } else {
        format!("TLS off (sslmode={})", sslmode_text(db.ssl_mode))
    };
    if let Value::Object(m) = &mut details {
        m.insert("server_version".into(), json!(version));
        m.insert("server_version_num".into(), json!(version_num));
        m.insert("connected_database".into(), json!(database));
        m.insert("connected_user".into(), json!(user));
        m.insert("tls".into(), json!(tls));
        m.insert("tls_version".into(), json!(tls_version));
        m.insert("verification".into(), json!(verification_text(db)));
        m.insert("server_addr".into(), json!(server_addr));
        m.insert("server_port".into(), json!(server_port));
        // Slot for the pooler probe (see `database_checks`); null = not probed.
        m.insert("pooler".into(), Value::Null);
    }
    let summary = format!("{user}@{where_}/{database}, {tls_text}, PostgreSQL {version}");
    let verified = tls && matches!(verification_text(db), v if v.starts_with("certificate chain"));
    let (status, hint) = if version_num < 150_000 {
        (
            Status::Warn,
            Some("autopilot is built and tested for PostgreSQL 15 or later"),
        )
    } else if !is_local(db) && !verified {
        (
            Status::Warn,
            Some("a remote database without a verified certificate: set sslmode=verify-full and sslrootcert (or PGSSLMODE, PGSSLROOTCERT)"),
        )
    } else {
        (Status::Ok, None)
    };
    Ok(Check::new("connection", status, summary, hint, details))
}

/// Whether the host's tables accept the rows the agent writes (the pre-flight of
/// `migrate`, [`crate::host_compat::inspect`]); rolled back, nothing is changed.
async fn host_tables_check(db: &DbSettings) -> Result<Check> {
    let (mut client, task) = db.open().await?;
    let findings = crate::host_compat::inspect(&mut client).await;
    task.abort();
    let findings = findings?;
    Ok(if findings.is_empty() {
        Check::new(
            "host tables",
            Status::Ok,
            "the host's tables accept every row the agent writes".to_string(),
            None,
            json!({ "findings": [] }),
        )
    } else {
        let list: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
        Check::new(
            "host tables",
            Status::Fail,
            format!("{} finding(s): {}", list.len(), list.join("; ")),
            Some("add a default or extend the CHECK list on the host table (see `autopilot migrate --status`)"),
            json!({ "findings": list }),
        )
    })
}

async fn migrations_check(c: &impl Sql) -> Result<Check> {
    let exists: bool = c.query_one(LEDGER_EXISTS, &[]).await?.get(0);
    let applied: Vec<(i64, String, String)> = if exists {
        c.query(MIGRATIONS, &[])
            .await
            .context("reading autopilot_migrations")?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    } else {
        Vec::new()
    };
    let embedded = crate::schema::embedded();
    let pending: Vec<&str> = embedded
        .iter()
        .filter(|m| !applied.iter().any(|a| a.0 == m.version))
        .map(|m| m.file.as_str())
        .collect();
    let changed: Vec<&str> = embedded
        .iter()
        .filter(|m| {
            applied
                .iter()
                .any(|a| a.0 == m.version && a.2 != m.checksum)
        })
        .map(|m| m.file.as_str())
        .collect();
    let unknown: Vec<String> = applied
        .iter()
        .filter(|a| !embedded.iter().any(|m| m.version == a.0))
        .map(|a| format!("{}_{}", a.0, a.1))
        .collect();
    let details = json!({
        "applied": applied.len(),
        "embedded": embedded.len(),
        "pending": pending,
        "changed": changed,
        "unknown": unknown,
    });
    let n_applied = applied.len() - unknown.len();
    Ok(if !changed.is_empty() {
        Check::new(
            "migrations",
            Status::Fail,
            format!(
                "applied migration(s) changed since they were applied: {}",
                changed.join(", ")
            ),
            Some("restore the original file(s) in sql/ (this binary was built from edited migrations); never edit an applied migration, add a new one"),
            details,
        )
    } else if !pending.is_empty() {
        Check::new(
            "migrations",
            Status::Fail,
            format!(
                "{} of {} pending: {} (commands refuse to run until they are applied)",
                pending.len(),
                embedded.len(),
                pending.join(", ")
            ),
            Some("run `autopilot migrate` over a direct (or session-mode) connection"),
            details,
        )
    } else if !unknown.is_empty() {
        Check::new(
            "migrations",
            Status::Warn,
            format!(
                "all {} applied; the database also has migration(s) this binary does not know: {} (a newer binary migrated it)",
                embedded.len(),
                unknown.join(", ")
            ),
            Some("deploy the binary that matches the database"),
            details,
        )
    } else {
        Check::new(
            "migrations",
            Status::Ok,
            format!("all {n_applied} applied, none pending or changed"),
            None,
            details,
        )
    })
}

async fn kill_switch_check(c: &impl Sql) -> Result<Check> {
    let global = crate::tenant_admin::read_global(c).await?;
    let env = crate::tenant_admin::env_kill_switch();
    let details = json!({"global": global, "env_kill_switch": env});
    let described = crate::tenant_admin::describe_global(&global);
    Ok(match (&env, global.global_enabled) {
        (None, true) => Check::new(
            "kill switch",
            Status::Ok,
            format!("off: the agent may run ({described}; AGENT_KILL_SWITCH not set)"),
            None,
            details,
        ),
        (Some(v), _) => Check::new(
            "kill switch",
            Status::Warn,
            format!("on: AGENT_KILL_SWITCH={v} in this environment stops the agent; {described}"),
            Some("unset AGENT_KILL_SWITCH (or set it to 0/false/off/no) where the agent runs"),
            details,
        ),
        (None, false) => Check::new(
            "kill switch",
            Status::Warn,
            format!("on: nothing runs ({described})"),
            Some("autopilot agent enable --by WHO --reason TEXT"),
            details,
        ),
    })
}

async fn tenants_check(c: &impl Sql) -> Result<Check> {
    let r = c
        .query_one(TENANTS, &[])
        .await
        .context("counting tenants")?;
    let enabled: i64 = r.get(0);
    let active: i64 = r.get(1);
    let total: i64 = r.get(2);
    let details = json!({"enabled": enabled, "active": active, "total": total});
    Ok(if enabled == 0 {
        Check::new(
            "tenants",
            Status::Warn,
            format!("no active tenant has the agent enabled ({active} active of {total}): a cycle does nothing"),
            Some("autopilot tenant enable TENANT_ID --by WHO --reason TEXT (autopilot tenant list shows them)"),
            details,
        )
    } else {
        Check::new(
            "tenants",
            Status::Ok,
            format!("agent enabled for {enabled} of {active} active tenant(s) ({total} in all)"),
            None,
            details,
        )
    })
}

async fn last_runs_check(c: &impl Sql) -> Result<Check> {
    let rows = c.query(LAST_RUNS, &[]).await.context("reading runs")?;
    let now: DateTime<Utc> = c.query_one(CLOCK, &[]).await?.get(0);
    let mut parts = Vec::new();
    let mut details = serde_json::Map::new();
    let mut latest: Option<DateTime<Utc>> = None;
    for r in &rows {
        let status: String = r.get(0);
        let tenant: uuid::Uuid = r.get(1);
        let cycle: i32 = r.get(2);
        let started: DateTime<Utc> = r.get(3);
        let error: Option<String> = r.get(5);
        let count: i64 = r.get(6);
        latest = latest.max(Some(started));
        parts.push(format!(
            "{status} {} (tenant {tenant}, cycle {cycle}; {count} in all)",
            started.format("%Y-%m-%d %H:%M:%SZ")
        ));
        details.insert(
            status,
            json!({"tenant_id": tenant, "cycle_number": cycle, "started_at": started,
                   "completed_at": r.get::<_, Option<DateTime<Utc>>>(4), "error_message": error, "count": count}),
        );
    }
    let details = Value::Object(details);
    Ok(match latest {
        None => Check::new(
            "last runs",
            Status::Warn,
            "no run recorded yet".to_string(),
            Some("schedule `autopilot run-cycle` hourly (crontab.example, deploy/kubernetes/cronjob.yaml)"),
            details,
        ),
        Some(t) if (now - t).num_seconds() > RUN_EXPECTED_SECS => Check::new(
            "last runs",
            Status::Warn,
            format!(
                "no run started in the last {} h; last: {}",
                RUN_EXPECTED_SECS / 3600,
                parts.join("; ")
            ),
            Some("check the scheduler (cron, CronJob, timer): run-cycle should start every hour"),
            details,
        ),
        Some(_) => Check::new(
            "last runs",
            Status::Ok,
            format!("last per status: {}", parts.join("; ")),
            None,
            details,
        ),
    })
}

async fn stuck_check(c: &impl Sql) -> Result<Check> {
    let claim_secs = crate::orders::STALE_CLAIM_SECS as f64;
    let executing_secs = (crate::email::STUCK_AFTER_MINUTES * 60) as f64;
    let r = c
        .query_one(STUCK, &[&claim_secs, &executing_secs])
        .await
        .context("looking for stuck work")?;
    let runs: i64 = r.get(0);
    let queue: i64 = r.get(1);
    let executing: i64 = r.get(2);
    let parked: i64 = r.get(3);
    let details = json!({
        "runs_running_without_lease": runs,
        "queue_processing_too_long": queue,
        "cards_executing_too_long": executing,
        "cards_blocked": parked,
    });
    let mut problems = Vec::new();
    let mut hints = Vec::new();
    if runs > 0 {
        problems.push(format!("{runs} run(s) `running` without a live lease"));
        hints.push(
            "a runner crashed; the next run-cycle marks them timeout (autopilot status names them)",
        );
    }
    if queue > 0 {
        problems.push(format!(
            "{queue} queue entr(y/ies) `processing` for over {} min",
            crate::orders::STALE_CLAIM_SECS / 60
        ));
        hints.push("the next process-orders reclaims them");
    }
    if executing > 0 {
        problems.push(format!(
            "{executing} card(s) `executing` for over {} min",
            crate::email::STUCK_AFTER_MINUTES
        ));
        hints.push("an interrupted send: the next cycle parks them for a person");
    }
    if parked > 0 {
        problems.push(format!(
            "{parked} agent card(s) `blocked`, waiting for a person"
        ));
        hints.push("review blocked cards (kanban_cards.state = 'blocked'): check the mailbox for their Message-ID, then re-approve or reject");
    }
    Ok(if problems.is_empty() {
        Check::new(
            "stuck work",
            Status::Ok,
            "no stuck run, queue entry or card, none parked".to_string(),
            None,
            details,
        )
    } else {
        Check {
            name: "stuck work",
            status: Status::Warn,
            summary: problems.join("; "),
            hint: Some(hints.join("; ")),
            details,
        }
    })
}

async fn clock_check(c: &impl Sql, host_now: Option<DateTime<Utc>>) -> Result<Check> {
    let before = Utc::now();
    let server: DateTime<Utc> = c.query_one(CLOCK, &[]).await?.get(0);
    let after = Utc::now();
    let round_trip = after - before;
    // The host's time at the moment the server read its clock, best estimate: the middle.
    let host = host_now.unwrap_or(before + round_trip / 2);
    let drift = (server - host).num_milliseconds() as f64 / 1000.0;
    let details = json!({
        "host": host, "server": server, "drift_seconds": drift,
        "round_trip_ms": round_trip.num_milliseconds(),
    });
    let summary = format!(
        "server is {:.3} s {} this host (round trip {} ms)",
        drift.abs(),
        if drift >= 0.0 { "ahead of" } else { "behind" },
        round_trip.num_milliseconds()
    );
    Ok(if drift.abs() >= DRIFT_FAIL_SECS {
        Check::new(
            "clock",
            Status::Fail,
            summary,
            Some("synchronise the host and the server with NTP (chrony, systemd-timesyncd): hourly windows and leases assume one time"),
            details,
        )
    } else if drift.abs() >= DRIFT_WARN_SECS {
        Check::new(
            "clock",
            Status::Warn,
            summary,
            Some("synchronise the host's clock with NTP"),
            details,
        )
    } else {
        Check::new("clock", Status::Ok, summary, None, details)
    })
}
