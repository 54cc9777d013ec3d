//! `run-cycle --shard I/N` and a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX` with
//! `AUTOPILOT_SHARDS`: N shards cover every enabled tenant exactly once, the environment
//! selects the same shard as the flag, and bad shard input is refused (exit 2) before
//! anything is written.

use std::collections::BTreeSet;

use crate::common::*;
use uuid::Uuid;

/// The tenants a dry run of shard `i` of `n` would run (a dry run writes nothing).
fn shard_tenants(db: &TestDb, envs: &[(&str, &str)], args: &[&str]) -> Vec<Uuid> {
    let mut cmd = db.cmd();
    cmd.args(["run-cycle", "--dry-run", "--json"]).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out)["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant_id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn n_shards_cover_every_enabled_tenant_exactly_once() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let mut enabled = BTreeSet::new();
    for i in 0..40 {
        enabled.insert(tenant(&c, &format!("Tenant {i}"), true).await);
    }
    tenant(&c, "Disabled", false).await;

    for n in [1u32, 3, 4] {
        let mut seen: Vec<Uuid> = Vec::new();
        for i in 0..n {
            let got = shard_tenants(&db, &[], &["--shard", &format!("{i}/{n}")]);
            assert!(!got.is_empty() || n == 1, "shard {i}/{n} is empty");
            seen.extend(got);
        }
        let distinct: BTreeSet<Uuid> = seen.iter().copied().collect();
        assert_eq!(seen.len(), distinct.len(), "a tenant in two shards of {n}");
        assert_eq!(distinct, enabled, "{n} shards cover every enabled tenant");
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        0
    );
}

#[tokio::test]
async fn an_indexed_job_pod_runs_the_shard_of_its_completion_index() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    for i in 0..12 {
        tenant(&c, &format!("Tenant {i}"), true).await;
    }
    for i in 0..3 {
        let by_flag = shard_tenants(&db, &[], &["--shard", &format!("{i}/3")]);
        let by_env = shard_tenants(
            &db,
            &[
                ("JOB_COMPLETION_INDEX", &i.to_string()),
                ("AUTOPILOT_SHARDS", "3"),
            ],
            &[],
        );
        assert_eq!(by_flag, by_env, "shard {i}/3");
    }
}

#[tokio::test]
async fn bad_shard_input_exits_2_and_writes_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant(&c, "Only", true).await;
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Env, Vec<String>)> = vec![
        (vec![], vec!["--shard".into(), "3/3".into()]),
        (vec![], vec!["--shard".into(), "1".into()]),
        (
            vec![],
            vec![
                "--shard".into(),
                "0/2".into(),
                "--tenant".into(),
                t.to_string(),
            ],
        ),
        (vec![("JOB_COMPLETION_INDEX", "0")], vec![]),
        (
            vec![("JOB_COMPLETION_INDEX", "4"), ("AUTOPILOT_SHARDS", "4")],
            vec![],
        ),
    ];
    for (envs, args) in cases {
        let mut cmd = db.cmd();
        cmd.arg("run-cycle").args(&args);
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{envs:?} {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error"), "{envs:?} {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        0
    );
}
