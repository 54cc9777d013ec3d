//! `autopilot ack-alert`: all or nothing, idempotent, bad input refused before any write,
//! `--all` narrowed by type and severity.

use crate::common::*;
use tokio_postgres::Client;
use uuid::Uuid;

async fn alert(c: &Client, tenant: Uuid, alert_type: &str, severity: &str) -> Uuid {
    c.query_one(
        "SELECT alert_id FROM raise_agent_alert($1, $2, $3, 'something happened', '{}'::jsonb, now())",
        &[&tenant, &alert_type, &severity],
    )
    .await
    .unwrap()
    .get(0)
}

async fn acked(c: &Client) -> i64 {
    count(c, "SELECT count(*) FROM agent_alerts WHERE acknowledged").await
}

#[tokio::test]
async fn acknowledging_ids_sets_who_and_when_and_reports_the_count() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let p = profile(&c, t).await;
    let a = alert(&c, t, "slow_cycles", "warning").await;
    let b = alert(&c, t, "high_block_rate", "warning").await;
    let out = db
        .cmd()
        .args([
            "ack-alert",
            &a.to_string(),
            &b.to_string(),
            "--by",
            &p.to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json_of(&out),
        serde_json::json!({"acknowledged": 2, "already_acknowledged": 0})
    );
    let n = count(
        &c,
        &format!(
            "SELECT count(*) FROM agent_alerts WHERE acknowledged AND acknowledged_at IS NOT NULL AND acknowledged_by = '{p}'"
        ),
    )
    .await;
    assert_eq!(n, 2);
}

#[tokio::test]
async fn re_acknowledging_changes_nothing_and_is_not_an_error() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let a = alert(&c, t, "slow_cycles", "warning").await;
    db.cmd()
        .args(["ack-alert", &a.to_string()])
        .assert()
        .success();
    let first: chrono::DateTime<chrono::Utc> = c
        .query_one(
            "SELECT acknowledged_at FROM agent_alerts WHERE id = $1",
            &[&a],
        )
        .await
        .unwrap()
        .get(0);
    let out = db
        .cmd()
        .args(["ack-alert", &a.to_string(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        json_of(&out),
        serde_json::json!({"acknowledged": 0, "already_acknowledged": 1})
    );
    let second: chrono::DateTime<chrono::Utc> = c
        .query_one(
            "SELECT acknowledged_at FROM agent_alerts WHERE id = $1",
            &[&a],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(first, second);
}

#[tokio::test]
async fn one_unknown_id_fails_with_exit_1_naming_it_and_changes_no_alert() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let a = alert(&c, t, "slow_cycles", "warning").await;
    let missing = Uuid::new_v4();
    let out = db
        .cmd()
        .args(["ack-alert", &a.to_string(), &missing.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&missing.to_string()), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1);
    assert_eq!(acked(&c).await, 0);
}

#[tokio::test]
async fn malformed_uuid_exits_2_and_changes_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let a = alert(&c, t, "slow_cycles", "warning").await;
    let out = db
        .cmd()
        .args(["ack-alert", &a.to_string(), "not-a-uuid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
    assert_eq!(acked(&c).await, 0);
}

#[tokio::test]
async fn unknown_or_foreign_by_profile_exits_2_and_changes_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let other = tenant(&c, "Other", true).await;
    let foreign = profile(&c, other).await;
    let a = alert(&c, t, "slow_cycles", "warning").await;
    let out = db
        .cmd()
        .args([
            "ack-alert",
            &a.to_string(),
            "--by",
            &Uuid::new_v4().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = db
        .cmd()
        .args(["ack-alert", &a.to_string(), "--by", &foreign.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = db
        .cmd()
        .args([
            "ack-alert",
            "--tenant",
            &t.to_string(),
            "--all",
            "--by",
            &foreign.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(acked(&c).await, 0);
}

#[tokio::test]
async fn all_acknowledges_only_the_tenants_open_alerts_matching_type_and_severity() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let other = tenant(&c, "Other", true).await;
    alert(&c, t, "slow_cycles", "warning").await;
    alert(&c, t, "high_block_rate", "warning").await;
    alert(&c, t, "email_provider_failure", "critical").await;
    alert(&c, other, "slow_cycles", "warning").await;

    let out = db
        .cmd()
        .args([
            "ack-alert",
            "--tenant",
            &t.to_string(),
            "--all",
            "--type",
            "slow_cycles",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(json_of(&out)["acknowledged"], 1);
    let out = db
        .cmd()
        .args([
            "ack-alert",
            "--tenant",
            &t.to_string(),
            "--all",
            "--severity",
            "critical",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(json_of(&out)["acknowledged"], 1);
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_alerts WHERE NOT acknowledged AND alert_type = 'high_block_rate'").await,
        1
    );
    let out = db
        .cmd()
        .args(["ack-alert", "--tenant", &t.to_string(), "--all", "--json"])
        .output()
        .unwrap();
    assert_eq!(json_of(&out)["acknowledged"], 1);
    // The other tenant's alert is untouched.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM agent_alerts WHERE tenant_id = $1 AND NOT acknowledged",
            &[&other],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn all_for_an_unknown_tenant_exits_2() {
    let db = TestDb::new().await;
    db.cmd()
        .args([
            "ack-alert",
            "--tenant",
            &Uuid::new_v4().to_string(),
            "--all",
        ])
        .assert()
        .code(2);
}

#[tokio::test]
async fn ids_and_all_together_are_bad_usage() {
    let db = TestDb::new().await;
    let out = db
        .cmd()
        .args([
            "ack-alert",
            &Uuid::new_v4().to_string(),
            "--tenant",
            &Uuid::new_v4().to_string(),
            "--all",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = db.cmd().args(["ack-alert"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

// Alert rules (SPEC §7) -------------------------------------------------------------------

/// A finished run `hours_ago` with the given outcome and figures.
async fn finished_run(
    c: &Client,
    tenant: Uuid,
    status: &str,
    planned: i32,
    blocked: i32,
    duration_ms: i32,
) {
    c.execute(
        "INSERT INTO agent_autonomous_runs (tenant_id, cycle_number, started_at, completed_at, phase, status,
                                            actions_planned, actions_blocked, duration_ms)
         VALUES ($1, (SELECT coalesce(max(cycle_number), 0) + 1 FROM agent_autonomous_runs WHERE tenant_id = $1),
                 now() - interval '2 hours', now() - interval '2 hours' + make_interval(secs => $5::int / 1000.0),
                 CASE WHEN $2 = 'completed' THEN 'completed' ELSE 'failed' END, $2, $3, $4, $5)",
        &[&tenant, &status, &planned, &blocked, &duration_ms],
    )
    .await
    .unwrap();
}

async fn rules(c: &Client, tenant: Uuid, compliance: f64) -> Vec<&'static str> {
    autopilot::alerts::evaluate_rules(
        c,
        tenant,
        Some(autopilot::alerts::CycleFacts {
            compliance_rate: compliance,
        }),
        chrono::Utc::now(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_healthy_tenant_raises_no_alert() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    for _ in 0..5 {
        finished_run(&c, t, "completed", 10, 1, 1_000).await;
    }
    assert!(rules(&c, t, 95.0).await.is_empty());
    assert_eq!(count(&c, "SELECT count(*) FROM agent_alerts").await, 0);
}

#[tokio::test]
async fn failure_rate_above_20_percent_is_critical_and_exactly_20_is_not() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    for _ in 0..4 {
        finished_run(&c, t, "completed", 0, 0, 1_000).await;
    }
    finished_run(&c, t, "failed", 0, 0, 1_000).await;
    assert!(
        !rules(&c, t, 100.0).await.contains(&"cycle_failure_rate"),
        "1 of 5 is 20 %"
    );
    finished_run(&c, t, "timeout", 0, 0, 1_000).await;
    assert!(rules(&c, t, 100.0).await.contains(&"cycle_failure_rate"));
    let sev: String = c
        .query_one(
            "SELECT severity FROM agent_alerts WHERE alert_type = 'cycle_failure_rate'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sev, "critical");
}

#[tokio::test]
async fn compliance_below_80_blocked_share_above_30_and_slow_cycles_are_warnings() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    finished_run(&c, t, "completed", 10, 4, 301_000).await;
    let opened = rules(&c, t, 79.9).await;
    for expected in [
        "low_engagement_compliance",
        "high_block_rate",
        "slow_cycles",
    ] {
        assert!(opened.contains(&expected), "{expected} not in {opened:?}");
    }
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_alerts WHERE severity = 'warning'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn ten_policy_blocks_in_an_hour_and_five_provider_failures_in_15_minutes_alert() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    c.execute(
        "INSERT INTO agent_policy_violations (tenant_id, violation_type, action_type, reason, created_at)
         SELECT $1, 'rate_limit', 'send_email', 'limit', now() - interval '5 minutes' FROM generate_series(1, 9)",
        &[&t],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO email_provider_failures (tenant_id, error_type, created_at)
         SELECT $1, '4xx', now() - interval '1 minute' FROM generate_series(1, 4)",
        &[&t],
    )
    .await
    .unwrap();
    assert!(
        rules(&c, t, 100.0).await.is_empty(),
        "9 blocks and 4 failures stay below the thresholds"
    );
    c.execute(
        "INSERT INTO agent_policy_violations (tenant_id, violation_type, action_type, reason) VALUES ($1, 'suppression', 'send_email', 'x')",
        &[&t],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO email_provider_failures (tenant_id, error_type) VALUES ($1, 'timeout')",
        &[&t],
    )
    .await
    .unwrap();
    let opened = rules(&c, t, 100.0).await;
    assert!(
        opened.contains(&"policy_block_spike") && opened.contains(&"email_provider_failure"),
        "{opened:?}"
    );
}

#[tokio::test]
async fn a_condition_that_stays_true_counts_occurrences_on_one_open_alert() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    assert_eq!(rules(&c, t, 50.0).await, vec!["low_engagement_compliance"]);
    assert!(
        rules(&c, t, 50.0).await.is_empty(),
        "no second alert while the first is open"
    );
    let row = c
        .query_one("SELECT count(*), max(occurrences) FROM agent_alerts", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, i32>(1), 2);
}
