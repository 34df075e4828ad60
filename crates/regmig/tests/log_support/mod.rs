//! Helpers shared by the log tests: requests, deterministic payloads, consistency checks.
#![allow(dead_code)]

use std::collections::BTreeMap;

use regmig::log::keys::{event_key, TREE_NAME};
use regmig::log::SledStore;
use regmig::log::{
    AppendRequest, Durability, EventLog, LogOptions, NewEvent, OpenProcedure, Record,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The payload every test event carries: enough to check that an event read back is the
/// one written (rmp-serde, named, as the engine writes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestPayload {
    pub procedure: String,
    pub seq: u64,
    pub note: String,
}

/// Event 2 of one procedure in 8 (by the last byte of its id) carries a payload of this
/// size: over sled's 128 KiB page threshold, so it is stored as a sled blob.
pub const BIG_PAYLOAD_BYTES: usize = 160 * 1024;

pub fn has_big_payload(procedure_id: Uuid, seq: u64) -> bool {
    seq == 2 && procedure_id.as_bytes()[15] % 8 == 0
}

pub fn payload(procedure_id: Uuid, seq: u64) -> Vec<u8> {
    let note = if has_big_payload(procedure_id, seq) {
        "b".repeat(BIG_PAYLOAD_BYTES)
    } else {
        format!("event {seq}")
    };
    rmp_serde::to_vec_named(&TestPayload {
        procedure: procedure_id.to_string(),
        seq,
        note,
    })
    .expect("encode a test payload")
}

pub fn decode_payload(record: &Record) -> TestPayload {
    rmp_serde::from_slice(&record.payload).expect("a test payload decodes")
}

/// The kind the tests give event `seq`.
pub fn kind_of(seq: u64) -> u16 {
    (seq % 7) as u16 + 1
}

/// `count` events starting at `first_seq`, recorded at `first_seq * 1000` ms on.
pub fn events(procedure_id: Uuid, first_seq: u64, count: u64) -> Vec<NewEvent> {
    (first_seq..first_seq + count)
        .map(|seq| NewEvent {
            kind: kind_of(seq),
            recorded_at_ms: 1_700_000_000_000 + seq * 1000,
            payload: payload(procedure_id, seq),
        })
        .collect()
}

pub fn first_append(
    procedure_id: Uuid,
    count: u64,
    region_id: u64,
    peers: Vec<u64>,
) -> AppendRequest {
    AppendRequest {
        procedure_id,
        expected_next_seq: 1,
        events: events(procedure_id, 1, count),
        opens: Some(OpenProcedure { region_id, peers }),
        closes: false,
    }
}

pub fn next_append(
    procedure_id: Uuid,
    expected_next_seq: u64,
    count: u64,
    closes: bool,
) -> AppendRequest {
    AppendRequest {
        procedure_id,
        expected_next_seq,
        events: events(procedure_id, expected_next_seq, count),
        opens: None,
        closes,
    }
}

pub fn unsynced() -> LogOptions {
    LogOptions {
        durability: Durability::UnsyncedForTestsOnly,
        ..LogOptions::default()
    }
}

/// Checks that every event of `procedure_id` is the one the helpers wrote.
pub fn assert_events_are_the_written_ones(procedure_id: Uuid, records: &[Record]) {
    for (index, record) in records.iter().enumerate() {
        let seq = index as u64 + 1;
        assert_eq!(record.procedure_id, procedure_id);
        assert_eq!(record.seq, seq, "procedure {procedure_id}");
        assert_eq!(record.kind, kind_of(seq));
        assert_eq!(record.recorded_at_ms, 1_700_000_000_000 + seq * 1000);
        assert_eq!(record.format_version, regmig::log::FORMAT_VERSION);
        let decoded = decode_payload(record);
        assert_eq!(decoded.procedure, procedure_id.to_string());
        assert_eq!(decoded.seq, seq);
        if has_big_payload(procedure_id, seq) {
            assert_eq!(decoded.note.len(), BIG_PAYLOAD_BYTES);
        }
    }
}

/// Checks the log as a whole: verify() is clean, the global order lists every event once
/// with no gap, and each procedure's events come in order there.
pub fn assert_log_consistent(log: &EventLog) {
    let report = log.verify().expect("verify runs");
    assert!(
        report.is_clean(),
        "verify found problems: {:#?}",
        report.problems
    );
    let all = log
        .events_from(1, usize::MAX)
        .expect("the global order reads back");
    assert_eq!(
        all.len() as u64,
        report.events,
        "the global order lists every event"
    );
    let mut last_seq_by_procedure: BTreeMap<Uuid, u64> = BTreeMap::new();
    for (index, record) in all.iter().enumerate() {
        assert_eq!(
            record.global_seq,
            index as u64 + 1,
            "global seqs have no gap"
        );
        let last_seq = last_seq_by_procedure
            .entry(record.procedure_id)
            .or_insert(0);
        assert_eq!(
            record.seq,
            *last_seq + 1,
            "a procedure's events come in order in the global order"
        );
        *last_seq = record.seq;
    }
    assert_eq!(last_seq_by_procedure.len() as u64, report.procedures);
    let open = log.open_procedures().expect("open index reads");
    assert_eq!(open.len() as u64, report.open_procedures);
    for (procedure_id, region_id) in open {
        assert_eq!(
            log.open_procedure_of_region(region_id)
                .expect("region index reads"),
            Some(procedure_id)
        );
    }
}

/// Every file under `dir` with its bytes, to show that a command wrote nothing there.
pub fn file_contents(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    files
}

/// Copies the directory tree `from` to `to` (created), as a test's scratch copy of a log.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

pub struct DamagedLog {
    pub dir: tempfile::TempDir,
    /// Its event 2 has a flipped payload byte.
    pub bad_checksum: Uuid,
    /// Its event 3 is cut to 30 bytes.
    pub truncated: Uuid,
    /// Its event 2 is deleted and its event 4 claims format version 9 (with a valid crc).
    pub gap_and_version: Uuid,
}

/// Writes three procedures of five events, then damages them through the sled tree.
pub fn damaged_log() -> DamagedLog {
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
    let tree = SledStore::of(&log)
        .expect("a sled-backed log")
        .db()
        .open_tree(TREE_NAME)
        .expect("log tree");
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
    SledStore::of(&log)
        .expect("a sled-backed log")
        .db()
        .flush()
        .expect("flush");
    drop(tree);
    drop(log);
    DamagedLog {
        dir,
        bad_checksum: ids[0],
        truncated: ids[1],
        gap_and_version: ids[2],
    }
}
