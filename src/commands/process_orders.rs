//! `autopilot process-orders`: its arguments. `orders` still takes this struct itself.

use clap::Args;
use uuid::Uuid;

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
