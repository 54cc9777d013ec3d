//! `autopilot status`: its arguments. `status` still takes this struct itself.

use clap::Args;
use uuid::Uuid;

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
