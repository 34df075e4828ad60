//! The engine: the async shell around the migration model.
//!
//! It validates and submits migrations, runs each open procedure as a tokio task (no thread
//! per procedure), appends every decision to the log before acting on it, and on open resumes
//! every unfinished procedure from the log's open-procedures index. Finished procedures are
//! not kept in memory: their history is in the log.
//!
//! Write-ahead, exactly: an instruction is durable before it is sent, a hook's decision
//! before the hook is called, the end before a waiter hears of it, and a datanode's answer,
//! a route write's result or an operator's cancel before anything else happens. What a
//! resume gets back by reading again waits for the next append instead: the model's
//! decisions before a read (a route, a datanode table, a heartbeat) or before taking the
//! in-memory locks, with those reads' results, and the route read a route write rests on
//! ([`Batch::deferrable`]). A migration on the happy path so makes 8 durable appends where
//! one per decision would be 12 (issue 17). A crash loses a held batch as it loses any
//! write in flight: the resume decides again from the last durable event and reads again.
//!
//! # Lifecycle
//! - [`Engine::open`] opens the log and reads what to resume off the async threads.
//! - The engine runs until [`Engine::shutdown`] (or [`Engine::shutdown_within`], which takes
//!   a deadline) or until its last handle is dropped: dropping every clone of an `Engine`
//!   halts it, as a crash would (every unfinished procedure resumes from the log on the next
//!   open), and the same data directory can be opened again in the same process.
//! - [`Engine::subscribe`] streams one procedure's events from any seq, with no gap;
//!   [`Engine::subscribe_all`] streams every procedure's events in log order.
//!
//! # Several engines, one store
//! On a store that several engines share (PostgreSQL), one engine leads: a
//! [`leadership::Candidate`] stands by, takes the lease (raising the epoch), opens the
//! engine with that epoch and resumes every open procedure, renews the lease, and halts the
//! engine at once when a renewal does not succeed within the lease. A write the store
//! fences ([`LogError::Fenced`], [`MetadataErrorKind::Fenced`](crate::cluster::MetadataErrorKind::Fenced))
//! halts every procedure of the engine at once, so a deposed leader sends nothing more;
//! [`Engine::fenced`] names the write. See [`leadership`]. An engine on PostgreSQL also
//! answers the operators' cancel requests recorded in the database (`regmig cancel
//! --store`), from its open until it halts: see `pg::cancel` (feature `postgres`).
//!
//! Each task runs a [`ProcedureDriver`], the one code that turns the model's decisions into
//! port calls; the engine plugs the event log in as its [`Persistence`], and a tool can plug
//! in another (the benchmark's snapshot baselines do; the model tests' world keeps events in
//! memory and stops where a test stands for a crash, [`Persistence::before_action`]). The regions of a batch (spec R2.5)
//! run as one task, one driver per region, whose sends and route writes are grouped: one
//! instruction per datanode per step, one compare-and-swap per table (module `batch`).
//!
//! # Tracing
//! Every line about one migration is inside its `procedure` span, from the submit on, with
//! the fields `procedure_id` (the uuid) and `region` (`T:N`); each decision runs in a `step`
//! span (`state`, `action`). Lines about a batch carry `batch_id`. Peers are `from`, `to`
//! and `peer` (datanode ids).

mod batch;
pub mod cancel_request;
pub mod leadership;
mod locks;
pub mod metrics;
mod procedure;
mod retention;
pub mod store;
pub mod stream;
mod submit;
mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tracing::{info, warn};
use uuid::Uuid;

pub use cancel_request::{CancelAnswer, CancelOutcome, CancelRequest};
pub use locks::LockTable;
use metrics::EngineMetrics;
pub use procedure::{Batch, DriveError, Ended, Next, Persistence, ProcedureDriver, Proceed};
pub use store::{
    decode_history, decode_record, encode_events, encode_timed_events, load_history,
    load_history_async, load_procedure, load_procedure_async, History, LoadError, UndecodableEvent,
};
pub use stream::{EngineEvents, LoggedEvent, ProcedureEvents};
pub use submit::{
    BatchRegionStart, BatchRequest, BatchSubmitted, MigrationRequest, SubmitContext, SubmitError,
    SubmitOutcome,
};
pub use summary::MigrationSummary;

use crate::cluster::Ports;
use crate::domain::{PeerId, RegionId};
use crate::log::{
    AppendConflict, AppendRequest, AuditIndex, EventLog, LogError, LogOptions, OpenProcedure,
};
use crate::migration::{
    fold, EncodeError, MigrationEvent, MigrationState, Observation, RetryPolicy, TimedEvent,
};
use procedure::{Control, Runner};

/// Events a procedure's subscribers may fall behind by before they miss some.
pub const EVENTS_CHANNEL_CAPACITY: usize = 256;

/// How the engine appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendMode {
    /// Concurrent procedures share one flush and fdatasync (production).
    #[default]
    GroupCommit,
    /// Each append is made durable on the calling task's thread, in program order; the
    /// deterministic simulator uses it so that no background thread decides the order.
    Inline,
}

/// Engine settings.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// How the log is opened (durability, group-commit bounds).
    pub log: LogOptions,
    /// How appends are made durable.
    pub append_mode: AppendMode,
    /// The retry policy recorded in every new procedure.
    pub retry_policy: RetryPolicy,
    /// When finished migrations move out of the live log (off by default); checked after
    /// a migration finishes.
    pub retention: crate::archive::Retention,
    /// Cancel requests recorded while no engine ran (`regmig cancel` on a data directory):
    /// each reaches its procedure when the procedure is resumed, before it performs any
    /// action, so the migration cannot move past the point of no return (its new route)
    /// first. [`Engine::cancels_on_open_answered`] gives the answers.
    pub cancels_on_open: Vec<CancelRequest>,
}

/// One appended event, as subscribers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcedureEvent {
    /// The procedure.
    pub procedure_id: Uuid,
    /// Its sequence number.
    pub seq: u64,
    /// When it was recorded.
    pub at_ms: u64,
    /// The event.
    pub event: MigrationEvent,
}

/// Whose migrations an [`Engine::audit`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditSubject {
    /// Every migration of this region.
    Region(RegionId),
    /// Every migration from or to this datanode.
    Peer(PeerId),
}

/// An [`Engine::audit`] question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditQuery {
    /// Whose migrations.
    pub subject: AuditSubject,
    /// Submitted at or after (ms since the epoch).
    pub since_ms: u64,
    /// Submitted at or before (ms since the epoch).
    pub until_ms: u64,
}

impl AuditQuery {
    /// Every migration of `subject`, at any time.
    pub fn all_of(subject: AuditSubject) -> AuditQuery {
        AuditQuery {
            subject,
            since_ms: 0,
            until_ms: u64::MAX,
        }
    }
}

/// One migration an [`Engine::audit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditEntry {
    /// The migration.
    pub procedure_id: Uuid,
    /// When it was submitted (ms since the epoch).
    pub submitted_at_ms: u64,
}

/// Errors of the engine's operator calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No procedure has this id.
    #[error("no migration with id {procedure_id}")]
    UnknownProcedure {
        /// The id asked for.
        procedure_id: Uuid,
    },
    /// The cancel was refused.
    #[error("cannot cancel migration {procedure_id}: {reason}")]
    CancelRefused {
        /// The procedure.
        procedure_id: Uuid,
        /// Why.
        reason: String,
    },
    /// The procedure is open in the log but not running here (the engine is stopping).
    #[error("migration {procedure_id} is not running in this engine (it is shutting down)")]
    NotRunning {
        /// The procedure.
        procedure_id: Uuid,
    },
    /// A procedure's history breaks an assumption of the model (e.g. it does not start with
    /// its submit), so there is no summary to give.
    #[error("migration {procedure_id} has a history this version cannot read: {error}")]
    BrokenHistory {
        /// The procedure.
        procedure_id: Uuid,
        /// The first broken assumption.
        error: crate::migration::FoldError,
    },
    /// The engine is shutting down and takes no new work.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// Another engine of this process has the data directory open.
    #[error("data directory {} is already open by another engine in this process; shut it down (or drop it) first", dir.display())]
    AlreadyOpen {
        /// The data directory.
        dir: PathBuf,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A procedure's history could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A decided event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// An append lost a race it should not have (two engines on one log).
    #[error("append conflict on migration {procedure_id}: {conflict:?}")]
    AppendConflict {
        /// The procedure.
        procedure_id: Uuid,
        /// The conflict.
        conflict: AppendConflict,
    },
}

/// A running procedure's handles.
struct Running {
    region_id: RegionId,
    control: mpsc::Sender<Control>,
    /// The procedure's final state once it finished (its driver folded every event of it),
    /// so [`Engine::wait`] need not read it back from the log; `None` until then, and for
    /// a procedure that stopped unfinished.
    finished: watch::Receiver<Option<Arc<MigrationState>>>,
    finished_sender: watch::Sender<Option<Arc<MigrationState>>>,
    /// Created by the first `subscribe`: a channel holds [`EVENTS_CHANNEL_CAPACITY`] events
    /// (about 70 KB) from its creation, too much to give every running procedure.
    events: Option<broadcast::Sender<ProcedureEvent>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Shared by the engine handle and every procedure task.
pub(crate) struct Inner {
    log: EventLog,
    ports: Ports,
    config: EngineConfig,
    locks: LockTable,
    running: Mutex<BTreeMap<Uuid, Running>>,
    accepting: AtomicBool,
    halt: watch::Sender<bool>,
    observer: Mutex<Option<Observer>>,
    /// Turns appended events into metrics (see [`metrics`]).
    metrics: EngineMetrics,
    /// Woken after every append, for [`EngineEvents`].
    appended: Notify,
    /// Set when every `Engine` handle was dropped.
    dropped: AtomicBool,
    /// Whether a retention run is going on, and when the last one started.
    retention: retention::RetentionState,
    /// The first write the store fenced (it halted the engine): see [`leadership`].
    fenced: Mutex<Option<leadership::FencedWrite>>,
    /// This engine's entry in [`open_engines`] ([`registry_key_of`]).
    registry_key: PathBuf,
    /// The requests of [`EngineConfig::cancels_on_open`] not answered yet (taken by the
    /// first [`Engine::cancels_on_open_answered`]), and the answers their resumed
    /// procedures will give.
    cancels_on_open: Mutex<CancelsOnOpen>,
}

/// See [`Inner::cancels_on_open`].
#[derive(Default)]
struct CancelsOnOpen {
    unanswered: Vec<CancelRequest>,
    seeded: BTreeMap<Uuid, oneshot::Receiver<Result<(), EngineError>>>,
}

/// Called after every appended event (the simulator uses it to crash after event k).
pub type Observer = Box<dyn Fn(&ProcedureEvent) + Send + Sync>;

impl Inner {
    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<Uuid, Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn halted(&self) -> bool {
        *self.halt.borrow()
    }

    pub(crate) fn halt_signal(&self) -> watch::Receiver<bool> {
        self.halt.subscribe()
    }

    /// A shared store fenced a write: another engine leads. Halts every procedure at once
    /// (they send nothing more) and keeps the first such write for [`Engine::fenced`].
    pub(crate) fn on_fenced(&self, write: leadership::FencedWrite) {
        let mut fenced = self
            .fenced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        warn!(write = %write.write, reason = %write.reason, "the store fenced a write; halting the engine");
        fenced.get_or_insert(write);
        drop(fenced);
        self.halt();
    }

    /// Halts the engine when `result` is a fenced write (see [`Inner::on_fenced`]).
    fn check_fenced<T>(&self, procedure_id: Uuid, result: &Result<T, LogError>) {
        if let Err(error @ LogError::Fenced { .. }) = result {
            self.on_fenced(leadership::FencedWrite {
                write: format!("append to migration {procedure_id}"),
                reason: error.to_string(),
            });
        }
    }

    /// Appends a batch durably; a conflict is an error here (the task is the only writer).
    pub(crate) async fn append(
        &self,
        procedure_id: Uuid,
        expected_next_seq: u64,
        events: &[TimedEvent],
        opens: Option<OpenProcedure>,
        closes: bool,
    ) -> Result<(), EngineError> {
        let request = AppendRequest {
            procedure_id,
            expected_next_seq,
            events: encode_timed_events(events)?,
            opens,
            closes,
        };
        let started = std::time::Instant::now();
        let result = match self.config.append_mode {
            AppendMode::GroupCommit => self.log.append(request).await,
            AppendMode::Inline => self.log.append_blocking(request),
        };
        self.check_fenced(procedure_id, &result);
        let result = result?;
        self.metrics.append_done(started.elapsed(), events.len());
        result
            .map(|_| ())
            .map_err(|conflict| EngineError::AppendConflict {
                procedure_id,
                conflict,
            })
    }

    pub(crate) fn after_append(
        &self,
        procedure_id: Uuid,
        seq: u64,
        at_ms: u64,
        event: &MigrationEvent,
    ) {
        self.metrics.observe(procedure_id, at_ms, event);
        self.appended.notify_waiters();
        let subscribers = self
            .running()
            .get(&procedure_id)
            .and_then(|running| running.events.clone());
        let observer = self
            .observer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if subscribers.is_none() && observer.is_none() {
            return;
        }
        let published = procedure::procedure_event(procedure_id, seq, at_ms, event);
        if let Some(subscribers) = subscribers {
            let _ = subscribers.send(published.clone());
        }
        if let Some(observer) = observer.as_ref() {
            observer(&published);
        }
    }

    /// A live subscription to a running procedure's appends; `None` when it does not run.
    pub(crate) fn subscribe_live(
        &self,
        procedure_id: Uuid,
    ) -> Option<broadcast::Receiver<ProcedureEvent>> {
        self.running().get_mut(&procedure_id).map(|running| {
            running
                .events
                .get_or_insert_with(|| broadcast::channel(EVENTS_CHANNEL_CAPACITY).0)
                .subscribe()
        })
    }

    /// Stops taking work and stops every procedure before its next action.
    fn halt(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.halt.send_replace(true);
    }

    /// Halts, then aborts every procedure task at once.
    fn abort_all(&self) {
        self.halt();
        for running in self.running().values() {
            if let Some(task) = &running.task {
                task.abort();
            }
        }
    }

    /// Drops a procedure from memory once its task ends.
    pub(crate) fn forget(&self, procedure_id: Uuid, state: Option<&MigrationState>) {
        self.forget_batch_member(procedure_id, state, None);
    }

    /// Drops a procedure from memory once it ends; the handle of the task that ran it, if
    /// it held it, goes to `heir` (a region of the same batch still running in that task),
    /// so a shutdown still waits for the task. `state` is its driver's state, if it has
    /// one: a finished one goes to the procedure's waiters.
    pub(crate) fn forget_batch_member(
        &self,
        procedure_id: Uuid,
        state: Option<&MigrationState>,
        heir: Option<Uuid>,
    ) {
        let mut running = self.running();
        let removed = running.remove(&procedure_id);
        if let Some(mut removed) = removed {
            if let (Some(task), Some(heir)) = (removed.task.take(), heir) {
                match running.get_mut(&heir) {
                    Some(heir) => heir.task = Some(task),
                    None => removed.task = Some(task),
                }
            }
            let finished = state
                .filter(|state| state.is_finished())
                .map(|state| Arc::new(state.clone()));
            let _ = removed.finished_sender.send(finished);
        }
    }
}

/// Halts an engine without keeping it alive.
#[derive(Clone)]
pub struct HaltHandle {
    inner: std::sync::Weak<Inner>,
}

impl HaltHandle {
    /// Stops every procedure of the engine before its next action.
    pub fn halt(&self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.halt();
        }
    }
}

/// An [`Engine`] that does not keep it alive: `upgrade` gives it back while a handle lives.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct WeakEngine {
    inner: Weak<Inner>,
    lifetime: Weak<Lifetime>,
}

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
impl WeakEngine {
    /// The engine, unless every handle was dropped or it halted.
    pub(crate) fn upgrade(&self) -> Option<Engine> {
        let engine = Engine {
            inner: self.inner.upgrade()?,
            _lifetime: self.lifetime.upgrade()?,
        };
        (!engine.inner.halted()).then_some(engine)
    }
}

/// How long [`Engine::shutdown`] waits for procedures to stop before aborting them.
pub const SHUTDOWN_DEADLINE_DEFAULT: Duration = Duration::from_secs(30);

/// How long [`Engine::open`] waits for an engine of this process that was dropped to let go
/// of the data directory (its tasks are aborted; the log closes when the last one is gone).
pub const REOPEN_WAIT_MAX: Duration = Duration::from_secs(5);

/// What [`Engine::shutdown_within`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Procedures that stopped by themselves before the deadline.
    pub stopped: usize,
    /// Procedures still busy at the deadline (e.g. in a port call that does not return),
    /// aborted. Each resumes from the log on the next open.
    pub aborted: usize,
}

/// The data directories open by an engine of this process, for a precise "in use" error and
/// for reopening after a drop.
fn open_engines() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Weak<Inner>>> {
    static OPEN: Mutex<BTreeMap<PathBuf, Weak<Inner>>> = Mutex::new(BTreeMap::new());
    OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn registry_key(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// The registry entry of an engine on `log`: its data directory when the store is one (so
/// [`Engine::open`] of the same directory sees it), else the store's location with a
/// number of its own, since several engines of one process may share a database (one
/// leading, the others standing by) and must not take each other's entry.
fn registry_key_of(log: &EventLog) -> PathBuf {
    registry_key_at(&log.store().location())
}

fn registry_key_at(location: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    match std::fs::canonicalize(location) {
        Ok(dir) => dir,
        Err(_) => PathBuf::from(format!(
            "{location}#engine-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        )),
    }
}

/// Halts the engine when the last `Engine` handle is dropped.
struct Lifetime {
    inner: Arc<Inner>,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.inner.dropped.store(true, Ordering::SeqCst);
        self.inner.abort_all();
    }
}

/// The region-migration engine. Cheap to clone; dropping the last clone halts it (see the
/// module's Lifecycle).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    _lifetime: Arc<Lifetime>,
}

impl Engine {
    /// Opens the log in `data_dir` and resumes every unfinished procedure where its log ends.
    /// Must be called inside a tokio runtime; the file work runs off the async threads.
    ///
    /// Errors: [`EngineError::AlreadyOpen`] when a live engine of this process has the
    /// directory; `LogError::InUse` when another process has it (after waiting up to
    /// [`REOPEN_WAIT_MAX`] for a dropped engine of this process to let go of it).
    pub async fn open(
        data_dir: &Path,
        config: EngineConfig,
        ports: Ports,
    ) -> Result<Engine, EngineError> {
        let key = registry_key(data_dir);
        let previous = open_engines().get(&key).cloned();
        let waited_for_previous = match previous.as_ref().and_then(Weak::upgrade) {
            Some(inner) if !inner.dropped.load(Ordering::SeqCst) => {
                return Err(EngineError::AlreadyOpen {
                    dir: data_dir.to_path_buf(),
                })
            }
            Some(_) => true,
            None => previous.is_some(),
        };
        let started = tokio::time::Instant::now();
        let log = loop {
            let dir = data_dir.to_path_buf();
            let options = config.log.clone();
            let opened = tokio::task::spawn_blocking(move || EventLog::open(&dir, options))
                .await
                .map_err(|_| EngineError::ShuttingDown)?;
            match opened {
                Err(LogError::InUse { .. })
                    if waited_for_previous && started.elapsed() < REOPEN_WAIT_MAX =>
                {
                    // A dropped engine of this process: its aborted tasks are letting go.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                opened => break opened?,
            }
        };
        Self::with_log(log, config, ports).await
    }

    /// Like [`Engine::open`], on a log already open (the metadata store may share its db).
    pub async fn with_log(
        log: EventLog,
        #[cfg_attr(not(feature = "postgres"), allow(unused_mut))] mut config: EngineConfig,
        ports: Ports,
    ) -> Result<Engine, EngineError> {
        // On PostgreSQL, the requests recorded while no engine led reach their migrations
        // before these take a step, as those of `config` do.
        #[cfg(feature = "postgres")]
        let taken_at_open = crate::pg::cancel::take_at_open(&log).await;
        #[cfg(feature = "postgres")]
        if let Some(taken) = &taken_at_open {
            config.cancels_on_open.extend(taken.requests());
        }
        let (halt, _) = watch::channel(false);
        let registry_key = registry_key_of(&log);
        let inner = Arc::new_cyclic(|engine| Inner {
            log,
            ports: Ports {
                // A fenced route write halts the engine (see `leadership`).
                metadata: Arc::new(leadership::FenceWatch {
                    store: ports.metadata.clone(),
                    engine: engine.clone(),
                }),
                ..ports
            },
            locks: LockTable::new(),
            running: Mutex::new(BTreeMap::new()),
            accepting: AtomicBool::new(true),
            halt,
            observer: Mutex::new(None),
            metrics: EngineMetrics::default(),
            appended: Notify::new(),
            dropped: AtomicBool::new(false),
            retention: retention::RetentionState::default(),
            fenced: Mutex::new(None),
            registry_key: registry_key.clone(),
            cancels_on_open: Mutex::new(CancelsOnOpen {
                unanswered: config.cancels_on_open.clone(),
                seeded: BTreeMap::new(),
            }),
            config,
        });
        open_engines().insert(registry_key, Arc::downgrade(&inner));
        let engine = Engine {
            _lifetime: Arc::new(Lifetime {
                inner: inner.clone(),
            }),
            inner,
        };
        let log = engine.inner.log.clone();
        let to_resume = tokio::task::spawn_blocking(move || procedures_to_resume(&log))
            .await
            .map_err(|_| EngineError::ShuttingDown)??;
        if !to_resume.is_empty() {
            info!(count = to_resume.len(), "resuming unfinished migrations");
        }
        // The regions of a batch resume together, as one task (each from its own events).
        let mut batches: BTreeMap<Uuid, Vec<(Uuid, MigrationState, u64, Observation)>> =
            BTreeMap::new();
        for (procedure_id, state, next_seq) in to_resume {
            match state.report.batch.as_ref().map(|batch| batch.batch_id) {
                Some(batch_id) => batches.entry(batch_id).or_default().push((
                    procedure_id,
                    state,
                    next_seq,
                    Observation::Resumed,
                )),
                None => engine.spawn(procedure_id, state, next_seq, Observation::Resumed),
            }
        }
        for (batch_id, mut regions) in batches {
            // In the batch's order, as at submit: its instructions carry them in that order.
            regions.sort_by_key(|(_, state, _, _)| {
                let position = state
                    .task
                    .as_ref()
                    .zip(state.report.batch.as_ref())
                    .and_then(|(task, batch)| {
                        batch.regions.iter().position(|r| *r == task.region_id)
                    });
                position.unwrap_or(usize::MAX)
            });
            engine.spawn_batch(batch_id, regions);
        }
        // On PostgreSQL the engine answers the cancel requests recorded in the database
        // (`regmig cancel --store`), those made while no engine led included.
        #[cfg(feature = "postgres")]
        crate::pg::cancel::serve_in_background(&engine, taken_at_open);
        Ok(engine)
    }

    /// Whether the engine halted (it takes no work and its procedures stop).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn is_halted(&self) -> bool {
        self.inner.halted()
    }

    /// Changes to true when the engine halts.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn halt_signal(&self) -> watch::Receiver<bool> {
        self.inner.halt_signal()
    }

    /// A handle that does not keep the engine alive (for its own background tasks).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn downgrade(&self) -> WeakEngine {
        WeakEngine {
            inner: Arc::downgrade(&self.inner),
            lifetime: Arc::downgrade(&self._lifetime),
        }
    }

    /// Registers a procedure as running; returns the receiver of its operator requests.
    fn register(
        &self,
        procedure_id: Uuid,
        state: &MigrationState,
    ) -> Option<mpsc::Receiver<Control>> {
        let Some(task) = state.task.as_ref() else {
            warn!(%procedure_id, "procedure has no submitted event; not started");
            return None;
        };
        let (control_sender, control) = mpsc::channel(16);
        // A cancel recorded while no engine ran is the first request the procedure sees.
        if let Some(request) = self
            .inner
            .config
            .cancels_on_open
            .iter()
            .find(|request| request.procedure_id == procedure_id)
        {
            let (answer, answered) = oneshot::channel();
            let seeded = control_sender.try_send(Control::Cancel {
                actor: request.actor.clone(),
                reason: request.reason.clone(),
                answer,
            });
            if seeded.is_ok() {
                self.inner
                    .cancels_on_open
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .seeded
                    .insert(procedure_id, answered);
            }
        }
        let (finished_sender, finished) = watch::channel(None);
        self.inner.running().insert(
            procedure_id,
            Running {
                region_id: task.region_id,
                control: control_sender,
                finished,
                finished_sender,
                events: None,
                task: None,
            },
        );
        Some(control)
    }

    fn spawn(&self, procedure_id: Uuid, state: MigrationState, next_seq: u64, first: Observation) {
        let Some(control) = self.register(procedure_id, &state) else {
            return;
        };
        let runner = Runner {
            inner: self.inner.clone(),
            id: procedure_id,
            state,
            next_seq,
            control,
        };
        let handle = tokio::spawn(runner.run(first));
        if let Some(running) = self.inner.running().get_mut(&procedure_id) {
            running.task = Some(handle);
        }
    }

    /// Runs the regions of one batch as one task (see [`batch`]): each region's procedure
    /// is registered as running; the task's handle sits with the first still running.
    fn spawn_batch(&self, batch_id: Uuid, regions: Vec<(Uuid, MigrationState, u64, Observation)>) {
        let mut members = Vec::with_capacity(regions.len());
        for (id, state, next_seq, first) in regions {
            if let Some(control) = self.register(id, &state) {
                members.push(batch::Member {
                    id,
                    state,
                    next_seq,
                    first,
                    control,
                });
            }
        }
        let Some(first_id) = members.first().map(|member| member.id) else {
            return;
        };
        let runner = batch::BatchRunner {
            inner: self.inner.clone(),
            batch_id,
            members,
        };
        let handle = tokio::spawn(runner.run());
        let mut running = self.inner.running();
        match running.get_mut(&first_id) {
            Some(first) => first.task = Some(handle),
            // Already over (every region ended at once): nothing to wait for.
            None => drop(running),
        }
    }

    /// Validates a migration, records its submission durably, and starts it.
    pub async fn submit(&self, request: MigrationRequest) -> Result<SubmitOutcome, SubmitError> {
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        let validated = submit::validate(&self.inner, &request).await?;
        let Some(submitted) = validated else {
            return Ok(SubmitOutcome::AlreadyMigrated);
        };
        self.start(&request, submitted)
            .await
            .map(SubmitOutcome::Started)
    }

    /// Submits a batch (spec R2.5): many regions from one peer to one peer. The whole batch
    /// is refused when it is empty, a region is listed twice, from and to are one peer, or
    /// any region already has an open migration (alone or in another batch). Otherwise each
    /// region whose route and table exist starts as a procedure of the batch, with its own
    /// events, deadline, budget and retries, so a region whose step fails is rolled back
    /// alone; its Start ends it at once when it is already on `to_peer` (done) and aborts it
    /// when its leader is not `from_peer`, both recorded in its log. A region whose table or
    /// route is missing is refused alone. The started regions run as one task (see the
    /// batch driver, `engine/batch.rs`): one instruction per datanode per step carrying
    /// every region in it, one route compare-and-swap per table per route write.
    pub async fn submit_batch(&self, batch: BatchRequest) -> Result<BatchSubmitted, SubmitError> {
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        submit::validate_batch(&self.inner, &batch)?;
        let now_ms = self.inner.ports.clock.now_ms();
        let batch_id = crate::cluster::new_procedure_id(now_ms, self.inner.ports.entropy.as_ref());
        let mut regions = Vec::with_capacity(batch.regions.len());
        let mut recorded = Vec::with_capacity(batch.regions.len());
        for &region_id in &batch.regions {
            let request = batch.request(region_id);
            let started = match submit::validate_batch_region(&self.inner, &request).await {
                Ok(submitted) => {
                    self.record(&request, submitted, Some((batch_id, &batch.regions)))
                        .await
                }
                Err(error) => Err(error),
            };
            let start = match started {
                Ok((id, state, next_seq)) => {
                    recorded.push((id, state, next_seq, Observation::Begin));
                    BatchRegionStart::Started(id)
                }
                Err(error) => BatchRegionStart::Refused(error),
            };
            regions.push((region_id, start));
        }
        self.spawn_batch(batch_id, recorded);
        info!(%batch_id, regions = batch.regions.len(), from = batch.from_peer.id, to = batch.to_peer.id, "batch submitted");
        Ok(BatchSubmitted { batch_id, regions })
    }

    /// Records a validated submission and starts the procedure.
    async fn start(
        &self,
        request: &MigrationRequest,
        submitted: MigrationEvent,
    ) -> Result<Uuid, SubmitError> {
        let (procedure_id, state, next_seq) = self.record(request, submitted, None).await?;
        self.spawn(procedure_id, state, next_seq, Observation::Begin);
        Ok(procedure_id)
    }

    /// Records a validated submission (with its batch, if any) durably; returns the new
    /// procedure, its state and its next seq, not yet started.
    async fn record(
        &self,
        request: &MigrationRequest,
        submitted: MigrationEvent,
        batch: Option<(Uuid, &[RegionId])>,
    ) -> Result<(Uuid, MigrationState, u64), SubmitError> {
        let mut recorded = vec![submitted];
        if let Some((batch_id, regions)) = batch {
            recorded.push(MigrationEvent::BatchJoined {
                batch_id,
                regions: regions.to_vec(),
            });
        }
        let now_ms = self.inner.ports.clock.now_ms();
        let procedure_id =
            crate::cluster::new_procedure_id(now_ms, self.inner.ports.entropy.as_ref());
        let region_id = request.region_id;
        let append = AppendRequest {
            procedure_id,
            expected_next_seq: 1,
            events: encode_events(now_ms, &recorded)?,
            opens: Some(OpenProcedure {
                region_id: region_id.as_u64(),
                peers: vec![request.from_peer.id, request.to_peer.id],
            }),
            closes: false,
        };
        let appended = match self.inner.config.append_mode {
            AppendMode::GroupCommit => self.inner.log.append(append).await,
            AppendMode::Inline => self.inner.log.append_blocking(append),
        };
        self.inner.check_fenced(procedure_id, &appended);
        let appended = appended.map_err(SubmitError::Log)?;
        match appended {
            Ok(_) => {}
            Err(AppendConflict::RegionBusy {
                open_procedure_id, ..
            }) => {
                return Err(SubmitError::MigrationRunning {
                    region_id,
                    procedure_id: open_procedure_id,
                })
            }
            Err(conflict) => return Err(SubmitError::AppendConflict(conflict)),
        }
        let mut state = MigrationState::default();
        for (seq, event) in (1..).zip(&recorded) {
            state.apply(now_ms, event);
            self.inner.after_append(procedure_id, seq, now_ms, event);
        }
        procedure::procedure_span(procedure_id, &region_id.to_string()).in_scope(|| {
            info!(
                from = request.from_peer.id,
                to = request.to_peer.id,
                "migration submitted"
            )
        });
        Ok((procedure_id, state, recorded.len() as u64 + 1))
    }

    /// Asks a running procedure to cancel; it rolls back unless the new route is written.
    ///
    /// The answer comes as soon as the procedure sees the request: at once while it waits
    /// for a datanode, a backoff, a lease or a metadata read (the wait or read is dropped;
    /// instructions are idempotent and reads change nothing). During a route
    /// compare-and-swap in flight:
    /// - marking the leader Downgrading (UpdateMetadata::Downgrade), or clearing it: the
    ///   cancel is answered at once ("taken: it rolls back") and recorded; the rollback
    ///   starts once the store has answered the write, and reads the route afresh, so a
    ///   write that landed is rolled back and one that failed leaves nothing to undo. The
    ///   migration ends aborted either way.
    /// - writing the new route (UpdateMetadata::Upgrade): the cancel is answered when the
    ///   store answers the write, because whether the new route landed decides between
    ///   rollback and refusal.
    ///
    /// Refused (with the reason, recorded as `CancelRefused`): a migration that finished, is
    /// already rolling back, or wrote its new route; and, since behaviour revision 4, one
    /// whose downgrade found the old leader unreachable, with its last heartbeat more than a
    /// heartbeat interval old, while it waits out that leader's lease (a rollback would leave
    /// the region without a live leader: the migration goes on and completes).
    ///
    /// Errors: [`EngineError::CancelRefused`] (with the reason; also when the procedure is
    /// not running in this engine), [`EngineError::UnknownProcedure`],
    /// [`EngineError::NotRunning`].
    pub async fn cancel(
        &self,
        procedure_id: Uuid,
        actor: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let control = self
            .inner
            .running()
            .get(&procedure_id)
            .map(|r| r.control.clone());
        let Some(control) = control else {
            let state = self.state(procedure_id).await?;
            let refusal = crate::migration::check_cancel(&state)
                .err()
                .unwrap_or_else(|| "it is not running in this engine".to_string());
            return Err(EngineError::CancelRefused {
                procedure_id,
                reason: refusal,
            });
        };
        let (answer, answered) = oneshot::channel();
        control
            .send(Control::Cancel {
                actor: actor.to_string(),
                reason: reason.to_string(),
                answer,
            })
            .await
            .map_err(|_| EngineError::NotRunning { procedure_id })?;
        answered
            .await
            .map_err(|_| EngineError::NotRunning { procedure_id })?
    }

    /// The answers to [`EngineConfig::cancels_on_open`], in the order given, once every
    /// procedure concerned has answered: a resumed procedure answers before it performs its
    /// first action; a request for a finished, unknown or unresumed procedure is answered
    /// as [`Engine::cancel`] would answer it now. Later calls answer nothing. On PostgreSQL
    /// the engine adds the database's unanswered requests at open and answers them itself
    /// (through this call: give requests through the database there, `regmig cancel --store`).
    pub async fn cancels_on_open_answered(&self) -> Vec<CancelAnswer> {
        let CancelsOnOpen {
            unanswered: requests,
            mut seeded,
        } = std::mem::take(
            &mut *self
                .inner
                .cancels_on_open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut answers = Vec::new();
        for request in requests {
            let procedure_id = request.procedure_id;
            let result = match seeded.remove(&procedure_id) {
                Some(answered) => answered
                    .await
                    .unwrap_or(Err(EngineError::NotRunning { procedure_id })),
                None => {
                    self.cancel(procedure_id, &request.actor, &request.reason)
                        .await
                }
            };
            answers.push(CancelAnswer::of(procedure_id, &result));
        }
        answers
    }

    /// Waits until a procedure finishes; returns its summary then.
    ///
    /// Errors: [`EngineError::UnknownProcedure`], [`EngineError::NotRunning`] (it is
    /// unfinished and nothing in this engine runs it, e.g. after a halt).
    pub async fn wait(&self, procedure_id: Uuid) -> Result<MigrationSummary, EngineError> {
        let state = self.wait_state(procedure_id).await?;
        summary_of(procedure_id, &state)
    }

    async fn wait_state(&self, procedure_id: Uuid) -> Result<MigrationState, EngineError> {
        let finished = self
            .inner
            .running()
            .get(&procedure_id)
            .map(|running| running.finished.clone());
        if let Some(mut finished) = finished {
            // The driver's final state is the log's, folded: no need to read it back.
            let finished = match finished.wait_for(Option::is_some).await {
                Ok(state) => state.clone(),
                Err(_) => None,
            };
            if let Some(state) = finished {
                return Ok(MigrationState::clone(&state));
            }
            let state = self.state(procedure_id).await?;
            if !state.is_finished() {
                return Err(EngineError::NotRunning { procedure_id });
            }
            return Ok(state);
        }
        let state = self.state(procedure_id).await?;
        if !state.is_finished() && !self.inner.running().contains_key(&procedure_id) {
            return Err(EngineError::NotRunning { procedure_id });
        }
        Ok(state)
    }

    /// A procedure's summary now, folded from its log.
    ///
    /// Errors: [`EngineError::UnknownProcedure`], or the log's error.
    pub async fn get(&self, procedure_id: Uuid) -> Result<MigrationSummary, EngineError> {
        let history = self.known_history(procedure_id).await?;
        let state = fold(&history.events);
        let mut summary = summary_of(procedure_id, &state)?;
        // A history salvage cut: closed, its end unknown.
        summary.status = history.status(&state);
        Ok(summary)
    }

    /// A procedure's folded state (the model's view, for the engine itself).
    async fn state(&self, procedure_id: Uuid) -> Result<MigrationState, EngineError> {
        Ok(fold(&self.known_history(procedure_id).await?.events))
    }

    /// A procedure's history; [`EngineError::UnknownProcedure`] when the log has none.
    async fn known_history(&self, procedure_id: Uuid) -> Result<History, EngineError> {
        let history = load_history_async(&self.inner.log, procedure_id).await?;
        if history.events.is_empty() {
            return Err(EngineError::UnknownProcedure { procedure_id });
        }
        Ok(history)
    }

    /// A procedure's history, decoded, in seq order (awaited from the log store: sled
    /// answers from its cache, a networked store without holding a thread); empty for a
    /// procedure the log does not know. A salvage marker ends it.
    pub async fn history(&self, procedure_id: Uuid) -> Result<Vec<TimedEvent>, EngineError> {
        Ok(load_procedure_async(&self.inner.log, procedure_id).await?)
    }

    /// The migrations that touched a region or a datanode, submitted in
    /// `[since_ms, until_ms]` (ms since the epoch), oldest first: what an auditor asks.
    ///
    /// The index is read by awaiting the log store (its entries are plain references to
    /// procedures: the integrity layer checks nothing more on them).
    pub async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, EngineError> {
        let (index, owner_id) = match query.subject {
            AuditSubject::Region(region_id) => (AuditIndex::Region, region_id.as_u64()),
            AuditSubject::Peer(peer_id) => (AuditIndex::Peer, peer_id),
        };
        let found = self
            .inner
            .log
            .store()
            .audit_entries(index, owner_id..=owner_id, query.since_ms, query.until_ms)
            .await?;
        Ok(found
            .into_iter()
            .map(|entry| AuditEntry {
                procedure_id: entry.procedure_id,
                submitted_at_ms: entry.recorded_at_ms,
            })
            .collect())
    }

    /// The procedures that have not finished, with their regions.
    pub fn list_open(&self) -> Result<Vec<(Uuid, RegionId)>, EngineError> {
        Ok(self
            .inner
            .log
            .open_procedures()?
            .into_iter()
            .map(|(id, region)| (id, RegionId(region)))
            .collect())
    }

    /// How many procedures run in memory now.
    pub fn running_count(&self) -> usize {
        self.inner.running().len()
    }

    /// One procedure's events from `from_seq` on (1 for its whole history): those the log
    /// holds, then each one as it is appended, with no gap and no repeat. Works for a
    /// procedure that already finished (the stream gives its history and ends) and right
    /// after [`Engine::submit`] returns (nothing is missed, `Submitted` included).
    ///
    /// Errors: [`EngineError::UnknownProcedure`] when the log has no such procedure.
    pub async fn subscribe(
        &self,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<ProcedureEvents, EngineError> {
        ProcedureEvents::start(self.inner.clone(), procedure_id, from_seq).await
    }

    /// Every procedure's events in log order from `from_global_seq` on (1 for the whole
    /// live log), then each append as it becomes durable: a feed for an embedder's own
    /// audit sink. Ends when the engine stops.
    pub fn subscribe_all(&self, from_global_seq: u64) -> EngineEvents {
        EngineEvents::start(self.inner.clone(), from_global_seq)
    }

    /// Installs a callback run after every appended event.
    pub fn set_observer(&self, observer: Observer) {
        *self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(observer);
    }

    /// The log the engine writes.
    pub fn log(&self) -> &EventLog {
        &self.inner.log
    }

    /// The region a running procedure migrates.
    pub fn running_region(&self, procedure_id: Uuid) -> Option<RegionId> {
        self.inner.running().get(&procedure_id).map(|r| r.region_id)
    }

    /// [`Engine::shutdown_within`] with [`SHUTDOWN_DEADLINE_DEFAULT`].
    pub async fn shutdown(&self) -> ShutdownReport {
        self.shutdown_within(SHUTDOWN_DEADLINE_DEFAULT).await
    }

    /// Stops taking work, lets in-flight appends finish, and stops every procedure at its
    /// next wait; a procedure still busy after `deadline` (e.g. in a port call that never
    /// returns) is aborted. Every unfinished procedure stays resumable from the log.
    pub async fn shutdown_within(&self, deadline: Duration) -> ShutdownReport {
        self.halt();
        let tasks: Vec<_> = self
            .inner
            .running()
            .values_mut()
            .filter_map(|running| running.task.take())
            .collect();
        let until = tokio::time::Instant::now() + deadline;
        let mut report = ShutdownReport {
            stopped: 0,
            aborted: 0,
        };
        for mut task in tasks {
            match tokio::time::timeout_at(until, &mut task).await {
                Ok(_) => report.stopped += 1,
                Err(_) => {
                    task.abort();
                    let _ = task.await;
                    report.aborted += 1;
                }
            }
        }
        if report.aborted > 0 {
            warn!(
                aborted = report.aborted,
                "shutdown deadline passed; aborted the procedures still busy"
            );
        }
        report
    }

    /// Stops every procedure before its next action, as a crash would (tests and the
    /// simulator). With group commit an append in flight may or may not become durable.
    pub fn halt(&self) {
        self.inner.halt();
    }

    /// The first write a shared store fenced, if any: the engine halted then, because
    /// another engine took the lead (see [`leadership`]).
    pub fn fenced(&self) -> Option<leadership::FencedWrite> {
        self.inner
            .fenced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A handle that halts the engine from anywhere, e.g. from an observer.
    pub fn halt_handle(&self) -> HaltHandle {
        HaltHandle {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Aborts every procedure task immediately (a simulated crash).
    pub fn abort_all(&self) {
        self.inner.abort_all();
    }
}

/// Reads every open procedure's history and folds it: what [`Engine::open`] resumes.
fn procedures_to_resume(log: &EventLog) -> Result<Vec<(Uuid, MigrationState, u64)>, EngineError> {
    let mut resume = Vec::new();
    for (procedure_id, _region) in log.open_procedures()? {
        let events = match load_procedure(log, procedure_id) {
            Ok(events) => events,
            Err(LoadError::Undecodable(error)) => {
                // Written by a newer regmig, or damaged: do not guess; leave it open for
                // an operator, and run the others.
                warn!(%procedure_id, %error, "not resuming a migration whose log this version cannot read");
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let next_seq = events.len() as u64 + 1;
        let state = fold(&events);
        if let Some(broken) = &state.broken {
            // Deciding on it would build on a guess: leave it open for an operator.
            warn!(%procedure_id, error = %broken, "not resuming a migration whose log breaks the model's assumptions");
            continue;
        }
        if state.is_finished() {
            warn!(%procedure_id, "open index names a finished procedure; skipping it");
            continue;
        }
        resume.push((procedure_id, state, next_seq));
    }
    Ok(resume)
}

impl Drop for Inner {
    fn drop(&mut self) {
        let key = &self.registry_key;
        let mut open = open_engines();
        if open.get(key).is_some_and(|entry| entry.strong_count() == 0) {
            open.remove(key);
        }
    }
}

/// The summary of a folded procedure; a history that breaks the model's assumptions has none.
fn summary_of(procedure_id: Uuid, state: &MigrationState) -> Result<MigrationSummary, EngineError> {
    if let Some(error) = &state.broken {
        return Err(EngineError::BrokenHistory {
            procedure_id,
            error: error.clone(),
        });
    }
    MigrationSummary::of(procedure_id, state).ok_or(EngineError::UnknownProcedure { procedure_id })
}

#[cfg(test)]
mod registry_tests {
    use super::registry_key_at;

    #[test]
    fn engines_on_one_database_get_registry_entries_of_their_own_and_a_directory_one_entry() {
        let url = "postgres://regmig@db.internal:5432/history?sslmode=verify-full";
        let (first, second) = (registry_key_at(url), registry_key_at(url));
        assert_ne!(
            first, second,
            "two engines on one database overwrote each other"
        );
        assert!(first.to_string_lossy().starts_with(url), "{first:?}");
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().to_str().expect("UTF-8");
        let canonical = std::fs::canonicalize(dir.path()).expect("canonical");
        assert_eq!(registry_key_at(location), canonical);
        assert_eq!(
            registry_key_at(location),
            canonical,
            "Engine::open finds it"
        );
    }
}
