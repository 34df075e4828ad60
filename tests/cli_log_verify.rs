//! `regmig log verify` on a damaged log exits 1 naming every damaged record; on a clean
//! log it exits 0 with its counts (the library's side: crates/regmig/tests/log_corruption.rs).

#[path = "../crates/regmig/tests/log_support/mod.rs"]
mod log_support;

use std::path::Path;
use std::process::{Command, Output};

use log_support::*;
use regmig::log::keys::{event_key, hex};
use regmig::log::EventLog;
use regmig::log::SledStore;
use uuid::Uuid;

fn regmig(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(args)
        .output()
        .expect("run regmig")
}

fn log_verify(dir: &Path, json: bool) -> Output {
    let dir = dir.to_str().expect("utf-8 path");
    if json {
        regmig(&["log", "verify", "--data-dir", dir, "--json"])
    } else {
        regmig(&["log", "verify", "--data-dir", dir])
    }
}

#[test]
fn log_verify_exits_1_naming_every_damaged_record() {
    let damaged = damaged_log();
    let output = log_verify(damaged.dir.path(), false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("events:          14"), "{stdout}");
    assert!(stdout.contains("problems:        5"), "{stdout}");
    for (procedure_id, seq, kind) in [
        (damaged.bad_checksum, 2, "bad_checksum"),
        (damaged.truncated, 3, "truncated"),
        (damaged.gap_and_version, 4, "unknown_format_version"),
    ] {
        assert!(
            stdout.lines().any(|line| line.contains(kind)
                && line.contains(&procedure_id.to_string())
                && line.contains(&format!("event {seq}"))),
            "{kind} of {procedure_id} seq {seq} missing from:\n{stdout}"
        );
    }
    assert!(stdout.contains("sequence_gap"), "{stdout}");

    let output = log_verify(damaged.dir.path(), true);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["ok"], false);
    assert_eq!(report["problem_count"], 5);
    let problems = report["problems"].as_array().expect("problems");
    assert!(problems
        .iter()
        .any(|problem| problem["kind"] == "bad_checksum"
            && problem["procedure_id"] == damaged.bad_checksum.to_string()
            && problem["seq"] == 2
            && problem["key"] == hex(&event_key(damaged.bad_checksum, 2))));
}

#[test]
fn log_verify_of_a_clean_log_exits_0_with_its_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let log = EventLog::open(dir.path(), unsynced()).expect("open");
        let procedure_id = Uuid::now_v7();
        log.append_blocking(first_append(procedure_id, 3, 1, vec![2]))
            .expect("append")
            .expect("no conflict");
        log.append_blocking(first_append(Uuid::now_v7(), 1, 2, vec![2]))
            .expect("append")
            .expect("no conflict");
        log.append_blocking(next_append(procedure_id, 4, 1, true))
            .expect("append")
            .expect("no conflict");
        SledStore::of(&log)
            .expect("a sled-backed log")
            .db()
            .flush()
            .expect("flush");
    }
    let output = log_verify(dir.path(), false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    for line in [
        "events:          5",
        "procedures:      2",
        "open procedures: 1",
        "problems:        0",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    let output = log_verify(dir.path(), true);
    assert_eq!(output.status.code(), Some(0));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["ok"], true);
    assert_eq!(report["events"], 5);
    assert_eq!(report["open_procedures"], 1);
}

#[test]
fn log_verify_of_a_missing_directory_says_so_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir");
    let output = log_verify(&missing, false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "data directory {} does not exist",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!missing.exists(), "verify creates nothing");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let output = log_verify(&empty, false);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("holds no regmig event log"));
}

#[test]
fn log_verify_of_a_directory_in_use_says_so_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _owner = EventLog::open(dir.path(), unsynced()).expect("open");
    let output = log_verify(dir.path(), false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
}
