//! The `autopilot` binary: parse arguments, set up logging, run, map the outcome to an exit
//! code. Everything else lives in the library.

use std::process::ExitCode;

use autopilot::commands::Cli;
use autopilot::error::exit_code_for;
use autopilot::logging::fatal_line;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns a closed pipe into a panic on the next println!.
    #[cfg(unix)]
    // SAFETY: called first thing, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    let log = cli.global.log_options();
    let log_format = log.format;
    if let Err(err) = autopilot::logging::init(&log) {
        eprintln!("{}", fatal_line(log_format, &err, 2));
        return ExitCode::from(2);
    }
    let started = std::time::Instant::now();
    let command = command_name();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(autopilot::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            let code = exit_code_for(&err);
            eprintln!("{}", fatal_line(log_format, &err, code));
            code
        }
    };
    // One line per invocation, whatever the command (the commands log what they did).
    tracing::info!(
        command = %command,
        exit_code = code,
        duration_ms = started.elapsed().as_millis() as u64,
        version = env!("CARGO_PKG_VERSION"),
        "invocation finished"
    );
    ExitCode::from(code)
}

/// The subcommand's name as typed (`run-cycle`, `tenant`, …), for the summary line; read
/// from clap so new commands need no change here.
fn command_name() -> String {
    use clap::CommandFactory;
    Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(std::env::args_os())
        .ok()
        .and_then(|m| {
            let (name, sub) = m.subcommand()?;
            Some(match sub.subcommand_name() {
                Some(inner) => format!("{name} {inner}"),
                None => name.to_string(),
            })
        })
        .unwrap_or_else(|| "?".to_string())
}
