//! The command line (SPEC §1): global options and one struct of arguments per command.
//! Values are validated here (UUIDs, ranges) so bad input is refused with exit 2 before
//! anything connects or writes.

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
    #[command(after_help = "Example:\n  autopilot migrate --status\n\nNeeds a direct connection (not a transaction-mode pooler): it holds an advisory lock for its whole run.")]
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
    #[command(after_help = "Examples:\n  autopilot ack-alert 6f1c…-… --by <profile id>\n  autopilot ack-alert --tenant <uuid> --all --severity warning")]
    AckAlert(AckAlertArgs),
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
    /// Print the plan per tenant and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Seconds in-flight tenants get after SIGTERM/SIGINT before they are marked failed.
    #[arg(long, value_name = "SECS", default_value_t = 10, hide = true)]
    pub grace: u64,
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
    /// Queue entries claimed per statement.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
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
                        Err(if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                            Exit::Usage as u8
                        } else {
                            Exit::Success as u8
                        })
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
