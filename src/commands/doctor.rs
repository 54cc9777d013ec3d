//! `autopilot doctor`: its arguments and the global options it checks, handed to `doctor`.

use anyhow::Result;
use clap::Args;

use super::GlobalOpts;
use crate::doctor::DoctorOptions;

#[derive(Debug, Args, Clone, Default)]
pub struct DoctorArgs {
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(global: &GlobalOpts, args: &DoctorArgs) -> Result<u8> {
    let options = DoctorOptions {
        database_url: global.database_url.clone(),
        now: global.now,
        json: args.json,
    };
    crate::doctor::run(&options).await
}
