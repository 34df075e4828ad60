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

/// `log verify --expect-head HEAD` on `dir`: its exit code and the `expected head:` line.
fn expect_head(dir: &Path, head: &str) -> (Option<i32>, String) {
    let dir = dir.to_str().expect("utf-8 path");
    let output = regmig(&["log", "verify", "--data-dir", dir, "--expect-head", head]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("expected head:   "))
        .unwrap_or_else(|| panic!("no expected head line in:\n{stdout}"))
        .to_string();
    (output.status.code(), line)
}

#[test]
fn expect_head_holds_while_the_log_grows_and_fails_naming_where_it_was_changed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    {
        let log = EventLog::open(dir.path(), unsynced()).expect("open");
        log.append_blocking(first_append(first, 3, 1, vec![2]))
            .expect("append")
            .expect("no conflict");
        SledStore::of(&log)
            .expect("a sled-backed log")
            .db()
            .flush()
            .expect("flush");
    }
    // The head an auditor writes down: global seq 3.
    let output = log_verify(dir.path(), true);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let head = report["chain"]["head"]
        .as_str()
        .expect("a head")
        .to_string();
    let (seq, hash) = head.split_once(':').expect("GLOBAL_SEQ:HASH");
    assert_eq!(seq, "3");
    let text = String::from_utf8_lossy(&log_verify(dir.path(), false).stdout).into_owned();
    assert!(
        text.contains(&format!("head:            {head} ")),
        "{text}"
    );

    // The log grows: the history up to the head is unchanged, with or without its seq.
    {
        let log = EventLog::open(dir.path(), unsynced()).expect("open");
        log.append_blocking(first_append(second, 2, 2, vec![3]))
            .expect("append")
            .expect("no conflict");
        SledStore::of(&log)
            .expect("a sled-backed log")
            .db()
            .flush()
            .expect("flush");
    }
    let unchanged =
        format!("unchanged: the chain hash at global seq 3 is {hash} and every link up to it holds; 2 records appended since");
    assert_eq!(expect_head(dir.path(), &head), (Some(0), unchanged.clone()));
    assert_eq!(expect_head(dir.path(), hash), (Some(0), unchanged));

    // Event 2 of the first migration (global seq 2) is rewritten with a valid checksum: the
    // chain hash at 3 (which holds the old link) is the same, but the link from 3 breaks.
    {
        let log = EventLog::open(dir.path(), unsynced()).expect("open");
        let tree = SledStore::of(&log)
            .expect("a sled-backed log")
            .db()
            .open_tree(regmig::log::keys::TREE_NAME)
            .expect("log tree");
        let key = event_key(first, 2);
        let mut record =
            regmig::log::decode_record(&key, &tree.get(key).expect("get").expect("there"))
                .expect("decodes");
        record.payload = payload(first, 20);
        tree.insert(key, regmig::log::encode_record(&record))
            .expect("rewrite");
        SledStore::of(&log)
            .expect("a sled-backed log")
            .db()
            .flush()
            .expect("flush");
    }
    let broken = format!(
        "the chain first breaks between global seq 2 and 3 (migration {first} event 3): one of them was changed"
    );
    let (code, line) = expect_head(dir.path(), &head);
    assert_eq!(code, Some(1), "{line}");
    assert_eq!(
        line,
        format!(
            "CHANGED: the chain hash at global seq 3 is {hash} as expected, but a link before it does not hold: a record at or before it was changed, removed or reordered; {broken}"
        )
    );
    let (code, line) = expect_head(dir.path(), hash);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.ends_with(&broken), "{line}");
    // A head the log never had.
    let other = "ab".repeat(32);
    let (code, line) = expect_head(dir.path(), &other);
    assert_eq!(code, Some(1), "{line}");
    assert_eq!(
        line,
        format!(
            "NOT FOUND: no record's chain hash is {other}: the history it ended was changed, or it is another log's; {broken}"
        )
    );
    let (code, line) = expect_head(dir.path(), &format!("9:{hash}"));
    assert_eq!(code, Some(1), "{line}");
    assert_eq!(
        line,
        "CANNOT CHECK: the log ends at global seq 5, before global seq 9: records were removed, or the head is another log's"
    );
}

/// A head at global seq 0 names no record: bad input (exit 2) saying so, never "records
/// were removed" (which is what checking it against a log used to say).
#[test]
fn expect_head_at_global_seq_0_is_bad_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let head = format!("0:{}", "ab".repeat(32));
    let dir_text = dir.path().to_str().expect("utf-8 path");
    let output = regmig(&[
        "log",
        "verify",
        "--data-dir",
        dir_text,
        "--expect-head",
        &head,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: invalid value '{head}' for '--expect-head <HEAD>': invalid chain head \"{head}\": global seq 0 names no record (global seqs count from 1), so there is no history up to it to check; give a head `regmig log verify` printed\n"
        )),
        "{stderr}"
    );
    assert_eq!(output.stdout, b"");
}
