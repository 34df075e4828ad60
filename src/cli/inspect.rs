//! `regmig list`, `show`, `events`, `audit` (being built).

use clap::Args;

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {}
/// Arguments of `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {}
/// Arguments of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {}
/// Arguments of `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {}

fn not_built() -> u8 {
    eprintln!("error: this command is being built");
    super::EXIT_FAILED
}

/// `regmig list`.
pub fn list(_args: ListArgs) -> u8 {
    not_built()
}
/// `regmig show`.
pub fn show(_args: ShowArgs) -> u8 {
    not_built()
}
/// `regmig events`.
pub fn events(_args: EventsArgs) -> u8 {
    not_built()
}
/// `regmig audit`.
pub fn audit(_args: AuditArgs) -> u8 {
    not_built()
}
