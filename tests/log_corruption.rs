//! Damage on disk: every damaged record or index entry is a typed error naming its
//! procedure, seq and key, `verify()` lists each one, and `regmig log verify` exits 1
//! naming them.

mod log_support;

use std::path::Path;
use std::process::{Command, Output};

use log_support::*;
use regmig::log::keys::{event_key, hex, open_key, region_open_key, TREE_NAME};
use regmig::log::{EventLog, LogError};
use uuid::Uuid;

struct DamagedLog {
    dir: tempfile::TempDir,
    /// Its event 2 has a flipped payload byte.
    bad_checksum: Uuid,
    /// Its event 3 is cut to 30 bytes.
    truncated: Uuid,
    /// Its event 2 is deleted and its event 4 claims format version 9 (with a valid crc).
    gap_and_version: Uuid,
}

/// Writes three procedures of five events, then damages them through the sled tree.
fn damaged_log() -> DamagedLog {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    for (index, procedure_id) in ids.iter().enumerate() {
        log.append_blocking(first_append(*procedure_id, 2, index as u64, vec![1]))
            .expect("append")
            .expect("no conflict");
        log.append_blocking(next_append(*procedure_id, 3, 3, false))
            .expect("append")
            .expect("no conflict");
    }
    let tree = log.db().open_tree(TREE_NAME).expect("log tree");
    let stored = |procedure_id: Uuid, seq: u64| -> Vec<u8> {
        tree.get(event_key(procedure_id, seq))
            .expect("get")
            .expect("the record is there")
            .to_vec()
    };

    let mut flipped = stored(ids[0], 2);
    let payload_byte = flipped.len() - 10;
    flipped[payload_byte] ^= 0x40;
    tree.insert(event_key(ids[0], 2), flipped).expect("damage");

    let cut = stored(ids[1], 3)[..30].to_vec();
    tree.insert(event_key(ids[1], 3), cut).expect("damage");

    tree.remove(event_key(ids[2], 2)).expect("damage");
    let mut newer = stored(ids[2], 4);
    newer[0] = 9;
    let body_len = newer.len() - 4;
    let crc = crc32fast::hash(&newer[..body_len]).to_be_bytes();
    newer[body_len..].copy_from_slice(&crc);
    tree.insert(event_key(ids[2], 4), newer).expect("damage");
    log.db().flush().expect("flush");
    drop(tree);
    drop(log);
    DamagedLog {
        dir,
        bad_checksum: ids[0],
        truncated: ids[1],
        gap_and_version: ids[2],
    }
}

#[test]
fn reading_a_damaged_record_names_its_procedure_seq_and_key() {
    let damaged = damaged_log();
    let log = EventLog::open_existing(damaged.dir.path(), unsynced()).expect("reopen");

    let error = log
        .procedure_events(damaged.bad_checksum, 1)
        .expect_err("damaged");
    assert!(
        matches!(&error, LogError::BadChecksum { procedure_id, seq: 2, key, .. }
            if *procedure_id == damaged.bad_checksum && *key == hex(&event_key(damaged.bad_checksum, 2))),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&damaged.bad_checksum.to_string()) && message.contains("event 2"),
        "{message}"
    );

    let error = log
        .procedure_events(damaged.truncated, 1)
        .expect_err("damaged");
    assert!(
        matches!(&error, LogError::Truncated { procedure_id, seq: 3, actual_len: 30, .. } if *procedure_id == damaged.truncated),
        "{error:?}"
    );

    let error = log
        .procedure_events(damaged.gap_and_version, 1)
        .expect_err("gap");
    assert!(
        matches!(&error, LogError::SequenceGap { procedure_id, seq: 2, found_seq: 3, .. } if *procedure_id == damaged.gap_and_version),
        "{error:?}"
    );
    let error = log
        .procedure_events(damaged.gap_and_version, 3)
        .expect_err("newer version");
    assert!(
        matches!(&error, LogError::UnknownFormatVersion { procedure_id, seq: 4, version: 9, .. } if *procedure_id == damaged.gap_and_version),
        "{error:?}"
    );
    // Reading before the damage still works.
    assert_eq!(
        log.procedure_events(damaged.bad_checksum, 3)
            .expect("undamaged part")
            .len(),
        3
    );

    let error = log
        .events_from(1, usize::MAX)
        .expect_err("the global order meets the damage");
    assert!(error.is_damage(), "{error:?}");
}

#[test]
fn verify_lists_every_problem_not_just_the_first() {
    let damaged = damaged_log();
    let log = EventLog::open_existing(damaged.dir.path(), unsynced()).expect("reopen");
    let report = log.verify().expect("verify runs");
    assert!(!report.is_clean());
    assert_eq!(report.procedures, 3);
    assert_eq!(report.events, 14, "15 written, one deleted");
    let has = |predicate: &dyn Fn(&LogError) -> bool| report.problems.iter().any(predicate);
    assert!(has(
        &|problem| matches!(problem, LogError::BadChecksum { procedure_id, seq: 2, .. } if *procedure_id == damaged.bad_checksum)
    ));
    assert!(has(
        &|problem| matches!(problem, LogError::Truncated { procedure_id, seq: 3, .. } if *procedure_id == damaged.truncated)
    ));
    assert!(has(
        &|problem| matches!(problem, LogError::SequenceGap { procedure_id, seq: 2, found_seq: 3, .. } if *procedure_id == damaged.gap_and_version)
    ));
    assert!(has(
        &|problem| matches!(problem, LogError::UnknownFormatVersion { procedure_id, seq: 4, .. } if *procedure_id == damaged.gap_and_version)
    ));
    // The global order still lists the deleted event.
    assert!(has(
        &|problem| matches!(problem, LogError::IndexMismatch { procedure_id: Some(procedure_id), seq: Some(2), .. } if *procedure_id == damaged.gap_and_version)
    ));
    assert_eq!(report.problems.len(), 5, "{:#?}", report.problems);
    for problem in &report.problems {
        assert!(problem.is_damage());
        assert!(problem.key().is_some(), "{problem:?} names its key");
        assert!(
            problem.procedure_id().is_some() && problem.seq().is_some(),
            "{problem:?}"
        );
    }
}

#[test]
fn verify_reports_index_entries_that_disagree_with_the_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    log.append_blocking(first_append(first, 1, 10, vec![1]))
        .expect("append")
        .expect("no conflict");
    log.append_blocking(first_append(second, 1, 20, vec![1]))
        .expect("append")
        .expect("no conflict");
    assert!(log.verify().expect("verify").is_clean());
    let tree = log.db().open_tree(TREE_NAME).expect("log tree");
    // The first procedure loses its region entry; the region of the second names the first.
    tree.remove(region_open_key(10)).expect("damage");
    tree.insert(region_open_key(20), first.as_bytes().to_vec())
        .expect("damage");
    tree.insert(open_key(Uuid::now_v7()), 30u64.to_be_bytes().to_vec())
        .expect("damage");
    let report = log.verify().expect("verify runs");
    let mismatches: Vec<&LogError> = report
        .problems
        .iter()
        .filter(|problem| matches!(problem, LogError::IndexMismatch { .. }))
        .collect();
    assert!(mismatches.len() >= 3, "{:#?}", report.problems);
    assert!(mismatches
        .iter()
        .any(|problem| problem.procedure_id() == Some(first)));
    assert!(mismatches
        .iter()
        .any(|problem| problem.procedure_id() == Some(second)));
}

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
        log.db().flush().expect("flush");
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
