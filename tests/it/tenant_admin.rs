//! `autopilot tenant list|enable|disable` and `autopilot agent status|enable|disable`: the
//! switches an operator flips without SQL, with who and why recorded; bad input refused
//! with exit 2 before anything changes; a bare `autopilot` is a usage error.

use crate::common::*;
use uuid::Uuid;

async fn enabled(c: &tokio_postgres::Client, t: Uuid) -> bool {
    c.query_one("SELECT agent_enabled FROM tenants WHERE id = $1", &[&t])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn tenant_enable_turns_the_agent_on_and_records_who_and_why() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", false).await;
    let out = db
        .cmd()
        .args(["tenant", "enable", &t.to_string()])
        .args([
            "--by",
            "alice@ops",
            "--reason",
            "onboarded, contract 17",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = json_of(&out);
    assert_eq!(doc["changed"], 1);
    assert_eq!(doc["tenants"][0]["tenant_id"], t.to_string());
    assert!(enabled(&c, t).await);
    let row = c
        .query_one(
            "SELECT agent_enabled, changed_by, reason FROM agent_switch_log WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "alice@ops");
    assert_eq!(row.get::<_, String>(2), "onboarded, contract 17");

    // The list shows the switch and its last change.
    let out = db
        .cmd()
        .args(["tenant", "list", "--json"])
        .output()
        .unwrap();
    let doc = json_of(&out);
    let listed = &doc["tenants"][0];
    assert_eq!(listed["agent_enabled"], true);
    assert_eq!(listed["last_change"]["by"], "alice@ops");
    let out = db.cmd().args(["tenant", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{t} (Acme): enabled; enabled by alice@ops")),
        "{text}"
    );

    // Disabling records a second row; the tenant then is skipped by run-cycle.
    let out = db
        .cmd()
        .args([
            "tenant",
            "disable",
            &t.to_string(),
            "--by",
            "bob",
            "--reason",
            "paused",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!enabled(&c, t).await);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_switch_log WHERE NOT agent_enabled AND changed_by = 'bob'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn enabling_an_enabled_tenant_changes_and_records_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let out = db
        .cmd()
        .args([
            "tenant",
            "enable",
            &t.to_string(),
            "--by",
            "a",
            "--reason",
            "r",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc = json_of(&out);
    assert_eq!(doc["changed"], 0);
    assert_eq!(doc["unchanged"], 1);
    assert_eq!(count(&c, "SELECT count(*) FROM agent_switch_log").await, 0);
}

#[tokio::test]
async fn an_unknown_tenant_changes_none_of_the_listed_tenants_and_exits_2() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let known = tenant(&c, "Acme", false).await;
    let unknown = Uuid::new_v4();
    let out = db
        .cmd()
        .args(["tenant", "enable", &known.to_string(), &unknown.to_string()])
        .args(["--by", "a", "--reason", "r"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: unknown tenant"), "{err}");
    assert!(err.contains(&unknown.to_string()), "{err}");
    assert!(!enabled(&c, known).await);
    assert_eq!(count(&c, "SELECT count(*) FROM agent_switch_log").await, 0);
}

#[tokio::test]
async fn a_malformed_uuid_or_a_missing_reason_is_refused_with_exit_2() {
    let db = TestDb::new().await;
    for args in [
        vec![
            "tenant",
            "enable",
            "not-a-uuid",
            "--by",
            "a",
            "--reason",
            "r",
        ],
        vec![
            "tenant",
            "disable",
            &Uuid::new_v4().to_string(),
            "--by",
            "a",
        ],
        vec![
            "tenant",
            "enable",
            &Uuid::new_v4().to_string(),
            "--by",
            "a",
            "--reason",
            "  ",
        ],
        vec!["tenant", "enable", "--by", "a", "--reason", "r"],
        vec!["agent", "disable", "--by", "a"],
        vec!["tenant"],
        vec!["agent"],
    ] {
        let out = db.cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[tokio::test]
async fn a_change_nobody_signs_is_refused() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", false).await;
    // cmd() clears the environment: no USER, LOGNAME or SUDO_USER to default to.
    let out = db
        .cmd()
        .args(["tenant", "enable", &t.to_string(), "--reason", "r"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--by"));
    assert!(!enabled(&c, t).await);
    // With a login user it is the default signature.
    let out = db
        .cmd()
        .env("USER", "carol")
        .args(["tenant", "enable", &t.to_string(), "--reason", "r"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_switch_log WHERE changed_by = 'carol'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_global_switch_is_flipped_with_a_reason_and_run_cycle_follows_it() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;

    let out = db
        .cmd()
        .args([
            "agent", "enable", "--by", "alice", "--reason", "go live", "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = json_of(&out);
    assert_eq!(doc["changed"], true);
    assert_eq!(doc["global_enabled"], true);
    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    let cycle = json_of(&out);
    assert_eq!(cycle["disabled"], false, "{cycle}");
    assert_eq!(cycle["tenants"][0]["tenant_id"], t.to_string());

    let out = db
        .cmd()
        .args(["agent", "disable", "--by", "bob", "--reason", "incident 42"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let value: serde_json::Value = c
        .query_one(
            "SELECT value FROM system_config WHERE key = 'agent_config'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(value["global_enabled"], false);
    assert_eq!(value["kill_switch_reason"], "incident 42");
    assert_eq!(value["changed_by"], "bob");
    assert_eq!(value["change_reason"], "incident 42");
    assert!(value["changed_at"].is_string());
    let out = db.cmd().args(["run-cycle", "--json"]).output().unwrap();
    let cycle = json_of(&out);
    assert_eq!(cycle["disabled"], true);
    assert!(
        cycle["reason"].as_str().unwrap().contains("incident 42"),
        "{cycle}"
    );

    let out = db.cmd().args(["agent", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("global switch off (incident 42); last changed by bob"),
        "{text}"
    );
}

#[tokio::test]
async fn a_user_of_the_product_reads_only_its_tenants_switch_history_and_cannot_write_it() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let a = tenant(&c, "A", false).await;
    let b = tenant(&c, "B", false).await;
    for t in [a, b] {
        let out = db
            .cmd()
            .args([
                "tenant",
                "enable",
                &t.to_string(),
                "--by",
                "ops",
                "--reason",
                "r",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
    }
    let user = profile(&c, a).await;
    let u = db.as_authenticated(user).await;
    let seen: Vec<Uuid> = u
        .query("SELECT tenant_id FROM agent_switch_log", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec![a]);
    let e = u
        .execute(
            "INSERT INTO agent_switch_log (tenant_id, agent_enabled, changed_by, reason) VALUES ($1, false, 'me', 'x')",
            &[&a],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "42501", "{e}");
    let anon = db.as_anon().await;
    assert!(anon
        .query("SELECT 1 FROM agent_switch_log", &[])
        .await
        .is_err());
}

#[test]
fn a_bare_autopilot_prints_its_usage_on_stderr_and_exits_2() {
    let out = assert_cmd::Command::new(BIN).env_clear().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Usage: autopilot"), "{err}");
    assert!(err.contains("doctor") && err.contains("tenant"), "{err}");
}

/// SPEC §1: the environment's kill switch fails closed: anything but an explicit off value
/// (`0`, `false`, `off`, `no`, empty) stops run-cycle, as doctor reports it.
#[tokio::test]
async fn the_environment_kill_switch_fails_closed_in_run_cycle_and_doctor_alike() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant(&c, "Acme", true).await;
    for (value, stops) in [
        ("yes", true),
        ("on", true),
        ("TRUE", true),
        ("off", false),
        ("0", false),
        ("", false),
    ] {
        let out = db
            .cmd()
            .args(["run-cycle", "--json"])
            .env("AGENT_KILL_SWITCH", value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{value:?}: {out:?}");
        assert_eq!(
            json_of(&out)["disabled"],
            stops,
            "AGENT_KILL_SWITCH={value:?}"
        );
        let out = db
            .cmd()
            .args(["doctor", "--json"])
            .env("AGENT_KILL_SWITCH", value)
            .output()
            .unwrap();
        let doc = json_of(&out);
        let ks = doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "kill switch")
            .unwrap()
            .clone();
        assert_eq!(ks["status"] == "warn", stops, "{value:?}: {ks}");
    }
}

#[test]
fn every_new_command_help_has_an_example() {
    for cmd in [
        vec!["doctor"],
        vec!["tenant"],
        vec!["tenant", "list"],
        vec!["tenant", "enable"],
        vec!["tenant", "disable"],
        vec!["agent"],
        vec!["agent", "status"],
        vec!["agent", "enable"],
        vec!["agent", "disable"],
    ] {
        let out = assert_cmd::Command::new(BIN)
            .env_clear()
            .args(&cmd)
            .arg("--help")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("autopilot {}", cmd.join(" "))) && text.contains("Example"),
            "{cmd:?} --help has no example: {text}"
        );
    }
}
