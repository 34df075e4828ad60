//! A PostgreSQL server restart (`pg_ctl restart`) under concurrent appends: the store
//! reconnects (and takes its writer lock again) and tries the appends the restart cut
//! again, so none fails; an append that did fail would be a typed error; and every
//! acknowledged append reads back. A binary of its own: the restart
//! cuts every connection to the binary's server.

mod log_support;
mod pg_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use regmig::log::{AppendConflict, EventLog, LogError, LogOptions, PgStore};
use uuid::Uuid;

use log_support::{assert_events_are_the_written_ones, first_append, next_append};
use pg_support::{new_database, server};

#[test]
fn a_server_restart_under_appends_loses_nothing_acknowledged() {
    const WRITERS: u64 = 8;
    /// Appends each writer makes after the restart finished.
    const APPENDS_AFTER: u64 = 10;
    // Durable: an acknowledged append must survive the restart.
    let config = new_database("restart");
    let store = PgStore::open(config.clone(), LogOptions::default(), None).expect("open");
    let log = EventLog::with_store(Arc::new(store));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let restarted = Arc::new(AtomicBool::new(false));
    let restarter = std::thread::spawn({
        let restarted = Arc::clone(&restarted);
        move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            server().restart().expect("restart the server");
            restarted.store(true, Ordering::SeqCst);
        }
    });
    let outcomes: Vec<(Uuid, u64, u64)> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..WRITERS {
            let log = log.clone();
            let restarted = Arc::clone(&restarted);
            tasks.spawn(async move {
                let procedure_id = Uuid::now_v7();
                let mut next_seq = 1;
                let mut failures = 0;
                let mut appends_after = 0;
                while appends_after < APPENDS_AFTER {
                    if restarted.load(Ordering::SeqCst) {
                        appends_after += 1;
                    }
                    let request = if next_seq == 1 {
                        first_append(procedure_id, 1, 500 + writer, vec![])
                    } else {
                        next_append(procedure_id, next_seq, 1, false)
                    };
                    match log.append(request).await {
                        Ok(Ok(receipt)) => next_seq = receipt.last_seq + 1,
                        Ok(Err(conflict)) => {
                            // Only after an append whose outcome was unknown.
                            assert!(failures > 0, "{conflict:?}");
                            match conflict {
                                AppendConflict::Sequence {
                                    actual_next_seq, ..
                                } => next_seq = actual_next_seq,
                                other => panic!("{other:?}"),
                            }
                        }
                        Err(LogError::Database { store, action, .. }) => {
                            assert!(!store.is_empty(), "{action}");
                            failures += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            // The outcome is unknown: read where the procedure is.
                            if let Ok(seq) = log.store().next_seq(procedure_id).await {
                                next_seq = seq;
                            }
                        }
                        Err(other) => panic!("expected a typed database error, got {other:?}"),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                (procedure_id, next_seq - 1, failures)
            });
        }
        tasks.join_all().await
    });
    restarter.join().expect("the restart thread");
    // The store tries an append again on a new connection while the server is away (for at
    // most RECONNECT_WAIT), so a restart of a second or two fails none.
    let failures: u64 = outcomes.iter().map(|(_, _, failures)| failures).sum();
    assert_eq!(
        failures, 0,
        "the store should have ridden through the restart"
    );
    let acknowledged: BTreeMap<Uuid, u64> = outcomes
        .into_iter()
        .map(|(procedure_id, last, _)| (procedure_id, last))
        .collect();
    for (procedure_id, last_acknowledged) in &acknowledged {
        let records = log.procedure_events(*procedure_id, 1).expect("read");
        assert!(
            records.len() as u64 >= *last_acknowledged,
            "procedure {procedure_id}: {} events read back, {last_acknowledged} acknowledged",
            records.len()
        );
        assert!(*last_acknowledged > 0);
        assert_events_are_the_written_ones(*procedure_id, &records);
    }
    // Appends go on after the restart, and the log checks out.
    let procedure_id = *acknowledged.keys().next().expect("a writer");
    let next_seq = log.next_seq(procedure_id).expect("next seq");
    log.append_blocking(next_append(procedure_id, next_seq, 1, true))
        .expect("no fault after the restart")
        .expect("no conflict");
    assert!(log.verify().expect("verify").is_clean());
}
