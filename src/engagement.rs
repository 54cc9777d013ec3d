//! Engagement clocks (SPEC §4) and `autopilot check-engagement`.

use anyhow::Result;

use crate::cli::CheckEngagementArgs;
use crate::Context;

pub async fn run(_ctx: &Context, _args: &CheckEngagementArgs) -> Result<u8> {
    Err(crate::error::AppError::failed("check-engagement is not implemented yet"))
}
