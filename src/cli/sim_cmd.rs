//! `regmig sim run FILE` and `regmig sim fuzz --seeds A..B`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::progress::Progress;
use super::{EXIT_FAILED, EXIT_USAGE};
use crate::sim::fuzz::{fuzz_seed, parse_seed_range, FuzzFailure};
use crate::sim::runner::{run_crash_at_every_event, run_scenario, RunOptions};
use crate::sim::scenario::{load_scenario, render_text};

/// `regmig sim ...`
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Run a scenario file deterministically in virtual time and check its expectations.
    Run(SimRunArgs),
    /// Run random clusters, migrations, workloads and faults; check the invariants.
    Fuzz(SimFuzzArgs),
}

/// Arguments of `sim run`.
#[derive(Debug, Args)]
pub struct SimRunArgs {
    /// The scenario file (TOML).
    pub file: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Where to write the log (default: a fresh temporary directory, removed when the run
    /// passes and kept, at the path the result names, when it fails).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run once per event k of the uninterrupted run, crashing the engine after event k.
    /// Each run writes its own temporary log, so `--data-dir` cannot go with it.
    #[arg(long, conflicts_with = "data_dir")]
    pub crash_at_every_event: bool,
}

/// Arguments of `sim fuzz`.
#[derive(Debug, Args)]
pub struct SimFuzzArgs {
    /// Seeds to run, as A..B (B excluded): at most 1,000,000 seeds, none above
    /// 9223372036854775807 (a seed must fit its scenario file's TOML integer).
    #[arg(long, default_value = "0..200")]
    pub seeds: String,
    /// Print the generated scenario of each seed (TOML) instead of running it.
    #[arg(long)]
    pub print_scenario: bool,
}

/// Runs `regmig sim ...`; returns the exit code.
pub fn run(command: SimCommand) -> u8 {
    match command {
        SimCommand::Run(args) => sim_run(args),
        SimCommand::Fuzz(args) => sim_fuzz(args),
    }
}

fn sim_run(args: SimRunArgs) -> u8 {
    let scenario = match load_scenario(&args.file) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    if let Some(dir) = &args.data_dir {
        if let Err((code, message)) = check_fresh_data_dir(dir) {
            eprintln!("error: {message}");
            return code;
        }
    }
    let options = RunOptions {
        data_dir: args.data_dir.clone(),
        ..RunOptions::default()
    };
    if args.crash_at_every_event {
        let progress = Progress::new("runs", args.json);
        let swept = run_crash_at_every_event(&scenario, &options, &mut |done, runs| {
            if done == 0 {
                progress.start("crash after event k", runs);
            } else {
                progress.inc();
            }
        });
        progress.finish();
        let sweep = match swept {
            Ok(sweep) => sweep,
            Err(error) => {
                eprintln!("error: {}: {error}", args.file.display());
                return EXIT_FAILED;
            }
        };
        if args.json {
            let runs: Vec<serde_json::Value> = sweep
                .runs
                .iter()
                .map(|(k, outcome)| serde_json::json!({"crash_after_event": k, "result": outcome}))
                .collect();
            let document = serde_json::json!({
                "name": scenario.name,
                "ok": sweep.ok(),
                "baseline": sweep.baseline,
                "runs": runs,
            });
            println!("{document}");
        } else {
            println!(
                "{}: {} crash points, {}",
                scenario.name,
                sweep.runs.len(),
                if sweep.ok() { "all OK" } else { "FAILED" }
            );
            if !sweep.baseline.ok {
                println!("uninterrupted run:\n{}", render_text(&sweep.baseline));
            }
            for (k, outcome) in &sweep.runs {
                if !outcome.ok {
                    println!("crash after event {k}:\n{}", render_text(outcome));
                }
            }
        }
        return if sweep.ok() { 0 } else { EXIT_FAILED };
    }
    match run_scenario(&scenario, &options) {
        Ok(run) => {
            if args.json {
                match serde_json::to_string(&run.outcome) {
                    Ok(text) => println!("{text}"),
                    Err(error) => {
                        eprintln!("error: cannot encode the result: {error}");
                        return EXIT_FAILED;
                    }
                }
            } else {
                print!("{}", render_text(&run.outcome));
            }
            if run.outcome.ok {
                0
            } else {
                EXIT_FAILED
            }
        }
        Err(error) => {
            eprintln!("error: {}: {error}", args.file.display());
            EXIT_FAILED
        }
    }
}

/// `sim run --data-dir` writes a new history: a directory that already holds a log (or
/// anything else) is refused, so a scenario's made-up migrations never join a real history.
/// The refusal is bad usage (exit 2), except where the directory's database is no regmig
/// log, or a damaged one: that is the log's own error (exit 1), named as every command names it.
fn check_fresh_data_dir(dir: &Path) -> Result<(), (u8, String)> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err((
                EXIT_USAGE,
                format!(
                    "--data-dir {}: cannot read the directory: {error}",
                    dir.display()
                ),
            ))
        }
    };
    if dir.join(regmig::log::SLED_SUBDIR).exists() {
        match regmig::log::EventLog::open_read_only(dir) {
            Err(error) => return Err((EXIT_FAILED, error.to_string())),
            Ok(log) => {
                if let Some(damage) = log.damage() {
                    return Err((EXIT_FAILED, damage.to_string()));
                }
            }
        }
    }
    if dir.join(regmig::log::SLED_SUBDIR).exists() || dir.join(regmig::log::LOCK_FILE_NAME).exists()
    {
        return Err((EXIT_USAGE, format!(
            "--data-dir {} already holds a log; sim run writes a new one: give a new or empty directory",
            dir.display()
        )));
    }
    if entries.next().is_some() {
        return Err((
            EXIT_USAGE,
            format!(
                "--data-dir {} is not empty; sim run writes a new log: give a new or empty directory",
                dir.display()
            ),
        ));
    }
    Ok(())
}

fn sim_fuzz(args: SimFuzzArgs) -> u8 {
    let seeds = match parse_seed_range(&args.seeds) {
        Ok(seeds) => seeds,
        Err(error) => {
            eprintln!("error: --seeds: {error}");
            return EXIT_USAGE;
        }
    };
    if args.print_scenario {
        for seed in seeds {
            println!("# seed {seed}\n{}", crate::sim::fuzz::scenario_text(seed));
        }
        return 0;
    }
    let started = std::time::Instant::now();
    let total = seeds.end.saturating_sub(seeds.start);
    let mut failures: Vec<FuzzFailure> = Vec::new();
    // `sim fuzz` has no --json: the bar is drawn whenever stderr is a terminal.
    let progress = Progress::new("seeds", false);
    progress.start("fuzzing", total);
    for seed in seeds {
        if let Err(failure) = fuzz_seed(seed) {
            progress.println(&failure.to_string());
            failures.push(failure);
        }
        progress.inc();
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{total} seeds in {seconds:.1} s ({:.0} seeds/min): {} failed",
        total as f64 / seconds.max(1e-9) * 60.0,
        failures.len()
    );
    if failures.is_empty() {
        0
    } else {
        EXIT_FAILED
    }
}
