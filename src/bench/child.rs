//! Measurements that need a process of their own: a peak RSS means something only in a
//! process that did nothing else. The parent starts its own program again with the job in
//! the [`CHILD_ENV`] environment variable; the child's entry point ([`run_from_env`]) runs
//! the job and prints its result as one JSON line on stdout.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::campaign;
use super::error::BenchError;
use super::instructions;
use super::recovery;
use regmig::domain::RegionId;

/// The environment variable that carries a child's job (JSON).
pub const CHILD_ENV: &str = "REGMIG_BENCH_CHILD";

/// A measurement to run in a child process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "job")]
pub enum ChildJob {
    /// Figures 3 and 4 on one fixture.
    Resume {
        /// The fixture (copied before it is opened).
        fixture_dir: PathBuf,
        /// Where the copy goes.
        work_dir: PathBuf,
        /// The regions to query.
        audit_regions: Vec<RegionId>,
        /// Whether to answer the first query by a full scan too.
        full_scan: bool,
    },
    /// Figure 6.
    Campaign {
        /// Where the data directory goes.
        work_dir: PathBuf,
        /// Migrations run at once.
        migrations: u64,
    },
    /// The instruction count's workload ([`super::instructions`]), run under callgrind.
    Instructions {
        /// Where the data directory goes.
        work_dir: PathBuf,
        /// Migrations each worker runs, one after another.
        migrations_per_worker: u64,
        /// Workers.
        concurrency: usize,
    },
}

impl ChildJob {
    fn name(&self) -> &'static str {
        match self {
            ChildJob::Resume { .. } => "resume",
            ChildJob::Campaign { .. } => "campaign",
            ChildJob::Instructions { .. } => "instructions",
        }
    }

    /// Runs the job in this process; returns its result as JSON.
    pub fn run_here(&self) -> Result<serde_json::Value, BenchError> {
        let encode = |value: Result<serde_json::Value, serde_json::Error>| {
            value.map_err(|error| BenchError::Task(format!("encode the result: {error}")))
        };
        match self {
            ChildJob::Resume {
                fixture_dir,
                work_dir,
                audit_regions,
                full_scan,
            } => encode(serde_json::to_value(recovery::resume_and_audit(
                fixture_dir,
                work_dir,
                audit_regions,
                *full_scan,
            )?)),
            ChildJob::Campaign {
                work_dir,
                migrations,
            } => encode(serde_json::to_value(campaign::run(work_dir, *migrations)?)),
            ChildJob::Instructions {
                work_dir,
                migrations_per_worker,
                concurrency,
            } => encode(serde_json::to_value(instructions::workload(
                work_dir,
                *migrations_per_worker,
                *concurrency,
            )?)),
        }
    }
}

/// How a job is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launcher {
    /// In this process (tests: the peak RSS then covers more than the job).
    InProcess,
    /// In a new process: `program args...` with the job in [`CHILD_ENV`].
    Process {
        /// The program (usually this one, `std::env::current_exe()`).
        program: PathBuf,
        /// The arguments that reach the program's call of [`run_from_env`].
        args: Vec<OsString>,
    },
}

impl Launcher {
    /// Runs `job` and decodes its result.
    pub fn run<T: DeserializeOwned>(&self, job: &ChildJob) -> Result<T, BenchError> {
        let value = match self {
            Launcher::InProcess => job.run_here()?,
            Launcher::Process { program, args } => {
                let encoded = serde_json::to_string(job)
                    .map_err(|error| BenchError::Task(format!("encode the job: {error}")))?;
                let output = Command::new(program)
                    .args(args)
                    .env(CHILD_ENV, encoded)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|error| BenchError::io("start", program, error))?;
                let failure = |reason: String| BenchError::Child {
                    job: job.name().to_string(),
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
                serde_json::from_str(line).map_err(|error| failure(error.to_string()))?
            }
        };
        serde_json::from_value(value).map_err(|error| BenchError::Child {
            job: job.name().to_string(),
            reason: format!("decode the result: {error}"),
        })
    }
}

/// The child's entry point: when [`CHILD_ENV`] holds a job, runs it, prints the result as
/// one JSON line and returns the exit status (0 ok, 1 failed); otherwise `None`.
pub fn run_from_env() -> Option<u8> {
    let encoded = std::env::var(CHILD_ENV).ok()?;
    let job: ChildJob = match serde_json::from_str(&encoded) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {CHILD_ENV} does not hold a bench job: {error}");
            return Some(1);
        }
    };
    match job.run_here() {
        Ok(value) => {
            println!("{value}");
            Some(0)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Some(1)
        }
    }
}
