//! The `autopilot` binary: parse arguments, set up logging, run, map the outcome to an exit
//! code. Everything else lives in the library.

use std::process::ExitCode;

use autopilot::cli::Cli;
use autopilot::error::{exit_code_for, redact};

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
    if let Err(err) = autopilot::logging::init(&cli.global) {
        eprintln!("error: {}", redact(&format!("{err:#}")));
        return ExitCode::from(2);
    }
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
    match runtime.block_on(autopilot::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", redact(&format!("{err:#}")).replace('\n', " "));
            ExitCode::from(exit_code_for(&err))
        }
    }
}
