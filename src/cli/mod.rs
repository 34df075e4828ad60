//! The `regmig` command line. `src/main.rs` parses nothing itself: it calls [`main`].
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 bad usage.

pub mod log_verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status: the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: bad usage (bad arguments, invalid input file).
pub const EXIT_USAGE: u8 = 2;

/// regmig: migrate regions between datanodes, with every step in a durable event log.
#[derive(Debug, Parser)]
#[command(name = "regmig", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Event log maintenance.
    #[command(subcommand)]
    Log(LogCommand),
}

/// `regmig log ...`
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Check every record and index of a data directory; exit 1 when a problem is found.
    Verify {
        /// The data directory.
        #[arg(long, default_value = "./regmig-data")]
        data_dir: std::path::PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Log(LogCommand::Verify { data_dir, json }) => {
            ExitCode::from(log_verify::run(&data_dir, json))
        }
    }
}
