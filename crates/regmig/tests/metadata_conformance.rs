//! The metadata stores behave as the in-memory reference does (`metadata_support`): routes
//! versioned from 0, compare-and-swap with the region's datanode-table move in the same
//! write, conflicts that name the version found, one winner among racing writers. The
//! PostgreSQL store runs the same suite in `pg_metadata.rs`.

mod metadata_support;

use std::sync::Arc;

use metadata_support::*;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::sled_store::SledMetadataStore;
use regmig::log::{EventLog, LogOptions};

#[tokio::test]
async fn the_memory_store_conforms() {
    conformance(Arc::new(MemoryMetadataStore::new())).await;
    racing_swaps(Arc::new(MemoryMetadataStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sled_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    conformance(Arc::new(SledMetadataStore::open(&log).unwrap())).await;
    racing_swaps(Arc::new(SledMetadataStore::open(&log).unwrap())).await;
}
