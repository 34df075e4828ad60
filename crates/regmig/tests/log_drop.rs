//! Dropping a log returns once sled has let go of the directory, and does not stall while
//! another handle onto the same database (a `SledMetadataStore`) is still alive.

use std::time::{Duration, Instant};

use regmig::cluster::sled_store::SledMetadataStore;
use regmig::log::SledStore;
use regmig::log::{EventLog, LogOptions};

#[test]
fn dropping_the_log_before_a_metadata_store_on_it_does_not_stall() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    let store = SledMetadataStore::open(&log).unwrap();
    let started = Instant::now();
    drop(log); // The store still holds the log: nothing closes yet.
    let took = started.elapsed();
    let started = Instant::now();
    drop(store);
    let store_took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "dropping the log took {took:?}"
    );
    assert!(
        store_took < Duration::from_secs(1),
        "dropping the store, the log's last handle, took {store_took:?}"
    );
}

#[test]
fn a_log_closed_while_a_tree_on_it_is_open_waits_at_most_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    let tree = SledStore::of(&log)
        .expect("a sled-backed log")
        .db()
        .open_tree("someone_elses")
        .unwrap();
    let started = Instant::now();
    drop(log);
    let took = started.elapsed();
    drop(tree);
    assert!(
        took < Duration::from_secs(3),
        "dropping the log took {took:?}"
    );
    // Once the tree is gone too, the directory opens again at once.
    drop(EventLog::open(dir.path(), LogOptions::default()).unwrap());
}
