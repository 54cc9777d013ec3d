//! `run-cycle --metrics-file`: the Prometheus text file after real cycles (parsed with a
//! small exposition-format parser), its atomic replacement, the last success kept across
//! failed cycles, and the kill switch.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;

/// `name{labels}` → value, parsed strictly: every line is a `# HELP`/`# TYPE` comment or
/// `name{k="v",…} value` with a float value; every sample's family has HELP and TYPE.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut help = Vec::new();
    let mut types = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            types.push(parts.next().unwrap().to_string());
            let kind = parts.next().unwrap_or("");
            assert!(
                ["gauge", "counter", "untyped"].contains(&kind),
                "bad TYPE line: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.trim().is_empty(),
            "unexpected line: {line:?}"
        );
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value is not a float: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name.chars().next().unwrap().is_ascii_alphabetic()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                for pair in inner.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "bad label name: {line}"
                    );
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "unquoted label value: {line}"
                    );
                }
            }
        }
        assert!(
            help.iter().any(|h| h == name) && types.iter().any(|t| t == name),
            "{name} has no HELP/TYPE before it"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

fn read(path: &Path) -> BTreeMap<String, f64> {
    parse(&std::fs::read_to_string(path).unwrap())
}

#[cfg(unix)]
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

const T1: &str = "2030-01-01T10:00:00Z";
const T1_SECS: f64 = 1_893_492_000.0;
const T2: &str = "2030-01-01T11:00:00Z";
const T2_SECS: f64 = 1_893_495_600.0;

#[tokio::test]
async fn run_cycle_writes_a_parseable_metrics_file_with_this_cycles_figures() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Acme", 3, false).await;
    let _idle = tenant(&c, "Idle", true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autopilot.prom");

    let out = db
        .cmd()
        .args(["run-cycle", "--json", "--now", T1, "--metrics-file"])
        .arg(&path)
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = read(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("# TYPE autopilot_open_alerts gauge"),
        "{text}"
    );
    assert_eq!(m["autopilot_last_run_timestamp_seconds"], T1_SECS);
    assert_eq!(m["autopilot_last_success_timestamp_seconds"], T1_SECS);
    assert_eq!(m["autopilot_disabled"], 0.0);
    assert!(m["autopilot_cycle_duration_seconds"] > 0.0);
    assert_eq!(m["autopilot_tenants{status=\"completed\"}"], 2.0);
    assert_eq!(m["autopilot_tenants{status=\"failed\"}"], 0.0);
    assert_eq!(m["autopilot_tenants{status=\"timeout\"}"], 0.0);
    assert_eq!(m["autopilot_tenants{status=\"skipped\"}"], 0.0);
    // Three follow-up drafts for Acme's three overdue contacts, nothing for Idle.
    assert_eq!(m["autopilot_cycle_actions{kind=\"planned\"}"], 3.0);
    assert_eq!(m["autopilot_cycle_actions{kind=\"executed\"}"], 3.0);
    assert_eq!(m["autopilot_cycle_actions{kind=\"blocked\"}"], 0.0);
    assert_eq!(m["autopilot_cards_created"], 3.0);
    assert_eq!(m["autopilot_emails_sent"], 0.0);
    // Acme's compliance is 0 %: the cycle opened exactly one warning alert.
    let open: Vec<(String, i64)> = c
        .query(
            "SELECT severity, count(*) FROM agent_alerts WHERE NOT acknowledged GROUP BY severity",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(open, [("warning".to_string(), 1)], "tenant {t}");
    assert_eq!(m["autopilot_open_alerts{severity=\"warning\"}"], 1.0);
    assert_eq!(m["autopilot_open_alerts{severity=\"critical\"}"], 0.0);
    assert_eq!(m["autopilot_open_alerts{severity=\"info\"}"], 0.0);
}

/// `promtool check metrics` (Prometheus's own linter, from Debian's `prometheus` package,
/// installed by scripts/promtool when missing) accepts the file of a working cycle and of
/// a cycle stopped by the kill switch.
#[tokio::test]
async fn the_metrics_file_passes_promtool_check_metrics() {
    let db = TestDb::new().await;
    let c = db.client().await;
    tenant(&c, "Acme", true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autopilot.prom");
    let promtool = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/promtool");
    for enable in [false, true] {
        if enable {
            enable_agent_globally(&c).await;
        }
        db.cmd()
            .args(["run-cycle", "--metrics-file"])
            .arg(&path)
            .assert()
            .success();
        let out = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&path).unwrap()
        );
    }
}

#[tokio::test]
async fn an_existing_metrics_file_is_replaced_whole_and_no_temp_file_is_left() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant(&c, "Acme", true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autopilot.prom");
    std::fs::write(&path, "stale_metric 42\n").unwrap();
    // A reader that opened the old file keeps reading it whole: the new file is renamed
    // over the name (a new inode), the old one is never rewritten in place.
    let reader = tempfile::tempdir().unwrap();
    let old_view = reader.path().join("old.prom");
    std::fs::hard_link(&path, &old_view).ok();
    let old_inode = inode(&path);

    for now in [T1, T2] {
        db.cmd()
            .args(["run-cycle", "--now", now, "--metrics-file"])
            .arg(&path)
            .assert()
            .success();
    }

    assert_eq!(dir_entries(dir.path()), ["autopilot.prom"]);
    assert_ne!(inode(&path), old_inode);
    if old_view.exists() {
        assert_eq!(
            std::fs::read_to_string(&old_view).unwrap(),
            "stale_metric 42\n"
        );
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("stale_metric"), "{text}");
    assert_eq!(
        text.matches("# TYPE autopilot_last_run_timestamp_seconds")
            .count(),
        1,
        "{text}"
    );
    let m = read(&path);
    assert_eq!(m["autopilot_last_run_timestamp_seconds"], T2_SECS);
    assert_eq!(m["autopilot_last_success_timestamp_seconds"], T2_SECS);
}

#[tokio::test]
async fn a_failed_cycle_keeps_the_previous_last_success() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant(&c, "Acme", true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autopilot.prom");
    db.cmd()
        .args(["run-cycle", "--now", T1, "--metrics-file"])
        .arg(&path)
        .assert()
        .success();
    c.execute(
        "UPDATE tenants SET agent_settings = '{\"max_emails_per_hour\": \"lots\"}' WHERE id = $1",
        &[&t],
    )
    .await
    .unwrap();

    let out = db
        .cmd()
        .args(["run-cycle", "--now", T2, "--metrics-file"])
        .arg(&path)
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    let m = read(&path);
    assert_eq!(m["autopilot_last_run_timestamp_seconds"], T2_SECS);
    assert_eq!(m["autopilot_last_success_timestamp_seconds"], T1_SECS);
    assert_eq!(m["autopilot_tenants{status=\"failed\"}"], 1.0);
    assert_eq!(m["autopilot_tenants{status=\"completed\"}"], 0.0);
    // The bad settings raised a critical alert, counted from the database.
    assert_eq!(m["autopilot_open_alerts{severity=\"critical\"}"], 1.0);
}

#[tokio::test]
async fn last_success_is_absent_until_a_cycle_succeeds() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant_with_settings(
        &c,
        "Broken",
        serde_json::json!({"max_actions_per_cycle": -1}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autopilot.prom");

    let out = db
        .cmd()
        .args(["run-cycle", "--metrics-file"])
        .arg(&path)
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let m = read(&path);
    assert!(m.contains_key("autopilot_last_run_timestamp_seconds"));
    assert!(
        !m.contains_key("autopilot_last_success_timestamp_seconds"),
        "{m:?}"
    );
}

#[tokio::test]
async fn the_kill_switch_writes_disabled_and_runs_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    tenant(&c, "Acme", true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autopilot.prom");

    // Through the environment variable this time.
    db.cmd()
        .args(["run-cycle", "--now", T1])
        .env("AUTOPILOT_METRICS_FILE", &path)
        .assert()
        .success();

    let m = read(&path);
    assert_eq!(m["autopilot_disabled"], 1.0);
    assert_eq!(m["autopilot_last_run_timestamp_seconds"], T1_SECS);
    assert!(!m.contains_key("autopilot_last_success_timestamp_seconds"));
    assert_eq!(m["autopilot_tenants{status=\"completed\"}"], 0.0);
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        0
    );
}

#[tokio::test]
async fn dry_run_writes_no_metrics_file() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant(&c, "Acme", true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autopilot.prom");

    db.cmd()
        .args(["run-cycle", "--dry-run", "--metrics-file"])
        .arg(&path)
        .assert()
        .success();

    assert!(dir_entries(dir.path()).is_empty());
}

#[tokio::test]
async fn a_metrics_file_in_a_missing_directory_exits_2_before_any_write() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    tenant(&c, "Acme", true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("autopilot.prom");

    let out = db
        .cmd()
        .args(["run-cycle", "--metrics-file"])
        .arg(&path)
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        0
    );
}
