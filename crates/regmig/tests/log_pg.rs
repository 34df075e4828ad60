//! What the PostgreSQL store does beyond the conformance suite, against a real server:
//! rights, schema versions, fencing, the writer lock, damage detection in the tables, a
//! server restart under appends.

mod log_support;
mod pg_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use regmig::log::{EventLog, LogError, PgStore};
use regmig::pg::PgConfig;
use uuid::Uuid;

use log_support::{assert_events_are_the_written_ones, first_append, next_append, unsynced};
use pg_support::{database_name, new_database, server};

fn open(config: &PgConfig, writer_epoch: Option<u64>) -> EventLog {
    EventLog::with_store(Arc::new(
        PgStore::open(config.clone(), unsynced(), writer_epoch).expect("open the PostgreSQL log"),
    ))
}

fn open_reader(config: &PgConfig) -> EventLog {
    EventLog::with_store(Arc::new(
        PgStore::open_read_only(config.clone()).expect("open the PostgreSQL log for reading"),
    ))
}

fn psql(config: &PgConfig, sql: &str) -> String {
    server()
        .psql(&database_name(config), sql)
        .unwrap_or_else(|error| panic!("psql {sql}: {error}"))
}

/// Writes `procedures` procedures of three events (two appends) each, on regions no other
/// call used; returns their ids.
fn write_procedures(log: &EventLog, procedures: u64) -> Vec<Uuid> {
    static NEXT_REGION: AtomicU64 = AtomicU64::new(100);
    (0..procedures)
        .map(|_| {
            let procedure_id = Uuid::now_v7();
            let region_id = NEXT_REGION.fetch_add(1, Ordering::Relaxed);
            log.append_blocking(first_append(procedure_id, 2, region_id, vec![1]))
                .expect("no fault")
                .expect("no conflict");
            log.append_blocking(next_append(procedure_id, 3, 1, false))
                .expect("no fault")
                .expect("no conflict");
            procedure_id
        })
        .collect()
}

fn problems(log: &EventLog) -> Vec<(&'static str, Option<Uuid>, Option<u64>)> {
    log.verify()
        .expect("verify runs")
        .problems
        .iter()
        .map(|problem| (problem.kind_name(), problem.procedure_id(), problem.seq()))
        .collect()
}

#[test]
fn a_role_that_owns_only_its_database_can_open_append_and_read() {
    let name = format!("owned_{}", std::process::id());
    server()
        .psql(
            "postgres",
            &format!("CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"),
        )
        .expect("create a role");
    server()
        .psql("postgres", &format!("CREATE DATABASE {name} OWNER {name}"))
        .expect("create its database");
    let url = format!("postgres://{name}@127.0.0.1:{}/{name}", server().port());
    let config = PgConfig::from_url(&url).expect("valid URL");
    let log = open(&config, None);
    let ids = write_procedures(&log, 2);
    let records = log.procedure_events(ids[0], 1).expect("read");
    assert_eq!(records.len(), 3);
    assert_events_are_the_written_ones(ids[0], &records);
    assert!(log.verify().expect("verify").is_clean());
    // The tables are the role's, in the schema `regmig`.
    assert_eq!(
        server()
            .psql(
                &name,
                "SELECT tableowner FROM pg_tables WHERE schemaname = 'regmig' AND tablename = 'events'"
            )
            .expect("psql")
            .trim(),
        name
    );
}

#[test]
fn a_newer_schema_version_is_refused_with_a_typed_error() {
    let config = new_database("newer");
    drop(open(&config, None));
    psql(
        &config,
        "UPDATE regmig.schema_version SET version = 7 WHERE component = 'log'",
    );
    for outcome in [
        PgStore::open(config.clone(), unsynced(), None).map(|_| ()),
        PgStore::open_read_only(config.clone()).map(|_| ()),
    ] {
        match outcome {
            Err(LogError::UnsupportedSchema {
                store,
                schema,
                component,
                found,
                supported,
            }) => {
                assert_eq!(store, config.redacted());
                assert_eq!(
                    (schema.as_str(), component.as_str(), found, supported),
                    ("regmig", "log", 7, 1)
                );
            }
            other => panic!("expected UnsupportedSchema, got {:?}", other.err()),
        }
    }
}

#[test]
fn a_reader_creates_nothing_and_refuses_appends() {
    let config = new_database("reader");
    match PgStore::open_read_only(config.clone()) {
        Err(LogError::NoLogAtStore { store, reason }) => {
            assert_eq!(store, config.redacted());
            assert!(reason.contains("regmig.schema_version"), "{reason}");
        }
        other => panic!("expected NoLogAtStore, got {:?}", other.err()),
    }
    assert_eq!(
        psql(
            &config,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'regmig'"
        )
        .trim(),
        "0"
    );
    let writer = open(&config, None);
    let ids = write_procedures(&writer, 1);
    let reader = open_reader(&config);
    assert!(reader.is_read_only());
    assert_eq!(reader.procedure_events(ids[0], 1).expect("read").len(), 3);
    match reader.append_blocking(next_append(ids[0], 4, 1, false)) {
        Err(LogError::ReadOnly { dir }) => assert_eq!(dir.to_string_lossy(), config.redacted()),
        other => panic!("expected ReadOnly, got {other:?}"),
    }
    assert_eq!(writer.next_seq(ids[0]).expect("next seq"), 4);
}

#[test]
fn two_schemas_in_one_database_are_two_logs() {
    let config = new_database("schemas");
    let other = config
        .clone()
        .with_schema("other_log")
        .expect("valid schema");
    let first = open(&config, None);
    // A second writer on another schema takes another lock.
    let second = open(&other, None);
    let ids = write_procedures(&first, 2);
    assert_eq!(first.procedures().expect("list").len(), 2);
    assert_eq!(second.procedures().expect("list"), Vec::<Uuid>::new());
    assert_eq!(second.next_seq(ids[0]).expect("next seq"), 1);
}

#[test]
fn a_second_writer_without_election_is_refused_while_the_first_holds_the_lock() {
    let config = new_database("two_writers");
    let first = open(&config, None);
    write_procedures(&first, 1);
    match PgStore::open(config.clone(), unsynced(), None) {
        Err(LogError::StoreInUse { store, reason }) => {
            assert_eq!(store, config.redacted());
            assert!(reason.contains("holds its writer lock"), "{reason}");
            assert!(reason.contains("server process"), "{reason}");
        }
        other => panic!("expected StoreInUse, got {:?}", other.err()),
    }
    // The first still writes; once it is gone, another may open.
    write_procedures(&first, 1);
    drop(first);
    let second = open(&config, None);
    assert_eq!(second.procedures().expect("list").len(), 2);
}

#[test]
fn a_writer_without_election_is_fenced_once_an_engine_holds_the_leader_row() {
    let config = new_database("unelected");
    let log = open(&config, None);
    let ids = write_procedures(&log, 1);
    psql(
        &config,
        "UPDATE regmig.leader SET epoch = 3, holder = 'engine-b', lease_until_ms = 0",
    );
    match log.append_blocking(next_append(ids[0], 4, 1, false)) {
        Err(LogError::Fenced {
            store,
            epoch,
            current_epoch,
        }) => {
            assert_eq!(store, config.redacted());
            assert_eq!((epoch, current_epoch), (0, 3));
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(log.next_seq(ids[0]).expect("next seq"), 4);
}

#[test]
fn an_elected_writer_is_fenced_in_the_append_transaction_once_the_epoch_moves() {
    let config = new_database("fenced");
    psql(&config, "SELECT 1");
    // The schema exists once any writer opened it; an election sets epoch 1.
    drop(open(&config, Some(0)));
    psql(
        &config,
        "UPDATE regmig.leader SET epoch = 1, holder = 'engine-a', lease_until_ms = 0",
    );
    let leader = open(&config, Some(1));
    // No writer lock for an elected writer: a standby may open the same store.
    let standby = open(&config, Some(2));
    let ids = write_procedures(&leader, 1);
    match standby.append_blocking(next_append(ids[0], 4, 1, false)) {
        Err(LogError::Fenced {
            epoch,
            current_epoch,
            ..
        }) => assert_eq!((epoch, current_epoch), (2, 1)),
        other => panic!("a standby's append: expected Fenced, got {other:?}"),
    }
    // The takeover: epoch 2. The old leader's next appends, async and blocking, are fenced.
    psql(
        &config,
        "UPDATE regmig.leader SET epoch = 2, holder = 'engine-b'",
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let concurrent = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let leader = leader.clone();
            let procedure_id = Uuid::now_v7();
            tasks.spawn(async move {
                leader
                    .append(first_append(procedure_id, 1, 7, vec![]))
                    .await
            });
        }
        tasks.join_all().await
    });
    for outcome in concurrent {
        assert!(
            matches!(
                outcome,
                Err(LogError::Fenced {
                    epoch: 1,
                    current_epoch: 2,
                    ..
                })
            ),
            "{outcome:?}"
        );
    }
    assert_eq!(leader.next_seq(ids[0]).expect("next seq"), 4);
    assert_eq!(leader.procedures().expect("list"), ids);
    standby
        .append_blocking(next_append(ids[0], 4, 1, true))
        .expect("no fault")
        .expect("the new leader writes");
    assert!(standby.verify().expect("verify").is_clean());
}

#[test]
fn altered_row_bytes_are_a_checksum_error_naming_procedure_and_seq() {
    let config = new_database("altered");
    let log = open(&config, None);
    let ids = write_procedures(&log, 2);
    // Flip a payload byte of event 2 of the second procedure.
    psql(
        &config,
        &format!(
            "UPDATE regmig.events SET record = set_byte(record, length(record) - 10, \
             get_byte(record, length(record) - 10) # 64) \
             WHERE procedure_id = '{}' AND seq = 2",
            ids[1]
        ),
    );
    match log.procedure_events(ids[1], 1) {
        Err(LogError::BadChecksum {
            procedure_id, seq, ..
        }) => assert_eq!((procedure_id, seq), (ids[1], 2)),
        other => panic!("expected BadChecksum, got {other:?}"),
    }
    assert_eq!(
        problems(&log),
        vec![("bad_checksum", Some(ids[1]), Some(2))]
    );
}

#[test]
fn a_deleted_row_is_a_gap() {
    let config = new_database("deleted");
    let log = open(&config, None);
    let ids = write_procedures(&log, 2);
    psql(
        &config,
        &format!(
            "DELETE FROM regmig.events WHERE procedure_id = '{}' AND seq = 2",
            ids[0]
        ),
    );
    match log.procedure_events(ids[0], 1) {
        Err(LogError::SequenceGap {
            procedure_id,
            seq,
            found_seq,
            ..
        }) => assert_eq!((procedure_id, seq, found_seq), (ids[0], 2, 3)),
        other => panic!("expected SequenceGap, got {other:?}"),
    }
    match log.events_from(1, usize::MAX) {
        Err(LogError::GlobalSequenceGap {
            global_seq,
            found_global_seq,
            ..
        }) => assert_eq!((global_seq, found_global_seq), (2, 3)),
        other => panic!("expected GlobalSequenceGap, got {other:?}"),
    }
    // Verify walks on past the hole: the gap in the global order, the procedure's
    // missing seq, the broken chain link after it.
    assert_eq!(
        problems(&log),
        vec![
            ("global_sequence_gap", None, None),
            ("sequence_gap", Some(ids[0]), Some(2)),
            ("chain_broken", Some(ids[0]), Some(3)),
        ]
    );
}

#[test]
fn deleted_tail_rows_are_lost_history_against_the_head_row() {
    let config = new_database("tail");
    let log = open(&config, None);
    let ids = write_procedures(&log, 2);
    drop(log);
    // The last procedure's last event (global seq 6) and the one before it (5) go.
    psql(&config, "DELETE FROM regmig.events WHERE global_seq >= 5");
    let expected_reason = "but the log ends at global seq 4: global seqs 5 to 6 are gone";
    match PgStore::open(config.clone(), unsynced(), None) {
        Err(LogError::StoreLostHistory {
            store,
            head_global_seq,
            found_global_seq,
            reason,
        }) => {
            assert_eq!(store, config.redacted());
            assert_eq!((head_global_seq, found_global_seq), (6, 4));
            assert_eq!(reason, expected_reason);
        }
        other => panic!("a writer: expected StoreLostHistory, got {:?}", other.err()),
    }
    let reader = open_reader(&config);
    assert!(
        matches!(
            reader.damage(),
            Some(LogError::StoreLostHistory {
                head_global_seq: 6,
                found_global_seq: 4,
                ..
            })
        ),
        "{:?}",
        reader.damage()
    );
    assert_eq!(problems(&reader), vec![("store_lost_history", None, None)]);
    assert_eq!(reader.procedure_events(ids[1], 1).expect("read").len(), 1);
}

#[test]
fn a_replaced_last_event_is_caught_by_the_head_rows_hash() {
    let config = new_database("replaced");
    let log = open(&config, None);
    let ids = write_procedures(&log, 1);
    drop(log);
    psql(
        &config,
        "UPDATE regmig.head SET last_hash = decode(repeat('ab', 32), 'hex')",
    );
    let reader = open_reader(&config);
    match reader.damage() {
        Some(LogError::StoreLostHistory { reason, .. }) => {
            assert!(reason.contains("the last event was replaced"), "{reason}")
        }
        other => panic!("expected StoreLostHistory, got {other:?}"),
    }
    assert_eq!(reader.procedure_events(ids[0], 1).expect("read").len(), 3);
}
