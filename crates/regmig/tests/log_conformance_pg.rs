//! The log's conformance suite (`log_support/conformance.rs`) on the PostgreSQL backend,
//! one test per case, each on a database of its own on one throwaway server.

#[path = "log_support/conformance.rs"]
mod conformance;
mod log_support;
mod pg_support;

use std::sync::Arc;

use conformance::LogFactory;
use regmig::log::{EventLog, PgStore};

use log_support::unsynced;

/// PostgreSQL logs, each in a new database, unsynced (`synchronous_commit = off`: the
/// cases check behaviour, not power cuts).
struct PgFactory;

impl LogFactory for PgFactory {
    fn create(&mut self) -> EventLog {
        let config = pg_support::new_database("conformance");
        let store = PgStore::open(config, unsynced(), None).expect("open a new PostgreSQL log");
        EventLog::with_store(Arc::new(store))
    }

    fn reopen(&mut self, log: EventLog) -> EventLog {
        let config = PgStore::of(&log)
            .expect("a PostgreSQL-backed log")
            .config()
            .clone();
        drop(log);
        let store = PgStore::open(config, unsynced(), None).expect("reopen the PostgreSQL log");
        EventLog::with_store(Arc::new(store))
    }
}

crate::conformance_tests!(PgFactory);
