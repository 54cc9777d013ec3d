//! The command line (SPEC §1): global options and one struct of arguments per command.
//! Values are validated here (UUIDs, ranges) so bad input is refused with exit 2 before
//! anything connects or writes.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::error::Exit;

#[derive(Debug, Parser)]
#[command(
    name = "autopilot",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("AUTOPILOT_GIT_COMMIT"), ")"),
    about = "Hourly autonomous agent of a multi-tenant appraisal-management CRM",
    long_about = None,
    after_help = "Exit codes: 0 success, 1 the work ran and something failed, 2 bad usage or input, 75 database unreachable."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalOpts {
    /// PostgreSQL connection URL; when absent the libpq variables PGHOST, PGPORT, PGUSER,
    /// PGPASSWORD, PGDATABASE, PGSSLMODE, PGSSLROOTCERT are used.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Log format on stderr.
    #[arg(long, env = "AUTOPILOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Pretend the current time is this instant (RFC 3339). For tests and replays.
    #[arg(long, env = "AUTOPILOT_NOW", hide = true, global = true, value_parser = parse_instant)]
    pub now: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the embedded SQL migrations (also: --status, --dry-run)
    #[command(
        after_help = "Example:\n  autopilot migrate --status\n\nNeeds a direct connection (not a transaction-mode pooler): it holds an advisory lock for its whole run."
    )]
    Migrate(MigrateArgs),
    /// Run the Plan → Act → React → Reflect cycle for enabled tenants
    #[command(after_help = "Example:\n  autopilot run-cycle --concurrency 8 --json")]
    RunCycle(RunCycleArgs),
    /// Refresh engagement clocks and report 21-day compliance
    #[command(after_help = "Example:\n  autopilot check-engagement --fail-under 80 --limit 5")]
    CheckEngagement(CheckEngagementArgs),
    /// Validate queued orders, apply safe auto-fixes, record exceptions
    #[command(after_help = "Example:\n  autopilot process-orders --batch 500 --json")]
    ProcessOrders(ProcessOrdersArgs),
    /// Acknowledge one or more alerts
    #[command(
        after_help = "Examples:\n  autopilot ack-alert 6f1c…-… --by <profile id>\n  autopilot ack-alert --tenant <uuid> --all --severity warning"
    )]
    AckAlert(AckAlertArgs),
    /// Show per tenant the last run, the lease, open alerts, compliance and queue depth
    #[command(
        after_help = "Examples:\n  autopilot status\n  autopilot status --tenant <uuid> --json\n\nExits 1 when a reported tenant's last run failed or timed out, or a critical alert is open, so it doubles as a health check."
    )]
    Status(StatusArgs),
    /// Delete agent records older than the retention period, in small batches
    #[command(
        after_help = "Examples:\n  autopilot prune --older-than 90d --dry-run\n  autopilot prune --older-than 30d --json\n\nNever deletes a running run, the run holding a lease, or a tenant's latest run."
    )]
    Prune(PruneArgs),
    /// Print a shell completion script on stdout
    #[command(
        after_help = "Examples:\n  autopilot completions bash > /etc/bash_completion.d/autopilot\n  autopilot completions zsh > \"${fpath[1]}/_autopilot\""
    )]
    Completions(CompletionsArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct MigrateArgs {
    /// List applied and pending migrations, change nothing.
    #[arg(long, conflicts_with = "dry_run")]
    pub status: bool,
    /// List what would be applied, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Trigger {
    #[default]
    Scheduled,
    Manual,
    Event,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::Manual => "manual",
            Trigger::Event => "event",
        }
    }
}

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
    #[arg(long, value_enum, default_value_t = Trigger::Scheduled)]
    pub trigger: Trigger,
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
}

#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// Only these tenants (repeatable); each must exist. Default: every active tenant with
    /// the agent enabled.
    #[arg(long = "tenant", value_name = "UUID")]
    pub tenants: Vec<Uuid>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PruneArgs {
    /// Retention: delete records older than this (e.g. 90d, 12h, 30m).
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_retention)]
    pub older_than: Retention,
    /// Count what would be deleted and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rows deleted per statement (each batch is its own short transaction).
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..=1_000_000), hide = true)]
    pub batch: i64,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// A retention period as given (`90d`) and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub text: String,
    pub duration: chrono::Duration,
}

#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args, Clone)]
pub struct CheckEngagementArgs {
    /// Only these tenants (repeatable); each must exist.
    #[arg(long = "tenant", value_name = "UUID")]
    pub tenants: Vec<Uuid>,
    /// Violations listed per tenant.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Exit 1 when a reported tenant's compliance rate is below PCT.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub fail_under: Option<f64>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ProcessOrdersArgs {
    /// Only these tenants (repeatable); each must exist.
    #[arg(long = "tenant", value_name = "UUID")]
    pub tenants: Vec<Uuid>,
    /// Queue entries validated per batch (one transaction).
    #[arg(long, default_value_t = crate::orders::DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["alert_ids", "all"])))]
pub struct AckAlertArgs {
    /// Alerts to acknowledge (all or nothing).
    #[arg(value_name = "ALERT_ID", conflicts_with_all = ["all", "tenant"])]
    pub alert_ids: Vec<Uuid>,
    /// The tenant whose alerts `--all` acknowledges.
    #[arg(long, value_name = "UUID", requires = "all")]
    pub tenant: Option<Uuid>,
    /// Acknowledge every open alert of `--tenant` (narrowed by --type/--severity).
    #[arg(long, requires = "tenant")]
    pub all: bool,
    /// With --all: only alerts of this type.
    #[arg(long = "type", value_name = "ALERT_TYPE", requires = "all")]
    pub alert_type: Option<String>,
    /// With --all: only alerts of this severity.
    #[arg(long, value_enum, requires = "all")]
    pub severity: Option<Severity>,
    /// Profile that acknowledges (must exist in the alert's tenant).
    #[arg(long, value_name = "PROFILE_ID")]
    pub by: Option<Uuid>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{v} is not between 0 and 100"));
    }
    Ok(v)
}

/// `90d`, `12h`, `30m`, `45s` or `2w`: a positive whole number and one unit.
pub fn parse_retention(s: &str) -> Result<Retention, String> {
    let bad = || format!("'{s}' is not a duration like 90d, 12h or 30m");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = t.split_at(split);
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(format!("'{s}' must be longer than zero"));
    }
    let secs_per_unit: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    // Bounded so the cutoff stays a valid timestamp (about 1000 years).
    let secs = n
        .checked_mul(secs_per_unit)
        .filter(|s| *s <= 1000 * 366 * 86_400)
        .ok_or_else(bad)?;
    Ok(Retention {
        text: t.to_string(),
        duration: chrono::Duration::seconds(secs),
    })
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

fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("'{s}' is not an RFC 3339 instant: {e}"))
}

impl Cli {
    /// Parse the process arguments. Help and version go to stdout with exit 0; any usage
    /// error is one `error:` line on stderr and exit code 2.
    pub fn parse_args() -> Result<Cli, u8> {
        Self::parse_from_args(std::env::args_os())
    }

    pub fn parse_from_args<I, T>(args: I) -> Result<Cli, u8>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        match Cli::try_parse_from(args) {
            Ok(cli) => Ok(cli),
            Err(e) => {
                use clap::error::ErrorKind;
                match e.kind() {
                    ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                        let _ = e.print();
                        Err(
                            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                                Exit::Usage as u8
                            } else {
                                Exit::Success as u8
                            },
                        )
                    }
                    _ => {
                        let rendered = e.render().to_string();
                        let line = rendered
                            .lines()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("error: invalid usage")
                            .trim();
                        let line = line.strip_prefix("error: ").unwrap_or(line);
                        eprintln!("error: {}", crate::error::redact(line));
                        Err(Exit::Usage as u8)
                    }
                }
            }
        }
    }
}
