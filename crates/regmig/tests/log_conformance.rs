//! The log's conformance suite (`log_support/conformance.rs`) on the sled backend, one test
//! per case. A second backend adds a file like this one with its own factory.

#[path = "log_support/conformance.rs"]
mod conformance;
mod log_support;

use std::path::PathBuf;
use std::sync::Arc;

use conformance::LogFactory;
use regmig::log::{EventLog, SledStore};

use log_support::unsynced;

/// Sled logs in temporary directories, unsynced (the cases check behaviour, not power
/// cuts: `log_crash.rs` does that).
struct SledFactory {
    dirs: Vec<tempfile::TempDir>,
}

impl SledFactory {
    fn new() -> Self {
        SledFactory { dirs: Vec::new() }
    }
}

impl LogFactory for SledFactory {
    fn create(&mut self) -> EventLog {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SledStore::open(dir.path(), unsynced()).expect("open a new sled log");
        self.dirs.push(dir);
        EventLog::with_store(Arc::new(store))
    }

    fn reopen(&mut self, log: EventLog) -> EventLog {
        let dir: PathBuf = SledStore::of(&log)
            .expect("a sled-backed log")
            .data_dir()
            .to_path_buf();
        drop(log);
        EventLog::open_existing(&dir, unsynced()).expect("reopen the sled log")
    }
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                conformance::$case(&mut SledFactory::new());
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

/// The whole suite on one factory, as a backend that runs it in one test would.
#[test]
fn the_whole_suite_runs_on_one_factory() {
    conformance::run_all(&mut SledFactory::new());
}
