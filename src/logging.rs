//! Logging to stderr (never stdout, which carries reports and JSON): text or JSON lines,
//! level from -v/-q, overridden by RUST_LOG.

use anyhow::Result;
use tracing_subscriber::EnvFilter;

/// Where log lines go and how they look: JSON lines or text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How much to log, and in which format (from `--log-format`, `-v`, `-q`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    pub format: LogFormat,
    /// -v info, -vv debug, -vvv trace.
    pub verbose: u8,
    /// Only errors.
    pub quiet: bool,
}

pub fn init(opts: &LogOptions) -> Result<()> {
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
        // The libraries' own debug output (TLS handshakes, SMTP) drowns the agent's at -vv;
        // RUST_LOG brings it back.
        _ => EnvFilter::new(format!(
            "{default},tokio_postgres=warn,deadpool=warn,rustls=warn,lettre=warn"
        )),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in cron mail or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let result = match opts.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests calling run() twice in one process) keeps the first subscriber.
    let _ = result;
    Ok(())
}

/// The one line a failed invocation ends with, on stderr: `error: …` in text mode, a JSON
/// object (timestamp, level, message, the context chain as `causes`, the exit code) in JSON
/// mode, so a log collector parsing JSON lines does not choke on the most important one.
/// Secrets are redacted and the line never spans more than one line.
pub fn fatal_line(format: LogFormat, err: &anyhow::Error, exit_code: u8) -> String {
    let one = |s: String| crate::error::redact(&s).replace(['\n', '\r'], " ");
    let message = one(format!("{err:#}"));
    match format {
        LogFormat::Text => format!("error: {message}"),
        LogFormat::Json => {
            let causes: Vec<String> = err.chain().map(|c| one(c.to_string())).collect();
            serde_json::json!({
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "ERROR",
                "message": format!("error: {message}"),
                "causes": causes,
                "exit_code": exit_code,
            })
            .to_string()
        }
    }
}

/// The log format asked for on a command line that could not be parsed (so a usage error
/// is a JSON line too when JSON was asked for): `--log-format json`, `--log-format=json`
/// or `AUTOPILOT_LOG_FORMAT=json`.
pub fn format_from_raw_args(args: &[std::ffi::OsString]) -> LogFormat {
    let mut json = std::env::var("AUTOPILOT_LOG_FORMAT").is_ok_and(|v| v == "json");
    let mut it = args.iter().map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if a == "--log-format" {
            json = it.next().is_some_and(|v| v == "json");
        } else if let Some(v) = a.strip_prefix("--log-format=") {
            json = v == "json";
        }
    }
    if json {
        LogFormat::Json
    } else {
        LogFormat::Text
    }
}
