//! `autopilot agent status|enable|disable`: its arguments, handed to `tenant_admin`.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::ChangeArgs;
use crate::tenant_admin;
use crate::Context;

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

pub(super) async fn run(ctx: &Context, cmd: AgentCommand) -> Result<u8> {
    match cmd {
        AgentCommand::Status(a) => tenant_admin::agent_status(ctx, a.json).await,
        AgentCommand::Enable(a) => tenant_admin::switch_agent(ctx, true, &a.into()).await,
        AgentCommand::Disable(a) => tenant_admin::switch_agent(ctx, false, &a.into()).await,
    }
}
