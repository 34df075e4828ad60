//! Archiving finished migrations: the cut, the checkpoint, the chain across it, the
//! archive's proof, and a crash at every step.

mod log_support;

use log_support::*;
use regmig::archive::{
    archive_before, read_archive, verify_archive, write_archive_files, ArchiveError,
};
use regmig::log::{EventLog, LogError, LogOptions};
use uuid::Uuid;

/// Later than every event the helpers record.
const BEFORE_ALL_MS: u64 = 1_800_000_000_000;

struct History {
    /// Finished, in the order of their first event: a, b, c.
    finished: Vec<Uuid>,
    /// Still open after them.
    open: Uuid,
    /// Finished after the open one started.
    late: Uuid,
}

/// a1 a2 | b1 b2 (closes) | a3 (closes) | c1 c2 (closes) | d1 d2 (open) | e1 e2 (closes)
fn write_history(log: &EventLog) -> History {
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let (a, b, c, d, e) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let ok = |request| {
        log.append_blocking(request)
            .expect("append")
            .expect("no conflict");
    };
    ok(first_append(a, 2, 1, vec![10, 11]));
    let mut b_first = first_append(b, 2, 2, vec![11, 12]);
    b_first.closes = true;
    ok(b_first);
    ok(next_append(a, 3, 1, true));
    let mut c_first = first_append(c, 2, 3, vec![10]);
    c_first.closes = true;
    ok(c_first);
    ok(first_append(d, 2, 4, vec![12]));
    let mut e_first = first_append(e, 2, 5, vec![13]);
    e_first.closes = true;
    ok(e_first);
    History {
        finished: vec![a, b, c],
        open: d,
        late: e,
    }
}

fn total_events(log: &EventLog) -> usize {
    log.events_from(1, usize::MAX).expect("read").len()
}

#[test]
fn an_archive_cuts_the_finished_prefix_and_the_chain_goes_on_from_the_checkpoint() {
    let data = tempfile::tempdir().expect("temp dir");
    let archive = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), LogOptions::default()).expect("open");
    let history = write_history(&log);
    let before = log.verify().expect("verify");
    assert!(before.is_clean(), "{:#?}", before.problems);
    assert_eq!(before.events, 11);

    let report = archive_before(&log, BEFORE_ALL_MS, archive.path()).expect("archive");
    assert_eq!(report.migrations, 3);
    assert_eq!(report.events, 7, "a (3), b (2), c (2)");
    let checkpoint = report.checkpoint.expect("a checkpoint");
    assert_eq!(checkpoint.cut_global_seq, 7);
    let (stopper, reason) = report.stopped_by.expect("the open migration stops the cut");
    assert_eq!(stopper, history.open);
    assert_eq!(reason, "it is still open");

    // The live log: the archived ones are gone, the rest reads and verifies.
    for id in &history.finished {
        assert_eq!(log.procedure_events(*id, 1).expect("read"), vec![]);
    }
    // Their audit entries went with them; the live ones stay.
    for (region_id, expected) in [
        (1, vec![]),
        (2, vec![]),
        (3, vec![]),
        (4, vec![history.open]),
    ] {
        let found: Vec<Uuid> = log
            .procedures_by_region(region_id, 0, u64::MAX)
            .expect("audit index reads")
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(found, expected, "region {region_id}");
    }
    let by_peer: Vec<Uuid> = log
        .procedures_by_peer(12, 0, u64::MAX)
        .expect("audit index reads")
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(
        by_peer,
        vec![history.open],
        "b (peer 12) is archived, d is not"
    );
    let live = log.events_from(0, usize::MAX).expect("read the live order");
    assert_eq!(
        live.iter()
            .map(|record| record.global_seq)
            .collect::<Vec<_>>(),
        vec![8, 9, 10, 11]
    );
    let after = log.verify().expect("verify");
    assert!(after.is_clean(), "{:#?}", after.problems);
    assert_eq!(after.events, 4);
    assert_eq!(after.archived_to_global_seq, 7);
    assert_eq!(after.chain.head_global_seq, 11);
    assert_eq!(
        after.chain.head_hash, before.chain.head_hash,
        "the same chain, continued"
    );

    // The archive proves the cut: 1..=7, chained, ending on the checkpoint.
    let contents = verify_archive(&log, archive.path()).expect("the archive joins");
    assert_eq!(contents.records.len(), 7);
    assert_eq!(contents.head_hash, checkpoint.hash_at_cut);
    for id in &history.finished {
        let mine: Vec<_> = contents
            .records
            .iter()
            .filter(|record| record.procedure_id == *id)
            .cloned()
            .collect();
        assert_events_are_the_written_ones(*id, &mine);
    }

    // Appends go on after the cut; reopen (mark check) as writer and as reader.
    log.append_blocking(next_append(history.open, 3, 1, true))
        .expect("append")
        .expect("no conflict");
    drop(log);
    let reader = EventLog::open_read_only(data.path()).expect("open for reading");
    assert!(reader.damage().is_none(), "{:?}", reader.damage());
    drop(reader);
    let log = EventLog::open(data.path(), LogOptions::default()).expect("reopen");
    let again = log.verify().expect("verify");
    assert!(again.is_clean(), "{:#?}", again.problems);
    assert_eq!(again.chain.head_global_seq, 12);

    // A second archive takes d and e; both manifests chain from global seq 1.
    let second = archive_before(&log, BEFORE_ALL_MS, archive.path()).expect("archive again");
    assert_eq!(second.migrations, 2);
    assert_eq!(
        log.procedure_events(history.late, 1).expect("read"),
        vec![],
        "e went with d"
    );
    assert_eq!(second.checkpoint.expect("checkpoint").cut_global_seq, 12);
    assert_eq!(second.stopped_by, None);
    assert_eq!(total_events(&log), 0);
    let contents = verify_archive(&log, archive.path()).expect("both archives join");
    assert_eq!(contents.manifests.len(), 2);
    assert_eq!(contents.records.len(), 12);
    let empty = log.verify().expect("verify");
    assert!(empty.is_clean(), "{:#?}", empty.problems);
    assert_eq!(empty.events, 0);
    assert_eq!(empty.chain.head_global_seq, 12);
    drop(log);
    let log =
        EventLog::open(data.path(), LogOptions::default()).expect("reopen an all-archived log");
    let receipt = log
        .append_blocking(first_append(Uuid::now_v7(), 1, 9, vec![]))
        .expect("append")
        .expect("no conflict");
    assert_eq!(
        receipt.first_global_seq, 13,
        "global seqs go on after the cut"
    );
    let last = log.verify().expect("verify");
    assert!(last.is_clean(), "{:#?}", last.problems);
}

#[test]
fn nothing_finished_before_the_time_archives_nothing_and_writes_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let archive = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), unsynced()).expect("open");
    let history = write_history(&log);
    // a's last event is at 1_700_000_003_000 ms.
    let report = archive_before(&log, 1_700_000_003_000, archive.path()).expect("archive");
    assert_eq!(report.migrations, 0);
    assert_eq!(report.manifest, None);
    assert_eq!(
        report.stopped_by,
        Some((
            history.finished[0],
            "it finished at 1700000003000 ms, not before 1700000003000 ms".to_string()
        ))
    );
    assert_eq!(std::fs::read_dir(archive.path()).expect("list").count(), 0);
    assert_eq!(total_events(&log), 11);
}

/// A crash at every step: after the plan, after the files, after the cut. Reopened, the
/// log is the old one (every event live, no checkpoint) or the new one (none of the
/// archived events live, the archive proving them), never both or neither.
#[test]
fn a_crash_at_every_step_of_an_archive_leaves_the_old_state_or_the_new_one() {
    for crash_after in ["plan", "files", "cut"] {
        let data = tempfile::tempdir().expect("temp dir");
        let archive = tempfile::tempdir().expect("temp dir");
        let log = EventLog::open(data.path(), LogOptions::default()).expect("open");
        let history = write_history(&log);
        let plan = log.plan_archive(BEFORE_ALL_MS).expect("plan");
        if crash_after != "plan" {
            let (_, sha256) =
                write_archive_files(&plan, BEFORE_ALL_MS, archive.path()).expect("files");
            if crash_after == "cut" {
                log.apply_archive(&plan, sha256, archive.path())
                    .expect("cut");
            }
        }
        drop(log);
        let log = EventLog::open(data.path(), LogOptions::default()).expect("reopen");
        let report = log.verify().expect("verify");
        assert!(report.is_clean(), "{crash_after}: {:#?}", report.problems);
        let live_a = log.procedure_events(history.finished[0], 1).expect("read");
        if crash_after == "cut" {
            assert_eq!(
                live_a,
                vec![],
                "{crash_after}: archived, gone from the live log"
            );
            assert_eq!(report.events, 4);
            let contents = verify_archive(&log, archive.path()).expect("joins");
            assert_eq!(contents.records.len(), 7, "{crash_after}: in the archive");
        } else {
            assert_eq!(live_a.len(), 3, "{crash_after}: still live");
            assert_eq!(report.events, 11);
            assert_eq!(log.checkpoint().expect("read"), None);
            if crash_after == "files" {
                // The orphan files prove nothing against a log that was never cut...
                let orphan = verify_archive(&log, archive.path());
                assert!(
                    matches!(orphan, Err(ArchiveError::Broken { .. })),
                    "{orphan:?}"
                );
            }
            // ...and a rerun writes over them and cuts.
            let rerun = archive_before(&log, BEFORE_ALL_MS, archive.path()).expect("rerun");
            assert_eq!(rerun.migrations, 3);
            verify_archive(&log, archive.path()).expect("the rerun joins");
        }
    }
}

/// A crash while the files are written: one bundle in place, the manifest still under its
/// temporary name. Reopened, the log is the old one, the half-written archive proves
/// nothing, and a rerun writes over it and cuts.
#[test]
fn a_crash_while_the_archive_files_are_written_leaves_the_old_state() {
    let data = tempfile::tempdir().expect("temp dir");
    let archive = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), LogOptions::default()).expect("open");
    let history = write_history(&log);
    let plan = log.plan_archive(BEFORE_ALL_MS).expect("plan");
    let mut first_only = plan.clone();
    first_only.procedures.truncate(1);
    let (manifest, _) =
        write_archive_files(&first_only, BEFORE_ALL_MS, archive.path()).expect("files");
    let mut partial = manifest.clone().into_os_string();
    partial.push(".partial");
    std::fs::rename(&manifest, &partial).expect("the manifest not yet renamed");
    drop(log);
    let log = EventLog::open(data.path(), LogOptions::default()).expect("reopen");
    assert!(log.verify().expect("verify").is_clean());
    assert_eq!(total_events(&log), 11);
    assert_eq!(log.checkpoint().expect("read"), None);
    let half = verify_archive(&log, archive.path()).expect("no manifest: nothing to join");
    assert_eq!(half.records.len(), 0);
    let rerun = archive_before(&log, BEFORE_ALL_MS, archive.path()).expect("rerun");
    assert_eq!(rerun.migrations, 3);
    let contents = verify_archive(&log, archive.path()).expect("the rerun joins");
    assert_eq!(contents.records.len(), 7);
    assert_eq!(
        log.procedure_events(history.finished[0], 1).expect("read"),
        vec![]
    );
}

#[test]
fn a_plan_the_log_moved_past_is_refused_and_removes_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let archive = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), unsynced()).expect("open");
    write_history(&log);
    let plan = log.plan_archive(BEFORE_ALL_MS).expect("plan");
    archive_before(&log, BEFORE_ALL_MS, archive.path()).expect("another archive runs first");
    let stale = log.apply_archive(&plan, [0u8; 32], archive.path());
    assert!(
        matches!(&stale, Err(LogError::ArchiveStale { reason }) if reason == "another archive ran since the plan"),
        "{stale:?}"
    );
    assert_eq!(total_events(&log), 4);
}

#[test]
fn a_changed_bundle_or_a_missing_manifest_does_not_join() {
    let data = tempfile::tempdir().expect("temp dir");
    let archive = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), unsynced()).expect("open");
    let history = write_history(&log);
    let report = archive_before(&log, BEFORE_ALL_MS, archive.path()).expect("archive");
    let bundle = archive.path().join(format!("{}.rgmb", history.finished[1]));
    let mut bytes = std::fs::read(&bundle).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&bundle, &bytes).expect("write");
    match read_archive(archive.path()) {
        Err(ArchiveError::Broken { path, reason }) => {
            assert_eq!(path, bundle);
            assert!(reason.starts_with("SHA-256 "), "{reason}");
        }
        other => panic!("expected a broken bundle, got {other:?}"),
    }
    bytes[last] ^= 1;
    std::fs::write(&bundle, &bytes).expect("write back");
    std::fs::remove_file(report.manifest.expect("a manifest")).expect("remove");
    match verify_archive(&log, archive.path()) {
        Err(ArchiveError::Broken { reason, .. }) => assert_eq!(
            reason,
            "holds no manifest, but the live log's checkpoint says global seqs 1 to 7 were archived"
        ),
        other => panic!("expected a missing manifest, got {other:?}"),
    }
}

use regmig::log::archive::dir_size_bytes;

/// What [`ninety_percent_archived`] measured, in bytes of every file under each directory.
struct Sizes {
    before: u64,
    after_archive: u64,
    after_reopen: u64,
    archive: u64,
    compacted: u64,
    entries: u64,
}

/// Writes `migrations` finished migrations of 30 events (a 400-byte payload each) to a new
/// log, archives the first 90% of them, compacts the log into a new directory, checks that
/// the archive joins the compacted log, and returns the sizes.
fn ninety_percent_archived(migrations: u64) -> Sizes {
    let data = tempfile::tempdir().expect("temp dir");
    let archive = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), unsynced()).expect("open");
    let payload = vec![7u8; 400];
    for index in 0..migrations {
        let id = Uuid::now_v7();
        let events = (1..=30)
            .map(|seq| regmig::log::NewEvent {
                kind: 1,
                recorded_at_ms: 1_700_000_000_000 + index * 1000 + seq,
                payload: payload.clone(),
            })
            .collect();
        log.append_blocking(regmig::log::AppendRequest {
            procedure_id: id,
            expected_next_seq: 1,
            events,
            opens: Some(regmig::log::OpenProcedure {
                region_id: index,
                peers: vec![1, 2],
            }),
            closes: true,
        })
        .expect("append")
        .expect("no conflict");
    }
    log.sync_blocking().expect("sync");
    drop(log);
    let before = dir_size_bytes(data.path());
    let log = EventLog::open(data.path(), LogOptions::default()).expect("open");
    let archived = migrations * 9 / 10;
    let report =
        archive_before(&log, 1_700_000_000_000 + archived * 1000, archive.path()).expect("archive");
    assert_eq!(report.migrations, archived);
    drop(log);
    let after_archive = dir_size_bytes(data.path());
    let log = EventLog::open(data.path(), LogOptions::default()).expect("reopen");
    log.sync_blocking().expect("sync");
    drop(log);
    let after_reopen = dir_size_bytes(data.path());
    let compacted_dir = tempfile::tempdir().expect("temp dir");
    let compacted = compacted_dir.path().join("data");
    let report = regmig::log::archive::compact(data.path(), &compacted).expect("compact");
    let log = EventLog::open(&compacted, LogOptions::default()).expect("open the compacted log");
    let verified = log.verify().expect("verify");
    assert!(verified.is_clean(), "{:#?}", verified.problems);
    assert_eq!(verified.events, (migrations - archived) * 30);
    assert_eq!(verified.archived_to_global_seq, archived * 30);
    verify_archive(&log, archive.path()).expect("the archive joins the compacted log");
    Sizes {
        before,
        after_archive,
        after_reopen,
        archive: dir_size_bytes(archive.path()),
        compacted: report.bytes_after,
        entries: report.entries,
    }
}

fn print_sizes(migrations: u64, sizes: &Sizes) {
    let percent = |bytes: u64| bytes as f64 * 100.0 / sizes.before as f64;
    println!(
        "{migrations} migrations, 90% archived: before {} B, after the archive {} B ({:.1}%), after a reopen {} B ({:.1}%), compacted {} B ({:.1}%, {} entries), archive {} B",
        sizes.before,
        sizes.after_archive,
        percent(sizes.after_archive),
        sizes.after_reopen,
        percent(sizes.after_reopen),
        sizes.compacted,
        percent(sizes.compacted),
        sizes.entries,
        sizes.archive
    );
}

/// The bar, checked on every run: a log that archived 90% of its migrations and
/// was compacted is at most 20% of its former size, and its archive joins it.
#[test]
fn a_log_that_archived_ninety_percent_compacts_to_at_most_a_fifth() {
    let sizes = ninety_percent_archived(300);
    print_sizes(300, &sizes);
    assert!(
        sizes.compacted * 5 <= sizes.before,
        "compacted {} B of {} B: more than 20%",
        sizes.compacted,
        sizes.before
    );
}

/// The measurement behind BENCHMARKS.md, "Archiving": 1,000 migrations of 30 events (about
/// 400 bytes of payload each), 90% archived. Run with `--release --ignored --nocapture`.
#[test]
#[ignore = "a measurement, about 10 s: run it by hand"]
fn disk_space_after_archiving_ninety_percent() {
    let sizes = ninety_percent_archived(1000);
    print_sizes(1000, &sizes);
    assert!(
        sizes.compacted * 5 <= sizes.before,
        "at most 20% of the former size"
    );
}

#[test]
fn a_compacted_log_keeps_every_entry_the_checkpoint_and_the_mark() {
    let data = tempfile::tempdir().expect("temp dir");
    let archive = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), LogOptions::default()).expect("open");
    let history = write_history(&log);
    archive_before(&log, BEFORE_ALL_MS, archive.path()).expect("archive");
    let live_before = log.events_from(0, usize::MAX).expect("read");
    drop(log);
    let target = tempfile::tempdir().expect("temp dir");
    let to = target.path().join("data");
    let report = regmig::log::archive::compact(data.path(), &to).expect("compact");
    assert!(report.entries > 0);
    let log = EventLog::open(&to, LogOptions::default()).expect("open the compacted log");
    assert_eq!(log.events_from(0, usize::MAX).expect("read"), live_before);
    assert_eq!(
        log.open_procedures().expect("read"),
        vec![(history.open, 4)]
    );
    verify_archive(&log, archive.path()).expect("the archive joins the compacted log");
    let receipt = log
        .append_blocking(next_append(history.open, 3, 1, true))
        .expect("append")
        .expect("no conflict");
    assert_eq!(receipt.first_global_seq, 12);
    assert!(log.verify().expect("verify").is_clean());
    // The target must be new.
    drop(log);
    let refused = regmig::log::archive::compact(data.path(), &to);
    assert!(matches!(refused, Err(LogError::Io { .. })), "{refused:?}");
}

/// sled has no read-only open, and opening a database in place writes snapshot files:
/// compact reads a private copy, so every file of its source is left byte for byte.
#[test]
fn compact_writes_nothing_into_its_source() {
    let data = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), LogOptions::default()).expect("open");
    write_history(&log);
    let written = log.events_from(0, usize::MAX).expect("read");
    drop(log);
    let before = file_contents(data.path());
    let target = tempfile::tempdir().expect("temp dir");
    let to = target.path().join("data");
    let report = regmig::log::archive::compact(data.path(), &to).expect("compact");
    assert_eq!(
        file_contents(data.path()),
        before,
        "compact wrote into its source"
    );
    assert!(report.entries > 0);
    let log = EventLog::open_read_only(&to).expect("open the compacted log");
    assert_eq!(log.events_from(0, usize::MAX).expect("read"), written);
    assert!(log.verify().expect("verify").is_clean());
}

/// An engine holds the source: compact is refused at once, before its target is made.
#[test]
fn compact_is_refused_while_an_engine_holds_the_source() {
    let data = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), LogOptions::default()).expect("open");
    write_history(&log);
    let target = tempfile::tempdir().expect("temp dir");
    let to = target.path().join("data");
    let refused = regmig::log::archive::compact(data.path(), &to);
    assert!(
        matches!(&refused, Err(LogError::InUse { dir }) if dir == data.path()),
        "{refused:?}"
    );
    assert!(!to.exists(), "a refused compact made its target");
}

/// A source that lost acknowledged history is refused with that loss, untouched: a
/// compacted copy would look whole. `log salvage` is for it.
#[test]
fn compact_refuses_a_source_that_lost_history_and_leaves_it_as_it_was() {
    let data = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), LogOptions::default()).expect("open");
    let history = write_history(&log);
    drop(log);
    let older = tempfile::tempdir().expect("temp dir");
    copy_dir(&data.path().join("sled"), &older.path().join("sled"));
    let log = EventLog::open_existing(data.path(), LogOptions::default()).expect("reopen");
    log.append_blocking(next_append(history.open, 3, 2, true))
        .expect("append")
        .expect("no conflict");
    drop(log);
    // The disk serves the older state; the mark vouches for two more events.
    std::fs::remove_dir_all(data.path().join("sled")).expect("remove");
    copy_dir(&older.path().join("sled"), &data.path().join("sled"));
    let before = file_contents(data.path());
    let target = tempfile::tempdir().expect("temp dir");
    let to = target.path().join("data");
    let refused = regmig::log::archive::compact(data.path(), &to);
    match &refused {
        Err(LogError::LostHistory(lost)) => {
            assert_eq!(
                (lost.last_good_global_seq, lost.first_missing_global_seq),
                (Some(11), Some(12))
            );
            assert_eq!(lost.procedures, vec![history.open]);
        }
        other => panic!("expected lost history, got {other:?}"),
    }
    assert_eq!(
        file_contents(data.path()),
        before,
        "compact wrote into its source"
    );
    assert!(!to.exists(), "a refused compact made its target");
}

#[test]
fn retention_is_off_by_default_and_archives_by_age_when_set() {
    use regmig::archive::{apply_retention, Retention};
    let data = tempfile::tempdir().expect("temp dir");
    let archive = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(data.path(), unsynced()).expect("open");
    write_history(&log);
    assert_eq!(Retention::default().archive_after_ms, None);
    let off = apply_retention(&log, &Retention::default(), BEFORE_ALL_MS).expect("off");
    assert_eq!(off, None);
    assert_eq!(total_events(&log), 11);
    let no_dir = Retention {
        archive_after_ms: Some(1000),
        ..Retention::default()
    };
    assert!(matches!(
        apply_retention(&log, &no_dir, BEFORE_ALL_MS),
        Err(ArchiveError::Broken { .. })
    ));
    let week_ms = 7 * 24 * 3600 * 1000;
    let retention = Retention {
        archive_after_ms: Some(week_ms),
        archive_dir: Some(archive.path().to_path_buf()),
        ..Retention::default()
    };
    // Every helper event is at about 1_700_000_010_000 ms: a week later, a, b, c go.
    let report = apply_retention(&log, &retention, 1_700_000_010_000 + week_ms)
        .expect("retention")
        .expect("on");
    assert_eq!(report.migrations, 3);
    assert_eq!(total_events(&log), 4);
}

/// Keep at most N finished: the four finished migrations of the history are a, b, c and
/// e (d is open). Keeping 2 archives the oldest two, a and b, and the cut stops at c
/// because the limit is reached; keeping 0 archives a, b and c, and the open d stops the
/// cut (e stays live behind it); keeping 3 archives nothing, since a and b interleave and
/// the cut cannot take a alone.
#[test]
fn retention_keeps_at_most_n_finished_migrations_as_far_as_a_prefix_reaches() {
    use regmig::archive::{apply_retention, Retention};
    for (keep, archived, stopped) in [
        (
            3,
            0usize,
            "the cut already holds as many migrations as it may take (1)",
        ),
        (
            2,
            2,
            "the cut already holds as many migrations as it may take (2)",
        ),
        (0, 3, "it is still open"),
    ] {
        let data = tempfile::tempdir().expect("temp dir");
        let archive = tempfile::tempdir().expect("temp dir");
        let log = EventLog::open(data.path(), unsynced()).expect("open");
        let history = write_history(&log);
        let retention = Retention {
            keep_finished: Some(keep),
            archive_dir: Some(archive.path().to_path_buf()),
            ..Retention::default()
        };
        let report = apply_retention(&log, &retention, BEFORE_ALL_MS)
            .expect("retention")
            .expect("on");
        assert_eq!(report.migrations, archived as u64, "keep {keep}");
        let (stopper, reason) = report.stopped_by.expect("the cut stops");
        assert_eq!(reason, stopped, "keep {keep}");
        let expected_stopper = match keep {
            3 => history.finished[1],
            2 => history.finished[2],
            _ => history.open,
        };
        assert_eq!(stopper, expected_stopper, "keep {keep}");
        let mut live = log.procedures().expect("list");
        live.sort();
        let mut expected: Vec<Uuid> = history.finished[archived..].to_vec();
        expected.extend([history.open, history.late]);
        expected.sort();
        assert_eq!(live, expected, "keep {keep}");
        if archived > 0 {
            verify_archive(&log, archive.path()).expect("the archive joins");
        }
    }
}
