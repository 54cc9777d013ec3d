//! `autopilot ingest-mail`: its arguments, handed to `inbound`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::inbound::IngestOptions;
use crate::Context;

#[derive(Debug, Args, Clone)]
pub struct IngestMailArgs {
    /// Read every new message of this Maildir (new/, and cur/ files not yet seen) instead
    /// of one message on stdin; each handled file moves to cur/ marked seen.
    #[arg(long, value_name = "DIR")]
    pub maildir: Option<PathBuf>,
    /// Refuse a message larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = crate::inbound::classify::DEFAULT_MAX_BYTES,
          value_parser = parse_max_size)]
    pub max_size: usize,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(ctx: &Context, args: IngestMailArgs) -> Result<u8> {
    let options = IngestOptions {
        maildir: args.maildir,
        max_size: args.max_size,
        json: args.json,
    };
    crate::inbound::run_ingest(ctx, &options).await
}

/// A message size cap: at least 1 KiB (no real message is smaller), at most 1 GiB.
fn parse_max_size(s: &str) -> Result<usize, String> {
    let v: usize = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of bytes"))?;
    if !(1024..=1 << 30).contains(&v) {
        return Err(format!("{v} is not between 1024 and 1073741824 bytes"));
    }
    Ok(v)
}
