//! `regmig replay` and `regmig export` (being built).

use clap::Args;

/// Arguments of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {}
/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {}

/// `regmig replay`.
pub fn replay(_args: ReplayArgs) -> u8 {
    eprintln!("error: this command is being built");
    super::EXIT_FAILED
}
/// `regmig export`.
pub fn export(_args: ExportArgs) -> u8 {
    eprintln!("error: this command is being built");
    super::EXIT_FAILED
}
