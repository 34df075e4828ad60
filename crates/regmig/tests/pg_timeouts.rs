//! Timeouts on regmig's PostgreSQL sessions (a real server, one per test binary):
//! `statement_timeout` and `idle_in_transaction_session_timeout` are set on every session
//! from `PgConfig`, and an append blocked by another session's lock fails with a typed
//! error naming the operation once the statement timeout passes, instead of hanging.

mod log_support;
mod pg_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use log_support::{first_append, next_append};
use pg_support::new_database;
use regmig::log::{EventLog, LogError, LogOptions, PgStore};
use uuid::Uuid;

#[test]
fn every_session_gets_the_configured_timeouts() {
    let config = new_database("timeouts_show")
        .with_statement_timeout_ms(1_234)
        .and_then(|config| config.with_idle_in_transaction_session_timeout_ms(4_321))
        .expect("in range");
    let store = PgStore::open(config, LogOptions::default(), None).expect("open");
    let pool = store.pool().clone();
    let shown: (String, String) = regmig::log::store::block_on(store.spawn(async move {
        let client = pool.get().await.expect("a session");
        let statement: String = client
            .query_one("SHOW statement_timeout", &[])
            .await
            .expect("show")
            .get(0);
        let idle: String = client
            .query_one("SHOW idle_in_transaction_session_timeout", &[])
            .await
            .expect("show")
            .get(0);
        Ok((statement, idle))
    }))
    .expect("ran on the store's runtime");
    assert_eq!(shown, ("1234ms".to_string(), "4321ms".to_string()));
}

#[test]
fn an_append_blocked_by_another_sessions_lock_fails_with_a_timeout_naming_the_operation() {
    let config = new_database("timeouts_lock")
        .with_statement_timeout_ms(300)
        .expect("in range");
    let schema = config.schema().to_string();
    let store = PgStore::open(config.clone(), LogOptions::default(), None).expect("open");
    let log = EventLog::with_store(Arc::new(store));
    let procedure_id = Uuid::now_v7();
    log.append_blocking(first_append(procedure_id, 1, 7, vec![]))
        .expect("no fault")
        .expect("no conflict");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        // Another session (not regmig's: no statement timeout of its own matters) holds the
        // head row, as a writer that bypassed regmig would.
        let mut other =
            regmig::pg::connect_session(&config.clone().with_statement_timeout_ms(0).unwrap())
                .await
                .expect("a second session");
        let transaction = other.transaction().await.expect("begin");
        transaction
            .query_one(
                &format!("SELECT last_global_seq FROM {schema}.head WHERE id FOR UPDATE"),
                &[],
            )
            .await
            .expect("lock the head row");
        let started = Instant::now();
        let blocked = log.append(next_append(procedure_id, 2, 1, false)).await;
        let waited = started.elapsed();
        match blocked {
            Err(LogError::Database {
                store,
                action,
                source,
            }) => {
                assert_eq!(action, "lock the leader and head rows");
                assert!(
                    store.starts_with("postgres://postgres@127.0.0.1:"),
                    "{store}"
                );
                let message = source.to_string();
                assert!(
                    message.contains("statement timeout") && message.contains("57014"),
                    "{message}"
                );
            }
            other => panic!("expected a database error, got {other:?}"),
        }
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "failed after {waited:?}"
        );
        transaction.rollback().await.expect("release the lock");
        // Nothing was written, and the next append goes through.
        let receipt = log
            .append(next_append(procedure_id, 2, 1, true))
            .await
            .expect("no fault")
            .expect("no conflict");
        assert_eq!(receipt.first_seq, 2);
    });
    assert!(log.verify().expect("verify").is_clean());
}
