//! The log's one error type. Damage variants name the procedure, the sequence number and
//! the key (hex) of what is damaged, so an operator can find it with `regmig log verify`.

use std::path::PathBuf;

use uuid::Uuid;

/// What went wrong in the event log: a fault (I/O, sled), a misuse, or damage on disk.
///
/// An expected race (a stale `expected_next_seq`, a region already migrating) is not an
/// error: it is an [`AppendConflict`](crate::log::AppendConflict) in the inner `Result`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// `open_existing` was given a directory that does not exist.
    #[error("data directory {} does not exist", dir.display())]
    MissingDataDir {
        /// The directory that was asked for.
        dir: PathBuf,
    },

    /// Another process (or another `EventLog` in this one) holds the directory's lock.
    #[error("data directory {} is in use by another process (its lock file is held); stop that process or use another directory", dir.display())]
    InUse {
        /// The directory that is in use.
        dir: PathBuf,
    },

    /// A file-system operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "fdatasync".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The storage backend reported an error (an I/O error or damage it found itself)
    /// that names no file the log knows of.
    #[error("{backend} storage error: {source}")]
    Storage {
        /// The backend, e.g. "sled".
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A shared store refused the append of a writer that is no longer the leader: another
    /// engine took the lease and its epoch. Stop at once and send nothing more. (The sled
    /// store has one writer per directory and never returns it.)
    #[error("the store at {store} refused a write with epoch {epoch}: it is at epoch {current_epoch}, another engine leads")]
    Fenced {
        /// The store, without credentials.
        store: String,
        /// The epoch this writer wrote with.
        epoch: u64,
        /// The store's current epoch.
        current_epoch: u64,
    },

    /// A database store's server refused an operation or could not be reached (connection
    /// refused or cut, authentication, a statement that failed). For an append, whether it
    /// was written is unknown when the connection broke during its commit: read the
    /// procedure's next seq.
    #[error("{store}: could not {action}: {source}")]
    Database {
        /// The store, without credentials.
        store: String,
        /// What was being done, e.g. "commit a group of appends".
        action: &'static str,
        /// The driver's (or the pool's) error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A database store's configuration (its URL, password file, TLS files) is unusable.
    #[error("store {store}: {reason}")]
    StoreConfig {
        /// The store, without credentials.
        store: String,
        /// What is wrong.
        reason: String,
    },

    /// Another engine writes to this database store without leader election (it holds the
    /// store's writer lock): two such writers on one history are refused.
    #[error("the store at {store} is in use by another writer: {reason}")]
    StoreInUse {
        /// The store, without credentials.
        store: String,
        /// Who holds it, as far as the store can tell.
        reason: String,
    },

    /// A database store's tables are of a newer schema version than this regmig reads.
    #[error("the store at {store} has {component} schema version {found} in PostgreSQL schema `{schema}`; this regmig reads version {supported} at most: upgrade regmig")]
    UnsupportedSchema {
        /// The store, without credentials.
        store: String,
        /// The PostgreSQL schema.
        schema: String,
        /// Which tables, e.g. "log".
        component: String,
        /// The version found.
        found: i32,
        /// The newest version this build reads.
        supported: i32,
    },

    /// A database store holds no regmig log (for a reader, which creates nothing).
    #[error("the store at {store} holds no regmig event log ({reason})")]
    NoLogAtStore {
        /// The store, without credentials.
        store: String,
        /// What was found instead.
        reason: String,
    },

    /// A database store's log does not end where its head row (written in the same
    /// transaction as every append) says: acknowledged history is gone, or the head row
    /// was altered. Writers refuse the store; readers report it.
    #[error("the event log at {store} has lost acknowledged history: its head row records global seq {head_global_seq}, {reason}. Writers refuse this log: run `regmig log verify --store <url>`")]
    StoreLostHistory {
        /// The store, without credentials.
        store: String,
        /// The last global seq the head row records.
        head_global_seq: u64,
        /// The last global seq the log holds.
        found_global_seq: u64,
        /// What disagrees.
        reason: String,
    },

    /// The operation needs a capability this store does not offer (today: archive,
    /// compaction, salvage and verify read the sled backend's key layout).
    #[error("{operation}: not supported by the store at {store}")]
    Unsupported {
        /// What was asked, e.g. "verify the log".
        operation: &'static str,
        /// The store, without credentials.
        store: String,
    },

    /// The directory holds a log whose key layout is newer than this regmig reads.
    #[error("event log in {} has layout version {found}; this regmig reads layout version {supported} only: upgrade regmig", dir.display())]
    UnsupportedLayout {
        /// The data directory.
        dir: PathBuf,
        /// The layout version stored in the log.
        found: u8,
        /// The layout version this build reads.
        supported: u8,
    },

    /// A record's crc32 does not match its bytes.
    #[error("bad checksum in event {seq} of procedure {procedure_id} (key {key}): stored {stored_crc:#010x}, computed {computed_crc:#010x}")]
    BadChecksum {
        /// The procedure, from the key.
        procedure_id: Uuid,
        /// The sequence number, from the key.
        seq: u64,
        /// The record's key, hex.
        key: String,
        /// The crc32 stored in the record's last four bytes.
        stored_crc: u32,
        /// The crc32 of the bytes before it.
        computed_crc: u32,
    },

    /// A record (with a valid checksum) has a format version this build does not know.
    #[error("event {seq} of procedure {procedure_id} (key {key}) has format version {version}, which this regmig does not read: upgrade regmig")]
    UnknownFormatVersion {
        /// The procedure, from the key.
        procedure_id: Uuid,
        /// The sequence number, from the key.
        seq: u64,
        /// The record's key, hex.
        key: String,
        /// The version byte found.
        version: u8,
    },

    /// A record is shorter than its envelope says it is.
    #[error("event {seq} of procedure {procedure_id} (key {key}) is truncated: {actual_len} bytes, expected {expected_len}")]
    Truncated {
        /// The procedure, from the key.
        procedure_id: Uuid,
        /// The sequence number, from the key.
        seq: u64,
        /// The record's key, hex.
        key: String,
        /// The length the envelope calls for (or the minimum envelope length).
        expected_len: usize,
        /// The length stored.
        actual_len: usize,
    },

    /// A record whose checksum is valid but whose fields break an invariant (wrong key,
    /// length mismatch, sequence 0, payload over the bound, procedure id not a uuid v7).
    #[error("event {seq} of procedure {procedure_id} (key {key}) is malformed: {reason}")]
    Malformed {
        /// The procedure, from the key.
        procedure_id: Uuid,
        /// The sequence number, from the key.
        seq: u64,
        /// The record's key, hex.
        key: String,
        /// Which invariant it breaks.
        reason: String,
    },

    /// A procedure's events skip a sequence number.
    #[error("procedure {procedure_id} is missing event {seq}: the next stored event is {found_seq} (key {key})")]
    SequenceGap {
        /// The procedure.
        procedure_id: Uuid,
        /// The first missing sequence number.
        seq: u64,
        /// The key of the event found after the gap, hex.
        key: String,
        /// The sequence number found after the gap.
        found_seq: u64,
    },

    /// The global-order index skips a global sequence number.
    #[error("global order is missing global seq {global_seq}: the next entry is {found_global_seq} (key {key})")]
    GlobalSequenceGap {
        /// The first missing global sequence number.
        global_seq: u64,
        /// The key of the entry found after the gap, hex.
        key: String,
        /// The global sequence number found after the gap.
        found_global_seq: u64,
    },

    /// An index entry disagrees with the events, or an event has no index entry.
    #[error("index entry {key} disagrees with the events{}{}: {reason}", procedure_id.map(|id| format!(" of procedure {id}")).unwrap_or_default(), seq.map(|seq| format!(" at seq {seq}")).unwrap_or_default())]
    IndexMismatch {
        /// The procedure the entry names, when it names one.
        procedure_id: Option<Uuid>,
        /// The sequence number involved, when there is one.
        seq: Option<u64>,
        /// The index entry's key (or the event's key when the index entry is missing), hex.
        key: String,
        /// What disagrees.
        reason: String,
    },

    /// A key in the log tree fits no layout.
    #[error("key {key} in the log tree is malformed: {reason}")]
    MalformedKey {
        /// The key, hex.
        key: String,
        /// Why it fits no layout.
        reason: String,
    },

    /// The caller asked for an append the log refuses (a bug in the caller, not a race).
    #[error("invalid append to procedure {procedure_id}: {reason}")]
    InvalidAppend {
        /// The procedure.
        procedure_id: Uuid,
        /// What is wrong with the request.
        reason: String,
    },

    /// An earlier write or fsync failed: whether it reached the disk is unknown, so the log
    /// refuses every later write. Reopen the data directory to recover from what is on disk.
    #[error("the event log refuses writes since an earlier write failed ({reason}); reopen the data directory")]
    Poisoned {
        /// The first failure.
        reason: String,
    },

    /// The write or sync of the batch this append was in failed: it may or may not be on
    /// disk. The log refuses later writes ([`LogError::Poisoned`]).
    #[error("the write of this batch failed ({reason}); it may or may not be on disk: reopen the data directory and read the procedure's next seq")]
    WriteFailed {
        /// The failure.
        reason: String,
    },

    /// An archive cut was refused because the log no longer holds what its plan saw
    /// (nothing was removed; plan again).
    #[error("the archive cut was refused, nothing was removed: {reason}")]
    ArchiveStale {
        /// What changed.
        reason: String,
    },

    /// A file of the database is damaged: sled refused it, or panicked reading it.
    #[error("`{}` is damaged: could not {action}: {reason}; run `regmig log verify`, and `regmig log salvage` to copy out what still reads back", path.display())]
    Damaged {
        /// The damaged file (or the database directory, when sled does not say which file).
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// What sled reported.
        reason: String,
    },

    /// sled refused to open the database of a data directory: what it reads at open (its
    /// settings file `conf`, its snapshot `snap.*`, its page log `db`) failed its own checks.
    /// Found by opening a copy again without those files, to tell which is at fault.
    #[error("{0}")]
    DatabaseRefused(Box<DatabaseRefused>),

    /// The directory exists but holds no regmig event log (an empty `sled/`, a sled
    /// database of another program): nothing was written to it.
    #[error("data directory {} holds no regmig event log ({reason})", dir.display())]
    NoLog {
        /// The data directory.
        dir: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// The high-water mark file exists but neither of its slots holds a valid mark.
    #[error("the mark file `{}` is damaged: {reason}", path.display())]
    MarkDamaged {
        /// The mark file.
        path: PathBuf,
        /// Why it does not read.
        reason: String,
    },

    /// The log lost history it had acknowledged, or the mark and the log disagree: the
    /// writers refuse it, the readers warn.
    #[error("{0}")]
    LostHistory(Box<LostHistory>),

    /// A record's `prev_hash` is not the chain hash of the record before it in global order.
    #[error("the hash chain breaks at global seq {global_seq} (event {seq} of procedure {procedure_id}, key {key}): {reason}")]
    ChainBroken {
        /// The global seq of the record whose link is wrong.
        global_seq: u64,
        /// Its procedure.
        procedure_id: Uuid,
        /// Its seq.
        seq: u64,
        /// Its key, hex.
        key: String,
        /// What disagrees.
        reason: String,
    },

    /// A write to a log opened for reading.
    #[error("the event log in {} is open for reading only", dir.display())]
    ReadOnly {
        /// The data directory.
        dir: PathBuf,
    },

    /// The group-commit thread is gone (the log is being dropped, or it panicked).
    #[error("the event log's commit thread has stopped")]
    ShutDown,
}

impl LogError {
    /// Whether this error reports damage on disk (as opposed to a fault or a misuse).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            LogError::BadChecksum { .. }
                | LogError::UnknownFormatVersion { .. }
                | LogError::Truncated { .. }
                | LogError::Malformed { .. }
                | LogError::SequenceGap { .. }
                | LogError::GlobalSequenceGap { .. }
                | LogError::IndexMismatch { .. }
                | LogError::MalformedKey { .. }
                | LogError::Damaged { .. }
                | LogError::DatabaseRefused(_)
                | LogError::MarkDamaged { .. }
                | LogError::LostHistory(_)
                | LogError::ChainBroken { .. }
                | LogError::StoreLostHistory { .. }
        )
    }

    /// A stable snake_case name for the variant (used in `regmig log verify --json`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            LogError::MissingDataDir { .. } => "missing_data_dir",
            LogError::InUse { .. } => "in_use",
            LogError::Io { .. } => "io",
            LogError::Storage { .. } => "storage",
            LogError::Fenced { .. } => "fenced",
            LogError::Unsupported { .. } => "unsupported",
            LogError::Database { .. } => "database",
            LogError::StoreConfig { .. } => "store_config",
            LogError::StoreInUse { .. } => "store_in_use",
            LogError::UnsupportedSchema { .. } => "unsupported_schema",
            LogError::NoLogAtStore { .. } => "no_log_at_store",
            LogError::StoreLostHistory { .. } => "store_lost_history",
            LogError::UnsupportedLayout { .. } => "unsupported_layout",
            LogError::BadChecksum { .. } => "bad_checksum",
            LogError::UnknownFormatVersion { .. } => "unknown_format_version",
            LogError::Truncated { .. } => "truncated",
            LogError::Malformed { .. } => "malformed",
            LogError::SequenceGap { .. } => "sequence_gap",
            LogError::GlobalSequenceGap { .. } => "global_sequence_gap",
            LogError::IndexMismatch { .. } => "index_mismatch",
            LogError::MalformedKey { .. } => "malformed_key",
            LogError::InvalidAppend { .. } => "invalid_append",
            LogError::Poisoned { .. } => "poisoned",
            LogError::WriteFailed { .. } => "write_failed",
            LogError::ArchiveStale { .. } => "archive_stale",
            LogError::Damaged { .. } => "damaged",
            LogError::DatabaseRefused(_) => "database_refused",
            LogError::NoLog { .. } => "no_log",
            LogError::MarkDamaged { .. } => "mark_damaged",
            LogError::LostHistory(_) => "lost_history",
            LogError::ChainBroken { .. } => "chain_broken",
            LogError::ReadOnly { .. } => "read_only",
            LogError::ShutDown => "shut_down",
        }
    }

    /// The procedure the error is about, when it names one.
    pub fn procedure_id(&self) -> Option<Uuid> {
        match self {
            LogError::BadChecksum { procedure_id, .. }
            | LogError::UnknownFormatVersion { procedure_id, .. }
            | LogError::Truncated { procedure_id, .. }
            | LogError::Malformed { procedure_id, .. }
            | LogError::SequenceGap { procedure_id, .. }
            | LogError::ChainBroken { procedure_id, .. }
            | LogError::InvalidAppend { procedure_id, .. } => Some(*procedure_id),
            LogError::IndexMismatch { procedure_id, .. } => *procedure_id,
            _ => None,
        }
    }

    /// The per-procedure sequence number the error is about, when it names one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            LogError::BadChecksum { seq, .. }
            | LogError::UnknownFormatVersion { seq, .. }
            | LogError::Truncated { seq, .. }
            | LogError::Malformed { seq, .. }
            | LogError::SequenceGap { seq, .. }
            | LogError::ChainBroken { seq, .. } => Some(*seq),
            LogError::IndexMismatch { seq, .. } => *seq,
            _ => None,
        }
    }

    /// The key (hex) the error is about, when it names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            LogError::BadChecksum { key, .. }
            | LogError::UnknownFormatVersion { key, .. }
            | LogError::Truncated { key, .. }
            | LogError::Malformed { key, .. }
            | LogError::SequenceGap { key, .. }
            | LogError::GlobalSequenceGap { key, .. }
            | LogError::IndexMismatch { key, .. }
            | LogError::MalformedKey { key, .. }
            | LogError::ChainBroken { key, .. } => Some(key),
            _ => None,
        }
    }

    /// A sled error; internal to the sled backend (`?` on sled's results).
    pub(crate) fn sled(error: sled::Error) -> LogError {
        LogError::Storage {
            backend: "sled",
            source: Box::new(error),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        LogError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// What [`LogError::LostHistory`] says: the directory, how far the log still checks out,
/// where the loss starts and whose events are gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event log in {} has lost acknowledged history: {reason}; last good global seq: {}; first missing: {}; procedures whose events are gone: {}. Writers refuse this log: run `regmig log verify --data-dir {}`, then `regmig log salvage`", dir.display(), last_good_global_seq.map_or_else(|| "unknown".to_string(), |seq| seq.to_string()), first_missing_global_seq.map_or_else(|| "unknown".to_string(), |seq| seq.to_string()), describe_lost_procedures(procedures), dir.display())]
pub struct LostHistory {
    /// The data directory.
    pub dir: PathBuf,
    /// The last global seq that still checks out, when known.
    pub last_good_global_seq: Option<u64>,
    /// The first global seq that is gone, when known.
    pub first_missing_global_seq: Option<u64>,
    /// The procedures open at the last good global seq: their later events are gone
    /// (procedures started after it cannot be named: their events are gone entirely).
    pub procedures: Vec<Uuid>,
    /// What disagrees.
    pub reason: String,
}

/// What [`LogError::DatabaseRefused`] says: the directory, the files at fault, what is
/// wrong with them and what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sled database in {} is damaged: {finding} (sled: {sled_error}); {advice}", dir.display())]
pub struct DatabaseRefused {
    /// The data directory.
    pub dir: PathBuf,
    /// The files at fault, as far as opening a copy without them tells.
    pub files: Vec<PathBuf>,
    /// What is wrong, in words, naming the files.
    pub finding: String,
    /// sled's own error.
    pub sled_error: String,
    /// What the operator can do.
    pub advice: String,
}

/// The procedures of a [`LogError::LostHistory`], for its message.
fn describe_lost_procedures(procedures: &[Uuid]) -> String {
    const LISTED_MAX: usize = 20;
    if procedures.is_empty() {
        return "none open at the last good global seq (any procedure started after it is gone entirely)".to_string();
    }
    let mut text = procedures
        .iter()
        .take(LISTED_MAX)
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if procedures.len() > LISTED_MAX {
        text.push_str(&format!(" and {} more", procedures.len() - LISTED_MAX));
    }
    text.push_str(" (later events gone; any procedure started after the last good global seq is gone entirely)");
    text
}

/// `?` on sled's results inside the sled backend. Hidden: sled is not part of the log's
/// public types, and callers outside the backend have no sled errors to convert.
#[doc(hidden)]
impl From<sled::Error> for LogError {
    fn from(error: sled::Error) -> Self {
        LogError::sled(error)
    }
}
