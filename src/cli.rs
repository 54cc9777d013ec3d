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
    /// Check connection, migrations, switches, SMTP, stuck work and clock drift
    #[command(
        after_help = "Examples:\n  autopilot doctor\n  autopilot doctor --json\n\nOne line per check: ok, warn or fail, with a fix for each failure. Exits 1 when a check fails (2 when the database settings or credentials are wrong, 75 when the database cannot be reached)."
    )]
    Doctor(DoctorArgs),
    /// Turn the agent on or off for tenants, or list them (who and why is recorded)
    #[command(
        subcommand,
        after_help = "Examples:\n  autopilot tenant list\n  autopilot tenant enable <uuid> --by alice --reason \"onboarded\"\n  autopilot tenant disable <uuid> --by alice --reason \"customer asked to pause\""
    )]
    Tenant(TenantCommand),
    /// The global switch: turn the agent on or off for every tenant at once
    #[command(
        subcommand,
        after_help = "Examples:\n  autopilot agent status\n  autopilot agent disable --by alice --reason \"incident 42: e-mails to wrong contacts\"\n  autopilot agent enable --by alice --reason \"incident 42 resolved\""
    )]
    Agent(AgentCommand),
    /// Re-queue or close an e-mail card parked because its delivery is unknown
    #[command(
        after_help = "Examples:\n  autopilot card requeue <card id>   # not in the mailbox: send it again\n  autopilot card close <card id>     # delivered: mark it done\n\nOnly a card parked with delivery unknown (state blocked, blocked_code delivery_unknown) can be changed; anything else exits 1 and changes nothing."
    )]
    Card(CardArgs),
    /// Read bounces, complaints and replies: one RFC 5322 message on stdin, or a Maildir
    #[command(
        after_help = "Examples:\n  autopilot ingest-mail < message.eml\n  autopilot ingest-mail --maildir /var/mail/autopilot --json\n\nExit codes: 0 ingested, ignored (not about a message autopilot sent) or already ingested; 2 the input is not a complete e-mail (nothing written); with --maildir, 1 when a file was malformed (it is flagged F and not read again); 75 database unreachable (an MTA retries later)."
    )]
    IngestMail(IngestMailArgs),
    /// Contacts: resume automatic e-mail to a contact who replied
    #[command(after_help = "Example:\n  autopilot contact resume <contact id> --by <profile id>")]
    Contact(ContactArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct DoctorArgs {
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand, Clone)]
pub enum TenantCommand {
    /// List tenants with their agent switch and its last change
    #[command(
        after_help = "Examples:\n  autopilot tenant list\n  autopilot tenant list --enabled --json"
    )]
    List(TenantListArgs),
    /// Turn the agent on for these tenants
    #[command(
        after_help = "Example:\n  autopilot tenant enable <uuid> [<uuid>...] --by alice --reason \"onboarded\"\n\nAll or nothing: an unknown tenant id changes none of them (exit 2)."
    )]
    Enable(TenantSwitchArgs),
    /// Turn the agent off for these tenants
    #[command(
        after_help = "Example:\n  autopilot tenant disable <uuid> --by alice --reason \"customer asked to pause\""
    )]
    Disable(TenantSwitchArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct TenantListArgs {
    /// Only tenants with the agent enabled.
    #[arg(long)]
    pub enabled: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct TenantSwitchArgs {
    /// Tenants to change (all or nothing: an unknown id changes none).
    #[arg(value_name = "TENANT_ID", required = true)]
    pub tenants: Vec<Uuid>,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// Who makes a switch change and why: both are recorded.
#[derive(Debug, Args, Clone)]
pub struct ChangeArgs {
    /// Who makes the change (a name or e-mail address); default: the login user ($SUDO_USER, $USER).
    #[arg(long, value_name = "WHO", value_parser = parse_nonblank)]
    pub by: Option<String>,
    /// Why (recorded with the change).
    #[arg(long, value_name = "TEXT", value_parser = parse_nonblank)]
    pub reason: String,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand, Clone)]
pub enum AgentCommand {
    /// Show the global switch, its last change and the environment's kill switch
    #[command(after_help = "Example:\n  autopilot agent status --json")]
    Status(AgentStatusArgs),
    /// Let the agent run (system_config agent_config.global_enabled = true)
    #[command(
        after_help = "Example:\n  autopilot agent enable --by alice --reason \"incident 42 resolved\""
    )]
    Enable(ChangeArgs),
    /// Stop the agent for every tenant (the kill switch)
    #[command(
        after_help = "Example:\n  autopilot agent disable --by alice --reason \"incident 42: e-mails to wrong contacts\""
    )]
    Disable(ChangeArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct AgentStatusArgs {
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

fn parse_nonblank(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("must not be empty".to_string());
    }
    if t.len() > 1000 {
        return Err("is longer than 1000 characters".to_string());
    }
    Ok(t.to_string())
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
pub struct CardArgs {
    #[command(subcommand)]
    pub action: CardAction,
}

#[derive(Debug, Subcommand, Clone)]
pub enum CardAction {
    /// The e-mail was NOT delivered: back to approved, the next cycle sends it
    Requeue(CardIdArgs),
    /// The e-mail WAS delivered: mark the card done and count the touch
    Close(CardIdArgs),
}

#[derive(Debug, Args, Clone)]
pub struct CardIdArgs {
    /// The parked card.
    #[arg(value_name = "CARD_ID")]
    pub card_id: Uuid,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
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

#[derive(Debug, Args, Clone)]
pub struct IngestMailArgs {
    /// Read every new message of this Maildir (new/, and cur/ files not yet seen) instead
    /// of one message on stdin; each handled file moves to cur/ marked seen.
    #[arg(long, value_name = "DIR")]
    pub maildir: Option<PathBuf>,
    /// Refuse a message larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = crate::inbound::classify::DEFAULT_MAX_BYTES,
          value_parser = parse_max_size)]
    pub max_size: usize,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ContactArgs {
    #[command(subcommand)]
    pub command: ContactCommand,
}

#[derive(Debug, Subcommand, Clone)]
pub enum ContactCommand {
    /// End the hold a reply put on a contact: automatic e-mail to it may go on
    Resume(ContactResumeArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ContactResumeArgs {
    /// The contact whose automatic e-mail resumes.
    #[arg(value_name = "CONTACT_ID")]
    pub contact_id: Uuid,
    /// Profile that resumes it (must exist in the contact's tenant).
    #[arg(long, value_name = "PROFILE_ID")]
    pub by: Option<Uuid>,
    /// Why (recorded on the hold).
    #[arg(long)]
    pub note: Option<String>,
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

/// A message size cap: at least 1 KiB (no real message is smaller), at most 1 GiB.
fn parse_max_size(s: &str) -> Result<usize, String> {
    let v: usize = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of bytes"))?;
    if !(1024..=1 << 30).contains(&v) {
        return Err(format!("{v} is not between 1024 and 1073741824 bytes"));
    }
    Ok(v)
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
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let log_format = crate::logging::format_from_raw_args(&args);
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
                        let err = anyhow::anyhow!("{line}");
                        eprintln!(
                            "{}",
                            crate::logging::fatal_line(log_format, &err, Exit::Usage as u8)
                        );
                        Err(Exit::Usage as u8)
                    }
                }
            }
        }
    }
}
