//! Logs on stderr: a span per tenant (tenant id, run id) with one outcome line per tenant,
//! each phase at debug, one summary line per invocation, and in `--log-format json` every
//! line (the fatal `error:` line included) is one JSON object.

use crate::common::*;
use serde_json::Value;

/// Every stderr line as JSON (panics on a line that is not one JSON object).
fn json_lines(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

#[tokio::test]
async fn verbose_cycle_logs_one_line_per_tenant_inside_its_span_and_one_summary() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let a = tenant(&c, "A", true).await;
    let b = tenant(&c, "B", true).await;
    let out = db
        .cmd()
        .env_remove("RUST_LOG")
        .args(["-v", "--log-format", "json", "run-cycle"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = json_lines(&out.stderr);
    let outcomes = with_message(&lines, "tenant finished");
    assert_eq!(outcomes.len(), 2, "{lines:#?}");
    let mut seen = Vec::new();
    for o in outcomes {
        assert_eq!(o["level"], "INFO");
        assert_eq!(o["status"], "completed");
        assert!(o["duration_ms"].is_u64());
        assert!(o["actions_planned"].is_i64() || o["actions_planned"].is_u64());
        let span = &o["span"];
        assert_eq!(span["name"], "tenant");
        let run: uuid::Uuid = span["run_id"].as_str().unwrap().parse().unwrap();
        let tenant: uuid::Uuid = span["tenant_id"].as_str().unwrap().parse().unwrap();
        let recorded: uuid::Uuid = c
            .query_one(
                "SELECT tenant_id FROM agent_autonomous_runs WHERE id = $1",
                &[&run],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(recorded, tenant);
        seen.push(tenant);
    }
    seen.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(seen, want);
    let cycle = with_message(&lines, "cycle finished");
    assert_eq!(cycle.len(), 1);
    assert_eq!(cycle[0]["succeeded"], 2);
    let summary = with_message(&lines, "invocation finished");
    assert_eq!(summary.len(), 1, "{lines:#?}");
    assert_eq!(summary[0]["command"], "run-cycle");
    assert_eq!(summary[0]["exit_code"], 0);
}

#[tokio::test]
async fn debug_logs_each_phase_of_a_tenant_inside_its_span() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant(&c, "A", true).await;
    let out = db
        .cmd()
        .env_remove("RUST_LOG")
        .args(["-vv", "--log-format", "json", "run-cycle"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let lines = json_lines(&out.stderr);
    let started: Vec<&str> = with_message(&lines, "phase started")
        .iter()
        .map(|l| {
            assert_eq!(l["level"], "DEBUG");
            assert!(l["span"]["run_id"].is_string(), "{l}");
            l["phase"].as_str().unwrap()
        })
        .collect();
    assert_eq!(started, ["act", "react", "reflect"]);
    let done: Vec<&str> = with_message(&lines, "phase done")
        .iter()
        .map(|l| l["phase"].as_str().unwrap())
        .collect();
    assert!(done.starts_with(&["plan", "act", "react"]), "{done:?}");
    // The libraries' handshake chatter stays out unless RUST_LOG asks for it.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("rustls"));
}

#[tokio::test]
async fn a_failed_tenant_is_one_warning_line_with_its_reason_at_the_default_level() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant_with_settings(
        &c,
        "Broken",
        serde_json::json!({"max_emails_per_hour": "lots"}),
    )
    .await;
    let out = db
        .cmd()
        .env_remove("RUST_LOG")
        .args(["--log-format", "json", "run-cycle"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out.stderr);
    let outcome = with_message(&lines, "tenant finished");
    assert_eq!(outcome.len(), 1, "{lines:#?}");
    assert_eq!(outcome[0]["level"], "WARN");
    assert_eq!(outcome[0]["status"], "failed");
    assert!(
        outcome[0]["reason"]
            .as_str()
            .unwrap()
            .contains("max_emails_per_hour"),
        "{}",
        outcome[0]
    );
    // Info lines are not shown by default.
    assert!(with_message(&lines, "invocation finished").is_empty());
}

#[test]
fn the_fatal_error_line_is_one_json_object_in_json_mode() {
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .args(["--log-format", "json", "status"])
        .env(
            "DATABASE_URL",
            "postgres://ap:hunter2-pw@127.0.0.1:9/nowhere?sslmode=disable",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    let lines = json_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let fatal = &lines[0];
    assert_eq!(fatal["level"], "ERROR");
    assert_eq!(fatal["exit_code"], 75);
    assert!(
        fatal["message"]
            .as_str()
            .unwrap()
            .starts_with("error: cannot connect to database"),
        "{fatal}"
    );
    assert!(!fatal["causes"].as_array().unwrap().is_empty());
    assert!(!fatal.to_string().contains("hunter2-pw"));
    assert!(fatal["timestamp"].is_string());

    // A usage error too, also when JSON is asked for through the environment.
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .env("AUTOPILOT_LOG_FORMAT", "json")
        .args(["status", "--tenant", "not-a-uuid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = json_lines(&out.stderr);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["exit_code"], 2);
    assert!(lines[0]["message"].as_str().unwrap().contains("not-a-uuid"));
}

#[tokio::test]
async fn every_command_ends_with_one_summary_line_at_info() {
    let db = TestDb::new().await;
    for (args, command) in [
        (vec!["status"], "status"),
        (vec!["migrate", "--status"], "migrate"),
        (vec!["tenant", "list"], "tenant list"),
        (vec!["agent", "status"], "agent status"),
        (vec!["check-engagement"], "check-engagement"),
        (vec!["process-orders"], "process-orders"),
        (vec!["doctor"], "doctor"),
    ] {
        let out = db
            .cmd()
            .env_remove("RUST_LOG")
            .args(["-v", "--log-format", "json"])
            .args(&args)
            .output()
            .unwrap();
        let lines = json_lines(&out.stderr);
        let summary = with_message(&lines, "invocation finished");
        assert_eq!(summary.len(), 1, "{args:?}: {lines:#?}");
        assert_eq!(summary[0]["command"], command);
        assert_eq!(
            summary[0]["exit_code"].as_i64(),
            out.status.code().map(i64::from)
        );
    }
}
