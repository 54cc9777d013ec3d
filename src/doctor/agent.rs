//! Doctor's checks of what the database says about the agent: migrations (applied,
//! pending, changed), the global switch and the environment's kill switch, how many
//! tenants have the agent enabled, the last run of each status, stuck or parked work, and
//! the clock drift between this host and the server.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{Check, Status};
use crate::db::Sql;

const MIGRATIONS: &str = crate::sql!("doctor/migrations");
const TENANTS: &str = crate::sql!("doctor/tenants");
const LAST_RUNS: &str = crate::sql!("doctor/last_runs");
const STUCK: &str = crate::sql!("doctor/stuck");
const CLOCK: &str = crate::sql!("doctor/clock");
const LEDGER_EXISTS: &str = crate::sql!("doctor/ledger_exists");

/// Clock drift up to this is fine; leases and hourly windows are minutes long.
pub const DRIFT_WARN_SECS: f64 = 2.0;

/// Beyond this the host's notion of the hour may differ from the server's.
pub const DRIFT_FAIL_SECS: f64 = 30.0;

/// With the agent on, a run is expected at least this often (hourly cron plus slack).
const RUN_EXPECTED_SECS: i64 = 2 * 3600;

pub(super) async fn migrations_check(c: &impl Sql) -> Result<Check> {
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
    let counts = (applied.len() - unknown.len(), embedded.len());
    Ok(migrations_verdict(
        &pending, &changed, &unknown, counts, details,
    ))
}

/// Changed files fail, pending ones fail (commands refuse to run), unknown ones (a newer
/// binary migrated the database) warn. `counts`: (applied and known, embedded).
fn migrations_verdict(
    pending: &[&str],
    changed: &[&str],
    unknown: &[String],
    (n_applied, n_embedded): (usize, usize),
    details: Value,
) -> Check {
    if !changed.is_empty() {
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
                n_embedded,
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
                n_embedded,
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
    }
}

pub(super) async fn kill_switch_check(c: &impl Sql) -> Result<Check> {
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

pub(super) async fn tenants_check(c: &impl Sql) -> Result<Check> {
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

pub(super) async fn last_runs_check(c: &impl Sql) -> Result<Check> {
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

pub(super) async fn stuck_check(c: &impl Sql) -> Result<Check> {
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
    let (problems, hints) = stuck_problems(runs, queue, executing, parked);
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

/// What is stuck, and for each what to do.
fn stuck_problems(
    runs: i64,
    queue: i64,
    executing: i64,
    parked: i64,
) -> (Vec<String>, Vec<&'static str>) {
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
    (problems, hints)
}

pub(super) async fn clock_check(c: &impl Sql, host_now: Option<DateTime<Utc>>) -> Result<Check> {
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
