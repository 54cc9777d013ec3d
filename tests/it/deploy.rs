//! The deployment examples (deploy/kubernetes, deploy/systemd, crontab.example) say what
//! docs/production.md promises: no overlapping cycles, a hard time limit, more time before
//! SIGKILL than autopilot's SIGTERM grace, secrets never written in a manifest, a hardened
//! unprivileged service. Checked without kubectl or systemd: the YAML is parsed, the unit
//! files and the crontab are read line by line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_norway::Value;

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// The seconds run-cycle gives in-flight tenants after SIGTERM (its `--grace` default).
fn sigterm_grace_secs() -> u64 {
    match autopilot::commands::Cli::parse_from_args(["autopilot", "run-cycle"]) {
        Ok(cli) => match cli.command {
            autopilot::commands::Command::RunCycle(args) => args.grace,
            other => panic!("parsed as {other:?}"),
        },
        Err(code) => panic!("`autopilot run-cycle` did not parse (exit {code})"),
    }
}

// ------------------------------------------------------------------------- Kubernetes

const MANIFEST: &str = "deploy/kubernetes/cronjob.yaml";

/// Every document of the manifest (`---` separated).
fn manifest_documents() -> Vec<Value> {
    let text = read(MANIFEST);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{MANIFEST} does not parse: {e}"))
        })
        .collect()
}

fn document(kind: &str) -> Value {
    let docs = manifest_documents();
    let mut found = docs
        .into_iter()
        .filter(|d| d["kind"].as_str() == Some(kind));
    let doc = found
        .next()
        .unwrap_or_else(|| panic!("{MANIFEST} has no {kind}"));
    assert!(
        found.next().is_none(),
        "{MANIFEST} has more than one {kind}"
    );
    doc
}

/// Follow a dotted path of mapping keys, failing with the path when a key is missing.
fn at<'a>(v: &'a Value, dotted: &str) -> &'a Value {
    dotted.split('.').fold(v, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("{MANIFEST}: missing {dotted} (at {key})"))
    })
}

fn int(v: &Value, dotted: &str) -> i64 {
    at(v, dotted)
        .as_i64()
        .unwrap_or_else(|| panic!("{dotted} is not an integer"))
}

fn text<'a>(v: &'a Value, dotted: &str) -> &'a str {
    at(v, dotted)
        .as_str()
        .unwrap_or_else(|| panic!("{dotted} is not a string"))
}

/// The only container of a pod spec.
fn container(pod_spec: &Value) -> &Value {
    let containers = at(pod_spec, "containers")
        .as_sequence()
        .expect("containers is a list");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// The container's environment by name.
fn env_of(container: &Value) -> BTreeMap<String, Value> {
    at(container, "env")
        .as_sequence()
        .expect("env is a list")
        .iter()
        .map(|e| (text(e, "name").to_string(), e.clone()))
        .collect()
}

fn cronjob_pod_spec(cronjob: &Value) -> &Value {
    at(cronjob, "spec.jobTemplate.spec.template.spec")
}

/// A URL that carries a password: `scheme://user:password@host`.
fn has_credentials(s: &str) -> bool {
    let Some((_, rest)) = s.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .is_some_and(|(_, pw)| !pw.is_empty())
}

#[test]
fn manifest_parses_into_a_cronjob_and_a_migrate_job() {
    let docs = manifest_documents();
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds, ["CronJob", "Job"]);
    for d in &docs {
        assert_eq!(d["apiVersion"].as_str(), Some("batch/v1"));
    }
    let job = document("Job");
    let args: Vec<&str> = at(container(at(&job, "spec.template.spec")), "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args.first(), Some(&"migrate"));
}

#[test]
fn cronjob_runs_run_cycle_hourly_and_never_two_at_once() {
    let cj = document("CronJob");
    assert_eq!(text(&cj, "spec.schedule"), "5 * * * *");
    assert_eq!(text(&cj, "spec.concurrencyPolicy"), "Forbid");
    assert!(int(&cj, "spec.startingDeadlineSeconds") > 0);
    let c = container(cronjob_pod_spec(&cj));
    let args: Vec<&str> = at(c, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run-cycle", "--json"]);
}

#[test]
fn cronjob_is_stopped_within_the_hour_and_not_retried() {
    let cj = document("CronJob");
    let deadline = int(&cj, "spec.jobTemplate.spec.activeDeadlineSeconds");
    let grace = int(cronjob_pod_spec(&cj), "terminationGracePeriodSeconds");
    assert!(
        deadline > 0 && deadline + grace < 3600,
        "a cycle must be gone before the next hour's"
    );
    assert_eq!(int(&cj, "spec.jobTemplate.spec.backoffLimit"), 0);
    assert_eq!(text(cronjob_pod_spec(&cj), "restartPolicy"), "Never");
}

#[test]
fn pods_get_more_time_before_sigkill_than_the_sigterm_grace() {
    let grace = sigterm_grace_secs() as i64;
    assert_eq!(grace, 10, "docs and manifests describe a 10 s grace");
    let cj = document("CronJob");
    assert!(int(cronjob_pod_spec(&cj), "terminationGracePeriodSeconds") > grace);
    let job = document("Job");
    assert!(
        int(
            at(&job, "spec.template.spec"),
            "terminationGracePeriodSeconds"
        ) > grace
    );
}

#[test]
fn pods_run_as_non_root_on_a_read_only_root_with_resources() {
    let cj = document("CronJob");
    let job = document("Job");
    for pod in [cronjob_pod_spec(&cj), at(&job, "spec.template.spec")] {
        assert_eq!(
            at(pod, "securityContext.runAsNonRoot").as_bool(),
            Some(true)
        );
        let c = container(pod);
        assert_eq!(
            at(c, "securityContext.readOnlyRootFilesystem").as_bool(),
            Some(true)
        );
        assert_eq!(
            at(c, "securityContext.allowPrivilegeEscalation").as_bool(),
            Some(false)
        );
        assert!(at(c, "resources.requests.memory").as_str().is_some());
        assert!(at(c, "resources.limits.memory").as_str().is_some());
    }
}

#[test]
fn secrets_are_referenced_through_secret_key_refs_never_written() {
    let cj = document("CronJob");
    let env = env_of(container(cronjob_pod_spec(&cj)));
    for name in ["DATABASE_URL", "SMTP_URL"] {
        let var = env
            .get(name)
            .unwrap_or_else(|| panic!("CronJob sets no {name}"));
        assert!(
            var.get("value").is_none(),
            "{name} is written in the manifest"
        );
        assert!(!text(var, "valueFrom.secretKeyRef.name").is_empty());
        assert!(!text(var, "valueFrom.secretKeyRef.key").is_empty());
    }
    assert!(env.contains_key("EMAIL_FROM"));

    for doc in manifest_documents() {
        let pod = if doc["kind"].as_str() == Some("CronJob") {
            cronjob_pod_spec(&doc).clone()
        } else {
            at(&doc, "spec.template.spec").clone()
        };
        for (name, var) in env_of(container(&pod)) {
            let secret_like = ["PASSWORD", "SECRET", "TOKEN", "_URL"]
                .iter()
                .any(|s| name.contains(s));
            if secret_like {
                assert!(
                    var.get("valueFrom").is_some(),
                    "{name} must come from a Secret"
                );
            }
            if let Some(value) = var.get("value").and_then(Value::as_str) {
                assert!(
                    !has_credentials(value),
                    "{name} carries a password in the manifest"
                );
            }
        }
    }
    assert_no_password_written(MANIFEST);
}

/// Not even the comments of a deployment file hold a real credential: placeholders are "...".
fn assert_no_password_written(rel: &str) {
    for line in read(rel).lines() {
        for word in line.split(['\'', '"', ' ']) {
            if has_credentials(word) {
                let authority = word
                    .split_once("://")
                    .unwrap()
                    .1
                    .split(['/', '?'])
                    .next()
                    .unwrap();
                let pw = authority
                    .rsplit_once('@')
                    .unwrap()
                    .0
                    .split_once(':')
                    .unwrap()
                    .1;
                assert_eq!(pw, "...", "a password is written in {rel}: {line}");
            }
        }
    }
}

const INDEXED: &str = "deploy/kubernetes/cronjob-indexed.yaml";

/// The sharded variant's only document, a CronJob.
fn indexed_cronjob() -> Value {
    let text = read(INDEXED);
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{INDEXED}: {e}")))
        .collect();
    assert_eq!(docs.len(), 1, "{INDEXED} holds the CronJob only");
    assert_eq!(docs[0]["kind"].as_str(), Some("CronJob"));
    assert_eq!(docs[0]["apiVersion"].as_str(), Some("batch/v1"));
    docs[0].clone()
}

#[test]
fn indexed_cronjob_runs_one_pod_per_shard_with_the_shard_count_in_its_env() {
    let cj = indexed_cronjob();
    let job = at(&cj, "spec.jobTemplate.spec");
    assert_eq!(text(job, "completionMode"), "Indexed");
    let completions = int(job, "completions");
    assert!(completions > 1);
    assert_eq!(int(job, "parallelism"), completions, "every shard at once");
    let c = container(cronjob_pod_spec(&cj));
    let env = env_of(c);
    let shards = env
        .get("AUTOPILOT_SHARDS")
        .and_then(|e| e["value"].as_str())
        .expect("AUTOPILOT_SHARDS is set");
    assert_eq!(shards, completions.to_string());
    assert!(
        !env.contains_key("JOB_COMPLETION_INDEX"),
        "the index comes from Kubernetes, per pod"
    );
    let args: Vec<&str> = at(c, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run-cycle", "--json"]);
}

#[test]
fn indexed_cronjob_keeps_the_hourly_rules_and_writes_no_secret() {
    let cj = indexed_cronjob();
    assert_eq!(text(&cj, "spec.schedule"), "5 * * * *");
    assert_eq!(text(&cj, "spec.concurrencyPolicy"), "Forbid");
    let deadline = int(&cj, "spec.jobTemplate.spec.activeDeadlineSeconds");
    let grace = int(cronjob_pod_spec(&cj), "terminationGracePeriodSeconds");
    assert!(deadline > 0 && deadline + grace < 3600);
    assert_eq!(int(&cj, "spec.jobTemplate.spec.backoffLimit"), 0);
    let env = env_of(container(cronjob_pod_spec(&cj)));
    assert!(env["DATABASE_URL"].get("valueFrom").is_some());
    assert!(env["DATABASE_URL"].get("value").is_none());
    assert_eq!(
        at(cronjob_pod_spec(&cj), "securityContext.runAsNonRoot").as_bool(),
        Some(true)
    );
    assert_no_password_written(INDEXED);
}

#[test]
fn migrate_job_uses_a_direct_connection_and_says_why() {
    let job = document("Job");
    let env = env_of(container(at(&job, "spec.template.spec")));
    let key = text(&env["DATABASE_URL"], "valueFrom.secretKeyRef.key");
    assert!(
        key.contains("direct"),
        "migrate's URL must bypass the pooler, got key {key}"
    );
    let manifest = read(MANIFEST);
    let job_part = manifest[manifest.rfind("\n---").expect("two documents")..].to_lowercase();
    assert!(
        job_part.contains("direct connection"),
        "the Job says it needs a direct connection"
    );
    assert!(
        job_part.contains("pooler"),
        "the Job names the pooler it must avoid"
    );
}

// ---------------------------------------------------------------------------- systemd

/// `Key=Value` lines of one `[Section]` of a unit file (repeated keys kept in order).
fn unit_section(rel: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in read(rel).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            current = line[1..line.len() - 1].to_string();
            continue;
        }
        if current == section {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{rel}: not Key=Value: {line}"));
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    assert!(!out.is_empty(), "{rel} has no [{section}] section");
    out
}

fn unit_value<'a>(section: &'a [(String, String)], key: &str) -> Option<&'a str> {
    section
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A systemd time span such as `30s`, `55min`, `1h 5min` or `90` (seconds), in seconds.
fn timespan_secs(s: &str) -> u64 {
    s.split_whitespace()
        .map(|part| {
            let split = part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len());
            let (n, unit) = part.split_at(split);
            let n: u64 = n.parse().unwrap_or_else(|_| panic!("bad time span {s}"));
            n * match unit {
                "" | "s" | "sec" | "second" | "seconds" => 1,
                "m" | "min" | "minute" | "minutes" => 60,
                "h" | "hr" | "hour" | "hours" => 3600,
                other => panic!("unit {other} in time span {s} not understood by this test"),
            }
        })
        .sum()
}

#[test]
fn service_is_a_oneshot_run_cycle_with_the_env_file() {
    let s = unit_section("deploy/systemd/autopilot.service", "Service");
    assert_eq!(unit_value(&s, "Type"), Some("oneshot"));
    assert_eq!(
        unit_value(&s, "EnvironmentFile"),
        Some("/etc/autopilot/env")
    );
    let exec = unit_value(&s, "ExecStart").expect("ExecStart");
    assert!(
        exec.starts_with("/usr/local/bin/autopilot run-cycle"),
        "{exec}"
    );
    assert_no_password_written("deploy/systemd/autopilot.service");
}

#[test]
fn service_is_stopped_within_the_hour_with_more_than_the_grace_before_sigkill() {
    let s = unit_section("deploy/systemd/autopilot.service", "Service");
    let start = timespan_secs(unit_value(&s, "TimeoutStartSec").expect("TimeoutStartSec"));
    let stop = timespan_secs(unit_value(&s, "TimeoutStopSec").expect("TimeoutStopSec"));
    assert_eq!(unit_value(&s, "KillSignal"), Some("SIGTERM"));
    assert!(
        stop > sigterm_grace_secs(),
        "TimeoutStopSec {stop}s must exceed the SIGTERM grace"
    );
    assert!(
        start > 0 && start + stop < 3600,
        "a cycle must be gone before the next hour's"
    );
}

#[test]
fn service_is_hardened_and_unprivileged() {
    let s = unit_section("deploy/systemd/autopilot.service", "Service");
    let unprivileged = unit_value(&s, "DynamicUser") == Some("yes")
        || unit_value(&s, "User").is_some_and(|u| u != "root" && u != "0");
    assert!(unprivileged, "DynamicUser=yes or a dedicated User=");
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(unit_value(&s, key), Some(want), "{key}");
    }
}

#[test]
fn timer_is_hourly_persistent_and_randomized() {
    let t = unit_section("deploy/systemd/autopilot.timer", "Timer");
    assert_eq!(unit_value(&t, "OnCalendar"), Some("hourly"));
    assert_eq!(unit_value(&t, "Persistent"), Some("true"));
    let delay = timespan_secs(unit_value(&t, "RandomizedDelaySec").expect("RandomizedDelaySec"));
    assert!(delay > 0 && delay <= 300, "RandomizedDelaySec {delay}s");
    let install = unit_section("deploy/systemd/autopilot.timer", "Install");
    assert_eq!(unit_value(&install, "WantedBy"), Some("timers.target"));
}

// ------------------------------------------------------------------------------- cron

#[test]
fn crontab_example_locks_and_time_limits_every_job() {
    let text = read("crontab.example");
    let jobs: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        // Variable assignments (SHELL=, PATH=, MAILTO=) are not jobs.
        .filter(|l| !l.split_whitespace().next().unwrap_or("").contains('='))
        .collect();
    assert!(!jobs.is_empty(), "crontab.example has no job");
    for job in &jobs {
        assert!(job.contains("flock "), "no lock: {job}");
        assert!(job.contains("timeout "), "no time limit: {job}");
        assert!(
            job.contains("/etc/autopilot/env"),
            "secrets must come from the env file: {job}"
        );
    }
    let cycle = jobs
        .iter()
        .find(|j| j.contains("run-cycle"))
        .expect("a run-cycle job");
    assert!(
        cycle.contains("flock -n "),
        "an overlapping cycle must be skipped, not queued: {cycle}"
    );
    assert_no_password_written("crontab.example");
}
