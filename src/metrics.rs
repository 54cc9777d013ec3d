//! Prometheus metrics of `run-cycle` (`--metrics-file`, env `AUTOPILOT_METRICS_FILE`) in
//! the text exposition format, for node_exporter's textfile collector.
//!
//! Owns the rendering (pure: [`render`]) and the atomic replacement of the file
//! ([`write_atomically`]): the collector may read the file at any moment, so it must only
//! ever see a complete old file or a complete new one. Each invocation is a new process, so
//! the one value that outlives it (the last success) is read back from the previous file.

use std::io::Write;
use std::path::{Path, PathBuf};

// Statements outside a transaction go through Sql for their bounded wait (crate::deadline).
#[allow(unused_imports)]
use crate::db::Sql;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

use crate::Context;

const OPEN_ALERTS: &str = crate::sql!("metrics/open_alerts");

const LAST_SUCCESS: &str = "autopilot_last_success_timestamp_seconds";
pub const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];
pub const STATUSES: [&str; 4] = ["completed", "failed", "timeout", "skipped"];

/// Unacknowledged alerts of all tenants, by severity (info, warning, critical).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenAlerts {
    pub info: i64,
    pub warning: i64,
    pub critical: i64,
}

/// Everything one metrics file says.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub now: DateTime<Utc>,
    pub disabled: bool,
    pub duration_ms: u64,
    /// Tenants per status, in the order of [`STATUSES`].
    pub tenants: [u64; 4],
    pub planned: i64,
    pub executed: i64,
    pub blocked: i64,
    pub emails_sent: i64,
    pub cards_created: i64,
    /// None when the database could not be asked (the lines are left out, not faked as 0).
    pub open_alerts: Option<OpenAlerts>,
    /// Seconds since the epoch of the last cycle without a failed tenant, if any.
    pub last_success: Option<f64>,
}

/// A finished cycle as the metrics file counts it, filled in by `run-cycle`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleTotals {
    /// The agent was switched off: nothing ran.
    pub disabled: bool,
    pub duration_ms: u64,
    /// Tenants per status, in the order of [`STATUSES`].
    pub tenants: [u64; 4],
    pub planned: i64,
    pub executed: i64,
    pub blocked: i64,
    pub emails_sent: i64,
    pub cards_created: i64,
    /// The cycle's tenants, for their mail feedback gauges.
    pub tenant_ids: Vec<uuid::Uuid>,
}

impl Sample {
    /// From a cycle's totals; the last success advances only when no tenant failed or timed
    /// out and the agent actually ran (a disabled agent has not succeeded at anything).
    pub fn from_totals(
        totals: &CycleTotals,
        now: DateTime<Utc>,
        open_alerts: Option<OpenAlerts>,
        previous_success: Option<f64>,
    ) -> Sample {
        let succeeded = !totals.disabled && totals.tenants[1] == 0 && totals.tenants[2] == 0;
        Sample {
            now,
            disabled: totals.disabled,
            duration_ms: totals.duration_ms,
            tenants: totals.tenants,
            planned: totals.planned,
            executed: totals.executed,
            blocked: totals.blocked,
            emails_sent: totals.emails_sent,
            cards_created: totals.cards_created,
            open_alerts,
            last_success: if succeeded {
                Some(epoch_seconds(now))
            } else {
                previous_success
            },
        }
    }
}

fn epoch_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The text exposition format (version 0.0.4) of a sample.
pub fn render(s: &Sample) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    family(
        "autopilot_last_run_timestamp_seconds",
        "gauge",
        "When the last run-cycle finished (seconds since the epoch).",
        &one(epoch_seconds(s.now)),
    );
    if let Some(ts) = s.last_success {
        family(
            LAST_SUCCESS,
            "gauge",
            "When the last run-cycle without a failed or timed-out tenant finished (seconds since the epoch).",
            &one(ts),
        );
    }
    family(
        "autopilot_disabled",
        "gauge",
        "1 when the global kill switch stopped the last run-cycle, else 0.",
        &one(if s.disabled { 1.0 } else { 0.0 }),
    );
    family(
        "autopilot_cycle_duration_seconds",
        "gauge",
        "Wall-clock duration of the last run-cycle.",
        &one(s.duration_ms as f64 / 1000.0),
    );
    let by_status: Vec<(String, f64)> = STATUSES
        .iter()
        .zip(s.tenants)
        .map(|(st, n)| (format!("{{status=\"{st}\"}}"), n as f64))
        .collect();
    family(
        "autopilot_tenants",
        "gauge",
        "Tenants of the last run-cycle by outcome.",
        &by_status,
    );
    // A gauge (the last cycle's figure, not a running count), so no `_total` suffix:
    // promtool's lint reserves it for counters.
    family(
        "autopilot_cycle_actions",
        "gauge",
        "Actions of the last run-cycle by kind (planned, executed, blocked), summed over its tenants.",
        &[
            ("{kind=\"planned\"}".to_string(), s.planned as f64),
            ("{kind=\"executed\"}".to_string(), s.executed as f64),
            ("{kind=\"blocked\"}".to_string(), s.blocked as f64),
        ],
    );
    family(
        "autopilot_emails_sent",
        "gauge",
        "E-mails sent by the last run-cycle.",
        &one(s.emails_sent as f64),
    );
    family(
        "autopilot_cards_created",
        "gauge",
        "Cards created by the last run-cycle.",
        &one(s.cards_created as f64),
    );
    if let Some(a) = s.open_alerts {
        family(
            "autopilot_open_alerts",
            "gauge",
            "Unacknowledged alerts of all tenants by severity.",
            &[
                ("{severity=\"info\"}".to_string(), a.info as f64),
                ("{severity=\"warning\"}".to_string(), a.warning as f64),
                ("{severity=\"critical\"}".to_string(), a.critical as f64),
            ],
        );
    }
    out
}

/// The last-success timestamp of an earlier file at `path`, if it holds one.
pub fn previous_last_success(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(LAST_SUCCESS)?.strip_prefix(' ')?;
        rest.trim().parse::<f64>().ok().filter(|v| v.is_finite())
    })
}

/// Replace `path` with `text` so that a reader sees the old or the new file, never a part:
/// write a temporary file in the same directory (same file system, so the rename is
/// atomic; its name does not end in `.prom`, so the collector ignores it), fsync it, rename
/// it over `path`, then fsync the directory so the rename survives a crash.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?
        .to_string_lossy()
        .to_string();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> Result<()> {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

async fn open_alerts(ctx: &Context) -> Result<OpenAlerts> {
    let pool = ctx.db.pool(1)?;
    let conn = crate::db::get(&pool, &ctx.db).await?;
    let rows = conn
        .query(OPEN_ALERTS, &[])
        .await
        .context("counting open alerts")?;
    let mut a = OpenAlerts::default();
    for r in rows {
        let severity: String = r.get(0);
        let n: i64 = r.get(1);
        match severity.as_str() {
            "info" => a.info = n,
            "warning" => a.warning = n,
            "critical" => a.critical = n,
            _ => {}
        }
    }
    Ok(a)
}

/// Per-tenant reply, bounce and complaint gauges of the cycle's tenants (see
/// `inbound::feedback`); left out, not faked, when the database cannot be asked.
async fn mail_feedback_text(ctx: &Context, ids: &[uuid::Uuid]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let read = async {
        let pool = ctx.db.pool(1)?;
        let conn = crate::db::get(&pool, &ctx.db).await?;
        crate::inbound::feedback::for_tenants(&*conn, ids, ctx.now()).await
    };
    match read.await {
        Ok(list) => crate::inbound::feedback::metrics_text(&list),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "metrics: mail feedback rates left out");
            String::new()
        }
    }
}

/// Called by `run-cycle` once its report is built, when a metrics file is configured (and
/// it is no `--dry-run`, which writes nothing): writes the file. A failure is logged and does not
/// change the cycle's exit code: the cycle's work is done and recorded in the database, and
/// a stale file is what the staleness alert on `autopilot_last_run_timestamp_seconds` is for.
pub async fn after_cycle(ctx: &Context, path: &Path, totals: &CycleTotals) {
    let alerts = match open_alerts(ctx).await {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "metrics: open alerts left out");
            None
        }
    };
    let sample = Sample::from_totals(totals, ctx.now(), alerts, previous_last_success(path));
    let mut text = render(&sample);
    text.push_str(&mail_feedback_text(ctx, &totals.tenant_ids).await);
    if let Err(e) = write_atomically(path, &text) {
        tracing::error!(error = %format!("{e:#}"), path = %path.display(), "writing the metrics file failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            now: DateTime::parse_from_rfc3339("2025-01-02T03:04:05.5Z")
                .unwrap()
                .with_timezone(&Utc),
            disabled: false,
            duration_ms: 1500,
            tenants: [2, 1, 0, 3],
            planned: 7,
            executed: 5,
            blocked: 2,
            emails_sent: 1,
            cards_created: 4,
            open_alerts: Some(OpenAlerts {
                info: 0,
                warning: 2,
                critical: 1,
            }),
            last_success: Some(1_700_000_000.0),
        }
    }

    #[test]
    fn rendered_sample_has_one_help_and_type_per_family_and_float_values() {
        let text = render(&sample());
        assert!(text.contains("autopilot_last_run_timestamp_seconds 1735787045.5\n"));
        assert!(text.contains("autopilot_cycle_duration_seconds 1.5\n"));
        assert!(text.contains("autopilot_tenants{status=\"failed\"} 1\n"));
        assert!(text.contains("autopilot_open_alerts{severity=\"critical\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert_eq!(text.matches("# TYPE autopilot_tenants gauge").count(), 1);
    }

    /// promtool's lint rules, for the families this file can hold: a `_total` suffix only
    /// on counters, snake_case names with the unit (seconds) at the end, HELP text for all.
    #[test]
    fn every_family_follows_the_prometheus_naming_rules() {
        let text = render(&sample());
        let mut types = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                types += 1;
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
                assert!(name.starts_with("autopilot_"), "{line}");
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{line}"
                );
                for bad in ["_ms", "_millis", "_milliseconds", "_minutes", "_hours"] {
                    assert!(!name.contains(bad), "not a base unit: {line}");
                }
                assert!(
                    text.contains(&format!("# HELP {name} ")),
                    "no HELP for {name}"
                );
            }
        }
        assert_eq!(types, 9, "{text}");
    }

    #[test]
    fn last_success_is_omitted_when_never_succeeded() {
        let text = render(&Sample {
            last_success: None,
            ..sample()
        });
        assert!(!text.contains(LAST_SUCCESS));
    }
}
