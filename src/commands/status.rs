//! `autopilot status`: its arguments, handed to `status`.

use anyhow::Result;
use clap::Args;
use uuid::Uuid;

use crate::status::StatusOptions;
use crate::Context;

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

pub(super) async fn run(ctx: &Context, args: StatusArgs) -> Result<u8> {
    let options = StatusOptions {
        tenants: args.tenants,
        json: args.json,
    };
    crate::status::run(ctx, &options).await
}
