//! CPU per migration in instructions (issue 17). Wall and CPU time move with the load of a
//! shared machine; an instruction count barely does, so a change of a few percent shows.
//!
//! The workload is fixed: migrations one after another (or `concurrency` at a time) through
//! the engine, with its own procedure driver, the durable event log and the durable sled
//! metadata store, on the zero-latency cluster of figure 2 ([`super::migrations`]). It runs
//! in a child process under `valgrind --tool=callgrind` twice, with N and with 2N
//! migrations; the difference of the two totals over N is what one migration costs, with
//! the setup (opening the log, creating the tables, starting the engine) cancelled out.
//! Callgrind counts the instructions executed in user space by every thread of the process
//! (the engine's tasks, the commit thread, sled's threads); time in the kernel (`pwrite`,
//! `fdatasync`) is not in it. The two profiles are kept, for `callgrind_annotate`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::child::ChildJob;
use super::child::CHILD_ENV;
use super::error::BenchError;
use super::migrations::{self, Design, RunLength};

/// The program that counts the instructions.
pub const VALGRIND: &str = "valgrind";

/// The runs under callgrind: N migrations, then 2N (the difference is N migrations' cost).
pub const RUNS: u64 = 2;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionOptions {
    /// N: the smaller run has N migrations, the larger 2N (a multiple of `concurrency`).
    pub migrations: u64,
    /// Migrations at once (1: one after another).
    pub concurrency: usize,
    /// Where the data directories and the profiles go.
    pub work_dir: PathBuf,
    /// This program, started again under valgrind.
    pub program: PathBuf,
    /// The arguments that reach the program's call of [`super::child::run_from_env`].
    pub args: Vec<OsString>,
}

/// One run under callgrind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionRun {
    /// Migrations completed.
    pub migrations: u64,
    /// Instructions executed by the whole process (every thread, user space).
    pub instructions: u64,
    /// The callgrind profile (`callgrind_annotate PATH`).
    pub profile: PathBuf,
}

/// What the measurement came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstructionFigures {
    /// Migrations at once.
    pub concurrency: usize,
    /// The run with N migrations.
    pub small: InstructionRun,
    /// The run with 2N migrations.
    pub large: InstructionRun,
    /// (large - small) / (its migrations - small's): instructions per migration.
    pub per_migration: f64,
}

/// What the child reports: the migrations it completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// Migrations completed.
    pub migrations: u64,
}

/// The workload, in this process: `migrations_per_worker` migrations by each of
/// `concurrency` workers, in a new data directory under `work_dir`.
pub fn workload(
    work_dir: &Path,
    migrations_per_worker: u64,
    concurrency: usize,
) -> Result<WorkloadResult, BenchError> {
    let data_dir = work_dir.join(format!(
        "instructions-{concurrency}x{migrations_per_worker}"
    ));
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .map_err(|error| BenchError::io("remove", &data_dir, error))?;
    }
    let run = migrations::measure(
        &data_dir,
        Design::EventLog,
        concurrency,
        RunLength::MigrationsPerWorker(migrations_per_worker),
    )?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(WorkloadResult {
        migrations: run.completed,
    })
}

/// Runs the workload under callgrind with N and 2N migrations.
pub fn measure(
    options: &InstructionOptions,
    progress: &mut dyn FnMut(String),
) -> Result<InstructionFigures, BenchError> {
    let concurrency = options.concurrency.max(1);
    let per_worker = options.migrations / concurrency as u64;
    if per_worker == 0 || options.migrations % concurrency as u64 != 0 {
        return Err(BenchError::InvalidSizes(format!(
            "{} migrations do not split evenly over {concurrency} workers",
            options.migrations
        )));
    }
    std::fs::create_dir_all(&options.work_dir)
        .map_err(|error| BenchError::io("create", &options.work_dir, error))?;
    let mut runs = Vec::with_capacity(RUNS as usize);
    for multiple in 1..=RUNS {
        let migrations = options.migrations * multiple;
        progress(format!(
            "instructions: {migrations} migrations ({concurrency} at a time) under callgrind"
        ));
        runs.push(run_under_callgrind(
            options,
            per_worker * multiple,
            concurrency,
        )?);
    }
    let large = runs.pop().expect("two runs");
    let small = runs.pop().expect("two runs");
    let extra_migrations = large.migrations.saturating_sub(small.migrations);
    if extra_migrations == 0 || large.instructions < small.instructions {
        return Err(BenchError::Task(format!(
            "the run of {} migrations counted {} instructions against {} for {}: nothing to divide",
            large.migrations, large.instructions, small.instructions, small.migrations
        )));
    }
    let per_migration = (large.instructions - small.instructions) as f64 / extra_migrations as f64;
    Ok(InstructionFigures {
        concurrency,
        small,
        large,
        per_migration,
    })
}

fn run_under_callgrind(
    options: &InstructionOptions,
    migrations_per_worker: u64,
    concurrency: usize,
) -> Result<InstructionRun, BenchError> {
    let job = ChildJob::Instructions {
        work_dir: options.work_dir.clone(),
        migrations_per_worker,
        concurrency,
    };
    let encoded = serde_json::to_string(&job)
        .map_err(|error| BenchError::Task(format!("encode the job: {error}")))?;
    let profile = options.work_dir.join(format!(
        "callgrind.{concurrency}x{migrations_per_worker}.out"
    ));
    let output = Command::new(VALGRIND)
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", profile.display()))
        .arg(&options.program)
        .args(&options.args)
        .env(CHILD_ENV, encoded)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| {
            BenchError::io(
                "start valgrind (install it: apt-get install valgrind) as",
                VALGRIND,
                error,
            )
        })?;
    let failure = |reason: String| BenchError::Child {
        job: "instructions".to_string(),
        reason,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(failure(format!("{}: {}", output.status, tail.join(" / "))));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .ok_or_else(|| failure("no JSON line on stdout".to_string()))?;
    let result: WorkloadResult =
        serde_json::from_str(line).map_err(|error| failure(error.to_string()))?;
    let text = std::fs::read_to_string(&profile)
        .map_err(|error| BenchError::io("read the callgrind profile", &profile, error))?;
    let instructions = profile_total(&text).ok_or_else(|| {
        failure(format!(
            "{} has no `totals:` or `summary:` line",
            profile.display()
        ))
    })?;
    Ok(InstructionRun {
        migrations: result.migrations,
        instructions,
        profile,
    })
}

/// The total of the first event (instructions, `Ir`) in a callgrind profile: its `totals:`
/// line, or its `summary:` line when there is no `totals:`.
pub fn profile_total(profile: &str) -> Option<u64> {
    let first_number = |line: &str| {
        line.split_whitespace()
            .nth(1)
            .and_then(|number| number.parse::<u64>().ok())
    };
    profile
        .lines()
        .find(|line| line.starts_with("totals:"))
        .and_then(first_number)
        .or_else(|| {
            profile
                .lines()
                .find(|line| line.starts_with("summary:"))
                .and_then(first_number)
        })
}

/// The figures as text.
pub fn render(figures: &InstructionFigures) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "instructions per migration (callgrind: user space, every thread), {} at a time through the engine, durable sled log\n",
        figures.concurrency
    ));
    for run in [&figures.small, &figures.large] {
        out.push_str(&format!(
            "  {:>6} migrations  {:>16} instructions (whole process)  {}\n",
            run.migrations,
            super::table::group_thousands(run.instructions as f64),
            run.profile.display()
        ));
    }
    out.push_str(&format!(
        "  per migration      {:>16} instructions (the difference over {} migrations)\n",
        super::table::group_thousands(figures.per_migration.round()),
        figures.large.migrations - figures.small.migrations
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_total_reads_the_totals_line_before_the_summary() {
        let profile = "version: 1\nevents: Ir\nsummary: 1200\nfn=main\n1 5\ntotals: 1234\n";
        assert_eq!(profile_total(profile), Some(1234));
        assert_eq!(profile_total("events: Ir\nsummary: 77 3\n"), Some(77));
        assert_eq!(profile_total("events: Ir\nfn=main\n1 5\n"), None);
        assert_eq!(profile_total("totals: many\n"), None);
    }
}
