//! `autopilot completions <shell>`: the completion script of this command line, on stdout.

use clap::{Args, CommandFactory};

use super::Cli;

#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub(super) fn run(args: &CompletionsArgs) -> u8 {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "autopilot", &mut std::io::stdout());
    0
}
