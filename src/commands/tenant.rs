//! `autopilot tenant list|enable|disable`: its arguments, and who signs a switch change
//! (shared with `agent`), handed to `tenant_admin`.

use anyhow::Result;
use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::tenant_admin::{self, Change};
use crate::Context;

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

impl From<ChangeArgs> for Change {
    fn from(a: ChangeArgs) -> Change {
        Change {
            by: a.by,
            reason: a.reason,
            json: a.json,
        }
    }
}

pub(super) async fn run(ctx: &Context, cmd: TenantCommand) -> Result<u8> {
    match cmd {
        TenantCommand::List(a) => tenant_admin::list_tenants(ctx, a.enabled, a.json).await,
        TenantCommand::Enable(a) => switch(ctx, a, true).await,
        TenantCommand::Disable(a) => switch(ctx, a, false).await,
    }
}

async fn switch(ctx: &Context, args: TenantSwitchArgs, enable: bool) -> Result<u8> {
    tenant_admin::switch_tenants(ctx, &args.tenants, enable, &args.change.into()).await
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
