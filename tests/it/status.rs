//! `autopilot status` (the health check: exit codes, JSON shape, which tenants it reports)
//! and the CLI niceties that need no database (completions, --version).

use crate::common::*;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A finished run of `tenant`, as a cycle leaves it.
async fn finished_run(
    c: &Client,
    tenant: Uuid,
    cycle: i32,
    status: &str,
    error: Option<&str>,
) -> Uuid {
    c.query_one(
        "INSERT INTO agent_autonomous_runs (tenant_id, cycle_number, started_at, completed_at, phase, status,
                                            duration_ms, error_message)
         VALUES ($1, $2, now() - interval '1 hour', now() - interval '59 minutes',
                 CASE WHEN $3 = 'completed' THEN 'completed' ELSE 'failed' END, $3, 60000, $4)
         RETURNING id",
        &[&tenant, &cycle, &status, &error],
    )
    .await
    .unwrap()
    .get(0)
}

async fn open_alert(c: &Client, tenant: Uuid, alert_type: &str, severity: &str) -> Uuid {
    c.query_one(
        "INSERT INTO agent_alerts (tenant_id, alert_type, severity, message) VALUES ($1, $2, $3, 'test') RETURNING id",
        &[&tenant, &alert_type, &severity],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn status_exits_0_for_a_tenant_whose_last_cycle_completed() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant(&c, "Acme", true).await;
    db.cmd()
        .args(["run-cycle", "--tenant", &t.to_string()])
        .assert()
        .success();

    let out = db.cmd().arg("status").output().unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one line per tenant: {text}");
    assert!(
        text.starts_with(&t.to_string())
            && text.contains("cycle 1 completed")
            && text.contains("OK"),
        "{text}"
    );
}

#[tokio::test]
async fn status_exits_1_when_the_last_run_failed() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    finished_run(&c, t, 1, "completed", None).await;
    finished_run(&c, t, 2, "failed", Some("boom")).await;

    let out = db.cmd().arg("status").output().unwrap();

    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("UNHEALTHY") && text.contains("cycle 2) failed: boom"),
        "{text}"
    );
}

#[tokio::test]
async fn status_exits_1_when_the_last_run_timed_out() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    finished_run(&c, t, 1, "timeout", Some("exceeded --tenant-timeout")).await;

    let out = db.cmd().args(["status", "--json"]).output().unwrap();

    assert_eq!(out.status.code(), Some(1));
    let doc = json_of(&out);
    assert_eq!(doc["healthy"], false);
    assert_eq!(doc["tenants"][0]["last_run"]["status"], "timeout");
}

#[tokio::test]
async fn only_the_last_run_decides_so_a_recovered_tenant_is_healthy() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    finished_run(&c, t, 1, "failed", Some("boom")).await;
    finished_run(&c, t, 2, "completed", None).await;

    let out = db.cmd().args(["status", "--json"]).output().unwrap();

    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(json_of(&out)["tenants"][0]["last_run"]["cycle_number"], 2);
}

#[tokio::test]
async fn status_exits_1_with_an_open_critical_alert_and_0_once_it_is_acknowledged() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    finished_run(&c, t, 1, "completed", None).await;
    open_alert(&c, t, "low_engagement_compliance", "warning").await;
    let critical = open_alert(&c, t, "email_provider_failure", "critical").await;

    let out = db.cmd().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("1 open critical alert(s)"),
        "{}",
        stdout(&out)
    );

    db.cmd()
        .args(["ack-alert", &critical.to_string()])
        .assert()
        .success();
    let out = db.cmd().arg("status").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "an open warning alone is healthy: {}",
        stdout(&out)
    );
}

#[tokio::test]
async fn status_exits_2_on_an_unknown_tenant_and_prints_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    tenant(&c, "Acme", true).await;

    let out = db
        .cmd()
        .args(["status", "--tenant", &Uuid::new_v4().to_string()])
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown tenant"));
}

#[tokio::test]
async fn status_reports_enabled_tenants_by_default_and_exactly_the_listed_ones_otherwise() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let on = tenant(&c, "On", true).await;
    let off = tenant(&c, "Off", false).await;
    let ids = |doc: &Value| -> Vec<String> {
        doc["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tenant_id"].as_str().unwrap().to_string())
            .collect()
    };

    let all = json_of(&db.cmd().args(["status", "--json"]).output().unwrap());
    let listed = json_of(
        &db.cmd()
            .args(["status", "--json", "--tenant", &off.to_string()])
            .output()
            .unwrap(),
    );

    assert_eq!(ids(&all), [on.to_string()]);
    assert_eq!(ids(&listed), [off.to_string()]);
    assert_eq!(listed["tenants"][0]["agent_enabled"], false);
    assert!(listed["tenants"][0]["last_run"].is_null());
}

#[tokio::test]
async fn status_json_has_run_lease_alerts_compliance_and_queue_depth() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let cl = client_row(&c, t, "Acme Lending").await;
    for i in 0..4 {
        contact(&c, t, cl, Some(&format!("p{i}@acme.example")), None, false).await;
    }
    // 3 of 4 clocks not yet due: 75 % compliant, 1 overdue.
    c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id, next_touch_due)
         SELECT tenant_id, client_id, id,
                CASE WHEN row_number() OVER (ORDER BY id) = 1 THEN now() - interval '3 days'
                     ELSE now() + interval '5 days' END
         FROM contacts WHERE tenant_id = $1",
        &[&t],
    )
    .await
    .unwrap();
    // Two new orders are queued pending by the orders trigger; a third is already done.
    order(&c, t, cl).await;
    order(&c, t, cl).await;
    let done = order(&c, t, cl).await;
    c.execute(
        "UPDATE order_processing_queue SET status = 'validated' WHERE order_id = $1",
        &[&done],
    )
    .await
    .unwrap();
    finished_run(&c, t, 1, "completed", None).await;
    // A cycle in flight: its run is `running` under a live lease.
    let run: Uuid = c
        .query_one("SELECT acquire_tenant_lease($1, 'host-a:1', interval '10 minutes', 'scheduled', now())", &[&t])
        .await
        .unwrap()
        .get(0);
    open_alert(&c, t, "low_engagement_compliance", "warning").await;
    open_alert(&c, t, "policy_block_spike", "warning").await;
    let acked = open_alert(&c, t, "cycle_failure_rate", "critical").await;
    c.execute(
        "UPDATE agent_alerts SET acknowledged = true, acknowledged_at = now() WHERE id = $1",
        &[&acked],
    )
    .await
    .unwrap();

    let out = db.cmd().args(["status", "--json"]).output().unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "a running cycle under its lease is healthy: {}",
        stdout(&out)
    );
    let doc = json_of(&out);
    let mut keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["globally_enabled", "healthy", "tenants"]);
    assert_eq!(doc["healthy"], true);
    let ts = &doc["tenants"][0];
    assert_eq!(ts["tenant_id"], t.to_string());
    assert_eq!(ts["name"], "Acme");
    assert_eq!(ts["last_run"]["run_id"], run.to_string());
    assert_eq!(ts["last_run"]["cycle_number"], 2);
    assert_eq!(ts["last_run"]["status"], "running");
    assert!(ts["last_run"]["started_at"].is_string());
    assert!(ts["last_run"]["duration_ms"].is_null());
    assert_eq!(ts["lease"]["held"], true);
    assert_eq!(ts["lease"]["holder"], "host-a:1");
    assert_eq!(ts["lease"]["run_id"], run.to_string());
    let expires: DateTime<Utc> = ts["lease"]["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        expires > Utc::now() + Duration::minutes(9)
            && expires <= Utc::now() + Duration::minutes(10)
    );
    assert_eq!(
        ts["open_alerts"],
        serde_json::json!({"info": 0, "warning": 2, "critical": 0})
    );
    assert_eq!(ts["clocks"], 4);
    assert_eq!(ts["overdue"], 1);
    assert_eq!(ts["compliance_rate"], 75.0);
    assert_eq!(ts["pending_orders"], 2);
    assert_eq!(ts["healthy"], true);
    assert_eq!(ts["problems"], serde_json::json!([]));
}

#[tokio::test]
async fn a_running_run_whose_lease_expired_is_reported_unhealthy() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    c.execute(
        "SELECT acquire_tenant_lease($1, 'host-a:1', interval '1 minute', 'scheduled', now())",
        &[&t],
    )
    .await
    .unwrap();
    let later = (Utc::now() + Duration::hours(2)).to_rfc3339();

    let now_out = db.cmd().args(["status", "--json"]).output().unwrap();
    let later_out = db
        .cmd()
        .args(["status", "--json", "--now", &later])
        .output()
        .unwrap();

    assert_eq!(now_out.status.code(), Some(0), "{}", stdout(&now_out));
    assert_eq!(later_out.status.code(), Some(1), "{}", stdout(&later_out));
    let doc = json_of(&later_out);
    assert_eq!(doc["tenants"][0]["lease"]["held"], false);
    assert!(doc["tenants"][0]["problems"][0]
        .as_str()
        .unwrap()
        .contains("without a live lease"));
}

#[tokio::test]
async fn a_tenant_without_clocks_is_100_percent_compliant() {
    let db = TestDb::new().await;
    let c = db.client().await;
    tenant(&c, "Empty", true).await;

    let doc = json_of(&db.cmd().args(["status", "--json"]).output().unwrap());

    assert_eq!(doc["tenants"][0]["compliance_rate"], 100.0);
    assert_eq!(doc["tenants"][0]["clocks"], 0);
    assert_eq!(doc["tenants"][0]["lease"]["held"], false);
    assert_eq!(doc["globally_enabled"], false);
}

#[tokio::test]
async fn status_judges_compliance_and_the_last_run_at_the_injected_now() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let cl = client_row(&c, t, "Acme Lending").await;
    let p = contact(&c, t, cl, Some("p@acme.example"), None, false).await;
    c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id, next_touch_due)
         VALUES ($1, $2, $3, now() + interval '3 days')",
        &[&t, &cl, &p],
    )
    .await
    .unwrap();
    // An imported run with a higher cycle number that started earlier: the last run is
    // the latest by started_at.
    c.execute(
        "INSERT INTO agent_autonomous_runs (tenant_id, cycle_number, started_at, completed_at, phase, status, duration_ms)
         VALUES ($1, 9, now() - interval '3 hours', now() - interval '3 hours', 'completed', 'completed', 1),
                ($1, 4, now() - interval '1 hour', now() - interval '1 hour', 'completed', 'completed', 1)",
        &[&t],
    )
    .await
    .unwrap();
    let later = (Utc::now() + Duration::days(5)).to_rfc3339();

    let today = json_of(&db.cmd().args(["status", "--json"]).output().unwrap());
    let in_5_days = json_of(
        &db.cmd()
            .args(["status", "--json", "--now", &later])
            .output()
            .unwrap(),
    );

    assert_eq!(today["tenants"][0]["overdue"], 0);
    assert_eq!(today["tenants"][0]["compliance_rate"], 100.0);
    assert_eq!(in_5_days["tenants"][0]["overdue"], 1);
    assert_eq!(in_5_days["tenants"][0]["compliance_rate"], 0.0);
    assert_eq!(today["tenants"][0]["last_run"]["cycle_number"], 4);
}

// CLI niceties ------------------------------------------------------------------------------

#[test]
fn bash_completions_name_every_command_without_a_database() {
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .args(["completions", "bash"])
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(0));
    let script = stdout(&out);
    for cmd in [
        "run-cycle",
        "check-engagement",
        "ack-alert",
        "status",
        "prune",
    ] {
        assert!(
            script.contains(cmd),
            "{cmd} missing from the bash completions"
        );
    }
}

#[test]
fn completions_for_an_unknown_shell_exit_2() {
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn version_names_the_git_commit() {
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let commit = text
        .trim()
        .rsplit_once('(')
        .and_then(|(_, c)| c.strip_suffix(')'))
        .unwrap_or("");
    assert!(
        commit.len() == 12 && commit.chars().all(|ch| ch.is_ascii_hexdigit()),
        "{text}"
    );
}

#[test]
fn every_command_help_has_an_example() {
    for cmd in [
        "migrate",
        "run-cycle",
        "check-engagement",
        "process-orders",
        "ack-alert",
        "status",
        "prune",
        "completions",
    ] {
        let out = assert_cmd::Command::new(BIN)
            .env_clear()
            .args([cmd, "--help"])
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(
            text.contains(&format!("autopilot {cmd}")) && text.contains("Example"),
            "{cmd} --help has no example"
        );
    }
}
