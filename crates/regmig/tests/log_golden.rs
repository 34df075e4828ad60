//! The golden fixture of format version 1, committed under tests/fixtures/log_v1/: every
//! later regmig must read it back exactly. Never regenerate it for a released version; a
//! new format version gets a new fixture beside it.
//!
//! - `tree.bin`: every entry of the log tree (records and indexes), as
//!   `key_len (u16 BE) | key | value_len (u32 BE) | value`, in key order.
//! - `data/`: the data directory itself (sled 0.34.7 files).
//!
//! Both were written by `write_golden_fixture_v1` from [`golden_appends`].

mod log_support;

use log_support::copy_dir;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regmig::log::keys::{
    event_key, global_key, open_key, peer_audit_key, region_audit_key, region_open_key, LAYOUT_KEY,
    TREE_NAME,
};
use regmig::log::SledStore;
use regmig::log::{
    decode_record, encode_record, AppendRequest, EventLog, LogOptions, NewEvent, OpenProcedure,
    Record,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/log_v1");

/// A migration-like payload: strings, optionals, a map, bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct GoldenPayload {
    step: String,
    attempt: u32,
    region: Option<String>,
    detail: BTreeMap<String, u64>,
    blob: Vec<u8>,
}

fn procedure(n: u128) -> Uuid {
    // uuid v7 layout: 48-bit ms | version 7 | 12 random bits | variant 10 | 62 random bits.
    Uuid::from_u128(0x0190_5f3a_c000_7000_8000_0000_0000_0000 | n)
}

fn golden_payload(step: &str, attempt: u32, with_region: bool) -> Vec<u8> {
    rmp_serde::to_vec_named(&GoldenPayload {
        step: step.to_string(),
        attempt,
        region: with_region.then(|| "1024:1".to_string()),
        detail: [
            ("last_entry_id".to_string(), 77),
            ("timeout_ms".to_string(), 5000),
        ]
        .into_iter()
        .collect(),
        blob: (0..attempt as u8 * 10).collect(),
    })
    .expect("encode a golden payload")
}

/// What the fixture holds, as the appends that wrote it, in order.
fn golden_appends() -> Vec<AppendRequest> {
    let (first, second, third) = (procedure(1), procedure(2), procedure(3));
    let at_ms = |n: u64| 1_720_000_000_000 + n * 250;
    let event = |kind: u16, n: u64, payload: Vec<u8>| NewEvent {
        kind,
        recorded_at_ms: at_ms(n),
        payload,
    };
    vec![
        AppendRequest {
            procedure_id: first,
            expected_next_seq: 1,
            events: vec![
                event(1, 0, golden_payload("started", 1, true)),
                event(2, 1, golden_payload("open_candidate", 1, true)),
            ],
            opens: Some(OpenProcedure {
                region_id: 4_398_046_511_105,
                peers: vec![1, 2],
            }),
            closes: false,
        },
        AppendRequest {
            procedure_id: second,
            expected_next_seq: 1,
            events: vec![event(1, 2, golden_payload("started", 1, false))],
            opens: Some(OpenProcedure {
                region_id: 4_398_046_511_106,
                peers: vec![2, 3],
            }),
            closes: false,
        },
        AppendRequest {
            procedure_id: first,
            expected_next_seq: 3,
            events: vec![event(3, 3, golden_payload("downgrade_leader", 2, true))],
            opens: None,
            closes: false,
        },
        AppendRequest {
            procedure_id: third,
            expected_next_seq: 1,
            events: vec![
                event(9, 4, Vec::new()),
                event(0x8001, 5, vec![0xde, 0xad, 0xbe, 0xef]),
                event(
                    10,
                    6,
                    golden_payload("a_kind_unknown_to_this_version", 3, false),
                ),
            ],
            opens: None,
            closes: false,
        },
        AppendRequest {
            procedure_id: second,
            expected_next_seq: 2,
            events: vec![event(5, 7, golden_payload("open_candidate", 2, false))],
            opens: None,
            closes: false,
        },
        AppendRequest {
            procedure_id: first,
            expected_next_seq: 4,
            events: vec![
                event(4, 8, golden_payload("upgrade_candidate", 1, true)),
                event(7, 9, golden_payload("finished", 1, true)),
            ],
            opens: None,
            closes: true,
        },
    ]
}

/// The records the appends must have produced, with their global seqs.
fn expected_records() -> Vec<Record> {
    let mut next_seq: BTreeMap<Uuid, u64> = BTreeMap::new();
    let mut global_seq = 0;
    let mut records = Vec::new();
    for append in golden_appends() {
        for event in append.events {
            let seq = next_seq.entry(append.procedure_id).or_insert(0);
            *seq += 1;
            global_seq += 1;
            records.push(Record {
                format_version: 1,
                kind: event.kind,
                procedure_id: append.procedure_id,
                seq: *seq,
                global_seq,
                recorded_at_ms: event.recorded_at_ms,
                payload: event.payload,
                prev_hash: None,
            });
        }
    }
    records
}

/// The index keys the appends must have produced (values checked where they are not empty).
fn expected_index_entries() -> Vec<(Vec<u8>, Vec<u8>)> {
    let at_ms = 1_720_000_000_000u64;
    let (first, second) = (procedure(1), procedure(2));
    let global_value = |runs: &[(Uuid, u64, u32)]| {
        let mut value = (runs.len() as u32).to_be_bytes().to_vec();
        for (procedure_id, first_seq, count) in runs {
            value.extend_from_slice(procedure_id.as_bytes());
            value.extend_from_slice(&first_seq.to_be_bytes());
            value.extend_from_slice(&count.to_be_bytes());
        }
        value
    };
    vec![
        (LAYOUT_KEY.to_vec(), vec![1]),
        (global_key(1).to_vec(), global_value(&[(first, 1, 2)])),
        (global_key(3).to_vec(), global_value(&[(second, 1, 1)])),
        (global_key(4).to_vec(), global_value(&[(first, 3, 1)])),
        (
            global_key(5).to_vec(),
            global_value(&[(procedure(3), 1, 3)]),
        ),
        (global_key(8).to_vec(), global_value(&[(second, 2, 1)])),
        (global_key(9).to_vec(), global_value(&[(first, 4, 2)])),
        (
            open_key(second).to_vec(),
            4_398_046_511_106u64.to_be_bytes().to_vec(),
        ),
        (
            region_open_key(4_398_046_511_106).to_vec(),
            second.as_bytes().to_vec(),
        ),
        (
            region_audit_key(4_398_046_511_105, at_ms, first).to_vec(),
            vec![],
        ),
        (
            region_audit_key(4_398_046_511_106, at_ms + 500, second).to_vec(),
            vec![],
        ),
        (peer_audit_key(1, at_ms, first).to_vec(), vec![]),
        (peer_audit_key(2, at_ms, first).to_vec(), vec![]),
        (peer_audit_key(2, at_ms + 500, second).to_vec(), vec![]),
        (peer_audit_key(3, at_ms + 500, second).to_vec(), vec![]),
    ]
}

fn read_tree_dump(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("read tree.bin");
    let mut entries = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let key_len = u16::from_be_bytes(rest[..2].try_into().expect("key length")) as usize;
        let key = rest[2..2 + key_len].to_vec();
        rest = &rest[2 + key_len..];
        let value_len = u32::from_be_bytes(rest[..4].try_into().expect("value length")) as usize;
        let value = rest[4..4 + value_len].to_vec();
        rest = &rest[4 + value_len..];
        entries.push((key, value));
    }
    entries
}

#[test]
fn golden_v1_records_decode_field_by_field_and_re_encode_byte_exactly() {
    let entries = read_tree_dump(&PathBuf::from(FIXTURE_DIR).join("tree.bin"));
    let records: Vec<(Vec<u8>, Vec<u8>)> = entries
        .iter()
        .filter(|(key, _)| key[0] == b'E')
        .cloned()
        .collect();
    let mut expected = expected_records();
    expected.sort_by_key(|record| (record.procedure_id, record.seq));
    assert_eq!(records.len(), expected.len());
    for ((key, bytes), expected) in records.iter().zip(&expected) {
        assert_eq!(
            key,
            &event_key(expected.procedure_id, expected.seq).to_vec()
        );
        let record = decode_record(key, bytes).expect("a v1 record decodes");
        assert_eq!(record.format_version, 1);
        assert_eq!(record.kind, expected.kind);
        assert_eq!(record.procedure_id, expected.procedure_id);
        assert_eq!(record.seq, expected.seq);
        assert_eq!(record.global_seq, expected.global_seq);
        assert_eq!(record.recorded_at_ms, expected.recorded_at_ms);
        assert_eq!(record.payload, expected.payload);
        if let Ok(payload) = rmp_serde::from_slice::<GoldenPayload>(&record.payload) {
            assert!(payload.detail.contains_key("timeout_ms"));
        }
        assert_eq!(
            &encode_record(&record),
            bytes,
            "re-encoding gives the stored bytes"
        );
    }
    let indexes: Vec<(Vec<u8>, Vec<u8>)> = entries
        .into_iter()
        .filter(|(key, _)| key[0] != b'E')
        .collect();
    let mut expected_indexes = expected_index_entries();
    expected_indexes.sort();
    assert_eq!(
        indexes, expected_indexes,
        "every index entry, byte for byte"
    );
}

#[test]
fn golden_v1_data_directory_opens_and_reads_back_every_event() {
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    copy_dir(&PathBuf::from(FIXTURE_DIR).join("data"), &data);
    let log = EventLog::open_existing(&data, LogOptions::default()).expect("open the v1 fixture");
    let expected = expected_records();
    for procedure_id in [procedure(1), procedure(2), procedure(3)] {
        let want: Vec<&Record> = expected
            .iter()
            .filter(|record| record.procedure_id == procedure_id)
            .collect();
        let got = log.procedure_events(procedure_id, 1).expect("read");
        assert_eq!(got.iter().collect::<Vec<_>>(), want);
    }
    assert_eq!(
        log.events_from(1, usize::MAX).expect("global order"),
        expected
    );
    assert_eq!(
        log.open_procedures().expect("open index"),
        vec![(procedure(2), 4_398_046_511_106)]
    );
    assert_eq!(
        log.procedures().expect("list"),
        vec![procedure(1), procedure(2), procedure(3)]
    );
    assert_eq!(
        log.procedures_by_peer(2, 0, u64::MAX).expect("peer audit"),
        vec![
            (1_720_000_000_000, procedure(1)),
            (1_720_000_000_500, procedure(2))
        ]
    );
    let report = log.verify().expect("verify");
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(
        (report.events, report.procedures, report.open_procedures),
        (10, 3, 1)
    );
    let tree = SledStore::of(&log)
        .expect("a sled-backed log")
        .db()
        .open_tree(TREE_NAME)
        .expect("tree");
    let stored: Vec<(Vec<u8>, Vec<u8>)> = tree
        .iter()
        .map(|entry| {
            entry
                .map(|(key, value)| (key.to_vec(), value.to_vec()))
                .expect("entry")
        })
        .collect();
    assert_eq!(
        stored,
        read_tree_dump(&PathBuf::from(FIXTURE_DIR).join("tree.bin"))
    );
}

/// A version-1 log read without a writer has no chain, and reading it writes nothing; a
/// writer gives it a mark and chains its first version-2 record onto the last version-1 one.
#[test]
fn golden_v1_log_has_no_chain_until_a_writer_continues_it() {
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    copy_dir(&PathBuf::from(FIXTURE_DIR).join("data"), &data);
    {
        let reader = EventLog::open_read_only(&data).expect("read the v1 fixture");
        assert!(reader.damage().is_none(), "{:?}", reader.damage());
        let report = reader.verify().expect("verify");
        assert!(report.is_clean(), "{:#?}", report.problems);
        assert_eq!(report.chain.chained_from_global_seq, None);
        assert_eq!(report.chain.records, 10);
        let last = reader.events_from(10, 1).expect("read")[0].clone();
        assert_eq!(
            report.chain.head_hash,
            regmig::log::chain_hash(&encode_record(&last))
        );
    }
    assert!(!data.join(regmig::log::MARK_FILE_NAME).exists());
    assert!(!data.join(regmig::log::LOCK_FILE_NAME).exists());

    let log = EventLog::open_existing(&data, LogOptions::default()).expect("open the v1 fixture");
    assert!(data.join(regmig::log::MARK_FILE_NAME).exists());
    let v1_head =
        regmig::log::chain_hash(&encode_record(&log.events_from(10, 1).expect("read")[0]));
    log.append_blocking(AppendRequest {
        procedure_id: procedure(2),
        expected_next_seq: log.next_seq(procedure(2)).expect("next seq"),
        events: vec![NewEvent {
            kind: 5,
            recorded_at_ms: 1_720_000_009_000,
            payload: vec![0x80],
        }],
        opens: None,
        closes: true,
    })
    .expect("append")
    .expect("no conflict");
    let appended = log.events_from(11, 1).expect("read")[0].clone();
    assert_eq!(appended.format_version, regmig::log::FORMAT_VERSION);
    assert_eq!(appended.prev_hash, Some(v1_head));
    let report = log.verify().expect("verify");
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.chain.chained_from_global_seq, Some(11));
    assert_eq!(report.chain.head_global_seq, 11);
}

/// Writes the fixture. Run only to create it, once per format version:
/// `REGMIG_WRITE_LOG_FIXTURE=1 cargo test --test log_golden -- --ignored write_golden_fixture_v1`
#[test]
#[ignore = "writes tests/fixtures/log_v1; run by hand, once"]
fn write_golden_fixture_v1() {
    if std::env::var_os("REGMIG_WRITE_LOG_FIXTURE").is_none() {
        eprintln!("set REGMIG_WRITE_LOG_FIXTURE=1 to (re)write {FIXTURE_DIR}");
        return;
    }
    let fixture = PathBuf::from(FIXTURE_DIR);
    let data = fixture.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).expect("remove the old fixture");
    }
    let log = EventLog::open(&data, LogOptions::default()).expect("open");
    for append in golden_appends() {
        log.append_blocking(append)
            .expect("append")
            .expect("no conflict");
    }
    let tree = SledStore::of(&log)
        .expect("a sled-backed log")
        .db()
        .open_tree(TREE_NAME)
        .expect("tree");
    let mut dump = Vec::new();
    for entry in tree.iter() {
        let (key, value) = entry.expect("entry");
        dump.extend_from_slice(&(key.len() as u16).to_be_bytes());
        dump.extend_from_slice(&key);
        dump.extend_from_slice(&(value.len() as u32).to_be_bytes());
        dump.extend_from_slice(&value);
    }
    std::fs::write(fixture.join("tree.bin"), dump).expect("write tree.bin");
    drop(tree);
    drop(log);
    let _ = std::fs::remove_file(data.join(regmig::log::LOCK_FILE_NAME));
}

const FIXTURE_DIR_V2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/log_v2");
/// The chain hash of the fixture's last record (global seq 10): pins the envelope, the
/// chain's definition and SHA-256 for every later regmig.
const GOLDEN_V2_HEAD_HASH: &str =
    "26f51e3cc688da6942dfd37b0f5a66e0291a73f382cb1e5f75e6b697a7d1e23f";

/// The golden appends as version-2 records: each chained onto the one before it.
fn expected_records_v2() -> Vec<Record> {
    let mut prev_hash = regmig::log::CHAIN_START;
    expected_records()
        .into_iter()
        .map(|record| {
            let record = Record {
                format_version: regmig::log::FORMAT_VERSION,
                prev_hash: Some(prev_hash),
                ..record
            };
            prev_hash = regmig::log::chain_hash(&encode_record(&record));
            record
        })
        .collect()
}

#[test]
fn golden_v2_data_directory_reads_back_with_its_chain_and_mark() {
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    copy_dir(&PathBuf::from(FIXTURE_DIR_V2).join("data"), &data);
    // git keeps no empty directory; sled's `blobs/` was empty when the fixture was written.
    std::fs::create_dir(data.join("sled/blobs")).expect("mkdir blobs");
    let log = EventLog::open_read_only(&data).expect("read the v2 fixture");
    assert!(log.damage().is_none(), "{:?}", log.damage());
    assert_eq!(
        log.events_from(1, usize::MAX).expect("global order"),
        expected_records_v2()
    );
    let report = log.verify().expect("verify");
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.chain.chained_from_global_seq, Some(1));
    assert_eq!(report.chain.head_global_seq, 10);
    assert_eq!(
        regmig::log::keys::hex(&report.chain.head_hash),
        GOLDEN_V2_HEAD_HASH
    );
    let mark = regmig::log::mark::read_mark(&data)
        .expect("the mark reads")
        .expect("a mark");
    assert_eq!(
        (mark.group_first_global_seq, mark.last_global_seq),
        (11, 10)
    );
    assert_eq!(mark.hash_at_last, report.chain.head_hash);
}

/// Writes the version-2 fixture. Run only to create it, once:
/// `REGMIG_WRITE_LOG_FIXTURE=1 cargo test --test log_golden -- --ignored write_golden_fixture_v2`
#[test]
#[ignore = "writes tests/fixtures/log_v2; run by hand, once"]
fn write_golden_fixture_v2() {
    if std::env::var_os("REGMIG_WRITE_LOG_FIXTURE").is_none() {
        return;
    }
    let data = PathBuf::from(FIXTURE_DIR_V2).join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).expect("remove the old fixture");
    }
    let log = EventLog::open(&data, LogOptions::default()).expect("open");
    for append in golden_appends() {
        log.append_blocking(append)
            .expect("append")
            .expect("no conflict");
    }
    println!(
        "head hash: {}",
        regmig::log::keys::hex(&log.verify().expect("verify").chain.head_hash)
    );
    drop(log);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _ = std::fs::remove_file(data.join(regmig::log::LOCK_FILE_NAME));
}
