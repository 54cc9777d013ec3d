//! `autopilot migrate`: its arguments, handed to `schema`.

use anyhow::Result;
use clap::Args;

use crate::schema::MigrateOptions;
use crate::Context;

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

pub(super) async fn run(ctx: &Context, args: &MigrateArgs) -> Result<u8> {
    let options = MigrateOptions {
        status: args.status,
        dry_run: args.dry_run,
        json: args.json,
    };
    crate::schema::run(&ctx.db, &options).await
}
