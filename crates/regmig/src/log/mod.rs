//! The append-only event log: every event of every procedure, durable across a machine
//! crash, checked on write and on read. The format is `migrations-log-format.md`.
//!
//! # Layers
//! [`EventLog`] is the integrity layer every caller uses; it holds one storage backend
//! behind the [`LogStore`] trait ([`store`]). The store keeps records and indexes and
//! enforces the unique (procedure, seq) rule; the layer above decodes and checks every
//! record it reads ([`decode_record`]: envelope, checksum, version), checks that a
//! procedure's records follow without gaps and that a global-order read returns what it
//! asked for. [`SledStore`] ([`sled_store`]) is the embedded backend, the one
//! [`EventLog::open`] opens; [`EventLog::with_store`] takes any other, such as `PgStore`
//! (`pg_store`, feature `postgres`: a PostgreSQL database several engines share, with
//! fencing; `migrations-log-format.md` section 10).
//!
//! # The sled backend
//! A data directory holds `regmig.lock` (an exclusive, non-blocking `flock`: one owner at a
//! time), `regmig.mark` (the high-water mark, [`mark`]) and `sled/`, one sled 0.34.7
//! database. The log is the sled tree `regmig.log`; other components (the sled metadata
//! store) keep their own trees in the same database ([`SledStore::db`]) and make their
//! writes durable with [`EventLog::sync`].
//!
//! One tree, one-byte prefixes ([`keys`]): events `E | procedure_id | seq`, the global order
//! `G | first_global_seq` (one entry per group commit, listing runs of events), open
//! procedures `O | procedure_id`, region → open procedure `R | region_id`, and the audit
//! indexes `A | region_id | ms | procedure_id` and `P | peer_id | ms | procedure_id`. An
//! append writes its events and every index entry in one `apply_batch`, which sled
//! recovers all or nothing.
//!
//! # Write path (sled)
//! [`EventLog::append`] queues the request for the group-commit thread, which takes every
//! queued request (up to [`LogOptions::group_commit_max_events`] events), validates each
//! against the in-memory writer state (next seq per procedure, open regions, next global
//! seq), writes one batch, flushes sled, fdatasyncs its files once and answers them all.
//! A lone async writer (nothing queued, nobody writing, a multi-thread runtime) commits on
//! its own thread instead, in `block_in_place`, saving two thread hand-offs.
//! [`EventLog::append_blocking`] does the same for one request on the caller's thread.
//!
//! # Reads
//! A read never sees half of a batch. A read may see a batch that is written but not yet
//! synced (its append has not returned yet). Damage is a typed [`LogError`] naming the
//! procedure, the seq and the key.
//!
//! # Damage (sled)
//! Every record carries the chain hash of its predecessor in global order (format version
//! 2), and every group commit writes the mark (last global seq, chain hash) beside sled,
//! synced on a second thread while sled's files are synced. Every open checks the log's
//! end against the mark: a writer ([`EventLog::open`]) refuses a log that lost
//! acknowledged history ([`LogError::LostHistory`]); a reader ([`EventLog::open_read_only`],
//! which opens a private copy of the database and writes nothing into the directory) reads
//! it and reports the damage ([`EventLog::damage`]). sled's panics and errors become errors
//! that name `<dir>/sled/db`; a database sled refuses at open is opened again as a copy
//! without the files it read first, which names the one at fault
//! ([`LogError::DatabaseRefused`]). [`salvage`] copies what still checks out into a new log.

pub mod archive;
pub mod bundle;
mod commit;
mod durable;
mod error;
pub mod keys;
pub mod mark;
mod open;
#[cfg(feature = "postgres")]
pub mod pg_store;
mod record;
pub mod salvage;
pub mod sled_store;
pub mod store;
mod tail;
mod verify;

use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

pub use archive::{ArchivePlan, Checkpoint};
pub use commit::{APPEND_EVENTS_MAX, OPEN_PEERS_MAX};
pub use error::{DatabaseRefused, LogError, LostHistory};
pub use mark::MARK_FILE_NAME;
pub use open::quiet_sled_panics;
#[cfg(feature = "postgres")]
pub use pg_store::PgStore;
pub use record::{
    chain_hash, decode_record, encode_record, ChainHash, Record, CHAIN_START,
    ENVELOPE_OVERHEAD_BYTES, FORMAT_VERSION, FORMAT_VERSION_V1, PAYLOAD_MAX_BYTES,
};
pub use sled_store::SledStore;
pub use store::{AuditEntry, AuditIndex, ListedEvent, LogStore, StoredEvent};
pub use verify::{ChainReport, VerifyReport, VERIFY_PROBLEMS_MAX};

pub(crate) use sled_store::{listed_record, malformed_global_entry, Core};

use keys::{event_key, hex};
use store::block_on;

/// The subdirectory of the data directory that holds the sled database.
pub const SLED_SUBDIR: &str = "sled";
/// The lock file in the data directory; its exclusive `flock` marks the owner.
pub const LOCK_FILE_NAME: &str = "regmig.lock";
/// The default bound on the events of one group commit (and on queued requests).
pub const GROUP_COMMIT_MAX_EVENTS_DEFAULT: usize = 4096;
/// The default bound of sled's page cache, in bytes (64 MiB; sled's own default is 1 GiB).
pub const CACHE_CAPACITY_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// The smallest page cache the log opens sled with, in bytes (1 MiB): a smaller
/// [`LogOptions::cache_capacity_bytes`] is raised to it (sled refuses less than 256 bytes).
pub const CACHE_CAPACITY_BYTES_MIN: u64 = 1024 * 1024;

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
    /// The bound of sled's page cache, in bytes (sled's `cache_capacity`): the pages of
    /// the database it keeps in memory once read or written, shared by the log and every
    /// other tree of the database (the sled metadata store's). sled counts a page by its
    /// serialized size, so the memory it takes can run above this bound (see
    /// `BENCHMARKS.md`, figure 6). Default [`CACHE_CAPACITY_BYTES_DEFAULT`]; a value below
    /// [`CACHE_CAPACITY_BYTES_MIN`] is raised to it. Not used by other stores.
    pub cache_capacity_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Durable,
            group_commit_max_events: GROUP_COMMIT_MAX_EVENTS_DEFAULT,
            cache_capacity_bytes: CACHE_CAPACITY_BYTES_DEFAULT,
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

/// The event log: the integrity layer over one [`LogStore`]. Cheap to clone; every clone
/// is the same log.
#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn LogStore>,
}

impl EventLog {
    /// Opens the sled log in `dir` for writing ([`SledStore::open`]).
    pub fn open(dir: &Path, options: LogOptions) -> Result<EventLog, LogError> {
        Ok(Self::with_store(Arc::new(SledStore::open(dir, options)?)))
    }

    /// Opens the sled log in `dir` for writing; a missing `dir` is
    /// [`LogError::MissingDataDir`] ([`SledStore::open_existing`]).
    pub fn open_existing(dir: &Path, options: LogOptions) -> Result<EventLog, LogError> {
        Ok(Self::with_store(Arc::new(SledStore::open_existing(
            dir, options,
        )?)))
    }

    /// Opens the sled log in `dir` for reading, writing nothing into `dir`
    /// ([`SledStore::open_read_only`]); [`EventLog::damage`] says what the open found wrong.
    pub fn open_read_only(dir: &Path) -> Result<EventLog, LogError> {
        Ok(Self::with_store(Arc::new(SledStore::open_read_only(dir)?)))
    }

    /// The log over `store`, any backend.
    pub fn with_store(store: Arc<dyn LogStore>) -> EventLog {
        EventLog { store }
    }

    /// The storage backend, for its async reads and for a backend's own extras (see
    /// [`SledStore::of`]).
    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.store
    }

    /// The sled store under this log, or what to say when another backend carries it.
    fn sled(&self, operation: &'static str) -> Result<&SledStore, LogError> {
        SledStore::of(self).ok_or_else(|| LogError::Unsupported {
            operation,
            store: self.store.location(),
        })
    }

    /// The sled internals, for the sled-bound operations (archive, compact, salvage).
    pub(crate) fn core(&self, operation: &'static str) -> Result<&Core, LogError> {
        Ok(self.sled(operation)?.core())
    }

    /// The data directory of a sled-backed log (every log [`EventLog::open`] opens); an
    /// empty path for a log on another store, which has none: name it by
    /// [`LogStore::location`] instead. Kept for callers that key things by directory.
    pub fn data_dir(&self) -> &Path {
        SledStore::of(self).map_or(Path::new(""), SledStore::data_dir)
    }

    /// What the open found wrong with the log, for a log opened with
    /// [`EventLog::open_read_only`] (a writer's open refuses a damaged log instead).
    pub fn damage(&self) -> Option<&LogError> {
        self.store.damage()
    }

    /// Whether the log was opened for reading only.
    pub fn is_read_only(&self) -> bool {
        self.store.is_read_only()
    }

    /// Appends one batch of events to a procedure, all or nothing. With
    /// [`Durability::Durable`] it returns once the batch survives a power cut; concurrent
    /// appends share one durable write (group commit).
    ///
    /// If the future is dropped before it completes, the append may still be written: read
    /// [`EventLog::next_seq`] to find out.
    pub async fn append(
        &self,
        request: AppendRequest,
    ) -> Result<Result<AppendReceipt, AppendConflict>, LogError> {
        self.store.append(request).await
    }

    /// [`EventLog::append`] on the caller's thread: validated, written and synced before it
    /// returns, with no other thread involved in its ordering.
    pub fn append_blocking(
        &self,
        request: AppendRequest,
    ) -> Result<Result<AppendReceipt, AppendConflict>, LogError> {
        self.store.append_blocking(request)
    }

    /// Makes every write done so far durable (with sled, the other trees' of its database
    /// too). Shares the group commit's durable write. A no-op when unsynced.
    pub async fn sync(&self) -> Result<(), LogError> {
        self.store.sync().await
    }

    /// [`EventLog::sync`] on the caller's thread.
    pub fn sync_blocking(&self) -> Result<(), LogError> {
        self.store.sync_blocking()
    }

    /// A procedure's events from `from_seq` on (1 when 0), checked: damage or a gap is an
    /// error naming the procedure, the seq and the key.
    pub fn procedure_events(
        &self,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<Vec<Record>, LogError> {
        block_on(self.procedure_events_async(procedure_id, from_seq))
    }

    /// [`EventLog::procedure_events`] for an async caller.
    pub async fn procedure_events_async(
        &self,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<Vec<Record>, LogError> {
        let from_seq = from_seq.max(1);
        let stored = self.store.procedure_events(procedure_id, from_seq).await?;
        check_procedure_events(procedure_id, from_seq, stored)
    }

    /// The seq the next event of `procedure_id` will get (1 for a procedure never seen).
    pub fn next_seq(&self, procedure_id: Uuid) -> Result<u64, LogError> {
        block_on(self.store.next_seq(procedure_id))
    }

    /// At most `limit` events in global order, from `from_global_seq` on (1 when 0),
    /// checked against the global-order index.
    pub fn events_from(&self, from_global_seq: u64, limit: usize) -> Result<Vec<Record>, LogError> {
        block_on(self.events_from_async(from_global_seq, limit))
    }

    /// [`EventLog::events_from`] for an async caller.
    pub async fn events_from_async(
        &self,
        from_global_seq: u64,
        limit: usize,
    ) -> Result<Vec<Record>, LogError> {
        let listed = self.store.events_from(from_global_seq, limit).await?;
        listed.into_iter().map(check_listed_event).collect()
    }

    /// The procedures that are not finished, with their region, in id order. Reads only the
    /// open index: recovery never scans the history.
    pub fn open_procedures(&self) -> Result<Vec<(Uuid, u64)>, LogError> {
        block_on(self.store.open_procedures())
    }

    /// The open procedure of a region, if it has one.
    pub fn open_procedure_of_region(&self, region_id: u64) -> Result<Option<Uuid>, LogError> {
        block_on(self.store.open_procedure_of_region(region_id))
    }

    /// The procedures opened on a region with event 1 recorded in
    /// `since_ms..=until_ms` (both ends included), by time then id.
    pub fn procedures_by_region(
        &self,
        region_id: u64,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<(u64, Uuid)>, LogError> {
        self.audit_of_one(AuditIndex::Region, region_id, since_ms, until_ms)
    }

    /// The procedures opened on any region in `regions` (region ids, both ends included)
    /// with event 1 recorded in `since_ms..=until_ms`, by region, then time, then id. One
    /// range read: a table's regions are one such range.
    pub fn procedures_by_regions(
        &self,
        regions: std::ops::RangeInclusive<u64>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<AuditEntry>, LogError> {
        block_on(
            self.store
                .audit_entries(AuditIndex::Region, regions, since_ms, until_ms),
        )
    }

    /// The procedures that named a peer, with event 1 recorded in `since_ms..=until_ms`
    /// (both ends included), by time then id.
    pub fn procedures_by_peer(
        &self,
        peer_id: u64,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<(u64, Uuid)>, LogError> {
        self.audit_of_one(AuditIndex::Peer, peer_id, since_ms, until_ms)
    }

    fn audit_of_one(
        &self,
        index: AuditIndex,
        owner_id: u64,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<(u64, Uuid)>, LogError> {
        let entries =
            block_on(
                self.store
                    .audit_entries(index, owner_id..=owner_id, since_ms, until_ms),
            )?;
        Ok(entries
            .into_iter()
            .map(|entry| (entry.recorded_at_ms, entry.procedure_id))
            .collect())
    }

    /// Every procedure that has an event, in id order (uuid v7: creation order).
    pub fn procedures(&self) -> Result<Vec<Uuid>, LogError> {
        block_on(self.store.procedures())
    }

    /// Walks the whole log and reports every problem: records that fail their checks,
    /// sequence gaps, a broken hash chain, open-index entries without events. On sled,
    /// also every index entry against the events and the log's end against its mark
    /// ([`SledStore::verify`]); on any other store, what the [`LogStore`] trait shows.
    pub fn verify(&self) -> Result<VerifyReport, LogError> {
        match SledStore::of(self) {
            Some(sled) => sled.verify(),
            None => block_on(verify::verify_store(self.store.as_ref())),
        }
    }
}

/// Decodes and checks a procedure's stored records from `from_seq` on: every record checks
/// out and the seqs follow without a gap.
fn check_procedure_events(
    procedure_id: Uuid,
    from_seq: u64,
    stored: Vec<StoredEvent>,
) -> Result<Vec<Record>, LogError> {
    let mut expected_seq = from_seq;
    let mut records = Vec::with_capacity(stored.len());
    for event in stored {
        let key = event_key(event.procedure_id, event.seq);
        if event.procedure_id != procedure_id {
            return Err(LogError::IndexMismatch {
                procedure_id: Some(procedure_id),
                seq: Some(event.seq),
                key: hex(&key),
                reason: format!(
                    "the store returned an event of procedure {} for this procedure",
                    event.procedure_id
                ),
            });
        }
        let record = decode_record(&key, &event.bytes)?;
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
}

/// Decodes and checks a record read in global order: it carries the global seq it is
/// listed at.
fn check_listed_event(listed: ListedEvent) -> Result<Record, LogError> {
    check_listed_bytes(
        listed.global_seq,
        listed.event.procedure_id,
        listed.event.seq,
        &listed.event.bytes,
    )
}

/// Decodes the bytes a store lists at `global_seq` as (`procedure_id`, `seq`) and checks
/// that the record carries that global seq.
pub(crate) fn check_listed_bytes(
    global_seq: u64,
    procedure_id: Uuid,
    seq: u64,
    bytes: &[u8],
) -> Result<Record, LogError> {
    let key = event_key(procedure_id, seq);
    let record = decode_record(&key, bytes)?;
    if record.global_seq != global_seq {
        return Err(LogError::IndexMismatch {
            procedure_id: Some(procedure_id),
            seq: Some(seq),
            key: hex(&key),
            reason: format!(
                "the store lists this event at global seq {global_seq}, but its global seq is {}",
                record.global_seq
            ),
        });
    }
    Ok(record)
}
