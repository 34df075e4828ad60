//! The `regmig` command line. `src/main.rs` parses nothing itself: it calls [`main`].
//!
//! Each subcommand lives in its own module with its arguments:
//! - [`demo`]: the main job, a migration campaign on the simulated cluster; [`demo_pg`]:
//!   the same on PostgreSQL, with engines elected on the database and a leader kill;
//! - [`inspect`]: `list`, `show`, `events`, `audit`; [`region`]: `region`;
//! - [`verdict`]: the verdict, limits and policy lines `show` and `region` open with;
//! - [`cancel`]: `cancel`, an operator's cancel recorded for the engine that runs it;
//! - [`replay`]: `replay` (with `--check`, `--until`, `--file`) and `export`; [`what_if`]:
//!   `replay --with`, the same history under a changed policy;
//! - [`timeline`]: an SVG picture of a migration or of a region's history;
//! - [`sim_cmd`]: `sim run` (scenario files) and `sim fuzz`;
//! - [`log_verify`]: `log verify`; [`log_archive`]: `log archive`; [`log_salvage`]: `log salvage`;
//! - [`bench_cmd`]: `bench`, the benchmark table.
//!
//! And what they share: [`common`] (opening a data directory, errors, tables, times),
//! [`output`] (stdout that fails loudly), [`escape`] (outside text on a terminal),
//! [`progress`] (the progress bar of the demo, `sim fuzz` and `bench`),
//! [`demo_faults`] (the demo's faults, tied to regions so a resumed campaign ends the same).
//!
//! Conventions: tables on a terminal, `--json` for one JSON document with stable field
//! names, no colours when stdout is not a terminal and no progress bar when stderr is not
//! one (nor with `--json`). Exit codes: 0 ok,
//! 1 the operation failed, 2 bad usage. Output that cannot be written (a full disk) is a
//! failure, exit 1; a closed pipe (`| head`) ends the command quietly ([`output`]).

pub mod batch;
pub mod bench_cmd;
pub mod cancel;
pub mod common;
pub mod demo;
pub mod demo_faults;
pub mod demo_pg;
pub mod escape;
pub mod inspect;
pub mod log_archive;
pub mod log_salvage;
pub mod log_verify;
pub mod output;
pub mod progress;
pub mod region;
pub mod replay;
pub mod sim_cmd;
pub mod summary;
pub mod timeline;
pub mod verdict;
pub mod what_if;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status: the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: bad usage (bad arguments, invalid input file).
pub const EXIT_USAGE: u8 = 2;
/// The data directory every command uses unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./regmig-data";
/// The environment variable that, when set, replaces [`DEFAULT_DATA_DIR`] for every command
/// (`--data-dir` still wins).
pub const DATA_DIR_ENV: &str = "REGMIG_DATA_DIR";
/// The environment variable that, when set, points every read command at a PostgreSQL
/// store instead of a data directory (as `--store` does; its value never shows in `--help`).
pub const STORE_ENV: &str = "REGMIG_STORE";

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
    /// Run a migration campaign on the built-in simulated cluster (the main job).
    Demo(demo::DemoArgs),
    /// List migrations, with filters.
    List(inspect::ListArgs),
    /// Show one migration: summary, routes, timeline of states, final error.
    Show(inspect::ShowArgs),
    /// One region at a glance: does it take writes, its latest route in the log, its
    /// recent migrations.
    Region(region::RegionArgs),
    /// Print one migration's raw events.
    Events(inspect::EventsArgs),
    /// Cancel a running migration: it rolls back and ends aborted, unless its new route is
    /// already written (then the cancel is refused). The request is recorded in
    /// DATA_DIR/cancel-requests/; an engine holding the directory answers it within --wait,
    /// else the next engine to open the directory honours it. A second cancel while one is
    /// pending keeps the first. Exit 0 cancelled (or recorded), 1 refused or unanswered, 2
    /// bad or unknown id.
    Cancel(cancel::CancelArgs),
    /// Step through a migration's events and show what each changed; `--check` re-runs
    /// today's decision logic on the recorded inputs.
    Replay(replay::ReplayArgs),
    /// Write a self-contained bundle of one migration, replayable elsewhere.
    Export(replay::ExportArgs),
    /// What moved where, when and why: every migration matching the filters.
    Audit(inspect::AuditArgs),
    /// Draw a migration (or a region's history) over time as SVG.
    Timeline(timeline::TimelineArgs),
    /// The deterministic simulator: scenario files and fuzzing.
    #[command(subcommand)]
    Sim(sim_cmd::SimCommand),
    /// Event log maintenance.
    #[command(subcommand)]
    Log(LogCommand),
    /// Measure the log and the engine against their baselines.
    Bench(bench_cmd::BenchArgs),
}

/// `regmig log ...`
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Check every record and index of a data directory; exit 1 when a problem is found.
    Verify {
        /// Where the log is.
        #[command(flatten)]
        source: common::LogSource,
        /// Also prove that the archive in this directory joins the live log without a gap.
        #[arg(long, value_name = "DIR")]
        archive: Option<std::path::PathBuf>,
        /// Check that the history up to a chain head printed earlier (GLOBAL_SEQ:HASH, or
        /// the hash alone) is unchanged; exit 1 when it is not.
        #[arg(long, value_parser = log_verify::parse_expected_head, value_name = "HEAD")]
        expect_head: Option<log_verify::ExpectedHead>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move every migration that finished before a time into bundles and a manifest in
    /// an archive directory, and remove them from the live log, leaving a checkpoint.
    Archive {
        /// The data directory.
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// Archive migrations whose last event is before this time: RFC 3339, a date (its
        /// midnight, UTC), an age ("7d", "24h": that long before now), or ms since the Unix
        /// epoch.
        #[arg(long, value_parser = common::parse_since_ms, value_name = "TIME")]
        before: u64,
        /// The archive directory (created if needed; several archives may share it).
        #[arg(long, value_name = "DIR")]
        to: std::path::PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy the log into a new data directory whose files hold only what is live (after
    /// an archive: sled reuses freed space but never shrinks its files). DIR is read
    /// through a private copy while its lock is held (no engine may run): nothing is
    /// written into it. A damaged log is refused: use `log salvage`.
    Compact {
        /// The data directory (its lock held; only read).
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// The new data directory (must not exist, or be empty).
        #[arg(long)]
        to: std::path::PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy every event of a damaged log that still reads back and checks out into a new
    /// log, with a marker where a migration's history is missing; DIR is left untouched.
    Salvage {
        /// The damaged data directory (only read).
        #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// The new data directory (must not exist, or be empty).
        #[arg(long)]
        to: std::path::PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Logs to stderr; `RUST_LOG` sets the filter (default: warnings, none of sled's: their
/// paths are a reader's private copy, and the log turns what they report into typed errors
/// that name the data directory).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sled=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// An option given on the command line beats the other option's environment variable:
/// `--store URL` with `REGMIG_DATA_DIR` exported uses the store, and `--data-dir DIR` with
/// `REGMIG_STORE` exported uses the directory. clap counts a value taken from the
/// environment as given, so each pair used to be refused as `--store` with `--data-dir`.
/// With both variables exported and neither option given, that refusal stands (exit 2).
/// Runs before parsing, while this is the only thread.
fn command_line_beats_environment() {
    if given_on_command_line("--store") {
        std::env::remove_var(DATA_DIR_ENV);
    }
    if given_on_command_line("--data-dir") {
        std::env::remove_var(STORE_ENV);
    }
}

/// Whether `option` (`--store`, `--data-dir`) is on this process's command line, as
/// `--option VALUE` or `--option=VALUE`: a value clap took from the environment or the
/// default is not.
pub(crate) fn given_on_command_line(option: &str) -> bool {
    std::env::args_os().skip(1).any(|arg| {
        arg == option
            || arg
                .to_str()
                .and_then(|arg| arg.strip_prefix(option))
                .is_some_and(|rest| rest.starts_with('='))
    })
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    command_line_beats_environment();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            // `--json` anywhere on the line: the usage error is also one JSON document, as
            // every later error of a --json command is.
            if error.use_stderr() && std::env::args_os().any(|arg| arg == "--json") {
                // The message is clap's first paragraph, its lines joined.
                let rendered = error.render().to_string();
                let paragraph = rendered.split("\n\n").next().unwrap_or("");
                let message = paragraph
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ");
                let message = message.strip_prefix("error: ").unwrap_or(&message);
                common::print_json(&serde_json::json!({
                    "ok": false,
                    "error": { "kind": "usage", "message": message },
                }));
            }
            // --help and --version go to stdout: one that cannot be written is a failure.
            if let Err(write_error) = error.print() {
                if !error.use_stderr() && write_error.kind() != std::io::ErrorKind::BrokenPipe {
                    eprintln!("error: cannot write the output to stdout: {write_error}");
                    return ExitCode::from(EXIT_FAILED);
                }
            }
            return ExitCode::from(code);
        }
    };
    init_tracing();
    output::install();
    regmig::log::quiet_sled_panics();
    let code = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::List(args) => inspect::list(args),
        Command::Show(args) => inspect::show(args),
        Command::Region(args) => region::run(args),
        Command::Events(args) => inspect::events(args),
        Command::Cancel(args) => cancel::run(args),
        Command::Replay(args) => replay::replay(args),
        Command::Export(args) => replay::export(args),
        Command::Audit(args) => inspect::audit(args),
        Command::Timeline(args) => timeline::run(args),
        Command::Sim(command) => sim_cmd::run(command),
        Command::Log(LogCommand::Verify {
            source,
            archive,
            expect_head,
            json,
        }) => log_verify::run(&source, archive.as_deref(), expect_head, json),
        Command::Log(LogCommand::Archive {
            data_dir,
            before,
            to,
            json,
        }) => log_archive::run(&data_dir, before, &to, json),
        Command::Log(LogCommand::Compact { data_dir, to, json }) => {
            log_archive::run_compact(&data_dir, &to, json)
        }
        Command::Log(LogCommand::Salvage { data_dir, to, json }) => {
            log_salvage::run(&data_dir, &to, json)
        }
        Command::Bench(args) => bench_cmd::run(args),
    };
    ExitCode::from(output::final_exit_code(code))
}
