//! The fault suite (issue 13): the real binary against the real PostgreSQL under the faults
//! that happen every week in production — runners racing across the hour, SIGKILL at any
//! point, a PostgreSQL restart mid-cycle, sessions holding locks, one tenant's bad data,
//! a kill switch spelled unexpectedly, signals. Loops are bounded (a few seconds each) and
//! every test prints what it counted besides asserting it.

use crate::smtp;

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Lines of stderr that start with `error:` (the one-line error contract).
fn error_lines(out: &std::process::Output) -> Vec<String> {
    stderr_of(out)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect()
}

async fn run_statuses(c: &Client, tenant: Uuid) -> Vec<String> {
    c.query(
        "SELECT status FROM agent_autonomous_runs WHERE tenant_id = $1 ORDER BY cycle_number",
        &[&tenant],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

// Item 6: the environment kill switch fails closed ----------------------------------------

#[tokio::test]
async fn kill_switch_values_other_than_an_explicit_off_stop_the_agent() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant_with_overdue_contacts(&c, "Acme", 1, false).await;
    let mut stopped = 0;
    for value in ["yes", "on", "1", " true", "TRUE", "enabled"] {
        let out = db
            .cmd()
            .args(["run-cycle", "--json"])
            .env("AGENT_KILL_SWITCH", value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        let doc = json_of(&out);
        assert_eq!(doc["disabled"], true, "AGENT_KILL_SWITCH={value:?}");
        assert!(doc["reason"]
            .as_str()
            .unwrap()
            .contains("AGENT_KILL_SWITCH"));
        stopped += 1;
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        0
    );
    // An explicit off value lets it run.
    let out = db
        .cmd()
        .args(["run-cycle", "--json"])
        .env("AGENT_KILL_SWITCH", " Off ")
        .output()
        .unwrap();
    assert_eq!(json_of(&out)["disabled"], false, "{}", stderr_of(&out));
    println!("kill switch values that stopped the agent: {stopped} of 6; ' Off ' ran it");
}

// Item 5: one tenant's data never breaks the others ---------------------------------------

/// `{"a":{"a":…}}` nested `depth` levels deep.
fn nested_json(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

#[tokio::test]
async fn settings_nested_deeper_than_the_json_limit_fail_only_that_tenant_without_a_panic() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let good = tenant_with_overdue_contacts(&c, "Good", 1, false).await;
    let bad = tenant_with_overdue_contacts(&c, "Deep", 1, false).await;
    c.execute(
        "UPDATE tenants SET agent_settings = jsonb_build_object('extra', $2::jsonb) WHERE id = $1",
        &[&bad, &nested_json(200)],
    )
    .await
    .unwrap();
    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(!stderr_of(&out).contains("panicked"), "{}", stderr_of(&out));
    let doc = json_of(&out);
    assert_eq!(doc["succeeded"], 1);
    assert_eq!(doc["failed"], 1);
    assert_eq!(run_statuses(&c, good).await, vec!["completed"]);
    let row = c
        .query_one(
            "SELECT status, error_message FROM agent_autonomous_runs WHERE tenant_id = $1",
            &[&bad],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert!(row.get::<_, String>(1).contains("invalid agent_settings"));
    assert_eq!(
        count_where(&c, "SELECT count(*) FROM agent_alerts WHERE tenant_id = $1 AND alert_type = 'invalid_agent_settings'", &[&bad]).await,
        1
    );
}

#[tokio::test]
async fn an_out_of_bounds_interval_is_refused_before_anything_is_sent_and_others_proceed() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let good = tenant_with_overdue_contacts(&c, "Good", 1, false).await;
    let bad = tenant_with_overdue_contacts(&c, "Huge", 1, false).await;
    c.execute(
        "UPDATE tenants SET agent_settings = '{\"engagement_interval_days\": 2147483647}' WHERE id = $1",
        &[&bad],
    )
    .await
    .unwrap();
    // An approved card the bad tenant would otherwise send.
    c.execute(
        "INSERT INTO kanban_cards (tenant_id, type, title, state, action_payload)
         VALUES ($1, 'send_email', 'hello', 'approved',
                 '{\"to\": \"x@huge.example\", \"subject\": \"s\", \"body\": \"b\"}')",
        &[&bad],
    )
    .await
    .unwrap();
    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let doc = json_of(&out);
    let bad_entry = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant_id"] == bad.to_string())
        .unwrap()
        .clone();
    assert_eq!(bad_entry["status"], "failed");
    assert!(bad_entry["reason"]
        .as_str()
        .unwrap()
        .contains("engagement_interval_days"));
    assert_eq!(run_statuses(&c, good).await, vec!["completed"]);
    // Nothing was done for the bad tenant: the card is untouched, no card drafted.
    assert_eq!(
        count_where(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE tenant_id = $1 AND state = 'approved'",
            &[&bad]
        )
        .await,
        1
    );
    assert_eq!(
        count_where(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE tenant_id = $1",
            &[&bad]
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_clock_at_infinity_fails_only_its_tenant_in_check_engagement_and_run_cycle() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let good = tenant_with_overdue_contacts(&c, "Good", 2, false).await;
    let bad = tenant_with_overdue_contacts(&c, "Infinite", 2, false).await;
    let bad2 = tenant_with_overdue_contacts(&c, "Plusinf", 1, false).await;
    c.execute(
        "UPDATE engagement_clocks SET next_touch_due = '-infinity'
          WHERE id = (SELECT id FROM engagement_clocks WHERE tenant_id = $1 LIMIT 1)",
        &[&bad],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE engagement_clocks SET next_touch_due = 'infinity' WHERE tenant_id = $1",
        &[&bad2],
    )
    .await
    .unwrap();

    let out = db
        .cmd()
        .args(["check-engagement", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let doc = json_of(&out);
    let reported: Vec<String> = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reported, vec![good.to_string()]);
    assert_eq!(doc["tenants"][0]["overdue"], 2);
    let failed = doc["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|f| f["error"].as_str().unwrap().contains("infinite")));

    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let doc = json_of(&out);
    assert_eq!(doc["succeeded"], 1);
    assert_eq!(doc["failed"], 2);
    assert_eq!(run_statuses(&c, good).await, vec!["completed"]);
    assert_eq!(run_statuses(&c, bad).await, vec!["failed"]);
    println!(
        "tenants with an infinite clock: 2 failed, 1 healthy tenant completed in both commands"
    );
}

// Item 3: the hourly cadence holds for any number of runners ------------------------------

/// Runs per tenant, as a histogram line: "30 x 1" (30 tenants ran once).
async fn runs_per_tenant(c: &Client) -> String {
    let rows = c
        .query(
            "SELECT n, count(*) FROM (
                 SELECT t.id, count(r.id) FILTER (WHERE r.status = 'completed') AS n
                 FROM tenants t LEFT JOIN agent_autonomous_runs r ON r.tenant_id = t.id
                 WHERE t.agent_enabled GROUP BY t.id) x
             GROUP BY n ORDER BY n",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| format!("{} x {}", r.get::<_, i64>(1), r.get::<_, i64>(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wait until `n` autopilot sessions of this database wait on a lock.
async fn wait_for_lock_waiters(c: &Client, n: i64) {
    wait_for_count(c, AUTOPILOT_LOCK_WAITS, n, "runners waiting at the barrier").await;
}

#[tokio::test]
async fn sixteen_runners_released_together_run_each_tenant_exactly_once() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let tenants = 24;
    for i in 0..tenants {
        tenant_with_overdue_contacts(&c, &format!("T{i}"), 1, false).await;
    }
    // The barrier: every runner blocks on its first read of system_config (the kill switch)
    // until the test lets them all go at once.
    let gate = db.client().await;
    gate.batch_execute("BEGIN; LOCK TABLE system_config IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let runners: Vec<_> = (0..16)
        .map(|_| {
            db.tokio_cmd()
                .args(["run-cycle", "--json", "--concurrency", "4"])
                .env("AUTOPILOT_LOCK_TIMEOUT", "120")
                .env("AUTOPILOT_STATEMENT_TIMEOUT", "120")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_for_lock_waiters(&c, 16).await;
    gate.batch_execute("ROLLBACK").await.unwrap();
    let outs = futures::future::join_all(runners.into_iter().map(|r| r.wait_with_output())).await;
    let (mut completed, mut skipped) = (0, 0);
    for out in outs {
        let out = out.unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        let doc = json_of(&out);
        completed += doc["succeeded"].as_u64().unwrap();
        skipped += doc["skipped"].as_u64().unwrap();
    }
    let histogram = runs_per_tenant(&c).await;
    println!(
        "16 runners released together: runs per tenant: {histogram}; {completed} completed, {skipped} skipped"
    );
    assert_eq!(histogram, format!("{tenants} x 1"));
    assert_eq!(completed, tenants as u64);
    assert_eq!(skipped, 15 * tenants as u64);
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        tenants as i64
    );
    // One follow-up card per contact: no runner drafted twice.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'send_email'"
        )
        .await,
        tenants as i64
    );
}

#[tokio::test]
async fn runners_staggered_across_the_hour_run_each_tenant_once_per_hour_and_force_overrides() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let tenants = 12;
    for i in 0..tenants {
        tenant_with_overdue_contacts(&c, &format!("S{i}"), 1, false).await;
    }
    let hour = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        - chrono::Duration::days(1);
    let at = |secs: i64| (hour + chrono::Duration::seconds(secs)).to_rfc3339();
    // Starts spread over one hour, a few of them together, with --max-tenants so that early
    // runners leave tenants to later ones.
    let starts: [(i64, &[&str]); 7] = [
        (0, &["--max-tenants", "5"]),
        (2, &["--max-tenants", "5"]),
        (2, &[]),
        (61, &[]),
        (1800, &[]),
        (3599, &[]),
        (3599, &["--concurrency", "8"]),
    ];
    let mut launched = 0;
    for chunk in starts.chunks(3) {
        let outs = futures::future::join_all(chunk.iter().map(|(secs, extra)| {
            db.tokio_cmd()
                .args(["--now", &at(*secs), "run-cycle", "--json"])
                .args(extra.iter())
                .output()
        }))
        .await;
        for out in outs {
            let out = out.unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
            launched += 1;
        }
    }
    let histogram = runs_per_tenant(&c).await;
    println!("{launched} runners staggered over one hour: runs per tenant: {histogram}");
    assert_eq!(histogram, format!("{tenants} x 1"));
    let skipped_reason = db
        .cmd()
        .args(["--now", &at(3000), "run-cycle", "--json"])
        .output()
        .unwrap();
    let doc = json_of(&skipped_reason);
    assert_eq!(doc["skipped"], tenants);
    assert!(doc["tenants"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("already ran in this hour"));

    // The next hour runs every tenant again, once.
    for secs in [3600, 3601] {
        db.cmd()
            .args(["--now", &at(secs), "run-cycle"])
            .assert()
            .success();
    }
    assert_eq!(runs_per_tenant(&c).await, format!("{tenants} x 2"));
    // --force is for an operator who means it.
    let out = db
        .cmd()
        .args(["--now", &at(3700), "run-cycle", "--json", "--force"])
        .output()
        .unwrap();
    assert_eq!(json_of(&out)["succeeded"], tenants);
    assert_eq!(runs_per_tenant(&c).await, format!("{tenants} x 3"));
}

// Item 8: signals --------------------------------------------------------------------------

/// A connection holding an exclusive lock on kanban_cards in an open transaction: a cycle
/// blocks on its first read of cards until the test rolls it back.
async fn hold_lock(db: &TestDb, table: &str) -> Client {
    let locker = db.client().await;
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    locker
}

/// Start `run-cycle --grace GRACE`, wait until its tenant is blocked on the held lock (in
/// flight), send SIGTERM and wait for the runner to say it received it.
#[cfg(unix)]
async fn sigterm_while_in_flight(
    db: &TestDb,
    c: &tokio_postgres::Client,
    grace: &str,
) -> (
    tokio::process::Child,
    u32,
    tokio::task::JoinHandle<Vec<String>>,
) {
    let mut child = db
        .tokio_cmd()
        .args(["run-cycle", "--json", "--grace", grace])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock_waiters(c, 1).await;
    let pid = child.id().unwrap();
    let stderr = child.stderr.take().unwrap();
    signal(pid, "TERM");
    let log = wait_for_stderr_line(stderr, "signal received").await;
    (child, pid, log)
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_when_every_in_flight_tenant_completes_within_the_grace_exits_0() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Graceful", 1, false).await;
    let lock = hold_lock(&db, "kanban_cards").await;
    let (child, _pid, log) = sigterm_while_in_flight(&db, &c, "120").await;
    // The tenant was in flight when the signal came; it may now finish within the grace.
    lock.batch_execute("ROLLBACK").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = log.await.unwrap().join("\n");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(json_of(&out)["succeeded"], 1);
    assert_eq!(run_statuses(&c, t).await, vec!["completed"]);
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_tenant_locks").await,
        0
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_second_signal_right_after_the_first_ends_the_grace_at_once() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Impatient", 1, false).await;
    let lock = hold_lock(&db, "kanban_cards").await;
    let (child, pid, log) = sigterm_while_in_flight(&db, &c, "600").await;
    signal(pid, "INT");
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the second signal ended the 600 s grace")
        .unwrap();
    let waited = started.elapsed();
    lock.batch_execute("ROLLBACK").await.unwrap();
    let log = log.await.unwrap().join("\n");
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("second signal"), "{log}");
    let row = c
        .query_one(
            "SELECT status, error_message FROM agent_autonomous_runs WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        ("failed".to_string(), Some("interrupted".to_string()))
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_tenant_locks").await,
        0
    );
    println!("second signal: stopped {waited:?} after it, grace was 600 s");
}

// Item 4: bounded waits --------------------------------------------------------------------

#[tokio::test]
async fn a_session_holding_an_exclusive_lock_makes_every_command_end_with_a_clear_error_not_hang() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Locked", 1, false).await;
    let cl = client_row(&c, t, "Orders Inc").await;
    // A new order is queued for processing (by the host's trigger).
    order(&c, t, cl).await;
    let alert: Uuid = c
        .query_one(
            "SELECT alert_id FROM raise_agent_alert($1, 'test_alert', 'warning', 'x')",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    let alert = alert.to_string();
    let commands: Vec<(&str, Vec<&str>)> = vec![
        ("run-cycle", vec!["run-cycle", "--force"]),
        ("check-engagement", vec!["check-engagement"]),
        ("process-orders", vec!["process-orders"]),
        ("ack-alert", vec!["ack-alert", &alert]),
        ("status", vec!["status"]),
    ];
    let bound = Duration::from_secs(20);
    let mut matrix = Vec::new();
    for table in ["system_config", "order_processing_queue", "agent_alerts"] {
        for (name, args) in &commands {
            let lock = hold_lock(&db, table).await;
            let started = Instant::now();
            let out = tokio::time::timeout(
                Duration::from_secs(60),
                db.tokio_cmd()
                    .args(args)
                    .env("AUTOPILOT_LOCK_TIMEOUT", "1")
                    .env("AUTOPILOT_STATEMENT_TIMEOUT", "2")
                    .output(),
            )
            .await
            .unwrap_or_else(|_| panic!("{name} hung on a lock of {table}"))
            .unwrap();
            let took = started.elapsed();
            lock.batch_execute("ROLLBACK").await.unwrap();
            let code = out.status.code();
            let stderr = stderr_of(&out);
            matrix.push(format!("{table:24} {name:16} exit {code:?} in {took:.1?}"));
            assert!(took < bound, "{name} with {table} locked took {took:?}");
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert!(
                matches!(code, Some(0) | Some(1) | Some(75)),
                "{name} / {table}: {code:?} {stderr}"
            );
            let errors = error_lines(&out);
            if code == Some(75) {
                assert_eq!(errors.len(), 1, "{name} / {table}: {stderr}");
                assert!(
                    errors[0].contains("lock") || errors[0].contains("waiting"),
                    "{}",
                    errors[0]
                );
            }
            // A command that needs the locked table cannot have succeeded.
            let needs = match table {
                "system_config" => ["run-cycle"].as_slice(),
                "order_processing_queue" => ["run-cycle", "process-orders", "status"].as_slice(),
                _ => ["run-cycle", "ack-alert", "status"].as_slice(),
            };
            if needs.contains(name) {
                assert_ne!(code, Some(0), "{name} / {table}: {stderr}");
            }
        }
    }
    println!("{}", matrix.join("\n"));
    // Nothing left running or leased.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'running'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_tenant_locks").await,
        0
    );
}

#[tokio::test]
async fn the_invocation_deadline_stops_a_blocked_tenant_as_timeout_and_starts_no_other() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    for i in 0..3 {
        tenant_with_overdue_contacts(&c, &format!("D{i}"), 1, false).await;
    }
    let lock = hold_lock(&db, "kanban_cards").await;
    let started = Instant::now();
    let out = db
        .tokio_cmd()
        .args([
            "run-cycle",
            "--json",
            "--concurrency",
            "1",
            "--deadline",
            "2",
        ])
        .env("AUTOPILOT_LOCK_TIMEOUT", "600")
        .env("AUTOPILOT_STATEMENT_TIMEOUT", "600")
        .output()
        .await
        .unwrap();
    let took = started.elapsed();
    lock.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(took < Duration::from_secs(15), "{took:?}");
    let doc = json_of(&out);
    let statuses: Vec<&str> = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "timeout").count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == "skipped").count(), 2);
    assert!(doc.to_string().contains("--deadline"));
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_tenant_locks").await,
        0
    );
    println!("--deadline 2: ended in {took:?}: {statuses:?}");
}

// Item 2: PostgreSQL restarted mid-cycle ---------------------------------------------------

/// A PostgreSQL server of the test's own (scripts/pg-ephemeral, nested), so that restarting
/// it disturbs no other test. Dropping it stops the server and removes the cluster.
struct PrivateServer {
    child: std::process::Child,
    url: String,
    dir: String,
    port: String,
}

impl PrivateServer {
    async fn start() -> PrivateServer {
        use std::io::{BufRead, BufReader};
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-ephemeral");
        let mut child = std::process::Command::new(script)
            .args([
                "bash",
                "-c",
                "echo \"$DATABASE_URL $PGEPHEMERAL_DIR $PGEPHEMERAL_PORT\"; exec cat >/dev/null",
            ])
            .env("PGEPHEMERAL_QUIET", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting scripts/pg-ephemeral");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut parts = line.split_whitespace().map(str::to_string);
        let (url, dir, port) = (
            parts.next().expect("pg-ephemeral printed its URL"),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        // As in production (pg-ephemeral turns it off for speed): a commit survives an
        // immediate shutdown.
        let admin = connect(&url).await;
        admin
            .batch_execute("ALTER SYSTEM SET synchronous_commit = on")
            .await
            .unwrap();
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        let out = tokio::process::Command::new(BIN)
            .args(["-q", "migrate"])
            .env("DATABASE_URL", &url)
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        PrivateServer {
            child,
            url,
            dir,
            port,
        }
    }

    fn cmd(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.url)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        cmd
    }

    /// pg_ctl on this cluster, as pg-ephemeral runs it (as user postgres when root).
    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = pg_bin("pg_ctl");
        let data = format!("{}/data", self.dir);
        let mut full: Vec<String> = vec![pg_ctl, "-D".into(), data];
        full.extend(args.iter().map(|s| s.to_string()));
        let is_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let mut cmd = if is_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).args(&full);
            c
        } else {
            let mut c = std::process::Command::new(&full[0]);
            c.args(&full[1..]);
            c
        };
        let out = cmd
            .current_dir(&self.dir)
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/sbin:/sbin",
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .expect("running pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr_of(&out)
        );
    }

    fn start_again(&self) {
        let log = format!("{}/postgres.log", self.dir);
        let port = format!("-p {}", self.port);
        self.pg_ctl(&["-l", &log, "-o", &port, "-w", "-t", "60", "start"]);
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        // Closing stdin ends `cat`; pg-ephemeral then stops the server and removes the
        // cluster. Wait for it: killing it instead would skip its clean-up and leave the
        // server running after the test.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL server binary's path: PATH first, else the newest /usr/lib/postgresql/*/bin.
fn pg_bin(name: &str) -> String {
    if let Ok(out) = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            return p;
        }
    }
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL binaries")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|b| b.parent())
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("pg_ctl not found")
        .to_string_lossy()
        .into_owned()
}

/// The private server's state after an outage: nothing running or leased, and the
/// histogram of completed runs per tenant.
async fn after_outage(url: &str) -> (i64, i64, i64, String) {
    let c = connect(url).await;
    let running = count(
        &c,
        "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'running'",
    )
    .await;
    let leased = count(&c, "SELECT count(*) FROM agent_tenant_locks").await;
    let failed = count(
        &c,
        "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'failed'",
    )
    .await;
    (running, leased, failed, runs_per_tenant(&c).await)
}

async fn restart_mid_cycle(mode: &str) {
    let server = PrivateServer::start().await;
    let c = connect(&server.url).await;
    enable_agent_globally(&c).await;
    let tenants = 12;
    for i in 0..tenants {
        tenant_with_overdue_contacts(&c, &format!("R{i}"), 1, false).await;
    }
    // Every in-flight tenant waits on this lock when the server goes down.
    let locker = connect(&server.url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE kanban_cards IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let child = server
        .cmd()
        .args(["run-cycle", "--json", "--concurrency", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock_waiters(&c, 4).await;
    let started = Instant::now();
    // -l: the server must not inherit pg_ctl's stdout (a pipe this test reads to the end).
    let log = format!("{}/postgres.log", server.dir);
    server.pg_ctl(&["-l", &log, "-m", mode, "-w", "-t", "60", "restart"]);
    let restarted_in = started.elapsed();
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("run-cycle ended")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let doc = json_of(&out);
    assert_eq!(doc["succeeded"], tenants, "{doc}");
    let (running, leased, failed, histogram) = after_outage(&server.url).await;
    println!(
        "pg_ctl restart -m {mode} ({restarted_in:.1?}) with 4 of {tenants} tenants in flight: exit 0, runs per tenant: {histogram}, failed {failed}, running {running}, leased {leased}"
    );
    assert_eq!(histogram, format!("{tenants} x 1"));
    assert_eq!((running, leased, failed), (0, 0, 0));
    assert!(
        stderr_of(&out).contains("reconnecting"),
        "{}",
        stderr_of(&out)
    );
}

#[tokio::test]
async fn postgres_restarted_fast_mid_cycle_is_ridden_out_and_every_tenant_completes() {
    restart_mid_cycle("fast").await;
}

#[tokio::test]
async fn postgres_restarted_immediate_mid_cycle_is_ridden_out_and_every_tenant_completes() {
    restart_mid_cycle("immediate").await;
}

#[tokio::test]
async fn a_database_that_stays_down_exits_75_marks_no_tenant_failed_and_the_next_run_finishes() {
    let server = PrivateServer::start().await;
    let c = connect(&server.url).await;
    enable_agent_globally(&c).await;
    let tenants = 8;
    for i in 0..tenants {
        tenant_with_overdue_contacts(&c, &format!("Down{i}"), 1, false).await;
    }
    let locker = connect(&server.url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE kanban_cards IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let child = server
        .cmd()
        .args([
            "run-cycle",
            "--json",
            "--concurrency",
            "2",
            "--lease",
            "3",
            "--retry-window",
            "3",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock_waiters(&c, 2).await;
    server.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
    let stopped = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("run-cycle gave up")
        .unwrap();
    let gave_up_after = stopped.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", stderr_of(&out));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{}", stderr_of(&out));
    assert!(errors[0].contains("did not come back"), "{}", errors[0]);
    assert!(out.stdout.is_empty(), "no report on exit 75");
    assert!(gave_up_after < Duration::from_secs(20), "{gave_up_after:?}");

    server.start_again();
    let c = connect(&server.url).await;
    let left_running = count(
        &c,
        "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'running'",
    )
    .await;
    let failed = count(
        &c,
        "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'failed'",
    )
    .await;
    assert_eq!(failed, 0, "no tenant marked failed for the outage");
    // The next invocation finishes the work once the dead runner's leases expired (at most
    // one lease, 3 s here; expired by hand rather than waited for).
    c.execute(
        "UPDATE agent_tenant_locks SET expires_at = now() - interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    let out = server
        .cmd()
        .args(["run-cycle", "--json", "--lease", "3"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let (running, leased, failed, histogram) = after_outage(&server.url).await;
    println!(
        "database down for good: exit 75 after {gave_up_after:.1?} (retry window 3 s), {left_running} run(s) left running for the lease to expire; next run: runs per tenant {histogram}, failed {failed}, running {running}, leased {leased}"
    );
    assert_eq!(histogram, format!("{tenants} x 1"));
    assert_eq!((running, leased, failed), (0, 0, 0));
}

// SIGKILL at random points ----------------------------------------------------------------

/// Wait until no autopilot session of this database is left on the server.
async fn wait_for_no_autopilot_session(c: &Client) {
    wait_for_count(
        c,
        NO_AUTOPILOT_SESSION,
        1,
        "a killed runner's session lingers",
    )
    .await;
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test]
async fn sigkill_at_random_points_leaves_nothing_stuck_after_one_lease_and_sends_nothing_twice() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let server = smtp::SmtpServer::start().await;
    let mut tenants = Vec::new();
    for i in 0..4 {
        tenants.push(tenant_with_overdue_contacts(&c, &format!("K{i}"), 2, false).await);
    }
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = Lcg(seed);
    // Kill points are drawn below the shortest whole run seen so far, so a faster machine
    // (where a run may end before a fixed kill point) still gets its kills mid-way.
    let wanted_kills = 40;
    let max_rounds = 150;
    let mut kill_below_ms: u64 = 400;
    let mut killed_running = 0;
    let mut exited_first = 0;
    let mut cards = 0;
    let started = Instant::now();
    let mut i = 0;
    while killed_running < wanted_kills && i < max_rounds {
        i += 1;
        // New work every round: one approved e-mail per tenant, to its own address.
        for t in &tenants {
            cards += 1;
            c.execute(
                "INSERT INTO kanban_cards (tenant_id, type, title, state, action_payload)
                 VALUES ($1, 'send_email', 'Hello', 'approved',
                         jsonb_build_object('to', $2::text, 'subject', 'Hello', 'body', 'Hi'))",
                &[t, &format!("k{i}-{t}@recipient.example")],
            )
            .await
            .unwrap();
        }
        let mut child = db
            .tokio_cmd()
            .args(["run-cycle", "--force", "--lease", "3"])
            .env("SMTP_URL", server.url())
            .env("EMAIL_FROM", "agent@crm.example")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.next(kill_below_ms));
        let spawned = Instant::now();
        tokio::select! {
            _ = child.wait() => {
                exited_first += 1;
                kill_below_ms = kill_below_ms.min(spawned.elapsed().as_millis() as u64).max(20);
            }
            _ = tokio::time::sleep(delay) => {
                child.kill().await.unwrap();
                killed_running += 1;
            }
        }
        // The killed runner's server sessions finish what they were running (an acquire
        // may still commit a lease): wait until they are gone, then let one lease pass
        // (expired by hand rather than waited for) so the next runner takes over.
        wait_for_no_autopilot_session(&c).await;
        c.execute(
            "UPDATE agent_tenant_locks SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    }
    // The runner after the last kill, within one lease of it: it takes over the expired
    // leases and, holding each tenant's lease, parks every card a killed send left
    // `executing` at once instead of sending it again.
    let out = db
        .tokio_cmd()
        .args(["run-cycle", "--force", "--json", "--lease", "3"])
        .env("SMTP_URL", server.url())
        .env("EMAIL_FROM", "agent@crm.example")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));

    let running = count(
        &c,
        "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'running'",
    )
    .await;
    let leased = count(&c, "SELECT count(*) FROM agent_tenant_locks").await;
    let executing = count(
        &c,
        "SELECT count(*) FROM kanban_cards WHERE state = 'executing'",
    )
    .await;
    let timeouts = count(
        &c,
        "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'timeout'",
    )
    .await;
    let runs = count(&c, "SELECT count(*) FROM agent_autonomous_runs").await;
    let done = count(
        &c,
        "SELECT count(*) FROM kanban_cards WHERE state = 'done' AND title = 'Hello'",
    )
    .await;
    let parked = count(
        &c,
        "SELECT count(*) FROM kanban_cards WHERE state = 'blocked' AND title = 'Hello'",
    )
    .await;
    let messages = server.messages();
    let mut per_recipient = std::collections::HashMap::<String, usize>::new();
    for m in &messages {
        for r in &m.rcpt_to {
            *per_recipient.entry(r.clone()).or_default() += 1;
        }
    }
    let twice = per_recipient.values().filter(|n| **n > 1).count();
    println!(
        "SIGKILL x {killed_running} (+{exited_first} runs ended before their kill) in {:.1?}, seed {seed}: {runs} runs ({timeouts} closed as timeout by the next runner), {cards} approved cards: {done} done, {parked} parked for a human, {} messages, {twice} recipients reached twice; left running {running}, leased {leased}, executing {executing}",
        started.elapsed(),
        messages.len()
    );
    assert_eq!(killed_running, wanted_kills, "runners must die mid-way");
    assert_eq!(twice, 0, "an e-mail was delivered twice");
    assert_eq!((running, leased, executing), (0, 0, 0));
    // Every done card was delivered exactly once.
    assert!(messages.len() as i64 >= done, "{} < {done}", messages.len());
}
