//! Logging to stderr (never stdout, which carries reports and JSON): text or JSON lines,
//! level from -v/-q, overridden by RUST_LOG.

use anyhow::Result;
use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalOpts, LogFormat};

pub fn init(opts: &GlobalOpts) -> Result<()> {
    let default = if opts.quiet {
        "error"
    } else {
        match opts.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(&s)
            .map_err(|e| crate::error::AppError::usage(format!("invalid RUST_LOG '{s}': {e}")))?,
        _ => EnvFilter::new(format!("{default},tokio_postgres=warn,deadpool=warn")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match opts.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests calling run() twice in one process) keeps the first subscriber.
    let _ = result;
    Ok(())
}
