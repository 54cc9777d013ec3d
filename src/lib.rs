//! autopilot: the hourly autonomous agent of a multi-tenant appraisal-management CRM.
//!
//! One short-lived, stateless process per invocation; all state and coordination live in
//! PostgreSQL. `run` dispatches a parsed command line to the module that owns the command.

pub mod alerts;
pub mod cli;
pub mod cycle;
pub mod db;
pub mod email;
pub mod engagement;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod orders;
pub mod policy;
pub mod prune;
pub mod settings;
pub mod shard;
pub mod status;

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
    let db = DbSettings::resolve(cli.global.database_url.as_deref())?;
    let ctx = Context {
        db,
        now_override: cli.global.now,
    };
    match cli.command {
        Command::Migrate(args) => migrate::run(&ctx.db, &args).await,
        Command::RunCycle(args) => cycle::run(&ctx, &args).await,
        Command::CheckEngagement(args) => engagement::run(&ctx, &args).await,
        Command::ProcessOrders(args) => orders::run(&ctx, &args).await,
        Command::AckAlert(args) => alerts::run_ack(&ctx, &args).await,
        Command::Status(args) => status::run(&ctx, &args).await,
        Command::Prune(args) => prune::run(&ctx, &args).await,
        Command::Completions(args) => Ok(completions(args.shell)),
    }
}

/// `autopilot completions <shell>`: the script on stdout.
fn completions(shell: clap_complete::Shell) -> u8 {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "autopilot", &mut std::io::stdout());
    0
}
