//! Many writers at once: group commit keeps every procedure in order, and two writers of
//! one procedure (or of one region) never both win.

mod log_support;

use std::sync::Arc;

use log_support::*;
use regmig::log::{AppendConflict, EventLog, LogOptions};
use tokio::sync::Barrier;
use uuid::Uuid;

const PROCEDURES: u64 = 64;
const BATCHES_PER_PROCEDURE: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_procedures_appending_at_once_all_land_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), LogOptions::default()).expect("open");
    let mut tasks = Vec::new();
    for index in 0..PROCEDURES {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let procedure_id = Uuid::now_v7();
            let mut next_seq = 1;
            for batch in 0..BATCHES_PER_PROCEDURE {
                let count = batch % 3 + 1;
                let request = if batch == 0 {
                    first_append(procedure_id, count, index, vec![index % 5])
                } else {
                    next_append(
                        procedure_id,
                        next_seq,
                        count,
                        batch + 1 == BATCHES_PER_PROCEDURE,
                    )
                };
                let receipt = log
                    .append(request)
                    .await
                    .expect("append")
                    .expect("one writer per procedure never conflicts");
                assert_eq!(receipt.first_seq, next_seq);
                next_seq = receipt.last_seq + 1;
            }
            (procedure_id, next_seq - 1)
        }));
    }
    for task in tasks {
        let (procedure_id, last_seq) = task.await.expect("task");
        let records = log.procedure_events(procedure_id, 1).expect("read");
        assert_eq!(records.len() as u64, last_seq);
        assert_events_are_the_written_ones(procedure_id, &records);
    }
    assert!(
        log.open_procedures().expect("open index").is_empty(),
        "every procedure closed"
    );
    assert_log_consistent(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_async_writers_with_the_same_expected_seq_exactly_one_wins() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), LogOptions::default()).expect("open");
    for round in 0..40u64 {
        let procedure_id = Uuid::now_v7();
        log.append(first_append(procedure_id, 1, round, vec![]))
            .await
            .expect("append")
            .expect("no conflict");
        let barrier = Arc::new(Barrier::new(2));
        let writers: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|count| {
                let log = log.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    (
                        count,
                        log.append(next_append(procedure_id, 2, count, false))
                            .await
                            .expect("no fault"),
                    )
                })
            })
            .collect();
        let mut wins = Vec::new();
        let mut conflicts = Vec::new();
        for writer in writers {
            let (count, outcome) = writer.await.expect("task");
            match outcome {
                Ok(receipt) => wins.push((count, receipt)),
                Err(conflict) => conflicts.push(conflict),
            }
        }
        assert_eq!(wins.len(), 1, "round {round}: exactly one writer wins");
        let (winner_count, receipt) = wins[0];
        assert_eq!(receipt.first_seq, 2);
        assert_eq!(
            conflicts,
            vec![AppendConflict::Sequence {
                procedure_id,
                expected_next_seq: 2,
                actual_next_seq: 2 + winner_count,
            }]
        );
        let records = log.procedure_events(procedure_id, 1).expect("read");
        assert_eq!(
            records.len() as u64,
            1 + winner_count,
            "the loser wrote nothing"
        );
    }
    assert_log_consistent(&log);
}

#[test]
fn two_blocking_writers_with_the_same_expected_seq_exactly_one_wins() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), unsynced()).expect("open");
    for round in 0..40u64 {
        let procedure_id = Uuid::now_v7();
        log.append_blocking(first_append(procedure_id, 1, round, vec![]))
            .expect("append")
            .expect("no conflict");
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let log = log.clone();
                    let barrier = Arc::clone(&barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        log.append_blocking(next_append(procedure_id, 2, 1, false))
                            .expect("no fault")
                    })
                })
                .collect();
            writers
                .into_iter()
                .map(|writer| writer.join().expect("thread"))
                .collect()
        });
        let wins = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.contains(&Err(AppendConflict::Sequence {
            procedure_id,
            expected_next_seq: 2,
            actual_next_seq: 3,
        })));
    }
    assert_log_consistent(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_procedures_opening_one_region_at_once_one_is_region_busy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(dir.path(), LogOptions::default()).expect("open");
    for region_id in 0..30u64 {
        let barrier = Arc::new(Barrier::new(2));
        let openers: Vec<_> = (0..2)
            .map(|_| {
                let log = log.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let procedure_id = Uuid::now_v7();
                    barrier.wait().await;
                    (
                        procedure_id,
                        log.append(first_append(procedure_id, 1, region_id, vec![1]))
                            .await
                            .expect("no fault"),
                    )
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for opener in openers {
            outcomes.push(opener.await.expect("task"));
        }
        let winners: Vec<Uuid> = outcomes
            .iter()
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(procedure_id, _)| *procedure_id)
            .collect();
        assert_eq!(winners.len(), 1, "region {region_id}: {outcomes:?}");
        assert!(outcomes.iter().any(|(_, outcome)| *outcome
            == Err(AppendConflict::RegionBusy {
                region_id,
                open_procedure_id: winners[0]
            })));
        assert_eq!(
            log.open_procedure_of_region(region_id)
                .expect("region index"),
            Some(winners[0])
        );
    }
    assert_log_consistent(&log);
}
