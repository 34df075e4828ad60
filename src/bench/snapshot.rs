//! The two snapshot baselines of figure 2, built as their authors would.
//!
//! Both keep the whole procedure state as JSON in a sled tree, and make each write durable
//! on its own: sled insert, sled flush, fdatasync of sled's file, on a blocking thread,
//! with no batching across procedures (concurrent writers only share what sled and the
//! kernel share by themselves). They differ in when they write:
//! - [`PersistPoints::AsOriginal`]: the original's persist points: the state once the
//!   procedure has left Start, a commit record when it finishes, and a delete of both when
//!   it is done: three durable operations per migration. A crash in between loses the lease
//!   deadline, the budgets and the replies.
//! - [`PersistPoints::EveryStep`]: the state after the submission and after every decision
//!   that records something (every transition and every reply): what a snapshot design
//!   needs to resume as exactly as the event log does. Its last write is the final state,
//!   kept as the record (no delete, which is the cheaper choice for the baseline).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

use super::error::BenchError;
use regmig::engine::{Batch, Next, Persistence};
use regmig::log::{EventLog, SledStore, SLED_SUBDIR};
use regmig::migration::{MigrationState, StateName};

/// The sled tree the snapshots live in (beside the metadata store's trees).
pub const SNAPSHOT_TREE: &str = "bench_procedure_snapshots";

/// When a snapshot design writes the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistPoints {
    /// Baseline (a): after Start, a commit record at the end, a delete when finished.
    AsOriginal,
    /// Baseline (b): after every transition and every reply.
    EveryStep,
}

/// Durable JSON snapshots in a sled tree; counts its durable operations.
pub struct SnapshotStore {
    db: sled::Db,
    tree: sled::Tree,
    db_path: PathBuf,
    /// Our own handle on sled's file: fdatasync through any descriptor covers the file.
    db_file: File,
    durable_writes: AtomicU64,
    durable_deletes: AtomicU64,
}

/// The JSON document of one snapshot.
#[derive(Serialize)]
struct Snapshot<'a> {
    procedure_id: Uuid,
    state: &'a MigrationState,
}

impl SnapshotStore {
    /// Opens the snapshot tree in the log's sled database.
    pub fn open(log: &EventLog) -> Result<Self, BenchError> {
        let Some(sled) = SledStore::of(log) else {
            return Err(BenchError::Snapshot(format!(
                "the snapshot store needs a sled-backed log; the log is at {}",
                log.store().location()
            )));
        };
        let db = sled.db().clone();
        let tree = db
            .open_tree(SNAPSHOT_TREE)
            .map_err(|error| BenchError::Snapshot(format!("open tree: {error}")))?;
        let db_path = sled.data_dir().join(SLED_SUBDIR).join("db");
        let db_file =
            File::open(&db_path).map_err(|error| BenchError::io("open", &db_path, error))?;
        Ok(SnapshotStore {
            db,
            tree,
            db_path,
            db_file,
            durable_writes: AtomicU64::new(0),
            durable_deletes: AtomicU64::new(0),
        })
    }

    /// Durable inserts so far.
    pub fn durable_writes(&self) -> u64 {
        self.durable_writes.load(Ordering::Relaxed)
    }

    /// Durable deletes so far.
    pub fn durable_deletes(&self) -> u64 {
        self.durable_deletes.load(Ordering::Relaxed)
    }

    /// Durable operations (inserts and deletes) so far.
    pub fn durable_operations(&self) -> u64 {
        self.durable_writes() + self.durable_deletes()
    }

    /// Snapshots stored now.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether no snapshot is stored.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Every stored (key, JSON) pair, in key order.
    pub fn snapshots(&self) -> Result<Vec<StoredSnapshot>, BenchError> {
        self.tree
            .iter()
            .map(|item| {
                item.map(|(key, value)| (key.to_vec(), value.to_vec()))
                    .map_err(|error| BenchError::Snapshot(format!("scan: {error}")))
            })
            .collect()
    }

    /// The stored JSON under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BenchError> {
        self.tree
            .get(key)
            .map(|value| value.map(|bytes| bytes.to_vec()))
            .map_err(|error| BenchError::Snapshot(format!("get: {error}")))
    }

    /// Inserts `value` under `key`, then flushes sled and fdatasyncs its file.
    pub fn put_durable(&self, key: &[u8], value: Vec<u8>) -> Result<(), BenchError> {
        self.tree
            .insert(key, value)
            .map_err(|error| BenchError::Snapshot(format!("insert: {error}")))?;
        self.make_durable()?;
        self.durable_writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes `keys` in one batch, then flushes sled and fdatasyncs its file.
    pub fn delete_durable(&self, keys: &[Vec<u8>]) -> Result<(), BenchError> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.as_slice());
        }
        self.tree
            .apply_batch(batch)
            .map_err(|error| BenchError::Snapshot(format!("delete: {error}")))?;
        self.make_durable()?;
        self.durable_deletes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn make_durable(&self) -> Result<(), BenchError> {
        self.db
            .flush()
            .map_err(|error| BenchError::Snapshot(format!("flush: {error}")))?;
        self.db_file
            .sync_data()
            .map_err(|error| BenchError::io("fdatasync", &self.db_path, error))
    }

    /// The path of sled's file this store syncs.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }
}

/// A stored snapshot: its key and its JSON.
pub type StoredSnapshot = (Vec<u8>, Vec<u8>);

/// The key of a procedure's state snapshot.
pub fn state_key(procedure_id: Uuid) -> Vec<u8> {
    let mut key = procedure_id.as_bytes().to_vec();
    key.push(b's');
    key
}

/// The key of a procedure's commit record.
pub fn commit_key(procedure_id: Uuid) -> Vec<u8> {
    let mut key = procedure_id.as_bytes().to_vec();
    key.push(b'c');
    key
}

/// Records a procedure by saving its whole state at the chosen persist points.
pub struct SnapshotRecorder {
    store: Arc<SnapshotStore>,
    points: PersistPoints,
    /// Whether the AsOriginal "after Start" snapshot is written.
    saved_after_start: bool,
}

impl SnapshotRecorder {
    /// A recorder for one procedure.
    pub fn new(store: Arc<SnapshotStore>, points: PersistPoints) -> Self {
        SnapshotRecorder {
            store,
            points,
            saved_after_start: false,
        }
    }

    async fn write(
        &self,
        key: Vec<u8>,
        procedure_id: Uuid,
        state: &MigrationState,
    ) -> Result<(), BenchError> {
        let json = serde_json::to_vec(&Snapshot {
            procedure_id,
            state,
        })
        .map_err(|error| BenchError::Snapshot(format!("encode JSON: {error}")))?;
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.put_durable(&key, json))
            .await
            .map_err(|error| BenchError::Task(format!("snapshot write: {error}")))?
    }

    async fn delete(&self, keys: Vec<Vec<u8>>) -> Result<(), BenchError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.delete_durable(&keys))
            .await
            .map_err(|error| BenchError::Task(format!("snapshot delete: {error}")))?
    }
}

#[async_trait]
impl Persistence for SnapshotRecorder {
    type Error = BenchError;

    async fn persisted(
        &mut self,
        batch: Batch<'_>,
        state: &MigrationState,
    ) -> Result<Next, BenchError> {
        let procedure_id = batch.procedure_id;
        match self.points {
            PersistPoints::EveryStep => {
                self.write(state_key(procedure_id), procedure_id, state)
                    .await?;
            }
            PersistPoints::AsOriginal => {
                let left_start = state.started && state.state != StateName::Start;
                if !self.saved_after_start && (left_start || state.is_finished()) {
                    self.write(state_key(procedure_id), procedure_id, state)
                        .await?;
                    self.saved_after_start = true;
                }
                if state.is_finished() {
                    self.write(commit_key(procedure_id), procedure_id, state)
                        .await?;
                    self.delete(vec![state_key(procedure_id), commit_key(procedure_id)])
                        .await?;
                }
            }
        }
        Ok(Next::Continue)
    }
}
