//! `autopilot check-engagement`: its arguments, handed to `engagement`.

use anyhow::Result;
use clap::Args;
use uuid::Uuid;

use crate::engagement::CheckOptions;
use crate::Context;

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

pub(super) async fn run(ctx: &Context, args: CheckEngagementArgs) -> Result<u8> {
    let options = CheckOptions {
        tenants: args.tenants,
        limit: args.limit,
        fail_under: args.fail_under,
        json: args.json,
    };
    crate::engagement::run(ctx, &options).await
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
