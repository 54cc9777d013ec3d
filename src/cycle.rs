//! `autopilot run-cycle`: the hourly Plan → Act → React → Reflect cycle per tenant.

use anyhow::Result;

use crate::cli::RunCycleArgs;
use crate::Context;

pub async fn run(_ctx: &Context, _args: &RunCycleArgs) -> Result<u8> {
    Err(crate::error::AppError::failed("run-cycle is not implemented yet"))
}
