//! `regmig demo` (being built).

use clap::Args;

/// Arguments of this command.
#[derive(Debug, Args)]
pub struct DemoArgs {}

/// Runs the command; returns the exit code.
pub fn run(_args: DemoArgs) -> u8 {
    eprintln!("error: this command is being built");
    super::EXIT_FAILED
}
