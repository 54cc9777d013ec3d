//! Alerts (SPEC §7): the rules evaluated after each cycle and `autopilot ack-alert`.

use anyhow::Result;

use crate::cli::AckAlertArgs;
use crate::Context;

pub async fn run_ack(_ctx: &Context, _args: &AckAlertArgs) -> Result<u8> {
    Err(crate::error::AppError::failed("ack-alert is not implemented yet"))
}
