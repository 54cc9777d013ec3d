//! `autopilot prune`: only rows past retention go, `--dry-run` counts the same and deletes
//! nothing, running runs / leased runs / a tenant's latest run are kept, batches loop, and
//! a malformed duration is refused before any write.

use crate::common::*;
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

/// Rows per table from a prune report.
fn counts(doc: &Value) -> Vec<(String, i64)> {
    doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["rows"].as_i64().unwrap(),
            )
        })
        .collect()
}

const TABLES: [&str; 7] = [
    "agent_hourly_reflections",
    "agent_autonomous_runs",
    "order_processing_exceptions",
    "agent_rate_limits",
    "agent_alerts",
    "email_provider_failures",
    "agent_policy_violations",
];

async fn table_counts(c: &Client) -> Vec<i64> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(count(c, &format!("SELECT count(*) FROM {t}")).await);
    }
    out
}

/// A run that started `days` days ago and (unless `running`) ended a minute later.
async fn run_days_ago(c: &Client, tenant: Uuid, cycle: i32, status: &str, days: i32) -> Uuid {
    c.query_one(
        "INSERT INTO agent_autonomous_runs (tenant_id, cycle_number, started_at, completed_at, phase, status, duration_ms)
         VALUES ($1, $2, now() - make_interval(days => $4) - interval '1 minute',
                 CASE WHEN $3 <> 'running' THEN now() - make_interval(days => $4) END,
                 CASE WHEN $3 = 'running' THEN 'plan' ELSE 'completed' END, $3, 60000)
         RETURNING id",
        &[&tenant, &cycle, &status, &days],
    )
    .await
    .unwrap()
    .get(0)
}

async fn reflection(c: &Client, tenant: Uuid, run: Uuid, days: i32) -> Uuid {
    c.query_one(
        "INSERT INTO agent_hourly_reflections (tenant_id, run_id, summary, created_at)
         VALUES ($1, $2, 'test', now() - make_interval(days => $3)) RETURNING id",
        &[&tenant, &run, &days],
    )
    .await
    .unwrap()
    .get(0)
}

/// The same mix of old and recent rows in every table, for one tenant. Returns the ids
/// that must survive a 90-day prune, by table.
async fn arrange(c: &Client) -> (Uuid, Vec<(&'static str, Uuid)>) {
    let t = tenant(c, "Acme", true).await;
    let cl = client_row(c, t, "Acme Lending").await;
    let o = order(c, t, cl).await;
    let mut keep = Vec::new();

    // Runs: cycles 1 and 2 ended 120 and 100 days ago (pruned), 3 ended yesterday (kept).
    let r1 = run_days_ago(c, t, 1, "completed", 120).await;
    let r2 = run_days_ago(c, t, 2, "failed", 100).await;
    let r3 = run_days_ago(c, t, 3, "completed", 1).await;
    keep.push(("agent_autonomous_runs", r3));
    // Reflections: an old one; a recent one of old run 2 (goes with its run); a recent one.
    reflection(c, t, r1, 120).await;
    reflection(c, t, r2, 10).await;
    keep.push(("agent_hourly_reflections", reflection(c, t, r3, 1).await));

    // Exceptions: resolved long ago (pruned), resolved recently, unresolved and old.
    for (code, resolved, days) in [("a", true, 100), ("b", true, 5), ("c", false, 100)] {
        let id: Uuid = c
            .query_one(
                "INSERT INTO order_processing_exceptions (tenant_id, order_id, exception_type, severity, code, message,
                                                          resolved, resolved_at, created_at)
                 VALUES ($1, $2, 'pricing', 'error', $3, 'test', $4,
                         CASE WHEN $4 THEN now() - make_interval(days => $5) END, now() - make_interval(days => $5))
                 RETURNING id",
                &[&t, &o, &code, &resolved, &days],
            )
            .await
            .unwrap()
            .get(0);
        if code != "a" {
            keep.push(("order_processing_exceptions", id));
        }
    }
    // Rate-limit windows: one that ended 91 days ago, the current hour.
    for (hours_ago, kept) in [(91 * 24, false), (0, true)] {
        let id: Uuid = c
            .query_one(
                "INSERT INTO agent_rate_limits (tenant_id, action_type, window_start, window_end, action_count)
                 VALUES ($1, 'email_send', date_trunc('hour', now()) - make_interval(hours => $2),
                         date_trunc('hour', now()) - make_interval(hours => $2) + interval '1 hour', 3)
                 RETURNING id",
                &[&t, &hours_ago],
            )
            .await
            .unwrap()
            .get(0);
        if kept {
            keep.push(("agent_rate_limits", id));
        }
    }
    // Alerts: acknowledged long ago (pruned), acknowledged recently, open and old.
    for (ty, acked, days) in [("a", true, 100), ("b", true, 2), ("c", false, 100)] {
        let id: Uuid = c
            .query_one(
                "INSERT INTO agent_alerts (tenant_id, alert_type, severity, message, acknowledged, acknowledged_at, created_at)
                 VALUES ($1, $2, 'warning', 'test', $3, CASE WHEN $3 THEN now() - make_interval(days => $4) END,
                         now() - make_interval(days => $4) - interval '1 day')
                 RETURNING id",
                &[&t, &ty, &acked, &days],
            )
            .await
            .unwrap()
            .get(0);
        if ty != "a" {
            keep.push(("agent_alerts", id));
        }
    }
    // Provider failures and policy violations: one old, one recent.
    for days in [100, 3] {
        let f: Uuid = c
            .query_one(
                "INSERT INTO email_provider_failures (tenant_id, error_type, created_at)
                 VALUES ($1, 'timeout', now() - make_interval(days => $2)) RETURNING id",
                &[&t, &days],
            )
            .await
            .unwrap()
            .get(0);
        let v: Uuid = c
            .query_one(
                "INSERT INTO agent_policy_violations (tenant_id, run_id, violation_type, reason, created_at)
                 VALUES ($1, $2, 'rate_limit', 'test', now() - make_interval(days => $3)) RETURNING id",
                &[&t, &r2, &days],
            )
            .await
            .unwrap()
            .get(0);
        if days == 3 {
            keep.push(("email_provider_failures", f));
            keep.push(("agent_policy_violations", v));
        }
    }
    (t, keep)
}

/// What a 90-day prune of [`arrange`] removes, in report order.
fn expected_counts() -> Vec<(String, i64)> {
    [
        ("agent_hourly_reflections", 2),
        ("agent_autonomous_runs", 2),
        ("order_processing_exceptions", 1),
        ("agent_rate_limits", 1),
        ("agent_alerts", 1),
        ("email_provider_failures", 1),
        ("agent_policy_violations", 1),
        ("agent_lease_stats", 0),
    ]
    .iter()
    .map(|(t, n)| (t.to_string(), *n))
    .collect()
}

#[tokio::test]
async fn prune_removes_exactly_the_rows_past_retention_and_reports_counts() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let (_, keep) = arrange(&c).await;

    let out = db
        .cmd()
        .args(["prune", "--older-than", "90d", "--json"])
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&out);
    assert_eq!(doc["dry_run"], false);
    assert_eq!(doc["older_than"], "90d");
    assert_eq!(counts(&doc), expected_counts());
    assert_eq!(doc["total"], 9);
    // Exactly the kept rows remain, table by table.
    for table in TABLES {
        let mut expected: Vec<Uuid> = keep
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, id)| *id)
            .collect();
        expected.sort();
        let mut remaining: Vec<Uuid> = c
            .query(&format!("SELECT id FROM {table}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        remaining.sort();
        assert_eq!(remaining, expected, "{table}");
    }
}

#[tokio::test]
async fn dry_run_deletes_nothing_and_reports_the_same_counts_as_the_real_prune() {
    let db = TestDb::new().await;
    let c = db.client().await;
    arrange(&c).await;
    let before = table_counts(&c).await;

    let dry = db
        .cmd()
        .args(["prune", "--dry-run", "--json"])
        .output()
        .unwrap();

    assert_eq!(dry.status.code(), Some(0));
    assert_eq!(table_counts(&c).await, before);
    let dry = json_of(&dry);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["older_than"], "90d", "90 days is the default");

    let real = json_of(&db.cmd().args(["prune", "--json"]).output().unwrap());
    assert_eq!(counts(&dry), counts(&real));
    assert_eq!(counts(&real), expected_counts());
}

#[tokio::test]
async fn a_running_run_and_the_leased_run_are_never_pruned() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    // Cycle 1: left running by a crashed runner 200 days ago; cycle 2 finished long ago.
    let crashed = run_days_ago(&c, t, 1, "running", 200).await;
    let old = run_days_ago(&c, t, 2, "completed", 150).await;
    // Cycle 3: in flight under a live lease, started long ago (a slow cycle, say).
    let leased = run_days_ago(&c, t, 3, "running", 300).await;
    c.execute(
        "INSERT INTO agent_tenant_locks (tenant_id, run_id, expires_at, lock_holder)
         VALUES ($1, $2, now() + interval '10 minutes', 'host-a:1')",
        &[&t, &leased],
    )
    .await
    .unwrap();

    let out = db
        .cmd()
        .args(["prune", "--older-than", "30d", "--json"])
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut remaining: Vec<Uuid> = c
        .query("SELECT id FROM agent_autonomous_runs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    remaining.sort();
    let mut expected = vec![crashed, leased];
    expected.sort();
    assert_eq!(remaining, expected, "only the finished run {old} goes");
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_tenant_locks").await,
        1
    );
}

#[tokio::test]
async fn a_tenants_latest_run_is_kept_so_cycle_numbers_keep_counting() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    run_days_ago(&c, t, 1, "completed", 200).await;
    let latest = run_days_ago(&c, t, 2, "completed", 150).await;

    db.cmd()
        .args(["prune", "--older-than", "30d"])
        .assert()
        .success();

    let remaining: Vec<Uuid> = c
        .query("SELECT id FROM agent_autonomous_runs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(remaining, [latest]);
    let run: Uuid = c
        .query_one(
            "SELECT acquire_tenant_lease($1, 'h', interval '1 minute', 'manual', now())",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    let next: i32 = c
        .query_one(
            "SELECT cycle_number FROM agent_autonomous_runs WHERE id = $1",
            &[&run],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 3);
}

#[tokio::test]
async fn small_batches_loop_until_every_old_row_is_gone() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    c.execute(
        "INSERT INTO email_provider_failures (tenant_id, error_type, created_at)
         SELECT $1, 'timeout', now() - interval '100 days' FROM generate_series(1, 7)",
        &[&t],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO email_provider_failures (tenant_id, error_type) VALUES ($1, '5xx')",
        &[&t],
    )
    .await
    .unwrap();

    let out = db
        .cmd()
        .args(["prune", "--batch", "2", "--json"])
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&out);
    let failures = counts(&doc)
        .into_iter()
        .find(|(t, _)| t == "email_provider_failures")
        .unwrap();
    assert_eq!(failures.1, 7);
    assert_eq!(
        count(&c, "SELECT count(*) FROM email_provider_failures").await,
        1
    );
}

#[tokio::test]
async fn retention_is_relative_to_the_injected_now() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    c.execute(
        "INSERT INTO email_provider_failures (tenant_id, error_type, created_at) VALUES ($1, 'timeout', now() - interval '2 hours')",
        &[&t],
    )
    .await
    .unwrap();
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();

    let at_now = json_of(
        &db.cmd()
            .args(["prune", "--older-than", "12h", "--dry-run", "--json"])
            .output()
            .unwrap(),
    );
    let later = json_of(
        &db.cmd()
            .args([
                "prune",
                "--older-than",
                "12h",
                "--dry-run",
                "--json",
                "--now",
                &tomorrow,
            ])
            .output()
            .unwrap(),
    );

    assert_eq!(at_now["total"], 0);
    assert_eq!(later["total"], 1);
}

#[tokio::test]
async fn a_malformed_duration_exits_2_and_deletes_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    arrange(&c).await;
    let before = table_counts(&c).await;

    for bad in ["90", "d", "90x", "-5d", "0d", "1.5d"] {
        let out = db
            .cmd()
            .args(["prune", "--older-than", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--older-than {bad}");
        assert!(out.stdout.is_empty());
    }
    assert_eq!(table_counts(&c).await, before);
}

#[tokio::test]
async fn human_output_names_every_table_and_says_when_nothing_was_deleted() {
    let db = TestDb::new().await;
    let c = db.client().await;
    arrange(&c).await;

    let out = db
        .cmd()
        .args(["prune", "--dry-run", "--older-than", "30m"])
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dry run: nothing deleted"), "{text}");
    for t in TABLES {
        assert!(text.contains(t), "{t} missing: {text}");
    }
}

// Partitioned history ---------------------------------------------------------------------

/// Where a row of a partitioned table is stored.
async fn stored_in(c: &Client, table: &str, id: Uuid) -> String {
    c.query_one(
        &format!("SELECT tableoid::regclass::text FROM {table} WHERE id = $1"),
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn prune_drops_whole_partitions_past_retention_and_keeps_the_runs_it_must() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let dormant = tenant(&c, "Dormant", true).await;
    run_days_ago(&c, t, 1, "completed", 200).await;
    run_days_ago(&c, t, 2, "failed", 200).await;
    let latest_of_dormant = run_days_ago(&c, dormant, 1, "completed", 200).await;
    let recent = run_days_ago(&c, t, 3, "completed", 1).await;
    for days in [200, 200, 1] {
        c.execute(
            "INSERT INTO email_provider_failures (tenant_id, error_type, created_at)
             VALUES ($1, 'timeout', now() - make_interval(days => $2))",
            &[&t, &days],
        )
        .await
        .unwrap();
    }
    // The month and the week of 200 days ago get partitions; their rows move out of DEFAULT.
    c.batch_execute(
        "SELECT agent_history_create_partition('public.agent_autonomous_runs', now() - interval '200 days' - interval '1 minute');
         SELECT agent_history_create_partition('public.email_provider_failures', now() - interval '200 days');",
    )
    .await
    .unwrap();
    let old_partition = stored_in(&c, "agent_autonomous_runs", latest_of_dormant).await;
    assert!(
        old_partition.starts_with("autopilot_history.agent_autonomous_runs_p"),
        "{old_partition}"
    );
    let dry = json_of(
        &db.cmd()
            .args(["prune", "--older-than", "90d", "--dry-run", "--json"])
            .output()
            .unwrap(),
    );

    let out = db
        .cmd()
        .args(["prune", "--older-than", "90d", "--json"])
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&out);
    assert_eq!(doc["partitions_dropped"], 2);
    assert_eq!(counts(&doc), counts(&dry), "a dry run counts what goes");
    let n = |name: &str| counts(&doc).into_iter().find(|(t, _)| t == name).unwrap().1;
    assert_eq!(n("agent_autonomous_runs"), 2);
    assert_eq!(n("email_provider_failures"), 2);
    let gone = count(
        &c,
        &format!("SELECT count(*) FROM pg_class WHERE oid = to_regclass('{old_partition}')"),
    )
    .await;
    assert_eq!(gone, 0, "{old_partition} was dropped");
    assert_eq!(
        stored_in(&c, "agent_autonomous_runs", latest_of_dormant).await,
        "autopilot_history.agent_autonomous_runs_default",
        "a tenant's latest run outlives its month"
    );
    let runs: Vec<Uuid> = c
        .query(
            "SELECT id FROM agent_autonomous_runs ORDER BY started_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(runs, [latest_of_dormant, recent]);
    assert_eq!(
        count(&c, "SELECT count(*) FROM email_provider_failures").await,
        1
    );
}

#[tokio::test]
async fn prune_creates_the_partitions_of_the_coming_periods_at_its_now() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let later = chrono::Utc::now() + chrono::Duration::days(400);

    let out = db
        .cmd()
        .args([
            "prune",
            "--older-than",
            "3650d",
            "--json",
            "--now",
            &later.to_rfc3339(),
        ])
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created = json_of(&out)["partitions_created"]
        .as_array()
        .unwrap()
        .len();
    let covered: Vec<bool> = c
        .query(
            "SELECT EXISTS (SELECT 1 FROM agent_history_partitions(t.parent) p
                            WHERE p.range_from <= $1::timestamptz + t.ahead AND p.range_to > $1::timestamptz + t.ahead)
             FROM agent_history_tables() t",
            &[&later],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        covered,
        [true, true],
        "runs and failures covered to the horizon"
    );
    assert!(created >= 4 + 5, "{created} partitions created");
    // A run written at that time lands in its month, not in DEFAULT.
    let t = tenant(&c, "Acme", true).await;
    let run: Uuid = c
        .query_one(
            "INSERT INTO agent_autonomous_runs (tenant_id, cycle_number, started_at, status, phase)
             VALUES ($1, 1, $2, 'running', 'plan') RETURNING id",
            &[&t, &later],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored_in(&c, "agent_autonomous_runs", run)
        .await
        .starts_with("autopilot_history.agent_autonomous_runs_p"));
}

#[tokio::test]
async fn prune_removes_lease_statistics_of_hours_past_retention() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    c.execute(
        "INSERT INTO agent_lease_stats (tenant_id, hour, acquired)
         VALUES ($1, date_trunc('hour', now()) - interval '100 days', 1),
                ($1, date_trunc('hour', now()) - interval '1 hour', 1)",
        &[&t],
    )
    .await
    .unwrap();

    let out = db
        .cmd()
        .args(["prune", "--older-than", "90d", "--json"])
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(0));
    let doc = json_of(&out);
    assert!(counts(&doc).contains(&("agent_lease_stats".to_string(), 1)));
    assert_eq!(count(&c, "SELECT count(*) FROM agent_lease_stats").await, 1);
}
