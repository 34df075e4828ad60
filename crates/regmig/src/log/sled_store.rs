//! The sled backend of the log: [`SledStore`], the first [`LogStore`].
//!
//! A data directory holds `regmig.lock` (an exclusive, non-blocking `flock`: one owner at a
//! time), `regmig.mark` (the high-water mark, [`super::mark`]) and `sled/`, one sled 0.34.7
//! database. The log is the sled tree `regmig.log` (key layouts: [`super::keys`]); other
//! components (the sled metadata store) keep their own trees in the same database
//! ([`SledStore::db`]) and make their writes durable with [`LogStore::sync`].
//!
//! # Async and threads
//! An async read that may walk many keys (a procedure's events, the global order, the
//! indexes) runs on tokio's blocking pool when a runtime is present, so a cold read of
//! sled's pages never stalls an async thread (issue 15); `next_seq`, one key, runs inline.
//! The blocking API of [`super::EventLog`] reads on the caller's thread. An async append goes to the group-commit thread, which shares one flush and fdatasync
//! between every append queued meanwhile; a lone writer on a multi-thread runtime commits
//! in `block_in_place` on its own thread instead, saving two thread hand-offs. A blocking
//! append commits on the caller's thread.
//!
//! sled's panics and errors become errors that name `<dir>/sled/db`.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, TryLockError};
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::commit::{
    self, run_committer, AppendOutcome, CommitMessage, CommitOutcome, WriterState,
};
use super::durable::FileSyncer;
use super::keys::{
    self, event_key, global_key, hex, parse_audit_key, parse_event_key, parse_global_key,
    parse_global_runs, parse_open_key, parse_u64, parse_uuid, region_open_key, PREFIX_EVENT,
    PREFIX_OPEN, PREFIX_PEER_AUDIT, PREFIX_REGION_AUDIT,
};
use super::mark::Mark;
use super::record::{decode_record, Record};
use super::store::{AppendResult, AuditEntry, AuditIndex, ListedEvent, LogStore, StoredEvent};
use super::{
    archive, open, verify, AppendRequest, Durability, EventLog, LogError, LogOptions, VerifyReport,
};

/// Builds the key of one audit index: owner, recorded_at_ms, procedure.
type AuditKeyFn = fn(u64, u64, Uuid) -> [u8; keys::AUDIT_KEY_LEN];

/// How many entries a long walk (verify) reads under one hold of the read lock.
const WALK_CHUNK_ENTRIES: usize = 1024;

/// The log of one data directory in sled. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct SledStore {
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
    pub(crate) data_dir: PathBuf,
    pub(crate) options: LogOptions,
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
    /// Held while a group is validated, applied and synced: one writer of the tree at a time.
    pub(crate) writer: Mutex<WriterState>,
    /// Written around `apply_batch`, read around scans: sled applies a batch key by key,
    /// so without it a scan could see part of a batch (and report a false gap).
    pub(crate) visibility: RwLock<()>,
    /// `None` for a log opened for reading (it never syncs).
    pub(crate) syncer: Option<FileSyncer>,
    /// Set by the first failed write or sync; every later write is refused.
    pub(crate) poison: Mutex<Option<String>>,
    /// Opened for reading: on a private copy of the database, never written back.
    pub(crate) read_only: bool,
    /// What the open found wrong with the log (readers only: a writer refuses it).
    pub(crate) damage: Option<LogError>,
    /// Holds the directory's flock; dropped after the database (fields drop in order).
    pub(crate) _lock_file: Option<open::DirLock>,
    /// The private copy a reader opened, removed last.
    pub(crate) _copy: Option<open::ReadCopy>,
}

impl SledStore {
    /// Opens the store in `dir` for writing, creating the directory and an empty log if
    /// needed. A directory another store holds (in this process or another) is
    /// [`LogError::InUse`] at once. A directory that holds something else (an empty `sled/`,
    /// another program's sled database) is [`LogError::NoLog`], with nothing written; a log
    /// that lost acknowledged history, or whose mark is missing or damaged, is refused
    /// ([`LogError::LostHistory`]).
    pub fn open(dir: &Path, options: LogOptions) -> Result<SledStore, LogError> {
        if let Err(error) = std::fs::create_dir_all(dir) {
            // "File exists" says less than what is in the way.
            open::check_data_dir(dir)?;
            return Err(LogError::io("create the data directory", dir, error));
        }
        Self::open_dir(dir, options)
    }

    /// Like [`SledStore::open`], but a missing `dir` is [`LogError::MissingDataDir`].
    pub fn open_existing(dir: &Path, options: LogOptions) -> Result<SledStore, LogError> {
        open::check_data_dir(dir)?;
        Self::open_dir(dir, options)
    }

    /// Opens the store in `dir` for reading, without writing anything into `dir`: sled has
    /// no read-only mode, so the database is copied to a private temporary directory and
    /// opened there. Damage the open finds does not stop the reader: [`LogStore::damage`]
    /// says what it is. A directory without a regmig log is [`LogError::NoLog`].
    pub fn open_read_only(dir: &Path) -> Result<SledStore, LogError> {
        open::check_data_dir(dir)?;
        Ok(Self::from_core(open::open_reader(dir, false)?))
    }

    /// Like [`SledStore::open_read_only`], but when sled refuses the database it reads what
    /// sled serves without the files it refused, and [`LogStore::damage`] says so: for
    /// `salvage`, which copies out what checks out.
    pub(crate) fn open_for_salvage(dir: &Path) -> Result<SledStore, LogError> {
        open::check_data_dir(dir)?;
        Ok(Self::from_core(open::open_reader(dir, true)?))
    }

    fn open_dir(dir: &Path, options: LogOptions) -> Result<SledStore, LogError> {
        Ok(Self::from_core(open::open_writer(dir, options)?))
    }

    fn from_core(core: Core) -> SledStore {
        SledStore {
            shared: Arc::new(Shared {
                core: Arc::new(core),
                committer: Mutex::new(None),
                queued: AtomicUsize::new(0),
            }),
        }
    }

    /// The sled store under `log`, if sled carries it.
    pub fn of(log: &EventLog) -> Option<&SledStore> {
        log.store().as_any().downcast_ref::<SledStore>()
    }

    /// The sled database, for components that keep their own trees beside the log (the
    /// sled metadata store); [`LogStore::sync`] makes their writes durable too.
    pub fn db(&self) -> &sled::Db {
        &self.core().db
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.core().data_dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.core().options
    }

    /// Walks the whole tree and reports every problem: records that fail their checks,
    /// sequence gaps, index entries that disagree with the events, a broken chain, a log
    /// behind its mark.
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

    pub(crate) fn core(&self) -> &Core {
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

    /// Runs `read` on tokio's blocking pool when a runtime is present (inline otherwise, or
    /// when the runtime is shutting down and takes no more blocking work).
    async fn off_async_threads<T, F>(&self, read: F) -> Result<T, LogError>
    where
        T: Send + 'static,
        F: Fn(&SledStore) -> Result<T, LogError> + Send + Sync + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return read(self);
        };
        let read = Arc::new(read);
        let (job, store) = (read.clone(), self.clone());
        // Unconstrained: the blocking API (`EventLog::procedure_events`) polls this future
        // in its own loop, where tokio's cooperative budget, once spent, would never come
        // back and the join would answer "pending" for ever.
        let joined = tokio::task::unconstrained(runtime.spawn_blocking(move || job(&store)));
        match joined.await {
            Ok(result) => result,
            Err(_) => read(self),
        }
    }

    fn read_procedure_events(
        &self,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.core().guarded("read a procedure", || {
            let core = self.core();
            let _visible = core.read_visible();
            let range = core.tree.range(
                event_key(procedure_id, from_seq.max(1))..=event_key(procedure_id, u64::MAX),
            );
            let mut events = Vec::new();
            for item in range {
                let (key, value) = item?;
                let (procedure_id, seq) = checked_event_key(&key)?;
                events.push(StoredEvent {
                    procedure_id,
                    seq,
                    bytes: value.to_vec(),
                });
            }
            Ok(events)
        })
    }

    fn read_events_from(
        &self,
        from_global_seq: u64,
        limit: usize,
    ) -> Result<Vec<ListedEvent>, LogError> {
        self.core().guarded("read the global order", || {
            let core = self.core();
            // Archived events are gone from the live log: read from the first live one.
            let archived_to = archive::read_checkpoint(&core.tree)?
                .map_or(0, |checkpoint| checkpoint.cut_global_seq);
            let from_global_seq = from_global_seq.max(1).max(archived_to + 1);
            let mut events = Vec::with_capacity(limit.min(4096));
            if limit == 0 {
                return Ok(events);
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
                            let seq = run.first_seq + offset;
                            events.push(ListedEvent {
                                global_seq,
                                event: listed_event(&core.tree, &key, global_seq, run.procedure_id, seq)?,
                            });
                            if events.len() == limit {
                                return Ok(events);
                            }
                        }
                        global_seq += 1;
                    }
                }
                expected_first_global_seq = Some(global_seq);
            }
            Ok(events)
        })
    }

    fn read_open_procedures(&self) -> Result<Vec<(Uuid, u64)>, LogError> {
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

    fn read_open_procedure_of_region(&self, region_id: u64) -> Result<Option<Uuid>, LogError> {
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

    fn read_audit_entries(
        &self,
        index: AuditIndex,
        owners: std::ops::RangeInclusive<u64>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<AuditEntry>, LogError> {
        self.core().guarded("read the audit index", || {
            if since_ms > until_ms || owners.is_empty() {
                return Ok(Vec::new());
            }
            let (prefix, audit_key): (u8, AuditKeyFn) = match index {
                AuditIndex::Region => (PREFIX_REGION_AUDIT, keys::region_audit_key),
                AuditIndex::Peer => (PREFIX_PEER_AUDIT, keys::peer_audit_key),
            };
            let start = audit_key(*owners.start(), since_ms, Uuid::nil());
            let end = audit_key(*owners.end(), until_ms, Uuid::max());
            let core = self.core();
            let _visible = core.read_visible();
            let mut found = Vec::new();
            for item in core.tree.range(start..=end) {
                let (key, _) = item?;
                let Some((owner_id, recorded_at_ms, procedure_id)) = parse_audit_key(prefix, &key)
                else {
                    return Err(LogError::MalformedKey {
                        key: hex(&key),
                        reason: "an audit key of the wrong length".to_string(),
                    });
                };
                // Across several owners the range also holds times outside the window.
                if (since_ms..=until_ms).contains(&recorded_at_ms) {
                    found.push(AuditEntry {
                        owner_id,
                        recorded_at_ms,
                        procedure_id,
                    });
                }
            }
            Ok(found)
        })
    }

    fn read_procedures(&self) -> Result<Vec<Uuid>, LogError> {
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
                let (procedure_id, _) = checked_event_key(&key)?;
                procedures.push(procedure_id);
                // Skip the rest of this procedure's events: the next key is the next procedure.
                start = Bound::Excluded(event_key(procedure_id, u64::MAX).to_vec());
            }
        })
    }
}

#[async_trait]
impl LogStore for SledStore {
    fn location(&self) -> String {
        self.data_dir().display().to_string()
    }

    fn is_read_only(&self) -> bool {
        self.core().read_only
    }

    fn damage(&self) -> Option<&LogError> {
        self.core().damage.as_ref()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn append(&self, request: AppendRequest) -> AppendResult {
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

    fn append_blocking(&self, request: AppendRequest) -> AppendResult {
        let mut outcome = self.core().commit(vec![request], false);
        outcome.appends.pop().unwrap_or(Err(LogError::ShutDown))
    }

    /// Makes every write done so far to the sled database durable (the other trees' too),
    /// sharing the group commit's flush and fdatasync.
    async fn sync(&self) -> Result<(), LogError> {
        self.core().check_poison()?;
        let sender = self.committer_sender()?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(CommitMessage::Sync { reply })
            .await
            .map_err(|_| LogError::ShutDown)?;
        answer.await.map_err(|_| LogError::ShutDown)?
    }

    fn sync_blocking(&self) -> Result<(), LogError> {
        self.core().commit(Vec::new(), true).sync
    }

    async fn next_seq(&self, procedure_id: Uuid) -> Result<u64, LogError> {
        self.core().guarded("read a procedure", || {
            let core = self.core();
            let _visible = core.read_visible();
            commit::next_seq_on_disk(&core.tree, procedure_id)
        })
    }

    async fn procedure_events(
        &self,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.off_async_threads(move |store| store.read_procedure_events(procedure_id, from_seq))
            .await
    }

    async fn events_from(
        &self,
        from_global_seq: u64,
        limit: usize,
    ) -> Result<Vec<ListedEvent>, LogError> {
        self.off_async_threads(move |store| store.read_events_from(from_global_seq, limit))
            .await
    }

    async fn open_procedures(&self) -> Result<Vec<(Uuid, u64)>, LogError> {
        self.off_async_threads(SledStore::read_open_procedures)
            .await
    }

    async fn open_procedure_of_region(&self, region_id: u64) -> Result<Option<Uuid>, LogError> {
        self.off_async_threads(move |store| store.read_open_procedure_of_region(region_id))
            .await
    }

    async fn audit_entries(
        &self,
        index: AuditIndex,
        owners: std::ops::RangeInclusive<u64>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<AuditEntry>, LogError> {
        self.off_async_threads(move |store| {
            store.read_audit_entries(index, owners.clone(), since_ms, until_ms)
        })
        .await
    }

    async fn procedures(&self) -> Result<Vec<Uuid>, LogError> {
        self.off_async_threads(SledStore::read_procedures).await
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

    pub(crate) fn check_poison(&self) -> Result<(), LogError> {
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

    pub(crate) fn set_poison(&self, reason: &str) {
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
    pub(crate) fn close_cleanly(&self) {
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
    pub(crate) fn guarded<T>(
        &self,
        action: &'static str,
        read: impl FnOnce() -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        open::guarded(&self.data_dir, action, read)
    }

    pub(crate) fn read_visible(&self) -> RwLockReadGuard<'_, ()> {
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
pub(crate) fn listed_record(
    tree: &sled::Tree,
    entry_key: &[u8],
    global_seq: u64,
    procedure_id: Uuid,
    seq: u64,
) -> Result<(Record, sled::IVec), LogError> {
    let record_key = event_key(procedure_id, seq);
    let Some(bytes) = tree.get(record_key)? else {
        return Err(listed_but_missing(entry_key, global_seq, procedure_id, seq));
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

/// The event a global-order entry (`entry_key`) lists at `global_seq`, as stored: it must
/// exist; the log above decodes it and checks its global seq.
fn listed_event(
    tree: &sled::Tree,
    entry_key: &[u8],
    global_seq: u64,
    procedure_id: Uuid,
    seq: u64,
) -> Result<StoredEvent, LogError> {
    let Some(bytes) = tree.get(event_key(procedure_id, seq))? else {
        return Err(listed_but_missing(entry_key, global_seq, procedure_id, seq));
    };
    Ok(StoredEvent {
        procedure_id,
        seq,
        bytes: bytes.to_vec(),
    })
}

/// The procedure id and seq of a key read under the event prefix; a key of another length
/// is [`LogError::MalformedKey`].
pub(crate) fn checked_event_key(key: &[u8]) -> Result<(Uuid, u64), LogError> {
    parse_event_key(key).ok_or_else(|| LogError::MalformedKey {
        key: hex(key),
        reason: "an event-prefixed key of the wrong length".to_string(),
    })
}

/// The error for a global-order entry (`entry_key`) that lists an event that is not there.
pub(crate) fn listed_but_missing(
    entry_key: &[u8],
    global_seq: u64,
    procedure_id: Uuid,
    seq: u64,
) -> LogError {
    LogError::IndexMismatch {
        procedure_id: Some(procedure_id),
        seq: Some(seq),
        key: hex(entry_key),
        reason: format!("global seq {global_seq} is listed as this event, which does not exist"),
    }
}
