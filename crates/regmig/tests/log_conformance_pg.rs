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

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                conformance::$case(&mut PgFactory);
            }
        )*
    };
}

cases!(
    appends_take_consecutive_seqs_and_global_seqs,
    a_stale_expected_seq_is_a_conflict_and_writes_nothing,
    a_busy_region_is_a_conflict_until_its_procedure_closes,
    invalid_appends_are_refused_with_the_reason,
    reads_by_procedure_start_where_asked,
    reads_in_global_order_start_where_asked_and_stop_at_the_limit,
    the_audit_indexes_find_procedures_by_region_peer_and_time,
    open_procedures_follow_opens_and_closes,
    records_are_chained_in_global_order,
    concurrent_async_appends_all_land_without_gaps,
    everything_survives_a_reopen,
    altered_bytes_from_the_store_are_damage,
    a_record_the_store_drops_is_a_sequence_gap,
    verify_through_the_trait_agrees_with_the_store_and_finds_tampering,
);

/// The whole suite on one factory, in order.
#[test]
fn the_whole_suite_runs_on_one_factory() {
    conformance::run_all(&mut PgFactory);
}
