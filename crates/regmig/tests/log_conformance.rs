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

crate::conformance_tests!(SledFactory::new());

/// What still reads sled's own layout (archive, compaction, salvage, the sled metadata
/// store) says so with a typed error on a log another store carries, and changes nothing.
#[test]
fn sled_only_operations_on_another_store_are_unsupported() {
    let mut factory = SledFactory::new();
    let log = factory.create();
    let procedure_id = uuid::Uuid::now_v7();
    log.append_blocking(log_support::first_append(procedure_id, 2, 10, vec![1]))
        .expect("no fault")
        .expect("no conflict");
    let other = conformance::tampered(&log, (procedure_id, 99), conformance::Tamper::Drop);
    assert!(SledStore::of(&other).is_none());
    for (operation, outcome) in [
        ("plan an archive", other.plan_archive(u64::MAX).map(|_| ())),
        (
            "read the archive checkpoint",
            other.checkpoint().map(|_| ()),
        ),
    ] {
        match outcome {
            Err(regmig::log::LogError::Unsupported {
                operation: named,
                store,
            }) => {
                assert_eq!(named, operation);
                assert!(store.ends_with("(tampered)"), "{store}");
            }
            other => panic!("{operation}: expected Unsupported, got {other:?}"),
        }
    }
    let metadata = regmig::cluster::sled_store::SledMetadataStore::open(&other);
    assert!(
        matches!(&metadata, Err(error) if error.reason.starts_with("the sled metadata store needs a sled-backed log")),
        "{:?}",
        metadata.as_ref().err()
    );
    // Reads through the other store still work, checked above it.
    assert_eq!(
        other.procedure_events(procedure_id, 1).expect("read").len(),
        2
    );
}
