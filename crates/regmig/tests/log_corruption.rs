//! Damage on disk: every damaged record or index entry is a typed error naming its
//! procedure, seq and key, and `verify()` lists each one (the command line's
//! `regmig log verify` on the same damage: tests/cli_log_verify.rs).

mod log_support;

use log_support::*;
use regmig::log::keys::{event_key, hex, open_key, region_open_key, TREE_NAME};
use regmig::log::SledStore;
use regmig::log::{EventLog, LogError};
use uuid::Uuid;

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
    let tree = SledStore::of(&log)
        .expect("a sled-backed log")
        .db()
        .open_tree(TREE_NAME)
        .expect("log tree");
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
