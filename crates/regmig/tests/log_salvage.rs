//! `salvage` (issue 10): what still reads back and checks out goes into a new log, with a
//! marker where history is missing; the damaged directory is left untouched.

mod log_support;

use std::path::Path;

use log_support::{copy_dir, file_contents, first_append, next_append};
use regmig::log::keys::{event_key, TREE_NAME};
use regmig::log::salvage::{salvage, HistoryGap, HISTORY_GAP_KIND};
use regmig::log::{EventLog, LogOptions};
use uuid::Uuid;

fn procedure(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_5f3a_c000_7000_8000_0000_0000_0000 | n)
}

/// Procedure 1 finished (7 events), procedure 2 open (5 events).
fn write_log(dir: &Path) {
    let log = EventLog::open(dir, LogOptions::default()).unwrap();
    let (first, second) = (procedure(1), procedure(2));
    log.append_blocking(first_append(first, 3, 10, vec![1, 2]))
        .unwrap()
        .unwrap();
    log.append_blocking(first_append(second, 3, 11, vec![2, 3]))
        .unwrap()
        .unwrap();
    log.append_blocking(next_append(first, 4, 4, true))
        .unwrap()
        .unwrap();
    log.append_blocking(next_append(second, 4, 2, false))
        .unwrap()
        .unwrap();
}

#[test]
fn salvaging_a_clean_log_copies_it_whole_with_the_same_chain() {
    let root = tempfile::tempdir().unwrap();
    let (from, to) = (root.path().join("from"), root.path().join("to"));
    write_log(&from);
    let before = file_contents(&from);
    let report = salvage(&from, &to).unwrap();
    assert_eq!(
        file_contents(&from),
        before,
        "salvage wrote into its source"
    );
    assert_eq!(report.events_copied, 12);
    assert_eq!(report.procedures_whole, 2);
    assert!(report.procedures_with_gap.is_empty());
    let source = EventLog::open_read_only(&from).unwrap();
    let copy = EventLog::open_read_only(&to).unwrap();
    assert!(copy.damage().is_none());
    assert_eq!(
        source.events_from(1, usize::MAX).unwrap(),
        copy.events_from(1, usize::MAX).unwrap()
    );
    let (source_report, copy_report) = (source.verify().unwrap(), copy.verify().unwrap());
    assert!(copy_report.is_clean(), "{:?}", copy_report.problems);
    assert_eq!(source_report.chain, copy_report.chain);
    assert_eq!(copy.open_procedures().unwrap(), vec![(procedure(2), 11)]);
}

#[test]
fn a_hole_becomes_a_marker_the_cut_migration_is_closed_and_the_new_log_verifies_clean() {
    let root = tempfile::tempdir().unwrap();
    let (from, to) = (root.path().join("from"), root.path().join("to"));
    write_log(&from);
    // A hole: event 5 of procedure 1 removed behind the log's back.
    {
        let db = sled::Config::new().path(from.join("sled")).open().unwrap();
        let tree = db.open_tree(TREE_NAME).unwrap();
        tree.remove(event_key(procedure(1), 5)).unwrap();
        db.flush().unwrap();
    }
    let writer = EventLog::open_existing(&from, LogOptions::default());
    // The tail and the mark agree, so a writer opens (its open checks the end, not every
    // record: a hole sled serves cleanly is for verify to find).
    drop(writer);
    let before = file_contents(&from);
    let report = salvage(&from, &to).unwrap();
    assert_eq!(
        file_contents(&from),
        before,
        "salvage wrote into its source"
    );
    assert_eq!(report.procedures_with_gap, vec![(procedure(1), 5)]);
    assert_eq!(report.procedures_whole, 1);
    assert_eq!(report.events_copied, 4 + 5);
    let copy = EventLog::open_read_only(&to).unwrap();
    let verify = copy.verify().unwrap();
    assert!(verify.is_clean(), "{:?}", verify.problems);
    let first = copy.procedure_events(procedure(1), 1).unwrap();
    assert_eq!(first.len(), 5);
    assert_eq!(first[4].kind, HISTORY_GAP_KIND);
    let gap: HistoryGap = rmp_serde::from_slice(&first[4].payload).unwrap();
    assert_eq!(gap.missing_from_seq, 5);
    assert!(gap.reason.contains("event 5"), "{}", gap.reason);
    // The cut migration is closed: no engine resumes it on a history with a hole.
    assert_eq!(copy.open_procedures().unwrap(), vec![(procedure(2), 11)]);
}

#[test]
fn salvage_refuses_a_target_that_holds_anything() {
    let root = tempfile::tempdir().unwrap();
    let (from, to) = (root.path().join("from"), root.path().join("to"));
    write_log(&from);
    std::fs::create_dir_all(&to).unwrap();
    std::fs::write(to.join("keep-me"), b"x").unwrap();
    let error = salvage(&from, &to).unwrap_err();
    assert!(error.to_string().contains("not empty"), "{error}");
    assert_eq!(std::fs::read(to.join("keep-me")).unwrap(), b"x");
}

#[test]
fn salvage_refuses_a_target_inside_the_damaged_directory() {
    let root = tempfile::tempdir().unwrap();
    let from = root.path().join("from");
    write_log(&from);
    let before = file_contents(&from);
    for to in [from.join("sub"), from.join("a/b"), from.join("sled/x")] {
        let error = salvage(&from, &to).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "could not salvage into {}: it is inside the damaged data directory {}, which salvage leaves untouched",
                to.display(),
                from.display()
            )
        );
    }
    assert_eq!(file_contents(&from), before);
}

#[test]
fn a_log_that_lost_its_tail_marks_the_migrations_open_at_the_loss() {
    let root = tempfile::tempdir().unwrap();
    let (from, to) = (root.path().join("from"), root.path().join("to"));
    write_log(&from);
    let older = root.path().join("older-sled");
    copy_dir(&from.join("sled"), &older);
    {
        let log = EventLog::open_existing(&from, LogOptions::default()).unwrap();
        log.append_blocking(next_append(procedure(2), 6, 3, false))
            .unwrap()
            .unwrap();
    }
    // The disk serves the older state; the mark vouches for three more events.
    std::fs::remove_dir_all(from.join("sled")).unwrap();
    copy_dir(&older, &from.join("sled"));
    let report = salvage(&from, &to).unwrap();
    assert!(
        report
            .source_damage
            .as_deref()
            .is_some_and(|damage| damage.contains("first missing: 13")),
        "{:?}",
        report.source_damage
    );
    assert_eq!(report.procedures_whole, 1);
    assert_eq!(report.procedures_with_gap, vec![(procedure(2), 6)]);
    let copy = EventLog::open_read_only(&to).unwrap();
    assert!(copy.verify().unwrap().is_clean());
    let second = copy.procedure_events(procedure(2), 1).unwrap();
    assert_eq!(second.last().unwrap().kind, HISTORY_GAP_KIND);
    let gap: HistoryGap = rmp_serde::from_slice(&second.last().unwrap().payload).unwrap();
    assert!(
        gap.reason.contains("lost acknowledged history"),
        "{}",
        gap.reason
    );
    assert!(copy.open_procedures().unwrap().is_empty());
}
