//! `autopilot prune`: its arguments and the retention syntax, handed to `prune`.

use anyhow::Result;
use clap::Args;

use crate::prune::{PruneOptions, Retention};
use crate::Context;

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

/// `90d`, `12h`, `30m`, `45s` or `2w`: a positive whole number and one unit.
fn parse_retention(s: &str) -> Result<Retention, String> {
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

pub(super) async fn run(ctx: &Context, args: PruneArgs) -> Result<u8> {
    let options = PruneOptions {
        older_than: args.older_than,
        dry_run: args.dry_run,
        batch: args.batch,
        json: args.json,
    };
    crate::prune::run(ctx, &options).await
}
