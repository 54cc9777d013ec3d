//! autopilot: the hourly autonomous agent of a multi-tenant appraisal-management CRM.
//!
//! One short-lived, stateless process per invocation; all state and coordination live in
//! PostgreSQL. `run` dispatches a parsed command line to the module that owns the command.

/// `sql!("module/name")`: the statement in `src/sql/module/name.sql`, compiled in. Every
/// statement the binary runs lives in such a file (one statement each); tests/sql_files.rs
/// prepares them all against the migrated schema.
#[macro_export]
macro_rules! sql {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/sql/",
            $name,
            ".sql"
        ))
    };
}

pub mod alerts;
pub mod cards;
pub mod cli;
pub mod cycle;
pub mod db;
pub mod deadline;
pub mod doctor;
pub mod email;
pub mod engagement;
pub mod error;
pub mod host_compat;
pub mod inbound;
pub mod libpq;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod orders;
pub mod policy;
pub mod privileges;
pub mod prune;
pub mod settings;
pub mod shard;
pub mod smtp;
pub mod status;
pub mod tenant_admin;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::cli::{Cli, Command};
use crate::db::DbSettings;

/// What every command gets: how to reach the database and what time it is.
#[derive(Debug, Clone)]
pub struct Context {
    pub db: DbSettings,
    /// Injected with the hidden `--now` (tests); the wall clock otherwise.
    pub now_override: Option<DateTime<Utc>>,
}

impl Context {
    pub fn now(&self) -> DateTime<Utc> {
        self.now_override.unwrap_or_else(Utc::now)
    }
}

/// Run one command. Returns the process exit code for outcomes that are not errors
/// (0, or 1 when the work ran and something failed); errors map through
/// [`error::exit_code_for`].
pub async fn run(cli: Cli) -> Result<u8> {
    // Needs no database: must work where none is configured.
    if let Command::Completions(args) = &cli.command {
        return Ok(completions(args.shell));
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
        Command::Migrate(args) => migrate::run(&ctx.db, &args).await,
        Command::RunCycle(args) => cycle::run(&ctx, &args).await,
        Command::CheckEngagement(args) => engagement::run(&ctx, &args).await,
        Command::ProcessOrders(args) => orders::run(&ctx, &args).await,
        Command::AckAlert(args) => alerts::run_ack(&ctx, &args).await,
        Command::Status(args) => status::run(&ctx, &args).await,
        Command::Prune(args) => prune::run(&ctx, &args).await,
        Command::Completions(args) => Ok(completions(args.shell)),
        Command::Doctor(args) => doctor::run(&cli.global, &args).await,
        Command::Tenant(cmd) => tenant_admin::run_tenant(&ctx, &cmd).await,
        Command::Agent(cmd) => tenant_admin::run_agent(&ctx, &cmd).await,
        Command::Card(args) => cards::run(&ctx, &args).await,
        Command::IngestMail(args) => inbound::run_ingest(&ctx, &args).await,
        Command::Contact(args) => inbound::run_contact(&ctx, &args).await,
    };
    outcome.map_err(|e| {
        if deadline::is_timeout(&e) {
            let b = deadline::bounds();
            e.context(format!(
                "gave up waiting for the database (lock_timeout {} s, statement_timeout {} s; AUTOPILOT_LOCK_TIMEOUT, AUTOPILOT_STATEMENT_TIMEOUT): another session probably holds a lock, see pg_locks and pg_stat_activity",
                b.lock_timeout.as_secs_f64(),
                b.statement_timeout.as_secs_f64()
            ))
        } else {
            e
        }
    })
}

/// `autopilot completions <shell>`: the script on stdout.
fn completions(shell: clap_complete::Shell) -> u8 {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "autopilot", &mut std::io::stdout());
    0
}
