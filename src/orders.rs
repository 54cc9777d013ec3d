//! Order queue processing (SPEC §6) and `autopilot process-orders`.

use anyhow::Result;

use crate::cli::ProcessOrdersArgs;
use crate::Context;

pub async fn run(_ctx: &Context, _args: &ProcessOrdersArgs) -> Result<u8> {
    Err(crate::error::AppError::failed("process-orders is not implemented yet"))
}
