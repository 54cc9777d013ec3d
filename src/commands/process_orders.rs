//! `autopilot process-orders`: its arguments, handed to `orders`.

use anyhow::Result;
use clap::Args;
use uuid::Uuid;

use crate::orders::ProcessOptions;
use crate::Context;

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

pub(super) async fn run(ctx: &Context, args: ProcessOrdersArgs) -> Result<u8> {
    let options = ProcessOptions {
        tenants: args.tenants,
        batch: args.batch,
        json: args.json,
    };
    crate::orders::run(ctx, &options).await
}
