//! `autopilot run-cycle`: kill switch, tenant selection, leases under racing runners,
//! timeouts, signals, crashes, and the Plan → Act → React → Reflect effects.

use crate::smtp;

use std::time::Duration;

use crate::common::*;
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

/// Row counts of every table the cycle may write.
async fn table_counts(c: &Client) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in [
        "agent_autonomous_runs",
        "agent_tenant_locks",
        "engagement_clocks",
        "agent_policy_violations",
        "order_processing_queue",
        "order_processing_exceptions",
        "agent_hourly_reflections",
        "agent_rate_limits",
        "agent_alerts",
        "email_provider_failures",
        "kanban_cards",
        "email_suppressions",
    ] {
        out.push((
            t.to_string(),
            count(c, &format!("SELECT count(*) FROM {t}")).await,
        ));
    }
    out
}

/// A connection holding an exclusive lock on kanban_cards in an open transaction: the
/// cycle blocks on its first read of cards (Plan) until the test runs `ROLLBACK` on it.
async fn hold_cards_lock(db: &TestDb) -> Client {
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE kanban_cards IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    locker
}

/// The tenant's run ended `failed` ("interrupted") and its lease was released.
async fn assert_interrupted_and_released(c: &Client, t: Uuid) {
    let row = c
        .query_one(
            "SELECT status, error_message FROM agent_autonomous_runs WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("interrupted")
    );
    assert_eq!(count(c, "SELECT count(*) FROM agent_tenant_locks").await, 0);
}

/// Wait until an autopilot session of this database waits on a lock.
async fn wait_until_blocked(c: &Client) {
    wait_for_count(
        c,
        AUTOPILOT_LOCK_WAITS,
        1,
        "autopilot never blocked on the test's lock",
    )
    .await;
}

#[tokio::test]
async fn kill_switch_off_by_default_runs_nothing_and_says_why() {
    let db = TestDb::new().await;
    let c = db.client().await;
    tenant_with_overdue_contacts(&c, "Acme", 2, false).await;
    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc = json_of(&out);
    assert_eq!(doc["disabled"], true);
    assert!(doc["reason"].as_str().unwrap().contains("kill switch"));
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        0
    );
    let out = db.cmd().arg("run-cycle").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("disabled"));
}

#[tokio::test]
async fn env_kill_switch_stops_an_enabled_agent_and_clearing_it_runs() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant_with_overdue_contacts(&c, "Acme", 1, false).await;
    let out = db
        .cmd()
        .args(["run-cycle", "--json"])
        .env("AGENT_KILL_SWITCH", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_of(&out)["disabled"], true);
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        0
    );

    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&out);
    assert_eq!(doc["disabled"], false);
    assert_eq!(doc["succeeded"], 1);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'completed'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn unknown_tenant_exits_2_and_writes_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant_with_overdue_contacts(&c, "Acme", 1, false).await;
    let before = table_counts(&c).await;
    let out = db
        .cmd()
        .args(["run-cycle", "--tenant", &Uuid::new_v4().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("unknown tenant"),
        "{stderr}"
    );
    assert_eq!(table_counts(&c).await, before);
}

#[tokio::test]
async fn malformed_uuid_exits_2_before_connecting() {
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .args(["run-cycle", "--tenant", "not-a-uuid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
}

#[tokio::test]
async fn json_report_has_exactly_the_spec_shape() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Acme", 3, false).await;
    let out = db
        .cmd()
        .args(["run-cycle", "--json", "--trigger", "manual"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&out);
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys = keys;
    keys.sort();
    assert_eq!(
        keys,
        [
            "disabled",
            "duration_ms",
            "failed",
            "skipped",
            "succeeded",
            "tenants",
            "total"
        ]
    );
    assert_eq!(doc["total"], 1);
    let tr = &doc["tenants"][0];
    let mut tkeys: Vec<&str> = tr.as_object().unwrap().keys().map(String::as_str).collect();
    tkeys.sort();
    assert_eq!(
        tkeys,
        [
            "cycle_number",
            "duration_ms",
            "metrics",
            "reason",
            "run_id",
            "status",
            "tenant_id"
        ]
    );
    assert_eq!(tr["tenant_id"], t.to_string());
    assert_eq!(tr["status"], "completed");
    assert_eq!(tr["cycle_number"], 1);
    assert!(tr["reason"].is_null());
    let mut mkeys: Vec<&str> = tr["metrics"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    mkeys.sort();
    assert_eq!(
        mkeys,
        [
            "actions_blocked",
            "actions_executed",
            "actions_planned",
            "cards_created",
            "emails_sent"
        ]
    );
    assert_eq!(tr["metrics"]["cards_created"], 3);
    let run_id: Uuid = tr["run_id"].as_str().unwrap().parse().unwrap();
    let row = c
        .query_one("SELECT trigger, phase, cards_created, completed_at IS NOT NULL, duration_ms IS NOT NULL FROM agent_autonomous_runs WHERE id = $1", &[&run_id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "manual");
    assert_eq!(row.get::<_, String>(1), "completed");
    assert_eq!(row.get::<_, i32>(2), 3);
    assert!(row.get::<_, bool>(3) && row.get::<_, bool>(4));
}

#[tokio::test]
async fn a_cycle_writes_one_reflection_with_blockers_and_metrics_delta() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant_with_overdue_contacts(&c, "Acme", 2, true).await;
    db.cmd().arg("run-cycle").assert().success();
    let row = c
        .query_one(
            "SELECT summary, blockers, metrics_delta, next_hour_priorities FROM agent_hourly_reflections",
            &[],
        )
        .await
        .unwrap();
    let summary: String = row.get(0);
    let blockers: Value = row.get(1);
    let delta: Value = row.get(2);
    assert!(summary.contains("compliance"), "{summary}");
    assert!(
        blockers.to_string().contains("no e-mail address"),
        "{blockers}"
    );
    assert_eq!(delta["overdue"]["after"], 3);
    assert_eq!(delta["compliance_rate"]["after"], 0.0);
    assert!(row
        .get::<_, Value>(3)
        .as_array()
        .map(|a| !a.is_empty())
        .unwrap_or(false));
    // The contact without an address got no card.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'send_email'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn malformed_settings_fail_only_that_tenant_with_the_key_named_and_an_alert() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let good = tenant_with_overdue_contacts(&c, "Good", 1, false).await;
    let bad = tenant_with_settings(
        &c,
        "Bad",
        serde_json::json!({"max_emails_per_hour": "many"}),
    )
    .await;
    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc = json_of(&out);
    assert_eq!(doc["succeeded"], 1);
    assert_eq!(doc["failed"], 1);
    let bad_row = c
        .query_one(
            "SELECT status, error_message FROM agent_autonomous_runs WHERE tenant_id = $1",
            &[&bad],
        )
        .await
        .unwrap();
    assert_eq!(bad_row.get::<_, String>(0), "failed");
    assert!(bad_row.get::<_, String>(1).contains("max_emails_per_hour"));
    let good_status: String = c
        .query_one(
            "SELECT status FROM agent_autonomous_runs WHERE tenant_id = $1",
            &[&good],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(good_status, "completed");
    let alerts = c
        .query_one("SELECT count(*) FROM agent_alerts WHERE tenant_id = $1 AND alert_type = 'invalid_agent_settings'", &[&bad])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(alerts, 1);
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_tenant_locks").await,
        0
    );
}

#[tokio::test]
async fn two_runners_started_together_run_each_of_20_tenants_exactly_once() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    for i in 0..20 {
        tenant_with_overdue_contacts(&c, &format!("T{i}"), 2, false).await;
    }
    let a = db
        .tokio_cmd()
        .args(["run-cycle", "--json", "--concurrency", "4"])
        .output();
    let b = db
        .tokio_cmd()
        .args(["run-cycle", "--json", "--concurrency", "4"])
        .output();
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert_eq!(
        b.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&b.stderr)
    );
    let (ja, jb) = (json_of(&a), json_of(&b));
    let completed = ja["succeeded"].as_u64().unwrap() + jb["succeeded"].as_u64().unwrap();
    let skipped = ja["skipped"].as_u64().unwrap() + jb["skipped"].as_u64().unwrap();
    assert_eq!(completed + skipped, 40);
    // Each tenant ran exactly once: a runner neither takes a held lease nor re-runs a
    // tenant the other runner finished after it started.
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        20
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(DISTINCT tenant_id) FROM agent_autonomous_runs"
        )
        .await,
        20
    );
    assert_eq!(completed, 20);
    assert_eq!(skipped, 20);
    // No tenant got two open cards per contact: the runs never overlapped.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'send_email'"
        )
        .await,
        40
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_autonomous_runs WHERE status <> 'completed'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_tenant_locks").await,
        0
    );
    // Overlap check: no two runs of a tenant overlap in time.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_autonomous_runs a JOIN agent_autonomous_runs b
               ON a.tenant_id = b.tenant_id AND a.id < b.id
              AND a.started_at < b.completed_at AND b.started_at < a.completed_at"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_held_lease_makes_the_tenant_skipped_with_exit_0() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Acme", 1, false).await;
    let other: Option<Uuid> = c
        .query_one(
            "SELECT acquire_tenant_lock($1, 'another-runner', 60)",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    assert!(other.is_some());
    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc = json_of(&out);
    assert_eq!(doc["skipped"], 1);
    assert_eq!(doc["tenants"][0]["status"], "skipped");
    assert_eq!(count(&c, "SELECT count(*) FROM kanban_cards").await, 0);
}

#[tokio::test]
async fn running_twice_in_an_hour_drafts_no_second_card_and_does_not_refire_the_alert() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant_with_overdue_contacts(&c, "Acme", 3, false).await;
    // --force: the hourly cadence would otherwise skip the second run of the hour.
    db.cmd().arg("run-cycle").assert().success();
    db.cmd().args(["run-cycle", "--force"]).assert().success();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'completed'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'send_email'"
        )
        .await,
        3
    );
    // Compliance is 0 % → one low-compliance alert, counted twice, not two alerts.
    let row = c
        .query_one("SELECT count(*), max(occurrences) FROM agent_alerts WHERE alert_type = 'low_engagement_compliance'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, i32>(1), 2);
    // Once acknowledged, the still-true condition opens a new alert.
    c.execute(
        "UPDATE agent_alerts SET acknowledged = true, acknowledged_at = now()",
        &[],
    )
    .await
    .unwrap();
    db.cmd().args(["run-cycle", "--force"]).assert().success();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_alerts WHERE alert_type = 'low_engagement_compliance'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn review_tasks_for_error_order_exceptions_are_not_blocked_by_the_human_task_policy() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant(&c, "Acme", true).await;
    let cl = client_row(&c, t, "Acme Lending").await;
    let o = order(&c, t, cl).await;
    c.execute(
        "UPDATE orders SET property_address = NULL WHERE id = $1",
        &[&o],
    )
    .await
    .unwrap();
    db.cmd().arg("process-orders").assert().success();
    db.cmd().arg("run-cycle").assert().success();
    let n = c
        .query_one(
            "SELECT count(*) FROM kanban_cards WHERE type = 'create_task' AND agent_target = $1 AND state = 'suggested'",
            &[&o],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(n, 1);
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_policy_violations WHERE violation_type = 'human_task_no_request'").await,
        0
    );
    // A second cycle does not open a second review card for the same order.
    db.cmd().arg("run-cycle").assert().success();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'create_task'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_writes_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Acme", 2, true).await;
    c.execute("DELETE FROM engagement_clocks WHERE tenant_id = $1", &[&t])
        .await
        .unwrap();
    let before = table_counts(&c).await;
    let out = db.cmd().args(["run-cycle", "--dry-run"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("draft a follow-up"), "{stdout}");
    assert!(stdout.contains("no e-mail address"), "{stdout}");
    assert_eq!(table_counts(&c).await, before);
}

#[tokio::test]
async fn max_tenants_runs_the_longest_waiting_tenants_first() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    for i in 0..3 {
        tenant_with_overdue_contacts(&c, &format!("T{i}"), 1, false).await;
    }
    for _ in 0..3 {
        let out = db
            .cmd()
            .args(["run-cycle", "--json", "--max-tenants", "1"])
            .output()
            .unwrap();
        assert_eq!(json_of(&out)["total"], 1);
    }
    // Three single-tenant invocations covered all three tenants.
    assert_eq!(
        count(
            &c,
            "SELECT count(DISTINCT tenant_id) FROM agent_autonomous_runs"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn a_slow_tenant_past_its_timeout_is_marked_timeout_its_query_cancelled_and_lease_freed() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Slow", 1, false).await;
    let tx = hold_cards_lock(&db).await;
    let out = db
        .tokio_cmd()
        .args(["run-cycle", "--json", "--tenant-timeout", "2"])
        .output()
        .await
        .unwrap();
    // Checked while the lock is still held: nothing of autopilot waits on it any more.
    let waiting = count(
        &c,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
           AND application_name = 'autopilot' AND state = 'active'",
    )
    .await;
    tx.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        waiting, 0,
        "the timed-out query was abandoned, not cancelled"
    );
    let doc = json_of(&out);
    assert_eq!(doc["tenants"][0]["status"], "timeout");
    let row = c
        .query_one("SELECT status, completed_at IS NOT NULL FROM agent_autonomous_runs WHERE tenant_id = $1", &[&t])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "timeout");
    assert!(row.get::<_, bool>(1));
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_tenant_locks").await,
        0
    );
}

#[tokio::test]
async fn a_lease_stolen_mid_cycle_stops_the_runner_and_it_writes_nothing_more() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Stolen", 2, false).await;
    let tx = hold_cards_lock(&db).await;
    let child = db
        .tokio_cmd()
        .args(["run-cycle", "--json", "--lease", "3"])
        .output();
    let thief = async {
        wait_until_blocked(&c).await;
        let first: Uuid = c
            .query_one(
                "SELECT run_id FROM agent_tenant_locks WHERE tenant_id = $1",
                &[&t],
            )
            .await
            .unwrap()
            .get(0);
        c.execute("UPDATE agent_tenant_locks SET expires_at = now() - interval '1 second' WHERE tenant_id = $1", &[&t])
            .await
            .unwrap();
        let second: Option<Uuid> = c
            .query_one("SELECT acquire_tenant_lock($1, 'thief', 60)", &[&t])
            .await
            .unwrap()
            .get(0);
        // Let the runner notice (heartbeat every second) before the lock goes.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tx.batch_execute("ROLLBACK").await.unwrap();
        (first, second.expect("the thief takes the expired lease"))
    };
    let (out, (first, second)) = tokio::join!(child, thief);
    let out = out.unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let row = c
        .query_one(
            "SELECT status, phase FROM agent_autonomous_runs WHERE id = $1",
            &[&first],
        )
        .await
        .unwrap();
    // The old run is closed either way: by the taker (`timeout`), or, when the runner's
    // heartbeat saw its lease expire and released it just before the thief came, by the
    // runner itself (`failed`, lease lost). Never left running, never completed.
    let status: String = row.get(0);
    assert!(
        status == "timeout" || status == "failed",
        "the old run is closed, not {status}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(row.get::<_, String>(1), "failed");
    // Nothing of the first run after the steal: no cards, no reflection, lease untouched.
    assert_eq!(
        count_where(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE run_id = $1",
            &[&first]
        )
        .await,
        0
    );
    assert_eq!(
        count_where(
            &c,
            "SELECT count(*) FROM agent_hourly_reflections WHERE run_id = $1",
            &[&first]
        )
        .await,
        0
    );
    let holder: Uuid = c
        .query_one(
            "SELECT run_id FROM agent_tenant_locks WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(holder, second);
    let released: bool = c
        .query_one(
            "SELECT release_tenant_lock($1, $2, 'completed')",
            &[&t, &first],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!released, "a fenced-out run cannot release the new lease");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_during_a_slow_tenant_marks_it_interrupted_releases_and_exits_1() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Slow", 1, false).await;
    let tx = hold_cards_lock(&db).await;
    let child = db
        .tokio_cmd()
        .args(["run-cycle", "--json", "--grace", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_blocked(&c).await;
    let pid = child.id().unwrap();
    signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    tx.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_interrupted_and_released(&c, t).await;
}

#[tokio::test]
async fn after_sigkill_the_next_runner_marks_the_dead_run_timeout_once_the_lease_expired() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Crash", 1, false).await;
    let tx = hold_cards_lock(&db).await;
    let mut child = db
        .tokio_cmd()
        .args(["run-cycle", "--lease", "60"])
        .spawn()
        .unwrap();
    wait_until_blocked(&c).await;
    child.kill().await.unwrap();
    tx.batch_execute("ROLLBACK").await.unwrap();
    // While the lease is unexpired, the tenant is skipped.
    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    assert_eq!(json_of(&out)["tenants"][0]["status"], "skipped");
    // Once it has expired, the next runner takes over.
    c.execute(
        "UPDATE agent_tenant_locks SET expires_at = now() - interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = c
        .query("SELECT cycle_number, status, completed_at IS NOT NULL FROM agent_autonomous_runs WHERE tenant_id = $1 ORDER BY cycle_number", &[&t])
        .await
        .unwrap();
    let got: Vec<(i32, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "timeout".to_string(), true),
            (2, "completed".to_string(), true)
        ]
    );
}

#[tokio::test]
async fn an_approved_follow_up_is_sent_once_over_smtp_and_the_contact_is_compliant_again() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Acme", 1, false).await;
    let server = smtp::SmtpServer::start().await;
    db.cmd().arg("run-cycle").assert().success();
    c.execute(
        "UPDATE kanban_cards SET state = 'approved' WHERE type = 'send_email'",
        &[],
    )
    .await
    .unwrap();

    for _ in 0..2 {
        // Async process: the test's runtime must keep serving the SMTP server meanwhile.
        let out = db
            .tokio_cmd()
            .args(["run-cycle", "--json", "--force"])
            .env("SMTP_URL", server.url())
            .env("EMAIL_FROM", "agent@crm.example")
            .output()
            .await
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "sent exactly once across two cycles");
    assert_eq!(
        messages[0].rcpt_to,
        vec!["contact0@acme.example".to_string()]
    );
    assert_eq!(
        messages[0].header("From").as_deref(),
        Some("agent@crm.example")
    );
    let sent: i64 = c
        .query_one("SELECT coalesce(sum(emails_sent), 0)::bigint FROM agent_autonomous_runs WHERE tenant_id = $1", &[&t])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sent, 1);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE state = 'done' AND executed_at IS NOT NULL"
        )
        .await,
        1
    );
    // The contact's clock was touched by the agent (NULL toucher) and is compliant again.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM engagement_clock_status
              WHERE contact_id IS NOT NULL AND is_compliant AND last_touch_by IS NULL AND last_touch_type = 'email'"
        )
        .await,
        1
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_second_signal_stops_in_flight_tenants_without_waiting_for_the_grace() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Slow", 1, false).await;
    let tx = hold_cards_lock(&db).await;
    let mut child = db
        .tokio_cmd()
        .args(["run-cycle", "--json", "--grace", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_blocked(&c).await;
    let stderr = child.stderr.take().unwrap();
    let pid = child.id().unwrap();
    signal(pid, "INT");
    // The second signal once the first was taken (two signals sent back to back may be
    // delivered as one).
    let _log = wait_for_stderr_line(stderr, "signal received").await;
    signal(pid, "INT");
    // Far less than the 60 s grace.
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("stopped without waiting for the grace")
        .unwrap();
    tx.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_interrupted_and_released(&c, t).await;
}

#[tokio::test]
async fn a_lease_row_locked_by_another_session_times_out_instead_of_hanging() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Stuck", 1, false).await;
    // An expired lease whose row an operator's open transaction keeps locked.
    let run: Uuid = c
        .query_one("SELECT acquire_tenant_lock($1, 'old-runner', 60)", &[&t])
        .await
        .unwrap()
        .get(0);
    c.execute(
        "UPDATE agent_tenant_locks SET expires_at = now() - interval '1 minute'",
        &[],
    )
    .await
    .unwrap();
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; SELECT 1 FROM agent_tenant_locks FOR UPDATE")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let out = db
        .tokio_cmd()
        .args(["run-cycle", "--json", "--tenant-timeout", "2"])
        .output()
        .await
        .unwrap();
    let waited = started.elapsed();
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    let doc = json_of(&out);
    assert_eq!(doc["tenants"][0]["status"], "timeout");
    assert!(doc["tenants"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("lease"));
    // Nothing was taken over while the row was locked: the old run is untouched.
    let status: String = c
        .query_one(
            "SELECT status FROM agent_autonomous_runs WHERE id = $1",
            &[&run],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "running");
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        1
    );
}
