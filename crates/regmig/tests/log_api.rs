//! The log's API: appends, reads, indexes, conflicts, misuse, and owning a directory.

mod log_support;

use std::time::{Duration, Instant};

use log_support::*;
use regmig::log::SledStore;
use regmig::log::{
    AppendConflict, AppendReceipt, AppendRequest, EventLog, LogError, LogOptions, NewEvent,
    OpenProcedure, PAYLOAD_MAX_BYTES,
};
use uuid::Uuid;

#[test]
fn an_event_log_is_a_cheap_clone_shared_across_threads() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<EventLog>();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    let clone = log.clone();
    let procedure_id = Uuid::now_v7();
    std::thread::spawn(move || {
        clone
            .append_blocking(first_append(procedure_id, 1, 1, vec![]))
            .expect("append")
            .expect("no conflict")
    })
    .join()
    .expect("thread");
    assert_eq!(
        log.next_seq(procedure_id).expect("next seq"),
        2,
        "clones are one log"
    );
}

#[test]
fn appends_get_consecutive_seqs_and_read_back_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), LogOptions::default()).expect("open");
    let procedure_id = Uuid::now_v7();
    let receipt = log
        .append_blocking(first_append(procedure_id, 3, 42, vec![1, 2]))
        .expect("append")
        .expect("no conflict");
    assert_eq!(
        receipt,
        AppendReceipt {
            first_seq: 1,
            last_seq: 3,
            first_global_seq: 1
        }
    );
    let receipt = log
        .append_blocking(next_append(procedure_id, 4, 2, false))
        .expect("append")
        .expect("no conflict");
    assert_eq!(
        receipt,
        AppendReceipt {
            first_seq: 4,
            last_seq: 5,
            first_global_seq: 4
        }
    );
    assert_eq!(log.next_seq(procedure_id).expect("next seq"), 6);
    assert_eq!(log.next_seq(Uuid::now_v7()).expect("next seq"), 1);

    let records = log.procedure_events(procedure_id, 1).expect("read");
    assert_eq!(records.len(), 5);
    assert_events_are_the_written_ones(procedure_id, &records);
    let tail = log
        .procedure_events(procedure_id, 4)
        .expect("read from seq 4");
    assert_eq!(
        tail.iter().map(|record| record.seq).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(log
        .procedure_events(procedure_id, 6)
        .expect("read past the end")
        .is_empty());
    assert_log_consistent(&log);
}

#[test]
fn the_global_order_interleaves_procedures_and_pages_with_a_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    log.append_blocking(first_append(first, 2, 1, vec![]))
        .expect("append")
        .expect("no conflict");
    log.append_blocking(first_append(second, 1, 2, vec![]))
        .expect("append")
        .expect("no conflict");
    log.append_blocking(next_append(first, 3, 1, false))
        .expect("append")
        .expect("no conflict");
    let order: Vec<(Uuid, u64, u64)> = log
        .events_from(0, 100)
        .expect("read")
        .iter()
        .map(|record| (record.procedure_id, record.seq, record.global_seq))
        .collect();
    assert_eq!(
        order,
        vec![(first, 1, 1), (first, 2, 2), (second, 1, 3), (first, 3, 4)]
    );
    let page: Vec<u64> = log
        .events_from(2, 2)
        .expect("read")
        .iter()
        .map(|record| record.global_seq)
        .collect();
    assert_eq!(page, vec![2, 3]);
    assert!(log
        .events_from(5, 10)
        .expect("read past the end")
        .is_empty());
    assert!(log.events_from(1, 0).expect("limit 0").is_empty());
}

#[test]
fn open_and_audit_indexes_follow_opens_and_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    log.append_blocking(first_append(first, 1, 7, vec![10, 11, 10]))
        .expect("append")
        .expect("no conflict");
    log.append_blocking(first_append(second, 2, 8, vec![11]))
        .expect("append")
        .expect("no conflict");
    let mut open = log.open_procedures().expect("open index");
    open.sort();
    let mut expected = vec![(first, 7), (second, 8)];
    expected.sort();
    assert_eq!(open, expected);
    assert_eq!(
        log.open_procedure_of_region(7).expect("region index"),
        Some(first)
    );

    // Both procedures' event 1 is recorded at 1_700_000_001_000 ms.
    let at_ms = 1_700_000_001_000;
    assert_eq!(
        log.procedures_by_region(7, at_ms, at_ms).expect("audit"),
        vec![(at_ms, first)]
    );
    assert!(log
        .procedures_by_region(7, at_ms + 1, u64::MAX)
        .expect("audit")
        .is_empty());
    assert!(log
        .procedures_by_region(7, 0, at_ms - 1)
        .expect("audit")
        .is_empty());
    assert_eq!(
        log.procedures_by_peer(10, 0, u64::MAX).expect("audit"),
        vec![(at_ms, first)]
    );
    let mut by_peer_11 = log.procedures_by_peer(11, 0, u64::MAX).expect("audit");
    by_peer_11.sort();
    let mut expected = vec![(at_ms, first), (at_ms, second)];
    expected.sort();
    assert_eq!(by_peer_11, expected);

    log.append_blocking(next_append(first, 2, 1, true))
        .expect("append")
        .expect("no conflict");
    assert_eq!(
        log.open_procedures().expect("open index"),
        vec![(second, 8)]
    );
    assert_eq!(log.open_procedure_of_region(7).expect("region index"), None);
    assert_eq!(
        log.procedures_by_region(7, 0, u64::MAX)
            .expect("audit stays"),
        vec![(at_ms, first)]
    );
    let mut procedures = log.procedures().expect("every procedure");
    let mut expected = vec![first, second];
    expected.sort();
    procedures.sort();
    assert_eq!(procedures, expected);
    assert_log_consistent(&log);
}

#[test]
fn procedures_lists_every_procedure_in_id_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    for (index, procedure_id) in ids.iter().enumerate().rev() {
        log.append_blocking(first_append(
            *procedure_id,
            index as u64 + 1,
            index as u64,
            vec![],
        ))
        .expect("append")
        .expect("no conflict");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(log.procedures().expect("list"), sorted);
}

#[test]
fn a_stale_expected_seq_is_a_sequence_conflict_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    let procedure_id = Uuid::now_v7();
    log.append_blocking(first_append(procedure_id, 2, 1, vec![]))
        .expect("append")
        .expect("no conflict");
    let conflict = log
        .append_blocking(next_append(procedure_id, 2, 1, false))
        .expect("no fault");
    assert_eq!(
        conflict,
        Err(AppendConflict::Sequence {
            procedure_id,
            expected_next_seq: 2,
            actual_next_seq: 3,
        })
    );
    let fresh = Uuid::now_v7();
    assert_eq!(
        log.append_blocking(next_append(fresh, 3, 1, false))
            .expect("no fault"),
        Err(AppendConflict::Sequence {
            procedure_id: fresh,
            expected_next_seq: 3,
            actual_next_seq: 1,
        })
    );
    assert_eq!(log.next_seq(procedure_id).expect("next seq"), 3);
    assert_eq!(log.verify().expect("verify").events, 2);
}

#[test]
fn opening_a_region_that_has_an_open_procedure_is_region_busy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    let holder = Uuid::now_v7();
    let latecomer = Uuid::now_v7();
    log.append_blocking(first_append(holder, 1, 99, vec![1]))
        .expect("append")
        .expect("no conflict");
    assert_eq!(
        log.append_blocking(first_append(latecomer, 1, 99, vec![2]))
            .expect("no fault"),
        Err(AppendConflict::RegionBusy {
            region_id: 99,
            open_procedure_id: holder
        })
    );
    assert_eq!(
        log.next_seq(latecomer).expect("next seq"),
        1,
        "a conflict writes nothing"
    );
    log.append_blocking(next_append(holder, 2, 1, true))
        .expect("append")
        .expect("no conflict");
    log.append_blocking(first_append(latecomer, 1, 99, vec![2]))
        .expect("append")
        .expect("the region is free again");
    assert_eq!(
        log.open_procedure_of_region(99).expect("region index"),
        Some(latecomer)
    );
    assert_log_consistent(&log);
}

#[test]
fn misuse_is_an_invalid_append_that_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    let procedure_id = Uuid::now_v7();
    let empty = AppendRequest {
        procedure_id,
        expected_next_seq: 1,
        events: vec![],
        opens: None,
        closes: false,
    };
    let late_open = AppendRequest {
        opens: Some(OpenProcedure {
            region_id: 1,
            peers: vec![],
        }),
        ..next_append(procedure_id, 2, 1, false)
    };
    let v4_id = Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);
    let big_payload = AppendRequest {
        events: vec![NewEvent {
            kind: 1,
            recorded_at_ms: 1,
            payload: vec![0; PAYLOAD_MAX_BYTES + 1],
        }],
        ..first_append(procedure_id, 1, 1, vec![])
    };
    for request in [
        empty,
        late_open,
        first_append(v4_id, 1, 1, vec![]),
        big_payload,
    ] {
        let described = format!("{request:?}").chars().take(120).collect::<String>();
        let outcome = log.append_blocking(request);
        assert!(
            matches!(outcome, Err(LogError::InvalidAppend { .. })),
            "{described}: {outcome:?}"
        );
    }
    assert!(log.procedures().expect("list").is_empty());
}

#[test]
fn a_log_reopens_where_it_left_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let procedure_id = Uuid::now_v7();
    {
        let log = EventLog::open(dir.path(), LogOptions::default()).expect("open");
        log.append_blocking(first_append(procedure_id, 3, 5, vec![1]))
            .expect("append")
            .expect("no conflict");
    }
    let log = EventLog::open_existing(dir.path(), LogOptions::default()).expect("reopen");
    assert_eq!(log.next_seq(procedure_id).expect("next seq"), 4);
    assert_eq!(
        log.append_blocking(first_append(Uuid::now_v7(), 1, 5, vec![]))
            .expect("no fault"),
        Err(AppendConflict::RegionBusy {
            region_id: 5,
            open_procedure_id: procedure_id
        }),
        "the open index survives a reopen"
    );
    let receipt = log
        .append_blocking(next_append(procedure_id, 4, 1, true))
        .expect("append")
        .expect("no conflict");
    assert_eq!(receipt.first_global_seq, 4, "the global seq continues");
    assert_eq!(
        log.procedure_events(procedure_id, 1).expect("read").len(),
        4
    );
    assert_log_consistent(&log);
}

#[test]
fn open_existing_of_a_missing_directory_is_missing_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope");
    match EventLog::open_existing(&missing, LogOptions::default()) {
        Err(LogError::MissingDataDir { dir }) => assert_eq!(dir, missing),
        other => panic!("expected MissingDataDir, got {:?}", other.err()),
    }
    assert!(!missing.exists(), "open_existing creates nothing");
    let log = EventLog::open(&missing, LogOptions::default()).expect("open creates it");
    assert_eq!(log.data_dir(), missing.as_path());
}

#[test]
fn a_second_open_of_a_directory_in_use_fails_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    let started = Instant::now();
    for attempt in [
        EventLog::open(dir.path(), unsynced()),
        EventLog::open_existing(dir.path(), unsynced()),
    ] {
        match attempt {
            Err(error @ LogError::InUse { .. }) => {
                assert!(
                    error.to_string().contains("in use by another process"),
                    "{error}"
                );
                assert!(matches!(&error, LogError::InUse { dir: in_use } if in_use == dir.path()));
            }
            other => panic!("expected InUse, got {:?}", other.err()),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the second open must not wait"
    );
    drop(log);
    EventLog::open(dir.path(), unsynced()).expect("free again once the owner is dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_append_and_sync_share_the_commit_thread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), LogOptions::default()).expect("open");
    let procedure_id = Uuid::now_v7();
    let receipt = log
        .append(first_append(procedure_id, 2, 3, vec![4]))
        .await
        .expect("append")
        .expect("no conflict");
    assert_eq!(receipt.last_seq, 2);
    let other_tree = SledStore::of(&log)
        .expect("a sled-backed log")
        .db()
        .open_tree("test.other")
        .expect("another tree");
    other_tree
        .insert(b"key", b"value".to_vec())
        .expect("insert");
    log.sync().await.expect("sync");
    log.sync_blocking().expect("sync blocking");
    assert_eq!(
        log.procedure_events(procedure_id, 1).expect("read").len(),
        2
    );
}

#[test]
fn a_failed_sync_poisons_the_log_until_it_is_reopened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let procedure_id = Uuid::now_v7();
    let log = EventLog::open(dir.path(), LogOptions::default()).expect("open");
    log.append_blocking(first_append(procedure_id, 1, 1, vec![]))
        .expect("append")
        .expect("no conflict");
    SledStore::of(&log)
        .expect("a sled-backed log")
        .fail_next_fdatasync_for_tests();
    let failed = log.append_blocking(next_append(procedure_id, 2, 1, false));
    assert!(
        matches!(failed, Err(LogError::WriteFailed { .. })),
        "{failed:?}"
    );
    let refused = log.append_blocking(next_append(procedure_id, 3, 1, false));
    assert!(
        matches!(refused, Err(LogError::Poisoned { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        log.sync_blocking(),
        Err(LogError::Poisoned { .. })
    ));
    assert_eq!(
        log.procedure_events(procedure_id, 1)
            .expect("reads still work")
            .len(),
        2
    );
    drop(log);
    let log = EventLog::open_existing(dir.path(), LogOptions::default()).expect("reopen");
    let next_seq = log.next_seq(procedure_id).expect("next seq");
    assert!(
        next_seq == 2 || next_seq == 3,
        "the failed batch is there or not, whole: next seq {next_seq}"
    );
    log.append_blocking(next_append(procedure_id, next_seq, 1, false))
        .expect("a reopened log writes again")
        .expect("no conflict");
    assert_log_consistent(&log);
}

#[test]
fn a_payload_too_big_for_a_sled_page_goes_to_a_blob_and_reads_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A procedure whose event 2 carries a big payload (see log_support::has_big_payload).
    let procedure_id = std::iter::repeat_with(Uuid::now_v7)
        .find(|id| has_big_payload(*id, 2))
        .expect("one in eight ids");
    {
        let log = EventLog::open(dir.path(), LogOptions::default()).expect("open");
        log.append_blocking(first_append(procedure_id, 3, 1, vec![]))
            .expect("append")
            .expect("no conflict");
    }
    let blobs = std::fs::read_dir(dir.path().join(regmig::log::SLED_SUBDIR).join("blobs"))
        .expect("blobs/")
        .count();
    assert!(blobs > 0, "sled stored the big page as a blob");
    let log = EventLog::open_existing(dir.path(), LogOptions::default()).expect("reopen");
    let records = log.procedure_events(procedure_id, 1).expect("read");
    assert_eq!(records.len(), 3);
    assert_events_are_the_written_ones(procedure_id, &records);
    assert_log_consistent(&log);
}

#[tokio::test(flavor = "current_thread")]
async fn async_appends_on_a_current_thread_runtime_go_through_the_commit_thread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), LogOptions::default()).expect("open");
    let procedure_id = Uuid::now_v7();
    log.append(first_append(procedure_id, 1, 1, vec![]))
        .await
        .expect("append")
        .expect("no conflict");
    for next_seq in 2..=5 {
        let receipt = log
            .append(next_append(procedure_id, next_seq, 1, next_seq == 5))
            .await
            .expect("append")
            .expect("no conflict");
        assert_eq!(receipt.first_seq, next_seq);
    }
    let records = log.procedure_events(procedure_id, 1).expect("read");
    assert_events_are_the_written_ones(procedure_id, &records);
    assert_log_consistent(&log);
}

#[test]
fn a_log_opens_with_any_page_cache_size_and_reads_back_what_it_wrote() {
    // 0 is below sled's own minimum (256 bytes, which it enforces with a panic): the log
    // raises it to CACHE_CAPACITY_BYTES_MIN instead of reporting a damaged database.
    for cache_capacity_bytes in [0, regmig::log::CACHE_CAPACITY_BYTES_MIN, 1 << 30] {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = LogOptions {
            cache_capacity_bytes,
            ..unsynced()
        };
        let procedure_id = Uuid::now_v7();
        {
            let log = EventLog::open(dir.path(), options.clone()).unwrap_or_else(|error| {
                panic!("open with a {cache_capacity_bytes}-byte cache: {error}")
            });
            log.append_blocking(first_append(procedure_id, 3, 7, vec![1, 2]))
                .expect("append")
                .expect("no conflict");
        }
        let log = EventLog::open(dir.path(), options).expect("reopen");
        let records = log.procedure_events(procedure_id, 1).expect("read back");
        assert_eq!(records.len(), 3, "cache of {cache_capacity_bytes} bytes");
        assert_events_are_the_written_ones(procedure_id, &records);
        assert_log_consistent(&log);
    }
}
