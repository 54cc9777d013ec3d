//! `autopilot run-cycle`: its arguments, handed to `cycle`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use uuid::Uuid;

use crate::cycle::{CycleOptions, Trigger};
use crate::Context;

#[derive(Debug, Args, Clone)]
pub struct RunCycleArgs {
    /// Only these tenants (repeatable); each must exist.
    #[arg(long = "tenant", value_name = "UUID")]
    pub tenants: Vec<Uuid>,
    /// Tenants run at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Lease length in seconds; the lease is renewed every lease/3 seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(3..=86_400))]
    pub lease: u64,
    /// A tenant's cycle is stopped and marked `timeout` after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub tenant_timeout: u64,
    /// Run at most this many tenants.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tenants: Option<u32>,
    /// What started this cycle (recorded on the run).
    #[arg(long, value_enum, default_value_t = TriggerArg::Scheduled)]
    pub trigger: TriggerArg,
    /// Run only shard I of N (0 <= I < N) of the enabled tenants, split by a stable hash of
    /// the tenant id, so N runners share an installation. In a Kubernetes Indexed Job the
    /// default is JOB_COMPLETION_INDEX of AUTOPILOT_SHARDS.
    #[arg(long, value_name = "I/N", value_parser = crate::shard::parse_shard, conflicts_with = "tenants")]
    pub shard: Option<crate::shard::Shard>,
    /// Print the plan per tenant and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Seconds in-flight tenants get after SIGTERM/SIGINT before they are marked failed.
    #[arg(long, value_name = "SECS", default_value_t = 10, hide = true)]
    pub grace: u64,
    /// Write Prometheus metrics to this file (atomically) for node_exporter's textfile
    /// collector; its directory must exist.
    #[arg(long, value_name = "PATH", env = "AUTOPILOT_METRICS_FILE", value_parser = parse_metrics_path)]
    pub metrics_file: Option<PathBuf>,
    /// Run tenants whose cycle already completed in this hour (the hourly cadence is
    /// otherwise kept whatever the number of runners and their starts).
    #[arg(long)]
    pub force: bool,
    /// The whole invocation's time limit: past it no tenant starts and in-flight tenants
    /// are stopped (`timeout`). Keep it below the cron period.
    #[arg(long, value_name = "SECS", env = "AUTOPILOT_DEADLINE", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub deadline: u64,
    /// How long a lost database connection is retried (with backoff) before the invocation
    /// gives up with exit 75; tenants it could not finish are left for the next run.
    #[arg(long, value_name = "SECS", env = "AUTOPILOT_RETRY_WINDOW", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub retry_window: u64,
}

/// `--trigger`, as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TriggerArg {
    #[default]
    Scheduled,
    Manual,
    Event,
}

impl From<TriggerArg> for Trigger {
    fn from(t: TriggerArg) -> Trigger {
        match t {
            TriggerArg::Scheduled => Trigger::Scheduled,
            TriggerArg::Manual => Trigger::Manual,
            TriggerArg::Event => Trigger::Event,
        }
    }
}

impl From<RunCycleArgs> for CycleOptions {
    fn from(a: RunCycleArgs) -> CycleOptions {
        CycleOptions {
            tenants: a.tenants,
            concurrency: a.concurrency,
            lease: a.lease,
            tenant_timeout: a.tenant_timeout,
            max_tenants: a.max_tenants,
            trigger: a.trigger.into(),
            shard: a.shard,
            dry_run: a.dry_run,
            json: a.json,
            grace: a.grace,
            metrics_file: a.metrics_file,
            force: a.force,
            deadline: a.deadline,
            retry_window: a.retry_window,
        }
    }
}

pub(super) async fn run(ctx: &Context, args: RunCycleArgs) -> Result<u8> {
    crate::cycle::run(ctx, &args.into()).await
}

/// The metrics file's directory must exist (the file is renamed into it), and the path
/// must not be a directory: refused before anything runs.
fn parse_metrics_path(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if s.is_empty() || p.file_name().is_none() {
        return Err(format!("'{s}' is not a file path"));
    }
    if p.is_dir() {
        return Err(format!("'{s}' is a directory"));
    }
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "directory '{}' of the metrics file does not exist",
            dir.display()
        ));
    }
    Ok(p)
}
