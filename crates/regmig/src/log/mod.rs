//! The append-only event log: every event of every procedure, durable across a machine
//! crash, checked on write and on read. The format is `migrations-log-format.md`.
//!
//! # Files
//! A data directory holds `regmig.lock` (an exclusive, non-blocking `flock`: one owner at a
//! time), `regmig.mark` (the high-water mark, [`mark`]) and `sled/`, one sled 0.34.7
//! database. The log is the sled tree `regmig.log`;
//! other components (the metadata store) keep their own trees in the same database
//! ([`EventLog::db`]) and make their writes durable with [`EventLog::sync`].
//!
//! # Keys
//! One tree, one-byte prefixes ([`keys`]): events `E | procedure_id | seq`, the global order
//! `G | first_global_seq` (one entry per group commit, listing runs of events), open procedures `O | procedure_id`, region → open procedure
//! `R | region_id`, and the audit indexes `A | region_id | ms | procedure_id` and
//! `P | peer_id | ms | procedure_id`. An append writes its events and every index entry
//! in one `apply_batch`, which sled recovers all or nothing.
//!
//! # Write path
//! [`EventLog::append`] queues the request for the group-commit thread, which takes every
//! queued request (up to [`LogOptions::group_commit_max_events`] events), validates each
//! against the in-memory writer state (next seq per procedure, open regions, next global
//! seq), writes one batch, flushes sled, fdatasyncs its files once and answers them all.
//! A lone async writer (nothing queued, nobody writing, a multi-thread runtime) commits on
//! its own thread instead, in `block_in_place`, saving two thread hand-offs.
//! [`EventLog::append_blocking`] does the same for one request on the caller's thread.
//!
//! # Reads
//! Reads go to the tree, check every record ([`decode_record`]) and every sequence, and
//! return damage as a typed [`LogError`]. A read never sees half of a batch. A read may
//! see a batch that is written but not yet synced (its append has not returned yet).
//!
//! # Damage
//! Every record carries the chain hash of its predecessor in global order (format version
//! 2), and every group commit writes the mark (last global seq, chain hash) beside sled,
//! synced on a second thread while sled's files are synced. Every open checks the log's
//! end against the mark: a writer ([`EventLog::open`]) refuses a log that lost
//! acknowledged history ([`LogError::LostHistory`]); a reader ([`EventLog::open_read_only`],
//! which opens a private copy of the database and writes nothing into the directory) reads
//! it and reports the damage ([`EventLog::damage`]). sled's panics and errors become errors
//! that name `<dir>/sled/db`. [`salvage`] copies what still checks out into a new log.

pub mod archive;
pub mod bundle;
mod commit;
mod durable;
mod error;
pub mod keys;
pub mod mark;
mod open;
mod record;
pub mod salvage;
mod tail;
mod verify;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, TryLockError};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub use archive::{ArchivePlan, Checkpoint};
pub use commit::{APPEND_EVENTS_MAX, OPEN_PEERS_MAX};
pub use error::{LogError, LostHistory};
pub use mark::MARK_FILE_NAME;
pub use open::quiet_sled_panics;
pub use record::{
    chain_hash, decode_record, encode_record, ChainHash, Record, CHAIN_START,
    ENVELOPE_OVERHEAD_BYTES, FORMAT_VERSION, FORMAT_VERSION_V1, PAYLOAD_MAX_BYTES,
};
pub use verify::{ChainReport, VerifyReport, VERIFY_PROBLEMS_MAX};

use commit::{run_committer, AppendOutcome, CommitMessage, CommitOutcome, WriterState};
use durable::FileSyncer;
use keys::{
    event_key, global_key, hex, parse_audit_key, parse_event_key, parse_global_key,
    parse_global_runs, parse_open_key, parse_u64, parse_uuid, region_open_key, PREFIX_EVENT,
    PREFIX_OPEN, PREFIX_PEER_AUDIT, PREFIX_REGION_AUDIT,
};
use mark::Mark;

/// The subdirectory of the data directory that holds the sled database.
pub const SLED_SUBDIR: &str = "sled";
/// The lock file in the data directory; its exclusive `flock` marks the owner.
pub const LOCK_FILE_NAME: &str = "regmig.lock";
/// The default bound on the events of one group commit (and on queued requests).
pub const GROUP_COMMIT_MAX_EVENTS_DEFAULT: usize = 4096;
/// How many entries a long walk (verify) reads under one hold of the read lock.
const WALK_CHUNK_ENTRIES: usize = 1024;

/// When an append returns, relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// An append returns only after sled's flush and an fdatasync of every file sled wrote:
    /// it survives a power cut.
    #[default]
    Durable,
    /// No flush, no fsync: a process kill or a power cut may lose acknowledged appends.
    /// For tests and the simulator only.
    UnsyncedForTestsOnly,
}

/// How to open a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// When an append returns.
    pub durability: Durability,
    /// The most events one group commit writes; also the bound of the request queue.
    pub group_commit_max_events: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Durable,
            group_commit_max_events: GROUP_COMMIT_MAX_EVENTS_DEFAULT,
        }
    }
}

/// One event to append; the log assigns its seq and global seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The event kind (see `src/migration/events.rs`); the log does not interpret it.
    pub kind: u16,
    /// When it happened, in ms since the Unix epoch (the engine's clock, not the log's).
    pub recorded_at_ms: u64,
    /// The event, already rmp-serde encoded with field names (at most [`PAYLOAD_MAX_BYTES`]).
    pub payload: Vec<u8>,
}

/// Index information given with a procedure's first batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenProcedure {
    /// The region the procedure migrates; at most one open procedure per region.
    pub region_id: u64,
    /// The datanodes involved (at most [`OPEN_PEERS_MAX`]), for the peer audit index.
    pub peers: Vec<u64>,
}

/// One append: a batch of events of one procedure, written all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// The procedure (a uuid v7).
    pub procedure_id: Uuid,
    /// The seq the first event must get: 1 for a new procedure. Anything else is a conflict.
    pub expected_next_seq: u64,
    /// The events, in order (1 to [`APPEND_EVENTS_MAX`]).
    pub events: Vec<NewEvent>,
    /// With the first batch: adds the procedure to the open index, the region → open
    /// procedure index and the region and peer audit indexes.
    pub opens: Option<OpenProcedure>,
    /// The batch ends the procedure: it leaves the open indexes (the audit indexes stay).
    pub closes: bool,
}

/// An append that lost a race: an expected outcome, not a fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendConflict {
    /// Another writer appended first: re-read the procedure and decide again.
    #[error("procedure {procedure_id}: expected next seq {expected_next_seq}, but it is {actual_next_seq}")]
    Sequence {
        /// The procedure.
        procedure_id: Uuid,
        /// The seq the request expected.
        expected_next_seq: u64,
        /// The procedure's next seq in the log.
        actual_next_seq: u64,
    },
    /// `opens` named a region that already has an open procedure.
    #[error("region {region_id} already has an open procedure, {open_procedure_id}")]
    RegionBusy {
        /// The region.
        region_id: u64,
        /// The procedure that holds it.
        open_procedure_id: Uuid,
    },
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    /// The seq of the first event appended.
    pub first_seq: u64,
    /// The seq of the last event appended.
    pub last_seq: u64,
    /// The global seq of the first event; the others follow without gaps.
    pub first_global_seq: u64,
}

/// The durable event log of one data directory. Cheap to clone; every clone is the same log.
#[derive(Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
}

/// What the clones of one `EventLog` share. Its drop stops the commit thread.
struct Shared {
    core: Arc<Core>,
    /// Started on the first async call, so a log used only through `*_blocking` (the
    /// simulator) runs no thread of its own.
    committer: Mutex<Option<Committer>>,
    /// Appends sent to the commit thread and not yet answered.
    queued: AtomicUsize,
}

/// Counts one queued append for as long as it lives (also when its future is dropped).
struct QueuedCount<'a>(&'a AtomicUsize);

impl<'a> QueuedCount<'a> {
    fn new(queued: &'a AtomicUsize) -> Self {
        queued.fetch_add(1, Ordering::AcqRel);
        QueuedCount(queued)
    }
}

impl Drop for QueuedCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether the caller runs on a multi-thread tokio runtime (where `block_in_place` works).
fn in_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

struct Committer {
    sender: mpsc::Sender<CommitMessage>,
    thread: JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let committer = self
            .committer
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(Committer { sender, thread }) = committer {
            // Closing the queue ends the thread once it has answered what is queued.
            drop(sender);
            if thread.join().is_err() {
                tracing::error!("the event log's commit thread panicked");
            }
        }
        self.core.close_cleanly();
    }
}

/// The log's state, shared with the commit thread.
pub(crate) struct Core {
    data_dir: PathBuf,
    options: LogOptions,
    db: sled::Db,
    tree: sled::Tree,
    /// Held while a group is validated, applied and synced: one writer of the tree at a time.
    writer: Mutex<WriterState>,
    /// Written around `apply_batch`, read around scans: sled applies a batch key by key,
    /// so without it a scan could see part of a batch (and report a false gap).
    visibility: RwLock<()>,
    /// `None` for a log opened for reading (it never syncs).
    syncer: Option<FileSyncer>,
    /// Set by the first failed write or sync; every later write is refused.
    poison: Mutex<Option<String>>,
    /// Opened for reading: on a private copy of the database, never written back.
    read_only: bool,
    /// What the open found wrong with the log (readers only: a writer refuses it).
    damage: Option<LogError>,
    /// Holds the directory's flock; dropped after the database (fields drop in order).
    _lock_file: Option<open::DirLock>,
    /// The private copy a reader opened, removed last.
    _copy: Option<open::ReadCopy>,
}

impl EventLog {
    /// Opens the log in `dir` for writing, creating the directory and an empty log if
    /// needed. A directory another `EventLog` holds (in this process or another) is
    /// [`LogError::InUse`] at once. A directory that holds something else (an empty `sled/`,
    /// another program's sled database) is [`LogError::NoLog`], with nothing written; a log
    /// that lost acknowledged history, or whose mark is missing or damaged, is refused
    /// ([`LogError::LostHistory`]).
    pub fn open(dir: &Path, options: LogOptions) -> Result<EventLog, LogError> {
        if let Err(error) = std::fs::create_dir_all(dir) {
            // "File exists" says less than what is in the way.
            open::check_data_dir(dir)?;
            return Err(LogError::io("create the data directory", dir, error));
        }
        Self::open_dir(dir, options)
    }

    /// Like [`EventLog::open`], but a missing `dir` is [`LogError::MissingDataDir`].
    pub fn open_existing(dir: &Path, options: LogOptions) -> Result<EventLog, LogError> {
        open::check_data_dir(dir)?;
        Self::open_dir(dir, options)
    }

    /// Opens the log in `dir` for reading, without writing anything into `dir`: sled has
    /// no read-only mode, so the database is copied to a private temporary directory and
    /// opened there. Damage the open finds does not stop the reader: [`EventLog::damage`]
    /// says what it is. A directory without a regmig log is [`LogError::NoLog`].
    pub fn open_read_only(dir: &Path) -> Result<EventLog, LogError> {
        open::check_data_dir(dir)?;
        Ok(Self::from_core(open::open_reader(dir)?))
    }

    fn open_dir(dir: &Path, options: LogOptions) -> Result<EventLog, LogError> {
        Ok(Self::from_core(open::open_writer(dir, options)?))
    }

    fn from_core(core: Core) -> EventLog {
        EventLog {
            shared: Arc::new(Shared {
                core: Arc::new(core),
                committer: Mutex::new(None),
                queued: AtomicUsize::new(0),
            }),
        }
    }

    /// What the open found wrong with the log, for a log opened with
    /// [`EventLog::open_read_only`] (a writer's open refuses a damaged log instead).
    pub fn damage(&self) -> Option<&LogError> {
        self.core().damage.as_ref()
    }

    /// Whether the log was opened for reading only.
    pub fn is_read_only(&self) -> bool {
        self.core().read_only
    }

    /// Appends one batch of events to a procedure, all or nothing. With
    /// [`Durability::Durable`] it returns once the batch survives a power cut; concurrent
    /// appends share one flush and fdatasync (group commit).
    ///
    /// If the future is dropped before it completes, the append may still be written: read
    /// [`EventLog::next_seq`] to find out.
    pub async fn append(
        &self,
        request: AppendRequest,
    ) -> Result<Result<AppendReceipt, AppendConflict>, LogError> {
        let core = self.core();
        core.check_poison()?;
        // A lone writer (nothing queued, nobody writing) commits on its own thread, inside
        // `block_in_place`: two thread hand-offs cost it as much as a fifth of an fsync.
        // Anyone arriving meanwhile queues for the commit thread, which groups them.
        if self.shared.queued.load(Ordering::Acquire) == 0 && in_multi_thread_runtime() {
            let writer = match core.writer.try_lock() {
                Ok(writer) => Some(writer),
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(writer) = writer {
                let mut outcome = tokio::task::block_in_place(move || {
                    core.commit_locked(writer, vec![request], false)
                });
                return outcome.appends.pop().unwrap_or(Err(LogError::ShutDown));
            }
        }
        let sender = self.committer_sender()?;
        let (reply, answer) = oneshot::channel();
        let _queued = QueuedCount::new(&self.shared.queued);
        sender
            .send(CommitMessage::Append { request, reply })
            .await
            .map_err(|_| LogError::ShutDown)?;
        answer.await.map_err(|_| LogError::ShutDown)?
    }

    /// [`EventLog::append`] on the caller's thread: validated, written and synced before it
    /// returns, with no other thread involved in its ordering.
    pub fn append_blocking(
        &self,
        request: AppendRequest,
    ) -> Result<Result<AppendReceipt, AppendConflict>, LogError> {
        let mut outcome = self.core().commit(vec![request], false);
        outcome.appends.pop().unwrap_or(Err(LogError::ShutDown))
    }

    /// Makes every write done so far to the sled database durable (the other trees' too).
    /// Shares the group commit's flush and fdatasync. A no-op when unsynced.
    pub async fn sync(&self) -> Result<(), LogError> {
        self.core().check_poison()?;
        let sender = self.committer_sender()?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(CommitMessage::Sync { reply })
            .await
            .map_err(|_| LogError::ShutDown)?;
        answer.await.map_err(|_| LogError::ShutDown)?
    }

    /// [`EventLog::sync`] on the caller's thread.
    pub fn sync_blocking(&self) -> Result<(), LogError> {
        self.core().commit(Vec::new(), true).sync
    }

    /// The sled database, for components that keep their own trees beside the log.
    pub fn db(&self) -> &sled::Db {
        &self.core().db
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.core().data_dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.core().options
    }

    /// A procedure's events from `from_seq` on (1 when 0), checked: damage or a gap is an
    /// error naming the procedure, the seq and the key.
    pub fn procedure_events(
        &self,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<Vec<Record>, LogError> {
        self.core().guarded("read a procedure", || {
            let core = self.core();
            let mut expected_seq = from_seq.max(1);
            let _visible = core.read_visible();
            let range = core
                .tree
                .range(event_key(procedure_id, expected_seq)..=event_key(procedure_id, u64::MAX));
            let mut records = Vec::new();
            for item in range {
                let (key, value) = item?;
                let record = decode_record(&key, &value)?;
                if record.seq != expected_seq {
                    return Err(LogError::SequenceGap {
                        procedure_id,
                        seq: expected_seq,
                        key: hex(&key),
                        found_seq: record.seq,
                    });
                }
                expected_seq = record.seq.saturating_add(1);
                records.push(record);
            }
            Ok(records)
        })
    }

    /// The seq the next event of `procedure_id` will get (1 for a procedure never seen).
    pub fn next_seq(&self, procedure_id: Uuid) -> Result<u64, LogError> {
        self.core().guarded("read a procedure", || {
            let core = self.core();
            let _visible = core.read_visible();
            commit::next_seq_on_disk(&core.tree, procedure_id)
        })
    }

    /// At most `limit` events in global order, from `from_global_seq` on (1 when 0),
    /// checked against the global-order index.
    pub fn events_from(&self, from_global_seq: u64, limit: usize) -> Result<Vec<Record>, LogError> {
        self.core().guarded("read the global order", || {
            let core = self.core();
            // Archived events are gone from the live log: read from the first live one.
            let archived_to = archive::read_checkpoint(&core.tree)?
                .map_or(0, |checkpoint| checkpoint.cut_global_seq);
            let from_global_seq = from_global_seq.max(1).max(archived_to + 1);
            let mut records = Vec::with_capacity(limit.min(4096));
            if limit == 0 {
                return Ok(records);
            }
            let _visible = core.read_visible();
            // The entry that holds `from_global_seq` is the last one starting at or before it.
            let start = match core
                .tree
                .range(global_key(0)..=global_key(from_global_seq))
                .next_back()
            {
                Some(item) => item?.0.to_vec(),
                None => global_key(from_global_seq).to_vec(),
            };
            // Where the next entry must start; None until the first entry is read.
            let mut expected_first_global_seq: Option<u64> = None;
            for item in core.tree.range(start..=global_key(u64::MAX).to_vec()) {
                let (key, value) = item?;
                let Some(first_global_seq) = parse_global_key(&key) else {
                    return Err(LogError::MalformedKey {
                        key: hex(&key),
                        reason: "a global-order key of the wrong length".to_string(),
                    });
                };
                let expected = expected_first_global_seq.unwrap_or(from_global_seq);
                if first_global_seq > expected {
                    return Err(LogError::GlobalSequenceGap {
                        global_seq: expected,
                        key: hex(&key),
                        found_global_seq: first_global_seq,
                    });
                }
                if expected_first_global_seq.is_some() && first_global_seq < expected {
                    return Err(LogError::IndexMismatch {
                        procedure_id: None,
                        seq: None,
                        key: hex(&key),
                        reason: format!("the entry starts at global seq {first_global_seq}, inside the previous entry (which ends before {expected})"),
                    });
                }
                let Some(runs) = parse_global_runs(&value) else {
                    return Err(malformed_global_entry(&key, &value));
                };
                let mut global_seq = first_global_seq;
                for run in &runs {
                    for offset in 0..u64::from(run.event_count) {
                        if global_seq >= from_global_seq {
                            records.push(core.record_at_global_seq(
                                &key,
                                global_seq,
                                run.procedure_id,
                                run.first_seq + offset,
                            )?);
                            if records.len() == limit {
                                return Ok(records);
                            }
                        }
                        global_seq += 1;
                    }
                }
                expected_first_global_seq = Some(global_seq);
            }
            Ok(records)
        })
    }

    /// The procedures that are not finished, with their region, in id order. Reads only the
    /// open index: recovery never scans the history.
    pub fn open_procedures(&self) -> Result<Vec<(Uuid, u64)>, LogError> {
        self.core().guarded("read the open procedures", || {
            let core = self.core();
            let _visible = core.read_visible();
            let mut open = Vec::new();
            for item in core.tree.scan_prefix([PREFIX_OPEN]) {
                let (key, value) = item?;
                match (parse_open_key(&key), parse_u64(&value)) {
                    (Some(procedure_id), Some(region_id)) => open.push((procedure_id, region_id)),
                    (procedure_id, _) => {
                        return Err(LogError::IndexMismatch {
                            procedure_id,
                            seq: None,
                            key: hex(&key),
                            reason: format!(
                                "a malformed open-procedure entry ({} key bytes, {} value bytes)",
                                key.len(),
                                value.len()
                            ),
                        })
                    }
                }
            }
            Ok(open)
        })
    }

    /// The open procedure of a region, if it has one.
    pub fn open_procedure_of_region(&self, region_id: u64) -> Result<Option<Uuid>, LogError> {
        self.core().guarded("read the open procedures", || {
            let key = region_open_key(region_id);
            match self.core().tree.get(key)? {
                None => Ok(None),
                Some(value) => match parse_uuid(&value) {
                    Some(procedure_id) => Ok(Some(procedure_id)),
                    None => Err(LogError::IndexMismatch {
                        procedure_id: None,
                        seq: None,
                        key: hex(&key),
                        reason: format!(
                            "the value is {} bytes, expected 16 (a procedure id)",
                            value.len()
                        ),
                    }),
                },
            }
        })
    }

    /// The procedures opened on a region with event 1 recorded in
    /// `since_ms..=until_ms` (both ends included), by time then id.
    pub fn procedures_by_region(
        &self,
        region_id: u64,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<(u64, Uuid)>, LogError> {
        self.audit_range(PREFIX_REGION_AUDIT, region_id, since_ms, until_ms)
    }

    /// The procedures that named a peer, with event 1 recorded in `since_ms..=until_ms`
    /// (both ends included), by time then id.
    pub fn procedures_by_peer(
        &self,
        peer_id: u64,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<(u64, Uuid)>, LogError> {
        self.audit_range(PREFIX_PEER_AUDIT, peer_id, since_ms, until_ms)
    }

    fn audit_range(
        &self,
        prefix: u8,
        owner_id: u64,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<(u64, Uuid)>, LogError> {
        self.core().guarded("read the audit index", || {
            if since_ms > until_ms {
                return Ok(Vec::new());
            }
            let audit_key = |recorded_at_ms: u64, procedure_id: Uuid| {
                if prefix == PREFIX_REGION_AUDIT {
                    keys::region_audit_key(owner_id, recorded_at_ms, procedure_id)
                } else {
                    keys::peer_audit_key(owner_id, recorded_at_ms, procedure_id)
                }
            };
            let start = audit_key(since_ms, Uuid::nil());
            let end = audit_key(until_ms, Uuid::max());
            let core = self.core();
            let _visible = core.read_visible();
            let mut found = Vec::new();
            for item in core.tree.range(start..=end) {
                let (key, _) = item?;
                let Some((_, recorded_at_ms, procedure_id)) = parse_audit_key(prefix, &key) else {
                    return Err(LogError::MalformedKey {
                        key: hex(&key),
                        reason: "an audit key of the wrong length".to_string(),
                    });
                };
                found.push((recorded_at_ms, procedure_id));
            }
            Ok(found)
        })
    }

    /// Every procedure that has an event, in id order (uuid v7: creation order).
    pub fn procedures(&self) -> Result<Vec<Uuid>, LogError> {
        self.core().guarded("list the procedures", || {
            let core = self.core();
            let mut procedures = Vec::new();
            let mut start = Bound::Included(vec![PREFIX_EVENT]);
            let end = Bound::Excluded(vec![PREFIX_EVENT + 1]);
            loop {
                let next = {
                    let _visible = core.read_visible();
                    core.tree
                        .range::<Vec<u8>, _>((start.clone(), end.clone()))
                        .next()
                };
                let Some(item) = next else {
                    return Ok(procedures);
                };
                let (key, _) = item?;
                let Some((procedure_id, _)) = parse_event_key(&key) else {
                    return Err(LogError::MalformedKey {
                        key: hex(&key),
                        reason: "an event-prefixed key of the wrong length".to_string(),
                    });
                };
                procedures.push(procedure_id);
                // Skip the rest of this procedure's events: the next key is the next procedure.
                start = Bound::Excluded(event_key(procedure_id, u64::MAX).to_vec());
            }
        })
    }

    /// Walks the whole log and reports every problem: records that fail their checks,
    /// sequence gaps, index entries that disagree with the events.
    pub fn verify(&self) -> Result<VerifyReport, LogError> {
        self.core()
            .guarded("verify the log", || verify::verify(self.core()))
    }

    /// Stops writing the high-water mark for the rest of this open, so a benchmark can
    /// measure what the mark costs against the same log without it. The mark stays where it
    /// was, behind the log, which the next open accepts. Never for anything but measuring.
    #[doc(hidden)]
    pub fn stop_writing_the_mark_for_benchmarks(&self) {
        self.core()
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .mark_writer = None;
    }

    /// Makes the next fdatasync fail as an I/O error would, to test what callers do then.
    #[doc(hidden)]
    pub fn fail_next_fdatasync_for_tests(&self) {
        if let Some(syncer) = &self.core().syncer {
            syncer.fail_next_fdatasync();
        }
    }

    fn core(&self) -> &Core {
        &self.shared.core
    }

    /// The commit thread's queue, starting the thread on first use.
    fn committer_sender(&self) -> Result<mpsc::Sender<CommitMessage>, LogError> {
        let mut committer = self
            .shared
            .committer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(running) = committer.as_ref() {
            return Ok(running.sender.clone());
        }
        let group_events_max = self.core().options.group_commit_max_events.max(1);
        let (sender, receiver) = mpsc::channel(group_events_max);
        let core = Arc::clone(&self.shared.core);
        let thread = std::thread::Builder::new()
            .name("regmig-log-commit".to_string())
            .spawn(move || run_committer(core, receiver, group_events_max))
            .map_err(|error| LogError::io("start the commit thread for", self.data_dir(), error))?;
        *committer = Some(Committer {
            sender: sender.clone(),
            thread,
        });
        Ok(sender)
    }
}

impl Core {
    /// Validates and writes `requests` as one batch, then (when durable and anything was
    /// written or a sync was asked for) flushes and fdatasyncs once.
    pub(crate) fn commit(
        &self,
        requests: Vec<AppendRequest>,
        sync_requested: bool,
    ) -> CommitOutcome {
        if let Err(error) = self.check_poison() {
            return poisoned_outcome(&requests, error);
        }
        // Held through the sync too: no batch of this tree lands (and writes a blob) between
        // the sync's blob pass and its flush.
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.commit_locked(writer, requests, sync_requested)
    }

    /// [`Core::commit`] with the writer lock already taken.
    pub(crate) fn commit_locked(
        &self,
        mut writer: MutexGuard<'_, WriterState>,
        requests: Vec<AppendRequest>,
        sync_requested: bool,
    ) -> CommitOutcome {
        if let Err(error) = self.check_poison() {
            return poisoned_outcome(&requests, error);
        }
        let mut appends = Vec::with_capacity(requests.len());
        let mut accepted = 0usize;
        let first_global_seq = writer.next_global_seq();
        let hash_before_group = writer.last_hash;
        let durable = self.options.durability == Durability::Durable;
        let mut mark = None;
        let mut pending_mark = None;
        {
            let mut batch = sled::Batch::default();
            let mut runs = Vec::new();
            for request in requests {
                let outcome = writer.plan(&self.tree, request, &mut batch, &mut runs);
                if matches!(outcome, Ok(Ok(_))) {
                    accepted += 1;
                }
                appends.push(outcome);
            }
            commit::add_global_entries(&mut batch, first_global_seq, &runs);
            if accepted > 0 && durable {
                // The mark vouches for this group before any append of it is acknowledged.
                // It is written and synced on the mark thread from now on, while this thread
                // applies the batch and syncs sled's files: a lone writer waits about one
                // device round trip, and a large group hides it behind `apply_batch`. The
                // mark may so run one group ahead of sled, which the open check allows.
                let group_mark = Mark {
                    generation: writer.mark.generation + 1,
                    group_first_global_seq: first_global_seq,
                    last_global_seq: writer.next_global_seq() - 1,
                    hash_before_group,
                    hash_at_last: writer.last_hash,
                };
                pending_mark = writer
                    .mark_writer
                    .as_mut()
                    .map(|mark_writer| mark_writer.start(&group_mark, true));
                mark = Some(group_mark);
            }
            if accepted > 0 {
                let applied = {
                    let _exclusive = self
                        .visibility
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    self.tree.apply_batch(batch)
                };
                if let Err(error) = applied {
                    // The writer state already counts the batch: only a reopen, which
                    // reads the disk, can tell what is really there.
                    if let Some(pending) = pending_mark.take() {
                        let _ = pending.wait();
                    }
                    let reason = format!("sled apply_batch failed: {error}");
                    self.set_poison(&reason);
                    fail_accepted(&mut appends, &reason);
                    return CommitOutcome {
                        appends,
                        sync: Err(LogError::WriteFailed { reason }),
                    };
                }
            }
            writer.evict_if_over_bound();
        }
        let sync = if durable && (accepted > 0 || sync_requested) {
            let synced = match &self.syncer {
                Some(syncer) => syncer.sync(&self.db),
                None => Ok(()),
            };
            let marked = pending_mark.map_or(Ok(()), |pending| pending.wait());
            if let (Ok(()), Some(mark)) = (&marked, mark) {
                writer.mark = mark;
            }
            synced.and(marked)
        } else {
            Ok(())
        };
        drop(writer);
        if let Err(error) = &sync {
            // After a failed fsync the kernel may have dropped the dirty pages: retrying
            // could report success for data that is gone. Refuse every later write.
            let reason = format!("sync failed: {error}");
            self.set_poison(&reason);
            fail_accepted(&mut appends, &reason);
        }
        CommitOutcome { appends, sync }
    }

    /// The event a global-order entry (`entry_key`) lists at `global_seq`, checked.
    fn record_at_global_seq(
        &self,
        entry_key: &[u8],
        global_seq: u64,
        procedure_id: Uuid,
        seq: u64,
    ) -> Result<Record, LogError> {
        listed_record(&self.tree, entry_key, global_seq, procedure_id, seq)
            .map(|(record, _)| record)
    }

    fn check_poison(&self) -> Result<(), LogError> {
        if self.read_only {
            return Err(LogError::ReadOnly {
                dir: self.data_dir.clone(),
            });
        }
        match self
            .poison
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
        {
            Some(reason) => Err(LogError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn set_poison(&self, reason: &str) {
        tracing::error!(data_dir = %self.data_dir.display(), reason, "event log write failed; refusing further writes");
        let mut poison = self
            .poison
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if poison.is_none() {
            *poison = Some(reason.to_string());
        }
    }

    /// On the last drop of a writer: a mark with no group in flight, so a later open can
    /// tell the loss of the last group from a crash during it. An unsynced log flushes
    /// sled first (the mark must never claim more than sled has handed to the OS).
    fn close_cleanly(&self) {
        if self.read_only || self.check_poison().is_err() {
            return;
        }
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let last_global_seq = writer.next_global_seq() - 1;
        let settled = Mark::settled(
            writer.mark.generation + 1,
            last_global_seq,
            writer.last_hash,
        );
        if writer.mark.group_first_global_seq == settled.group_first_global_seq
            && writer.mark.last_global_seq == last_global_seq
            && writer.mark.hash_at_last == settled.hash_at_last
        {
            return;
        }
        if self.options.durability != Durability::Durable {
            if let Err(error) = self.db.flush() {
                tracing::warn!(%error, "could not flush the event log at close; its mark stays behind");
                return;
            }
        }
        let written = match &writer.mark_writer {
            Some(mark_writer) => mark_writer.write_now(&settled),
            None => return,
        };
        match written {
            Ok(()) => writer.mark = settled,
            Err(error) => tracing::warn!(%error, "could not write the event log's mark at close"),
        }
    }

    /// Runs a read of the database, turning a sled panic or a bare sled error into an
    /// error that names the file.
    fn guarded<T>(
        &self,
        action: &'static str,
        read: impl FnOnce() -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        open::guarded(&self.data_dir, action, read)
    }

    fn read_visible(&self) -> RwLockReadGuard<'_, ()> {
        self.visibility
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Visits every entry whose key starts with `prefix` (every entry when `None`), in key
    /// order, [`WALK_CHUNK_ENTRIES`] at a time under the read lock: each chunk sees whole
    /// batches only, and appends proceed between chunks.
    pub(crate) fn walk(
        &self,
        prefix: Option<u8>,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let end = match prefix {
            Some(prefix) if prefix < u8::MAX => Bound::Excluded(vec![prefix + 1]),
            _ => Bound::Unbounded,
        };
        let mut start = match prefix {
            Some(prefix) => Bound::Included(vec![prefix]),
            None => Bound::Unbounded,
        };
        loop {
            let _visible = self.read_visible();
            let mut visited = 0usize;
            for item in self.tree.range::<Vec<u8>, _>((start.clone(), end.clone())) {
                let (key, value) = item?;
                visit(&key, &value)?;
                visited += 1;
                if visited == WALK_CHUNK_ENTRIES {
                    start = Bound::Excluded(key.to_vec());
                    break;
                }
            }
            if visited < WALK_CHUNK_ENTRIES {
                return Ok(());
            }
        }
    }
}

/// Every request refused because the log is poisoned.
fn poisoned_outcome(requests: &[AppendRequest], error: LogError) -> CommitOutcome {
    let reason = error.to_string();
    CommitOutcome {
        appends: requests
            .iter()
            .map(|_| {
                Err(LogError::Poisoned {
                    reason: reason.clone(),
                })
            })
            .collect(),
        sync: Err(error),
    }
}

/// The error for a global-order value that does not parse.
pub(crate) fn malformed_global_entry(key: &[u8], value: &[u8]) -> LogError {
    LogError::IndexMismatch {
        procedure_id: None,
        seq: None,
        key: hex(key),
        reason: format!(
            "a malformed global-order value of {} bytes (expected a u32 run count, then 28 bytes per non-empty run)",
            value.len()
        ),
    }
}

/// Turns every accepted append of a failed group into the failure.
fn fail_accepted(appends: &mut [AppendOutcome], reason: &str) {
    for outcome in appends.iter_mut() {
        if matches!(outcome, Ok(Ok(_))) {
            *outcome = Err(LogError::WriteFailed {
                reason: reason.to_string(),
            });
        }
    }
}

/// The event a global-order entry (`entry_key`) lists at `global_seq`, checked to exist and
/// to carry that global seq; with its stored bytes (what the chain hashes).
fn listed_record(
    tree: &sled::Tree,
    entry_key: &[u8],
    global_seq: u64,
    procedure_id: Uuid,
    seq: u64,
) -> Result<(Record, sled::IVec), LogError> {
    let record_key = event_key(procedure_id, seq);
    let Some(bytes) = tree.get(record_key)? else {
        return Err(LogError::IndexMismatch {
            procedure_id: Some(procedure_id),
            seq: Some(seq),
            key: hex(entry_key),
            reason: format!(
                "global seq {global_seq} is listed as this event, which does not exist"
            ),
        });
    };
    let record = decode_record(&record_key, &bytes)?;
    if record.global_seq != global_seq {
        return Err(LogError::IndexMismatch {
            procedure_id: Some(procedure_id),
            seq: Some(seq),
            key: hex(entry_key),
            reason: format!(
                "global seq {global_seq} is listed as this event, whose global seq is {}",
                record.global_seq
            ),
        });
    }
    Ok((record, bytes))
}
