//! No command leaves files in the temporary directory: a read command's private copy of the
//! database (`regmig-read-*`) and a scenario run's log (`regmig-sim-*`) are removed whether
//! the command succeeds or fails, and a copy a killed reader left behind is removed by the
//! next reader. Each test points `TMPDIR` at a fresh directory and lists it afterwards.

mod cli_support;

use std::path::Path;
use std::process::{Command, Stdio};

use cli_support::{fixture_copy, COMPLETED_ID};

/// Runs `regmig ARGS` with `TMPDIR` set to `tmp`; returns the exit code.
fn regmig_with_tmp(tmp: &Path, args: &[&str]) -> i32 {
    let output = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the regmig binary");
    output.status.code().unwrap_or(-1)
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the temporary directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn read_commands_leave_nothing_in_the_temporary_directory_on_success_or_error() {
    let copy = fixture_copy();
    let data = copy.data_dir();
    let data = data.to_str().expect("a UTF-8 path");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let cases: [(&[&str], i32); 8] = [
        (&["list", "--data-dir", data], 0),
        (&["show", COMPLETED_ID, "--data-dir", data], 0),
        (&["events", COMPLETED_ID, "--json", "--data-dir", data], 0),
        (&["audit", "--format", "csv", "--data-dir", data], 0),
        (&["region", "1024:1", "--data-dir", data], 0),
        // Errors: an unknown id (exit 1), an invalid id (exit 2).
        (
            &[
                "show",
                "00000000-0000-7000-8000-000000000000",
                "--data-dir",
                data,
            ],
            1,
        ),
        (&["events", "not-an-id", "--data-dir", data], 2),
        (&["log", "verify", "--data-dir", data], 0),
    ];
    for (args, expected) in cases {
        assert_eq!(
            regmig_with_tmp(tmp.path(), args),
            expected,
            "regmig {args:?}"
        );
        assert_eq!(
            entries(tmp.path()),
            Vec::<String>::new(),
            "after regmig {args:?}"
        );
    }
}

#[test]
fn a_copy_left_by_a_killed_reader_is_removed_by_the_next_reader() {
    let copy = fixture_copy();
    let data = copy.data_dir();
    let data = data.to_str().expect("a UTF-8 path");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    // A reader killed part-way: its copy is there, and its lock file is no longer held.
    let dead = tmp.path().join("regmig-read-4242-0123456789abcdef");
    std::fs::create_dir_all(dead.join("sled")).expect("make the dead reader's copy");
    std::fs::write(dead.join("sled").join("db"), b"old").expect("write a file into it");
    std::fs::write(
        tmp.path().join("regmig-read-4242-0123456789abcdef.lock"),
        b"",
    )
    .expect("write its lock file");
    // Something that is not a copy is left alone.
    std::fs::write(tmp.path().join("unrelated.lock"), b"").expect("write an unrelated file");
    assert_eq!(
        regmig_with_tmp(tmp.path(), &["list", "--data-dir", data]),
        0
    );
    assert_eq!(entries(tmp.path()), ["unrelated.lock"]);
}

#[test]
fn a_copy_whose_reader_still_runs_is_kept() {
    let copy = fixture_copy();
    let data = copy.data_dir();
    let data = data.to_str().expect("a UTF-8 path");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let live = tmp.path().join("regmig-read-4243-0123456789abcdef");
    std::fs::create_dir_all(&live).expect("make the live reader's copy");
    let lock_path = tmp.path().join("regmig-read-4243-0123456789abcdef.lock");
    let lock = std::fs::File::create(&lock_path).expect("create its lock file");
    fs2::FileExt::lock_exclusive(&lock).expect("hold its lock, as its reader does");
    assert_eq!(
        regmig_with_tmp(tmp.path(), &["list", "--data-dir", data]),
        0
    );
    assert_eq!(
        entries(tmp.path()),
        [
            "regmig-read-4243-0123456789abcdef",
            "regmig-read-4243-0123456789abcdef.lock"
        ]
    );
}

#[test]
fn a_passing_scenario_run_without_a_data_dir_removes_its_log() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scenarios/crash_then_resume.toml"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(["sim", "run", scenario])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .output()
        .expect("run the regmig binary");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
}
