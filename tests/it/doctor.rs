//! `autopilot doctor`: one line per check against a real PostgreSQL and a real SMTP
//! listener; `--json`; exit 1 when a check fails, the connection's own exit code when the
//! database cannot be used at all.

use crate::smtp;

use crate::common::*;
use serde_json::Value;
use smtp::{Behaviour, SmtpServer};

/// The check named `name` of a `doctor --json` document.
fn check<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {doc}"))
}

fn statuses(doc: &Value) -> Vec<(String, String)> {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A database where everything is as it should be: migrated, agent on, one enabled
/// tenant with a completed run.
async fn healthy_db() -> TestDb {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant(&c, "Acme", true).await;
    let out = db
        .cmd()
        .args(["run-cycle", "--tenant", &t.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    db
}

#[tokio::test]
async fn doctor_passes_every_check_on_a_healthy_installation_and_sends_no_mail() {
    let db = healthy_db().await;
    let relay = SmtpServer::start().await;
    let url = relay.url().replace("smtp://", "smtp://agent:s3cret-pw@");
    // Not a blocking process: the relay runs on this test's runtime.
    let out = db
        .tokio_cmd()
        .args(["doctor", "--json"])
        .env("SMTP_URL", &url)
        .env("EMAIL_FROM", "agent@example.com")
        .output()
        .await
        .unwrap();
    let doc = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    for (name, status) in statuses(&doc) {
        assert_eq!(status, "ok", "{name}: {doc:#}");
    }
    let names: Vec<String> = statuses(&doc).into_iter().map(|(n, _)| n).collect();
    for expected in [
        "connection",
        "migrations",
        "kill switch",
        "tenants",
        "last runs",
        "stuck work",
        "clock",
        "smtp",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let conn = &check(&doc, "connection")["details"];
    assert_eq!(conn["connected_database"], db.name.as_str());
    assert!(conn["server_version_num"].as_i64().unwrap() >= 150_000);
    assert_eq!(check(&doc, "tenants")["details"]["enabled"], 1);
    let smtp = check(&doc, "smtp");
    assert!(
        smtp["summary"]
            .as_str()
            .unwrap()
            .contains("authenticated as agent"),
        "{smtp}"
    );
    // Connected, said EHLO and authenticated, but no message went out.
    assert!(relay.connections() >= 1);
    assert!(relay.messages().is_empty());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("s3cret-pw"), "password printed: {all}");
}

#[tokio::test]
async fn doctor_prints_one_line_per_check_with_a_fix_for_each_failure() {
    let db = TestDb::new().await;
    let out = db
        .cmd()
        .arg("doctor")
        .env("AGENT_KILL_SWITCH", "yes")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("[ok  ] connection"), "{text}");
    assert!(text.contains("[warn] kill switch"), "{text}");
    assert!(text.contains("AGENT_KILL_SWITCH=yes"), "{text}");
    assert!(text.contains("fix: unset AGENT_KILL_SWITCH"), "{text}");
    assert!(text.contains("[warn] tenants"), "{text}");
    assert!(text.contains("fix: autopilot tenant enable"), "{text}");
    assert!(text.contains("[warn] smtp"), "{text}");
}

#[tokio::test]
async fn doctor_without_a_reachable_database_fails_the_connection_check_and_exits_75() {
    // A port nothing listens on (the discard port needs root to bind; nobody does here).
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .env(
            "DATABASE_URL",
            "postgres://ap:hunter2-pw@127.0.0.1:9/nowhere?sslmode=disable",
        )
        .env("PGCONNECT_TIMEOUT", "3")
        .args(["doctor"])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(75), "{text}");
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("[FAIL] connection"), "{text}");
    assert!(text.contains("fix: the server cannot be reached"), "{text}");
    // The checks that need no database still run.
    assert!(text.contains("] smtp"), "{text}");
    assert!(
        !text.contains("hunter2-pw")
            && !String::from_utf8_lossy(&out.stderr).contains("hunter2-pw")
    );
}

#[tokio::test]
async fn doctor_without_database_settings_fails_the_connection_check_and_exits_2() {
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc = json_of(&out);
    assert_eq!(check(&doc, "connection")["status"], "fail");
    assert_eq!(doc["ok"], false);
}

#[tokio::test]
async fn doctor_fails_on_pending_migrations_and_names_them() {
    let db = TestDb::empty().await;
    let out = db.cmd().args(["doctor", "--json"]).output().unwrap();
    let doc = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    let m = check(&doc, "migrations");
    assert_eq!(m["status"], "fail");
    let embedded = autopilot::schema::embedded();
    assert_eq!(
        m["details"]["pending"].as_array().unwrap().len(),
        embedded.len()
    );
    assert!(m["hint"].as_str().unwrap().contains("autopilot migrate"));
}

#[tokio::test]
async fn doctor_fails_on_a_changed_migration_and_names_the_file() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let first = &autopilot::schema::embedded()[0];
    c.execute(
        "UPDATE autopilot_migrations SET checksum = 'edited' WHERE version = $1",
        &[&first.version],
    )
    .await
    .unwrap();
    let out = db.cmd().args(["doctor", "--json"]).output().unwrap();
    let doc = json_of(&out);
    assert_eq!(out.status.code(), Some(1));
    let m = check(&doc, "migrations");
    assert_eq!(m["status"], "fail");
    assert_eq!(m["details"]["changed"][0], first.file.as_str());
}

#[tokio::test]
async fn doctor_reports_stuck_and_parked_work() {
    let db = healthy_db().await;
    let c = db.client().await;
    let t = tenant(&c, "Stuck", true).await;
    let cl = client_row(&c, t, "Client").await;
    let o = order(&c, t, cl).await;
    // A run left `running` by a crashed runner (its lease expired long ago).
    c.batch_execute(&format!(
        "INSERT INTO agent_autonomous_runs (tenant_id, cycle_number, status, phase, started_at)
         VALUES ('{t}', 1, 'running', 'act', now() - interval '3 hours');
         UPDATE order_processing_queue SET status = 'processing', claimed_at = now() - interval '1 hour'
          WHERE order_id = '{o}';
         INSERT INTO kanban_cards (tenant_id, type, title, state, updated_at)
         VALUES ('{t}', 'send_email', 'stuck send', 'executing', now() - interval '1 hour'),
                ('{t}', 'send_email', 'parked send', 'blocked', now());"
    ))
    .await
    .unwrap();
    let out = db.cmd().args(["doctor", "--json"]).output().unwrap();
    let doc = json_of(&out);
    let s = check(&doc, "stuck work");
    assert_eq!(s["status"], "warn", "{s}");
    assert_eq!(s["details"]["runs_running_without_lease"], 1);
    assert_eq!(s["details"]["queue_processing_too_long"], 1);
    assert_eq!(s["details"]["cards_executing_too_long"], 1);
    assert_eq!(s["details"]["cards_blocked"], 1);
    assert!(s["hint"].as_str().unwrap().contains("blocked"));
    // Warnings only: nothing failed.
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
}

#[tokio::test]
async fn doctor_fails_the_clock_check_when_host_and_server_disagree() {
    let db = healthy_db().await;
    let out = db
        .cmd()
        .args(["doctor", "--json", "--now", "2020-01-01T00:00:00Z"])
        .output()
        .unwrap();
    let doc = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    let clock = check(&doc, "clock");
    assert_eq!(clock["status"], "fail");
    assert!(clock["details"]["drift_seconds"].as_f64().unwrap() > 86_400.0);
    assert!(clock["hint"].as_str().unwrap().contains("NTP"));
}

#[tokio::test]
async fn doctor_fails_smtp_when_the_relay_refuses_the_credentials() {
    let db = healthy_db().await;
    let relay = SmtpServer::start().await;
    relay.set_behaviour(Behaviour::RejectAuth("535 5.7.8 bad credentials".into()));
    let url = relay.url().replace("smtp://", "smtp://agent:wrong-pw@");
    // Not a blocking process: the relay runs on this test's runtime.
    let out = db
        .tokio_cmd()
        .args(["doctor", "--json"])
        .env("SMTP_URL", &url)
        .env("EMAIL_FROM", "agent@example.com")
        .output()
        .await
        .unwrap();
    let doc = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    let s = check(&doc, "smtp");
    assert_eq!(s["status"], "fail");
    assert!(s["summary"].as_str().unwrap().contains("auth error"), "{s}");
    assert!(s["hint"].as_str().unwrap().contains("credentials"));
    assert!(!doc.to_string().contains("wrong-pw"));
    assert!(relay.messages().is_empty());
}

#[tokio::test]
async fn doctor_fails_smtp_when_the_relay_is_unreachable() {
    let db = healthy_db().await;
    // Bind then drop a listener: the port is free and refuses connections.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = db
        .cmd()
        .args(["doctor", "--json"])
        .env("SMTP_URL", format!("smtp://127.0.0.1:{port}"))
        .env("EMAIL_FROM", "agent@example.com")
        .output()
        .unwrap();
    let doc = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    let s = check(&doc, "smtp");
    assert_eq!(s["status"], "fail");
    assert!(
        s["summary"].as_str().unwrap().contains("connection error"),
        "{s}"
    );
}
