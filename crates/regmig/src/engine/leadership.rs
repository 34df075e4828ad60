//! Leadership: several engines on one shared store, one of them leads.
//!
//! Engines that share a store (PostgreSQL, issue 16) elect one leader through a lease with an
//! epoch ([`LeaderLease`]). A [`Candidate`] runs one engine's side of it:
//!
//! 1. **Standby.** It tries to take the lease every [`LeadershipConfig::retry_every`]; the
//!    store grants it only when nobody holds it or the holder's lease has lapsed by the
//!    store's own clock, and then raises the epoch by one.
//! 2. **Takeover.** With the grant, it opens an engine through [`OpenAsLeader`]: the
//!    embedder opens its log writer and metadata store with the granted epoch (checked:
//!    [`LeadershipError::EpochMismatch`]), and the engine resumes every open procedure from
//!    the shared log, with deadlines and budgets as folded.
//! 3. **Leading.** It renews the lease every [`LeadershipConfig::renew_every`] (less than a
//!    third of the lease, so two renewals may fail before it lapses). Its own deadline is
//!    the instant the last successful renewal was *sent* plus the lease: the store's lease
//!    runs from when the store received it, later, so this deadline never trails the
//!    store's. When that deadline passes without a renewal, when the store answers that the
//!    lease is gone, or when any append or route write of the engine is fenced, it halts the
//!    engine at once ([`Engine::halt`]: every procedure stops before its next action, every
//!    wait is cut), releases the lease if it is still its own, and after
//!    [`LeadershipConfig::retry_every`] (so a standby goes first) stands by again.
//!
//! # Why a deposed leader sends nothing
//! The store checks the writer's epoch in the same transaction as every append and every
//! route write ([`LogError::Fenced`](crate::log::LogError::Fenced),
//! [`MetadataErrorKind::Fenced`]). The engine logs every instruction before it sends it, so a
//! fenced append means the instruction is never sent; and a fenced write of either kind
//! halts the whole engine (not only the procedure that met it): [`Engine::fenced`] then says
//! which write it was. A leader cut off from the store stops by its own deadline, before a
//! standby can take the lease.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Engine, Inner};
use crate::cluster::{
    CasConflict, MetadataError, MetadataErrorKind, MetadataStore, MetadataStoreLayer, RegionMove,
};
use crate::domain::{TableId, TableRoute};

/// A lease the store granted: who holds it, with which epoch, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The epoch the holder writes with; every grant raises it by one.
    pub epoch: u64,
    /// The holder's name (as given to [`LeaderLease::try_acquire`]).
    pub holder: String,
    /// When the lease lapses by the store's clock, in ms since the Unix epoch.
    pub lease_until_ms: u64,
}

/// Who holds the lease, as the store sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The last epoch granted (0: never granted).
    pub epoch: u64,
    /// The last holder (empty: never granted).
    pub holder: String,
    /// When its lease lapses (or lapsed) by the store's clock, in ms since the Unix epoch.
    pub lease_until_ms: u64,
    /// Whether it still runs by the store's clock.
    pub live: bool,
}

/// A lease call failed: the store could not be reached or answered with an error. Not the
/// same as a refusal (another holder's lease runs, the lease was lost), which is `Ok(None)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the leader lease at {store} could not be {action}: {reason}")]
pub struct LeaseError {
    /// The store, without credentials.
    pub store: String,
    /// What was being done: "acquired", "renewed", "released", "read".
    pub action: &'static str,
    /// The store's error.
    pub reason: String,
}

/// A lease with an epoch, held in a store that several engines share.
///
/// Time is the store's: a lease lapses when the store's clock passes its end, so engines'
/// clocks do not matter. Durations are whole milliseconds.
#[async_trait]
pub trait LeaderLease: Send + Sync {
    /// Where the lease lives, for messages (a URL without its password).
    fn location(&self) -> String;

    /// Takes the lease for `holder` for `lease` if nobody holds it or the holder's lease has
    /// lapsed, raising the epoch by one; `Ok(None)` while another holder's lease runs.
    async fn try_acquire(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError>;

    /// Extends `grant` to `lease` from now if it is still the current lease (same holder,
    /// same epoch, not lapsed); `Ok(None)` when it is not: the lease is lost.
    async fn renew(
        &self,
        grant: &LeaseGrant,
        lease: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError>;

    /// Ends `grant` now if it is still the current lease, so a standby takes over without
    /// waiting for it to lapse (the epoch stays: the next grant raises it).
    async fn release(&self, grant: &LeaseGrant) -> Result<(), LeaseError>;

    /// The lease as the store sees it now.
    async fn state(&self) -> Result<LeaseState, LeaseError>;
}

/// How a [`Candidate`] runs.
#[derive(Debug, Clone)]
pub struct LeadershipConfig {
    /// This engine's name in the lease (e.g. host and process id); unique per engine.
    pub holder: String,
    /// How long a lease runs from each grant or renewal.
    pub lease: Duration,
    /// How often the leader renews; less than a third of `lease`.
    pub renew_every: Duration,
    /// How often a standby tries to take the lease.
    pub retry_every: Duration,
    /// How long a deposed leader's engine gets to stop its procedures before they are
    /// aborted (they were halted at once; this bounds the wait for their tasks).
    pub stop_within: Duration,
}

impl LeadershipConfig {
    /// A config for `holder` with a `lease`, renewing every quarter of it and trying to take
    /// it every quarter of it while standing by.
    pub fn new(holder: impl Into<String>, lease: Duration) -> Self {
        LeadershipConfig {
            holder: holder.into(),
            lease,
            renew_every: lease / 4,
            retry_every: lease / 4,
            stop_within: Duration::from_secs(1),
        }
    }

    /// Checks the rules above: [`LeadershipError::InvalidConfig`] names the broken one.
    pub fn validate(&self) -> Result<(), LeadershipError> {
        let invalid = |reason: String| {
            Err(LeadershipError::InvalidConfig {
                holder: self.holder.clone(),
                reason,
            })
        };
        if self.holder.is_empty() {
            return invalid("the holder name is empty".to_string());
        }
        if self.lease < Duration::from_millis(1) {
            return invalid(format!("the lease ({:?}) is under 1 ms", self.lease));
        }
        if self.renew_every.is_zero() || self.renew_every * 3 >= self.lease {
            return invalid(format!(
                "renew_every ({:?}) must be above zero and under a third of the lease ({:?})",
                self.renew_every, self.lease
            ));
        }
        if self.retry_every.is_zero() {
            return invalid("retry_every is zero".to_string());
        }
        Ok(())
    }
}

/// Opens the engine of a new leader: the embedder opens its log writer and metadata store
/// with `grant.epoch` (so the store fences it once another engine takes over) and returns
/// [`Engine::with_log`] over them, which resumes every open procedure.
#[async_trait]
pub trait OpenAsLeader: Send + Sync {
    /// Opens the engine for `grant`. An error (the embedder's own: the log, the metadata
    /// store, the engine) is logged; the candidate releases the lease and stands by again.
    async fn open(&self, grant: &LeaseGrant) -> Result<Engine, OpenError>;
}

/// Why [`OpenAsLeader::open`] failed: the embedder's error.
pub type OpenError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of leadership.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeadershipError {
    /// The config breaks a rule of [`LeadershipConfig::validate`].
    #[error("leadership config of {holder}: {reason}")]
    InvalidConfig {
        /// The holder the config is for.
        holder: String,
        /// The rule broken.
        reason: String,
    },
    /// The engine opened for a grant writes with another epoch (or none): the store would
    /// not fence it, so it is not run.
    #[error("the engine opened for epoch {epoch} at {store} writes with epoch {writer_epoch:?}; open its log with the granted epoch")]
    EpochMismatch {
        /// The store.
        store: String,
        /// The granted epoch.
        epoch: u64,
        /// The epoch the engine's log writes with.
        writer_epoch: Option<u64>,
    },
    /// The candidate stopped before it led.
    #[error("the candidate {holder} stopped")]
    Stopped {
        /// The candidate.
        holder: String,
    },
}

/// A write of the engine that its store fenced: the first one, which halted the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedWrite {
    /// What was written, e.g. "append to migration 0190…" or "write the route of table 1024".
    pub write: String,
    /// The store's message.
    pub reason: String,
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deposed {
    /// No renewal succeeded within the lease.
    LeaseLapsed,
    /// The store said the lease is another's.
    LeaseLost,
    /// A write was fenced.
    Fenced(FencedWrite),
    /// The engine halted for another reason (shut down, dropped, halted by hand).
    EngineStopped,
}

/// A candidate's role now.
#[derive(Clone)]
pub enum Role {
    /// Waiting for the lease.
    Standby,
    /// Leading with `engine`, whose log writes with `grant.epoch`.
    Leader {
        /// The grant.
        grant: LeaseGrant,
        /// The engine (submit to it; it stops when deposed).
        engine: Engine,
    },
    /// Stopped for good ([`Candidate::stop`] or [`Candidate::kill`]).
    Stopped,
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Standby => f.write_str("Standby"),
            Role::Leader { grant, .. } => write!(f, "Leader(epoch {})", grant.epoch),
            Role::Stopped => f.write_str("Stopped"),
        }
    }
}

/// One engine's side of the election: standby, takeover, leading, and back (see the module
/// documentation). Dropping it stops it as [`Candidate::kill`] does.
pub struct Candidate {
    holder: String,
    role: watch::Receiver<Role>,
    stop: watch::Sender<bool>,
    deposals: Arc<Mutex<Vec<(u64, Deposed)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Candidate {
    /// Starts a candidate on the current tokio runtime.
    ///
    /// Errors: [`LeadershipError::InvalidConfig`].
    pub fn start(
        lease: Arc<dyn LeaderLease>,
        config: LeadershipConfig,
        opener: Arc<dyn OpenAsLeader>,
    ) -> Result<Candidate, LeadershipError> {
        config.validate()?;
        let (role_sender, role) = watch::channel(Role::Standby);
        let (stop, stop_signal) = watch::channel(false);
        let deposals = Arc::new(Mutex::new(Vec::new()));
        let run = Run {
            lease,
            config: config.clone(),
            opener,
            role: role_sender,
            stop: stop_signal,
            deposals: deposals.clone(),
        };
        let task = tokio::spawn(run.run());
        Ok(Candidate {
            holder: config.holder,
            role,
            stop,
            deposals,
            task,
        })
    }

    /// This candidate's holder name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// The engine while leading.
    pub fn engine(&self) -> Option<Engine> {
        match &*self.role.borrow() {
            Role::Leader { engine, .. } => Some(engine.clone()),
            _ => None,
        }
    }

    /// Waits until this candidate leads; returns its grant and engine.
    ///
    /// Errors: [`LeadershipError::Stopped`] when it stops first.
    pub async fn wait_leader(&self) -> Result<(LeaseGrant, Engine), LeadershipError> {
        let mut role = self.role.clone();
        let led = role
            .wait_for(|role| !matches!(role, Role::Standby))
            .await
            .map(|role| role.clone());
        match led {
            Ok(Role::Leader { grant, engine }) => Ok((grant, engine)),
            _ => Err(LeadershipError::Stopped {
                holder: self.holder.clone(),
            }),
        }
    }

    /// Each time this candidate stopped leading: the epoch it led with and why.
    pub fn deposals(&self) -> Vec<(u64, Deposed)> {
        self.deposals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Stops for good: a leader shuts its engine down (waiting up to `stop_within` for its
    /// procedures) and releases the lease so a standby takes over at once.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let mut role = self.role.clone();
        let _ = role.wait_for(|role| matches!(role, Role::Stopped)).await;
    }

    /// Stops at once, as a crash would: the engine's tasks are aborted, the lease is not
    /// released (a standby takes over once it lapses).
    pub fn kill(&self) {
        if let Role::Leader { engine, .. } = &*self.role.borrow() {
            engine.abort_all();
        }
        self.task.abort();
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The candidate's task.
struct Run {
    lease: Arc<dyn LeaderLease>,
    config: LeadershipConfig,
    opener: Arc<dyn OpenAsLeader>,
    role: watch::Sender<Role>,
    stop: watch::Receiver<bool>,
    deposals: Arc<Mutex<Vec<(u64, Deposed)>>>,
}

/// How a term of leading ended.
enum TermEnd {
    Deposed(Deposed),
    Stop,
}

impl Run {
    async fn run(mut self) {
        let holder = self.config.holder.clone();
        loop {
            let Some((grant, sent)) = self.acquire().await else {
                break;
            };
            let engine = match self.open(&grant).await {
                Ok(engine) => engine,
                Err(error) => {
                    warn!(%holder, epoch = grant.epoch, %error, "could not open the engine as leader; releasing the lease");
                    if let Err(error) = self.lease.release(&grant).await {
                        warn!(%holder, %error, "could not release the lease");
                    }
                    if self.pause(self.config.retry_every).await {
                        break;
                    }
                    continue;
                }
            };
            info!(%holder, epoch = grant.epoch, "leading");
            self.role.send_replace(Role::Leader {
                grant: grant.clone(),
                engine: engine.clone(),
            });
            let end = self.lead(&engine, grant.clone(), sent).await;
            // Halt first: nothing more is sent, whatever follows.
            engine.halt();
            self.role.send_replace(Role::Standby);
            let report = engine.shutdown_within(self.config.stop_within).await;
            drop(engine);
            // Ends the lease if it is still this term's (a stop, an engine halted by hand),
            // so a standby need not wait for it to lapse; a no-op once another holds it.
            // Bounded: a store that does not answer lets it lapse instead.
            match tokio::time::timeout(self.config.lease, self.lease.release(&grant)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(%holder, %error, "could not release the lease"),
                Err(_) => warn!(%holder, "the lease release did not answer; it lapses instead"),
            }
            match end {
                TermEnd::Stop => {
                    info!(%holder, epoch = grant.epoch, ?report, "stopped leading");
                    break;
                }
                TermEnd::Deposed(why) => {
                    warn!(%holder, epoch = grant.epoch, ?why, ?report, "deposed; standing by");
                    self.deposals
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push((grant.epoch, why));
                    // Let a standby take the lease first.
                    if self.pause(self.config.retry_every).await {
                        break;
                    }
                }
            }
        }
        self.role.send_replace(Role::Stopped);
    }

    /// Sleeps `pause` unless stopped first; true when stopped.
    async fn pause(&mut self, pause: Duration) -> bool {
        if *self.stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = self.stop.wait_for(|stop| *stop) => true,
            () = tokio::time::sleep(pause) => false,
        }
    }

    /// Stands by until the lease is granted; `None` when stopped first.
    async fn acquire(&mut self) -> Option<(LeaseGrant, Instant)> {
        loop {
            if *self.stop.borrow() {
                return None;
            }
            let sent = Instant::now();
            match self
                .lease
                .try_acquire(&self.config.holder, self.config.lease)
                .await
            {
                Ok(Some(grant)) => return Some((grant, sent)),
                Ok(None) => {}
                Err(error) => warn!(holder = %self.config.holder, %error, "standing by"),
            }
            if self.pause(self.config.retry_every).await {
                return None;
            }
        }
    }

    async fn open(&self, grant: &LeaseGrant) -> Result<Engine, String> {
        let engine = self
            .opener
            .open(grant)
            .await
            .map_err(|error| error.to_string())?;
        let writer_epoch = engine.log().store().writer_epoch();
        if writer_epoch != Some(grant.epoch) {
            engine.halt();
            return Err(LeadershipError::EpochMismatch {
                store: engine.log().store().location(),
                epoch: grant.epoch,
                writer_epoch,
            }
            .to_string());
        }
        Ok(engine)
    }

    /// Renews until deposed or stopped. `sent`: when the request of `grant` was sent.
    async fn lead(&mut self, engine: &Engine, mut grant: LeaseGrant, sent: Instant) -> TermEnd {
        let mut deadline = sent + self.config.lease;
        let mut next_renewal = sent + self.config.renew_every;
        let mut halted = engine.inner.halt_signal();
        loop {
            let lease = self.lease.clone();
            let config = &self.config;
            let current = grant.clone();
            let renewal = async move {
                tokio::time::sleep_until(next_renewal).await;
                let sent = Instant::now();
                (sent, lease.renew(&current, config.lease).await)
            };
            tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => return TermEnd::Stop,
                _ = halted.wait_for(|halted| *halted) => {
                    return TermEnd::Deposed(match engine.fenced() {
                        Some(write) => Deposed::Fenced(write),
                        None => Deposed::EngineStopped,
                    });
                }
                () = tokio::time::sleep_until(deadline) => {
                    return TermEnd::Deposed(Deposed::LeaseLapsed);
                }
                (renew_sent, renewed) = renewal => match renewed {
                    Ok(Some(renewed)) => {
                        grant = renewed;
                        deadline = renew_sent + self.config.lease;
                        next_renewal = renew_sent + self.config.renew_every;
                    }
                    Ok(None) => return TermEnd::Deposed(Deposed::LeaseLost),
                    Err(error) => {
                        warn!(holder = %self.config.holder, %error, "lease renewal failed; retrying until the lease runs out");
                        next_renewal = Instant::now() + self.config.renew_every / 2;
                    }
                },
            }
        }
    }
}

/// The engine's view of its metadata store: a fenced write halts the engine before the
/// procedure that made it sees the answer, so it stops instead of retrying.
pub(super) struct FenceWatch {
    pub(super) store: Arc<dyn MetadataStore>,
    pub(super) engine: Weak<Inner>,
}

#[async_trait]
impl MetadataStoreLayer for FenceWatch {
    fn inner(&self) -> &dyn MetadataStore {
        &*self.store
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let result = self
            .store
            .cas_table_route(table_id, expected_version, route, region_moves)
            .await;
        if let Err(error) = &result {
            if error.kind == MetadataErrorKind::Fenced {
                if let Some(engine) = self.engine.upgrade() {
                    engine.on_fenced(FencedWrite {
                        write: format!("write the route of table {table_id}"),
                        reason: error.reason.clone(),
                    });
                }
            }
        }
        result
    }
}

/// An in-memory [`LeaderLease`] on tokio's clock, for tests and the simulator: engines of one
/// process share it through an `Arc`. Its `lease_until_ms` counts from the first use of the
/// lease in the process (tokio's clock has no Unix epoch), not from the Unix epoch.
#[derive(Debug, Default)]
pub struct MemoryLeaderLease {
    state: Mutex<Option<(LeaseGrant, Instant)>>,
    epoch: Mutex<u64>,
}

impl MemoryLeaderLease {
    /// A lease never granted (epoch 0).
    pub fn new() -> Self {
        Self::default()
    }

    fn now_ms(until: Instant) -> u64 {
        // Tokio's clock has no epoch; report ms since the process's first use of it.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        until.saturating_duration_since(origin).as_millis() as u64
    }
}

#[async_trait]
impl LeaderLease for MemoryLeaderLease {
    fn location(&self) -> String {
        "memory".to_string()
    }

    async fn try_acquire(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if matches!(&*state, Some((_, until)) if *until > now) {
            return Ok(None);
        }
        let mut epoch = self
            .epoch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *epoch += 1;
        let until = now + lease;
        let grant = LeaseGrant {
            epoch: *epoch,
            holder: holder.to_string(),
            lease_until_ms: Self::now_ms(until),
        };
        *state = Some((grant.clone(), until));
        Ok(Some(grant))
    }

    async fn renew(
        &self,
        grant: &LeaseGrant,
        lease: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        match &mut *state {
            Some((current, until))
                if current.epoch == grant.epoch
                    && current.holder == grant.holder
                    && *until > now =>
            {
                *until = now + lease;
                current.lease_until_ms = Self::now_ms(*until);
                Ok(Some(current.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn release(&self, grant: &LeaseGrant) -> Result<(), LeaseError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if matches!(&*state, Some((current, _)) if current.epoch == grant.epoch && current.holder == grant.holder)
        {
            if let Some((current, until)) = state.as_mut() {
                *until = Instant::now();
                current.lease_until_ms = Self::now_ms(*until);
            }
        }
        Ok(())
    }

    async fn state(&self) -> Result<LeaseState, LeaseError> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(match &*state {
            Some((grant, until)) => LeaseState {
                epoch: grant.epoch,
                holder: grant.holder.clone(),
                lease_until_ms: grant.lease_until_ms,
                live: *until > Instant::now(),
            },
            None => LeaseState {
                epoch: 0,
                holder: String::new(),
                lease_until_ms: 0,
                live: false,
            },
        })
    }
}
