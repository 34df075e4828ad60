//! `salvage` (issue 10): what still reads back and checks out goes into a new log, with a
//! marker where history is missing; the damaged directory is left untouched.

mod log_support;

use std::path::Path;

use log_support::{copy_dir, file_contents, first_append, next_append};
use regmig::log::keys::{event_key, TREE_NAME};
use regmig::log::salvage::{salvage, HistoryGap, HISTORY_GAP_KIND};
use regmig::log::{EventLog, LogError, LogOptions, Record};
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

/// [`write_log`], then a second session, as a restarted engine leaves it: sled writes a
/// snapshot when the first closes. Returns every record, in global order.
fn write_two_sessions(dir: &Path) -> Vec<Record> {
    write_log(dir);
    let log = EventLog::open_existing(dir, LogOptions::default()).unwrap();
    log.append_blocking(next_append(procedure(2), 6, 3, false))
        .unwrap()
        .unwrap();
    log.append_blocking(first_append(procedure(3), 4, 12, vec![4]))
        .unwrap()
        .unwrap();
    let records = log.events_from(1, usize::MAX).unwrap();
    drop(log);
    records
}

/// sled's snapshot files in `dir/sled`, sorted.
fn sled_snapshots(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut snapshots: Vec<_> = std::fs::read_dir(dir.join("sled"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .collect();
    snapshots.sort();
    snapshots
}

/// Every procedure of the salvaged log is the start of its history in `written`: whole, or
/// cut and followed by a marker at the first seq it lacks (then closed). Returns how many
/// were cut.
fn assert_each_procedure_is_a_prefix(copy: &EventLog, written: &[Record]) -> usize {
    let mut cut = 0;
    for procedure_id in copy.procedures().unwrap() {
        let events = copy.procedure_events(procedure_id, 1).unwrap();
        let original: Vec<&Record> = written
            .iter()
            .filter(|record| record.procedure_id == procedure_id)
            .collect();
        let (copied, marker) = match events.split_last() {
            Some((last, copied)) if last.kind == HISTORY_GAP_KIND => (copied, Some(last)),
            _ => (&events[..], None),
        };
        for (copied, original) in copied.iter().zip(&original) {
            assert_eq!(
                (copied.seq, copied.kind, &copied.payload),
                (original.seq, original.kind, &original.payload)
            );
        }
        match marker {
            Some(marker) => {
                let gap: HistoryGap = rmp_serde::from_slice(&marker.payload).unwrap();
                assert_eq!(gap.missing_from_seq, copied.len() as u64 + 1);
                assert!(
                    copy.open_procedures()
                        .unwrap()
                        .iter()
                        .all(|(open, _)| *open != procedure_id),
                    "a cut migration is left open"
                );
                cut += 1;
            }
            None => assert_eq!(copied.len(), original.len(), "{procedure_id} is short"),
        }
    }
    cut
}

/// A snapshot sled refuses: readers name it and point to salvage; salvage reads the log
/// without it, finds it still ends where its mark says, and copies it whole.
#[test]
fn a_snapshot_sled_refuses_is_named_and_salvage_reads_the_log_without_it() {
    regmig::log::quiet_sled_panics();
    let root = tempfile::tempdir().unwrap();
    let (from, to) = (root.path().join("from"), root.path().join("to"));
    let written = write_two_sessions(&from);
    let snapshots = sled_snapshots(&from);
    assert!(!snapshots.is_empty(), "sled wrote no snapshot to damage");
    for snapshot in &snapshots {
        std::fs::write(snapshot, b"not a snapshot").unwrap();
    }
    let before = file_contents(&from);
    let refused = EventLog::open_read_only(&from).err().expect("refused");
    let mut named = snapshots.clone();
    named.push(from.join("sled/db"));
    assert!(
        matches!(&refused, LogError::DatabaseRefused(refusal)
            if refusal.dir == from && refusal.files == named && refusal.sled_error == "Read corrupted data at file offset None"),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains(&format!(
            "`regmig log salvage --data-dir {} --to NEW` reads it without those files",
            from.display()
        )),
        "{refused}"
    );

    let report = salvage(&from, &to).unwrap();
    assert_eq!(
        file_contents(&from),
        before,
        "salvage wrote into its source"
    );
    let damage = report
        .source_damage
        .clone()
        .expect("the refusal is reported");
    assert!(
        damage.ends_with(&format!(
            "read without `{}`, it still ends where its mark says: no acknowledged event is missing from its end",
            snapshots[0].display()
        )),
        "{damage}"
    );
    assert_eq!(report.procedures_whole, 3);
    assert!(report.procedures_with_gap.is_empty());
    let copy = EventLog::open_read_only(&to).unwrap();
    assert!(copy.verify().unwrap().is_clean());
    assert_eq!(copy.events_from(1, usize::MAX).unwrap(), written);
}

/// A damaged page log under a snapshot: sled refuses the snapshot, and without it stops
/// reading at the damage, so it serves less than was written. Salvage copies that, and the
/// check against the mark makes it say so: the migrations open at the loss are cut with a
/// marker, never copied as if whole.
#[test]
fn a_page_log_damaged_under_its_snapshot_is_salvaged_as_lost_history_with_markers() {
    regmig::log::quiet_sled_panics();
    let root = tempfile::tempdir().unwrap();
    let written = write_two_sessions(&root.path().join("written"));
    let db = std::fs::read(root.path().join("written/sled/db")).unwrap();
    let data_len = db.iter().rposition(|byte| *byte != 0).unwrap() + 1;
    // Where a flip lands on a message sled reads depends on its layout: try places from
    // the end until one makes sled refuse its snapshot and leaves some history before it.
    let mut tried = Vec::new();
    for step in (1..16).rev() {
        let case = root.path().join(format!("case-{step}"));
        let (from, to) = (case.join("from"), case.join("to"));
        copy_dir(&root.path().join("written"), &from);
        let offset = data_len * step / 16;
        let mut damaged = db.clone();
        for byte in &mut damaged[offset..(offset + 16).min(data_len)] {
            *byte ^= 0xa5;
        }
        std::fs::write(from.join("sled/db"), &damaged).unwrap();
        let refused = EventLog::open_read_only(&from).err();
        let refused_snapshot = matches!(&refused, Some(LogError::DatabaseRefused(refusal))
            if refusal.files.iter().any(|file| file.to_string_lossy().contains("/snap.")));
        tried.push(format!("{offset}: {refused:?}"));
        if !refused_snapshot {
            continue;
        }
        let before = file_contents(&from);
        let report = salvage(&from, &to).unwrap();
        assert_eq!(
            file_contents(&from),
            before,
            "salvage wrote into its source"
        );
        let damage = report.source_damage.clone().expect("the loss is reported");
        if report.events_copied == 0 {
            tried.push(format!("{offset}: nothing before the damage: {damage}"));
            continue;
        }
        assert!(
            damage.contains("has lost acknowledged history: sled refused to open its database")
                && damage.contains("so it was read without `"),
            "{damage}"
        );
        let copy = EventLog::open_read_only(&to).unwrap();
        assert!(copy.verify().unwrap().is_clean());
        let cut = assert_each_procedure_is_a_prefix(&copy, &written);
        assert_eq!(cut, report.procedures_with_gap.len());
        assert!(
            cut >= 1,
            "procedure 2 is open from global seq 4 on, so it is cut wherever the loss starts: {report:#?}"
        );
        assert!(report.events_copied < written.len() as u64);
        return;
    }
    panic!(
        "no flip made sled refuse its snapshot with history before it:\n{}",
        tried.join("\n")
    );
}

/// A damaged settings file: readers name `sled/conf`; salvage reads the log without it
/// (sled writes its settings anew in the copy) and copies it whole.
#[test]
fn a_damaged_sled_settings_file_is_named_and_salvage_reads_past_it() {
    regmig::log::quiet_sled_panics();
    let root = tempfile::tempdir().unwrap();
    let (from, to) = (root.path().join("from"), root.path().join("to"));
    write_log(&from);
    let written = EventLog::open_read_only(&from)
        .unwrap()
        .events_from(1, usize::MAX)
        .unwrap();
    let conf = from.join("sled/conf");
    let mut bytes = std::fs::read(&conf).unwrap();
    bytes[5] ^= 0x20;
    std::fs::write(&conf, &bytes).unwrap();
    let refused = EventLog::open_read_only(&from).err().expect("refused");
    assert!(
        matches!(&refused, LogError::DatabaseRefused(refusal) if refusal.files == vec![conf.clone()]),
        "{refused:?}"
    );
    assert!(
        refused.to_string().starts_with(&format!(
            "the sled database in {} is damaged: its settings file `{}` fails sled's checksum or does not parse",
            from.display(),
            conf.display()
        )),
        "{refused}"
    );
    let report = salvage(&from, &to).unwrap();
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        bytes,
        "salvage wrote into its source"
    );
    assert_eq!(report.procedures_whole, 2);
    let copy = EventLog::open_read_only(&to).unwrap();
    assert!(copy.verify().unwrap().is_clean());
    assert_eq!(copy.events_from(1, usize::MAX).unwrap(), written);
}
