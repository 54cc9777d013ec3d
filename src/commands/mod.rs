//! The command line (SPEC §1): the only place that sees clap. `Cli` holds the global
//! options and one subcommand; each subcommand's file holds its argument struct and turns
//! it into the plain options its domain module takes. Values are validated while parsing
//! (UUIDs, ranges) so bad input is refused with exit 2 before anything connects or writes.

mod ack_alert;
mod agent;
mod card;
mod check_engagement;
mod completions;
mod contact;
mod doctor;
mod ingest_mail;
mod migrate;
mod process_orders;
mod prune;
mod run_cycle;
mod status;
mod tenant;

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::db::deadline;
use crate::db::DbSettings;
use crate::error::Exit;
use crate::logging::{LogFormat, LogOptions};
use crate::Context;

pub use ack_alert::AckAlertArgs;
pub use agent::{AgentCommand, AgentStatusArgs};
pub use card::{CardAction, CardArgs, CardIdArgs};
pub use check_engagement::CheckEngagementArgs;
pub use completions::CompletionsArgs;
pub use contact::{ContactArgs, ContactCommand, ContactResumeArgs};
pub use doctor::DoctorArgs;
pub use ingest_mail::IngestMailArgs;
pub use migrate::MigrateArgs;
pub use process_orders::ProcessOrdersArgs;
pub use prune::PruneArgs;
pub use run_cycle::{RunCycleArgs, TriggerArg};
pub use status::StatusArgs;
pub use tenant::{ChangeArgs, TenantCommand, TenantListArgs, TenantSwitchArgs};

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
    #[arg(long, env = "AUTOPILOT_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text, global = true)]
    pub log_format: LogFormatArg,

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

/// `--log-format`, as typed; the logger takes [`LogFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl GlobalOpts {
    /// What the logger needs from the global options.
    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            format: match self.log_format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            },
            verbose: self.verbose,
            quiet: self.quiet,
        }
    }
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

/// Run one command. Returns the process exit code for outcomes that are not errors
/// (0, or 1 when the work ran and something failed); errors map through
/// [`crate::error::exit_code_for`].
pub async fn run(cli: Cli) -> Result<u8> {
    // Needs no database: must work where none is configured.
    if let Command::Completions(args) = &cli.command {
        return Ok(completions::run(args));
    }
    // Reports bad settings as a failed check rather than stopping at the first one.
    if let Command::Doctor(args) = &cli.command {
        return doctor::run(&cli.global, args).await;
    }
    let db = DbSettings::resolve(cli.global.database_url.as_deref())?;
    deadline::init(&db)?;
    let ctx = Context {
        db,
        now_override: cli.global.now,
    };
    let outcome = match cli.command {
        Command::Migrate(args) => migrate::run(&ctx, &args).await,
        Command::RunCycle(args) => run_cycle::run(&ctx, args).await,
        Command::CheckEngagement(args) => check_engagement::run(&ctx, args).await,
        Command::ProcessOrders(args) => process_orders::run(&ctx, args).await,
        Command::AckAlert(args) => ack_alert::run(&ctx, args).await,
        Command::Status(args) => status::run(&ctx, args).await,
        Command::Prune(args) => prune::run(&ctx, args).await,
        Command::Completions(args) => Ok(completions::run(&args)),
        Command::Doctor(args) => doctor::run(&cli.global, &args).await,
        Command::Tenant(cmd) => tenant::run(&ctx, cmd).await,
        Command::Agent(cmd) => agent::run(&ctx, cmd).await,
        Command::Card(args) => card::run(&ctx, args).await,
        Command::IngestMail(args) => ingest_mail::run(&ctx, args).await,
        Command::Contact(args) => contact::run(&ctx, args).await,
    };
    outcome.map_err(explain_timeout)
}

/// A statement that ran into the database's own time limits says which limits and where
/// to look, instead of a bare "canceling statement".
fn explain_timeout(e: anyhow::Error) -> anyhow::Error {
    if !deadline::is_timeout(&e) {
        return e;
    }
    let b = deadline::bounds();
    e.context(format!(
        "gave up waiting for the database (lock_timeout {} s, statement_timeout {} s; AUTOPILOT_LOCK_TIMEOUT, AUTOPILOT_STATEMENT_TIMEOUT): another session probably holds a lock, see pg_locks and pg_stat_activity",
        b.lock_timeout.as_secs_f64(),
        b.statement_timeout.as_secs_f64()
    ))
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
        Cli::try_parse_from(args).map_err(|e| usage_exit(&e, log_format))
    }
}

/// Prints what clap refused (help and version on stdout as clap renders them; an error as
/// the one fatal line on stderr) and returns the exit code.
fn usage_exit(e: &clap::Error, log_format: LogFormat) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            Exit::Success as u8
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            Exit::Usage as u8
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
            Exit::Usage as u8
        }
    }
}
