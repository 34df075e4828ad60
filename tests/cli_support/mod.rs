//! Helpers of the CLI tests: the committed fixture log, running the `regmig` binary on a
//! copy of it, and snapshot comparison.
//!
//! The fixture (`tests/fixtures/cli_v1/data`) is a real data directory written by
//! `regmig sim run tests/fixtures/cli_v1/scenario.toml` (format version 1, layout 1). It is
//! never opened in place: opening a sled database writes to it, so every test works on a
//! copy. `cargo test --test cli_snapshots -- --ignored regenerate_the_fixture_log` rewrites
//! it; `REGMIG_UPDATE_SNAPSHOTS=1 cargo test --test cli_snapshots` rewrites the expected
//! outputs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Migration 1: 1024:1, peer 1 → 2; two failed opens of the candidate, then completed.
pub const COMPLETED_ID: &str = "019b76da-a800-715b-9d39-b5bf90ae8891";
/// Migration 2: 7:3, peer 1 → 2; a lost route CAS, the candidate never ready: aborted.
pub const ABORTED_ID: &str = "019b76da-a800-763f-85f3-8c53b6c508b7";
/// Migration 3: 1024:2, peer 1 → 4; the target unreachable until the budget ran out: failed.
pub const FAILED_ID: &str = "019b76da-afd0-7d40-8795-7350fdf44d03";
/// Migration 4: 1024:1, peer 2 → 3; the engine crashed and resumed; a slow-path lease wait.
pub const RESUMED_ID: &str = "019b76db-9260-74c0-9eb3-424d02a6d161";
/// Every migration of the fixture, in submit order.
pub const ALL_IDS: [&str; 4] = [COMPLETED_ID, ABORTED_ID, FAILED_ID, RESUMED_ID];

/// The fixture's directory.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cli_v1"
    ))
}

/// The committed data directory (never open it in place: use [`fixture_copy`]).
pub fn fixture_data_dir() -> PathBuf {
    fixture_dir().join("data")
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the directory to copy") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// A private copy of the fixture's data directory, removed when dropped.
pub struct FixtureCopy {
    /// Holds the copy.
    pub temp: tempfile::TempDir,
}

impl FixtureCopy {
    /// The data directory of the copy.
    pub fn data_dir(&self) -> PathBuf {
        self.temp.path().join("data")
    }

    /// A path for another file in the same temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.temp.path().join(name)
    }
}

/// Copies the fixture's data directory somewhere private.
pub fn fixture_copy() -> FixtureCopy {
    let temp = tempfile::tempdir().expect("a temporary directory");
    copy_dir(&fixture_data_dir(), &temp.path().join("data"));
    FixtureCopy { temp }
}

/// What a run of the binary came to.
pub struct Run {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it took.
    pub elapsed: Duration,
}

impl Run {
    fn of(output: Output, elapsed: Duration) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
        }
    }

    /// Panics with both outputs unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `regmig ARGS` (stdout is a pipe, so no terminal decoration).
pub fn regmig(args: &[&str]) -> Run {
    run_regmig(args, |_| {})
}

/// Runs `regmig ARGS` with none of REGMIG_DATA_DIR, REGMIG_STORE and PGPASSWORD taken from
/// the test's environment, and `env` set.
pub fn regmig_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_regmig(args, |command| {
        command
            .env_remove("REGMIG_DATA_DIR")
            .env_remove("REGMIG_STORE")
            .env_remove("PGPASSWORD")
            .envs(env.iter().copied());
    })
}

fn run_regmig(args: &[&str], configure: impl FnOnce(&mut Command)) -> Run {
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_regmig"));
    command.args(args).env_remove("RUST_LOG");
    configure(&mut command);
    let output = command.output().expect("run the regmig binary");
    Run::of(output, started.elapsed())
}

/// Runs `regmig sim run SCENARIO --data-dir DIR`: the scenario's log written into DIR.
pub fn sim_run_into(scenario: &Path, data_dir: &Path) -> Run {
    regmig(&[
        "sim",
        "run",
        scenario.to_str().expect("a UTF-8 path"),
        "--data-dir",
        data_dir.to_str().expect("a UTF-8 path"),
    ])
}

/// Runs `regmig ARGS --data-dir DIR`.
pub fn regmig_in(data_dir: &Path, args: &[&str]) -> Run {
    let data_dir = data_dir.to_str().expect("a UTF-8 path");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", data_dir]);
    regmig(&all)
}

/// Whether snapshots are being rewritten (`REGMIG_UPDATE_SNAPSHOTS=1`).
pub fn updating_snapshots() -> bool {
    std::env::var("REGMIG_UPDATE_SNAPSHOTS").is_ok_and(|value| value == "1")
}

/// Compares `actual` with `tests/fixtures/cli_v1/expected/NAME`, exactly; with
/// `REGMIG_UPDATE_SNAPSHOTS=1`, writes it there instead.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = fixture_dir().join("expected").join(name);
    if updating_snapshots() {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create expected/");
        std::fs::write(&path, actual).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "snapshot {} cannot be read ({error}); write it with REGMIG_UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    if expected != actual {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .position(|(expected, actual)| expected != actual)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "output differs from snapshot {} at line {}:\n  expected: {:?}\n  actual:   {:?}\n--- actual output\n{actual}\n(if the change is intended, rerun with REGMIG_UPDATE_SNAPSHOTS=1)",
            path.display(),
            first_difference + 1,
            expected.lines().nth(first_difference).unwrap_or("<end>"),
            actual.lines().nth(first_difference).unwrap_or("<end>"),
        );
    }
}
