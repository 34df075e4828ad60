//! `decide`: given the folded state, the time and an input, what to do next and which events
//! record it. Pure: no I/O, no clock, no randomness but the value passed in.

use serde::{Deserialize, Serialize};

use super::events::{
    ErrorKind, Hook, MigrationEvent, Outcome, RouteChange, StateName, StepError, WaitReason,
};
use super::state::{Answer, CasResult, DecisionState, FoldError, Outstanding};

use crate::domain::{
    DatanodeTable, Instruction, InstructionKind, LeaderState, MailboxOutcome, Peer, PeerId,
    RegionMove, RegionRoute, Reply, TableId, TableRoute, VersionedTableRoute, WalKind,
};

/// One region lease: heartbeats every 3 s, a lease of 3 heartbeats + 1 s.
pub const REGION_LEASE_MS: u64 = 10_000;
/// How often a datanode heartbeats: the old leader has missed one when its last heartbeat
/// is older than this (evidence it is gone: see [`check_cancel`]).
pub const HEARTBEAT_INTERVAL_MS: u64 = 3_000;
/// Mailbox timeout of the candidate's open: one region lease.
pub const OPEN_CANDIDATE_TIMEOUT_MS: u64 = REGION_LEASE_MS;
/// One mailbox round trip: the mailbox timeout of a close. (Revision 1 also capped the
/// downgrade and upgrade waits at it; revision 2 waits the whole remaining budget, R2.1.)
pub const MAILBOX_RTT_MS: u64 = 1_000;
/// Mailbox timeout of the leader's pre-flush (R2.2): at most one region lease, not charged to
/// the budget, and sent as the flush's own timeout.
pub const FLUSH_LEADER_TIMEOUT_MS: u64 = REGION_LEASE_MS;
/// Mailbox timeout of the old leader's close.
pub const CLOSE_REGION_TIMEOUT_MS: u64 = MAILBOX_RTT_MS;
/// The longest backoff between two attempts of a rollback (R2.4: it retries without limit).
pub const ROLLBACK_BACKOFF_MAX_MS: u64 = 30_000;
/// A bound on the events one decision may produce, so a bug cannot loop forever.
const STEPS_PER_DECISION_MAX: usize = 64;

/// What the procedure observed since its last decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// A new procedure's first decision; records nothing.
    Begin,
    /// The engine restarted and picks the procedure up again.
    Resumed,
    /// All locks are held.
    LocksAcquired {
        /// The keys.
        lock_keys: Vec<String>,
        /// How long it waited.
        waited_ms: u64,
    },
    /// A table route was read (`None`: the table has no route).
    RouteRead {
        /// The table.
        table_id: TableId,
        /// The route, if any.
        route: Option<VersionedTableRoute>,
    },
    /// A datanode table was read.
    DatanodeTableRead {
        /// The datanode.
        datanode_id: PeerId,
        /// The table.
        table_id: TableId,
        /// The value, if any.
        datanode_table: Option<DatanodeTable>,
    },
    /// The metadata store failed.
    MetadataFailed {
        /// What was being done.
        operation: String,
        /// The store's error.
        error: String,
    },
    /// The outstanding instruction came back.
    Mailbox(MailboxOutcome),
    /// A route compare-and-swap was applied.
    CasApplied {
        /// The table.
        table_id: TableId,
        /// The change.
        change: RouteChange,
        /// The replaced version.
        from_version: u64,
        /// The new version.
        to_version: u64,
    },
    /// A route compare-and-swap lost to a concurrent writer.
    CasRefused {
        /// The table.
        table_id: TableId,
        /// The change.
        change: RouteChange,
        /// The version expected.
        expected_version: u64,
        /// The version found.
        actual_version: Option<u64>,
    },
    /// The wait is over.
    WaitElapsed,
    /// The old leader's last heartbeat was read (R2.3).
    LastHeartbeatRead {
        /// The old leader.
        peer: PeerId,
        /// Its last heartbeat (ms since the epoch), if known.
        last_heartbeat_ms: Option<u64>,
    },
    /// An operator cancels the procedure.
    Cancel {
        /// Who.
        actor: String,
        /// Why.
        reason: String,
    },
}

/// An observation plus the random value a backoff jitter is drawn from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// What happened.
    pub observation: Observation,
    /// Random value for jitter (recorded in `RetryScheduled` when used).
    pub jitter_random: u32,
}

impl Input {
    /// An input with no randomness.
    pub fn new(observation: Observation) -> Self {
        Input {
            observation,
            jitter_random: 0,
        }
    }
}

/// An observation alone is an input with no randomness.
impl From<Observation> for Input {
    fn from(observation: Observation) -> Self {
        Input::new(observation)
    }
}

/// What the engine does next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Take the procedure's locks (catalog, schema shared; table, region exclusive).
    AcquireLocks {
        /// The keys, in acquisition order.
        lock_keys: Vec<String>,
    },
    /// Read a table route.
    ReadRoute {
        /// The table.
        table_id: TableId,
    },
    /// Read a datanode table.
    ReadDatanodeTable {
        /// The datanode.
        datanode_id: PeerId,
        /// The table.
        table_id: TableId,
    },
    /// Send an instruction and wait for its answer.
    Send {
        /// To whom.
        peer: Peer,
        /// What.
        instruction: Instruction,
        /// The mailbox timeout.
        timeout_ms: u64,
    },
    /// Compare-and-swap a table route.
    CasRoute {
        /// The table.
        table_id: TableId,
        /// The version read.
        expected_version: u64,
        /// The new route.
        route: TableRoute,
        /// What the change is.
        change: RouteChange,
        /// The datanode-table move written with it (upgrade only).
        region_move: Option<RegionMove>,
    },
    /// Ask when a datanode last heartbeated (R2.3).
    ReadLastHeartbeat {
        /// The datanode.
        peer: PeerId,
    },
    /// Sleep until a time, then report `WaitElapsed`.
    WaitUntil {
        /// Until when.
        until_ms: u64,
        /// Why.
        reason: WaitReason,
    },
    /// The procedure has ended.
    Finish {
        /// How.
        outcome: Outcome,
    },
}

/// The answer of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Events to append, in order, all recorded at the decision's time.
    pub events: Vec<MigrationEvent>,
    /// Hooks to call after the events are durable.
    pub hooks: Vec<Hook>,
    /// What to do next.
    pub action: Action,
}

/// An input that does not fit the procedure's state: a bug in the caller, never a normal race.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecideError {
    /// The procedure's log breaks an assumption of the fold: nothing is decided on it.
    #[error("the procedure's log is broken: {0}")]
    BrokenLog(#[from] FoldError),
    /// The procedure has no submitted event.
    #[error("the procedure has no submitted event")]
    NotSubmitted,
    /// The procedure already ended.
    #[error("the procedure already finished ({outcome}); input {input} is not expected")]
    Finished {
        /// How it ended.
        outcome: &'static str,
        /// The input given.
        input: String,
    },
    /// A mailbox answer arrived with no instruction outstanding.
    #[error("a mailbox answer arrived but no instruction is outstanding")]
    NothingOutstanding,
    /// A wait elapsed that was not started.
    #[error("a wait elapsed but the procedure is not waiting")]
    NotWaiting,
    /// A cancel was refused.
    #[error("cancel refused: {0}")]
    CancelRefused(String),
}

/// Whether an operator may cancel the procedure now; the error says why not.
pub fn check_cancel(state: &DecisionState) -> Result<(), String> {
    if let Some(outcome) = state.outcome {
        return Err(format!(
            "the migration already finished ({})",
            outcome.name()
        ));
    }
    if state.rollback.is_some() {
        return Err("the migration is already rolling back".to_string());
    }
    if state.new_route_written || !state.state.cancellable() {
        return Err(format!(
            "the new route is already written (state {}): the migration can only go forward",
            state.state
        ));
    }
    if let Some(refusal) = cancel_would_strand_the_region(state) {
        return Err(refusal);
    }
    Ok(())
}

/// Revision 4 (issue 18): a cancel that would leave the region without a live leader. It is
/// refused only on evidence, folded from the log, that the old leader is gone: in this visit
/// of DowngradeLeaderRegion the downgrade found it unreachable, and the heartbeat read for
/// the lease wait (R2.3) showed that the control plane has not heard from it for more than
/// a heartbeat interval ([`HEARTBEAT_INTERVAL_MS`]); the procedure then waits out its lease
/// before it upgrades the candidate. A rollback would clear Downgrading and hand
/// the region back to a leader nobody can reach; going on is the only way to a writable
/// region. Any other cancel before the new route is taken, as the scenario contract says
/// (an unreachable downgrade from a leader that still heartbeats or whose heartbeats are
/// not known, a leader that only answers slowly, a cancel before the heartbeat is read).
fn cancel_would_strand_the_region(state: &DecisionState) -> Option<String> {
    if !state.policy.refuses_a_cancel_that_strands_the_region()
        || state.state != StateName::DowngradeLeaderRegion
    {
        return None;
    }
    let peer = state.step.leader_unreachable?;
    let read_at_ms = state.step.last_heartbeat_read_at_ms?;
    // No heartbeat known (an embedder that does not track them) is no evidence either way.
    let last_heartbeat_ms = state.step.last_heartbeat??;
    let age_ms = read_at_ms.saturating_sub(last_heartbeat_ms);
    if age_ms <= HEARTBEAT_INTERVAL_MS {
        return None;
    }
    let task = state.task.as_ref()?;
    let deadline = match state.lease_deadline_ms {
        Some(deadline_ms) => format!("its lease runs out at {deadline_ms} ms since the Unix epoch"),
        None => "its lease is running out".to_string(),
    };
    Some(format!(
        "the old leader of region {}, datanode {peer}, is unreachable (its last heartbeat was {age_ms} ms old when read) and {deadline}: a rollback would hand the region back to a leader nobody can reach, so the migration goes on to upgrade the candidate, datanode {}",
        task.region_id, task.to_peer.id
    ))
}

/// The lock keys a procedure holds from start to end: catalog and schema shared, region
/// exclusive. Its table's exclusive lock ([`table_lock_key`]) is taken only around each route
/// read and compare-and-swap (revision 2, R2.6), so a lease wait or a slow upgrade of one
/// region does not hold up the other regions of its table.
pub fn lock_keys(state: &DecisionState) -> Vec<String> {
    let Some(task) = &state.task else {
        return Vec::new();
    };
    let catalog = LockMode::Shared.key(&format!("catalog/{}", state.catalog));
    let schema = LockMode::Shared.key(&format!("schema/{}.{}", state.catalog, state.schema));
    let region = LockMode::Exclusive.key(&format!("region/{}", task.region_id));
    if !state.policy.revision_two() {
        // Revision 1 held the table's lock for the whole migration.
        return vec![
            catalog,
            schema,
            table_lock_key(task.region_id.table_id()),
            region,
        ];
    }
    vec![catalog, schema, region]
}

/// A table's exclusive lock, held around each read and compare-and-swap of its route.
pub fn table_lock_key(table_id: TableId) -> String {
    LockMode::Exclusive.key(&format!("table/{table_id}"))
}

/// How a lock is held: a lock key is its resource and its mode, as `resource:mode` (the form
/// recorded in `LockWaitStarted` and `LocksAcquired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Held by any number of procedures at once (catalog, schema).
    Shared,
    /// Held by one procedure (table, region).
    Exclusive,
}

impl LockMode {
    /// The suffix naming the mode in a key.
    pub fn name(self) -> &'static str {
        match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        }
    }

    /// The key of `resource` held in this mode.
    pub fn key(self, resource: &str) -> String {
        format!("{resource}:{}", self.name())
    }

    /// The mode a key names; a key without a shared suffix is exclusive (the safe reading).
    pub fn of_key(key: &str) -> LockMode {
        match key.rsplit_once(':') {
            Some((_, suffix)) if suffix == LockMode::Shared.name() => LockMode::Shared,
            _ => LockMode::Exclusive,
        }
    }
}

/// Decides the next action from the folded decision state, the time and an input. It is
/// given only the [`DecisionState`]: nothing it decides can depend on the reporting part
/// of a [`MigrationState`](super::MigrationState) (a `&MigrationState` dereferences to it).
pub fn decide(state: &DecisionState, now_ms: u64, input: Input) -> Result<Decision, DecideError> {
    if let Some(broken) = &state.broken {
        return Err(DecideError::BrokenLog(broken.clone()));
    }
    if state.task.is_none() {
        return Err(DecideError::NotSubmitted);
    }
    if let Some(outcome) = state.outcome {
        return Err(DecideError::Finished {
            outcome: outcome.name(),
            input: format!("{:?}", input.observation),
        });
    }
    let mut step = Stepper {
        state: state.clone(),
        now_ms,
        jitter_random: input.jitter_random,
        events: Vec::new(),
        hooks: Vec::new(),
    };
    step.record(input.observation)?;
    let action = step.advance();
    Ok(Decision {
        events: step.events,
        hooks: step.hooks,
        action,
    })
}

/// How a state's step went.
enum Flow {
    /// The engine must act.
    Act(Action),
    /// Events were emitted; look again.
    Continue,
    /// The step failed.
    Fail(StepError),
}

fn retryable(kind: ErrorKind, message: String) -> StepError {
    StepError {
        kind,
        message,
        retryable: true,
    }
}

fn fatal(kind: ErrorKind, message: String) -> StepError {
    StepError {
        kind,
        message,
        retryable: false,
    }
}

/// How an in-state attempt (downgrade or upgrade) went.
enum AttemptResult {
    Succeeded,
    /// Worth another attempt (an error reply, a timeout, not ready yet).
    Retryable,
    /// No point trying again (unreachable, a wrong reply, a missing region).
    Stop,
}

struct Stepper {
    state: DecisionState,
    now_ms: u64,
    jitter_random: u32,
    events: Vec<MigrationEvent>,
    hooks: Vec<Hook>,
}

impl Stepper {
    fn emit(&mut self, event: MigrationEvent) {
        self.state.apply(self.now_ms, &event);
        self.events.push(event);
    }

    fn task(&self) -> &super::events::MigrationTask {
        // decide() checked the task exists before building the stepper.
        self.state
            .task
            .as_ref()
            .expect("decide checks the submitted task first")
    }

    /// Records what came of the outstanding instruction (and, for a downgrade or an
    /// upgrade, the time its attempts took).
    fn record_answer(&mut self, outstanding: &Outstanding, outcome: MailboxOutcome) {
        let peer = outstanding.peer.id;
        let asked = outstanding.instruction.kind();
        self.emit(match outcome {
            MailboxOutcome::Reply(reply) => MigrationEvent::ReplyReceived { peer, reply },
            MailboxOutcome::Timeout => MigrationEvent::MailboxTimedOut {
                peer,
                instruction: asked,
            },
            MailboxOutcome::Unreachable => MigrationEvent::PeerUnreachable {
                peer,
                instruction: asked,
            },
        });
        if super::state::is_budgeted(asked) {
            self.emit(MigrationEvent::OperationTimed {
                operation: asked,
                elapsed_ms: self.now_ms.saturating_sub(outstanding.first_sent_at_ms),
            });
        }
    }

    /// Turns the observation into the events that record it.
    fn record(&mut self, observation: Observation) -> Result<(), DecideError> {
        match observation {
            Observation::Begin => {}
            Observation::Resumed => self.emit(MigrationEvent::Resumed),
            Observation::LocksAcquired {
                lock_keys,
                waited_ms,
            } => self.emit(MigrationEvent::LocksAcquired {
                lock_keys,
                waited_ms,
            }),
            Observation::RouteRead { table_id, route } => {
                let (version, route) = match route {
                    Some(versioned) => (Some(versioned.version), Some(versioned.route)),
                    None => (None, None),
                };
                self.emit(MigrationEvent::RouteRead {
                    table_id,
                    version,
                    route,
                })
            }
            Observation::DatanodeTableRead {
                datanode_id,
                table_id,
                datanode_table,
            } => self.emit(MigrationEvent::DatanodeTableRead {
                datanode_id,
                table_id,
                datanode_table,
            }),
            Observation::MetadataFailed { operation, error } => {
                self.emit(MigrationEvent::MetadataFailed { operation, error })
            }
            Observation::Mailbox(outcome) => {
                let outstanding = self
                    .state
                    .outstanding
                    .clone()
                    .ok_or(DecideError::NothingOutstanding)?;
                self.record_answer(&outstanding, outcome);
            }
            Observation::CasApplied {
                table_id,
                change,
                from_version,
                to_version,
            } => self.emit(MigrationEvent::RouteCasApplied {
                table_id,
                change,
                from_version,
                to_version,
            }),
            Observation::CasRefused {
                table_id,
                change,
                expected_version,
                actual_version,
            } => self.emit(MigrationEvent::RouteCasRefused {
                table_id,
                change,
                expected_version,
                actual_version,
            }),
            Observation::WaitElapsed => {
                if self.state.waiting.is_none() {
                    return Err(DecideError::NotWaiting);
                }
                self.emit(MigrationEvent::WaitElapsed)
            }
            Observation::LastHeartbeatRead {
                peer,
                last_heartbeat_ms,
            } => self.emit(MigrationEvent::LastHeartbeatRead {
                peer,
                last_heartbeat_ms,
            }),
            Observation::Cancel { actor, reason } => {
                check_cancel(&self.state).map_err(DecideError::CancelRefused)?;
                self.emit(MigrationEvent::OperatorCancelled { actor, reason })
            }
        }
        Ok(())
    }

    /// Emits events until the engine has something to do.
    fn advance(&mut self) -> Action {
        for _ in 0..STEPS_PER_DECISION_MAX {
            if let Some(outcome) = self.state.outcome {
                return Action::Finish { outcome };
            }
            if !self.state.locks_held {
                return Action::AcquireLocks {
                    lock_keys: lock_keys(&self.state),
                };
            }
            if let Some((until_ms, reason)) = self.state.waiting {
                return Action::WaitUntil { until_ms, reason };
            }
            let flow = if self.state.rollback.is_some() {
                self.rollback_step()
            } else if let Some((actor, reason)) = self.state.cancelled_by.clone() {
                Flow::Fail(fatal(
                    ErrorKind::Cancelled,
                    format!("cancelled by {actor}: {reason}"),
                ))
            } else if !self.state.started {
                self.enter(StateName::Start, None);
                Flow::Continue
            } else {
                match self.state.state {
                    StateName::Start => self.start(),
                    StateName::OpenCandidateRegion => self.open_candidate_region(),
                    StateName::FlushLeaderRegion => self.flush_leader_region(),
                    StateName::UpdateMetadataDowngrade => self.update_metadata_downgrade(),
                    StateName::DowngradeLeaderRegion => self.downgrade_leader_region(),
                    StateName::UpgradeCandidateRegion => self.upgrade_candidate_region(),
                    StateName::UpdateMetadataUpgrade => self.update_metadata_upgrade(),
                    StateName::UpdateMetadataRollback => self.update_metadata_rollback(),
                    StateName::CloseDowngradedRegion => self.close_downgraded_region(),
                    StateName::End => {
                        self.emit(MigrationEvent::Finished {
                            outcome: Outcome::Completed,
                            error: None,
                        });
                        Flow::Continue
                    }
                    StateName::Abort => {
                        let reason = self.state.abort_reason.clone().unwrap_or_default();
                        Flow::Fail(fatal(
                            ErrorKind::MigrationAborted,
                            format!("migration aborted: {reason}"),
                        ))
                    }
                }
            };
            match flow {
                Flow::Act(action) => return action,
                Flow::Continue => {}
                Flow::Fail(error) => self.fail(error),
            }
        }
        // Unreachable with a correct model; finishing keeps a buggy one from spinning.
        let error = format!(
            "internal error: no action after {STEPS_PER_DECISION_MAX} steps in state {}",
            self.state.state
        );
        self.emit(MigrationEvent::Finished {
            outcome: Outcome::Failed,
            error: Some(error),
        });
        Action::Finish {
            outcome: Outcome::Failed,
        }
    }

    fn enter(&mut self, state: StateName, reason: Option<String>) {
        self.emit(MigrationEvent::StateEntered { state, reason });
    }

    fn backoff(&self, retry_index: u32) -> (u64, u64) {
        let policy = &self.state.policy;
        let base_ms = policy
            .initial_backoff_ms
            .saturating_mul(1u64 << retry_index.min(20));
        let jitter_ms = base_ms
            .saturating_mul(u64::from(policy.jitter_percent_max))
            .saturating_mul(u64::from(self.jitter_random % 10_001))
            / (100 * 10_000);
        let delay_ms = base_ms.saturating_add(jitter_ms);
        (delay_ms, self.now_ms.saturating_add(delay_ms))
    }

    /// The backoff before rollback retry `retry_index + 1`: doubling, jitter included, at
    /// most [`ROLLBACK_BACKOFF_MAX_MS`].
    fn rollback_backoff(&self, retry_index: u32) -> (u64, u64) {
        if !self.state.policy.revision_two() {
            return self.backoff(retry_index);
        }
        let (delay_ms, _) = self.backoff(retry_index);
        let delay_ms = delay_ms.min(ROLLBACK_BACKOFF_MAX_MS);
        (delay_ms, self.now_ms.saturating_add(delay_ms))
    }

    /// A step failed: retry the state, or roll back, or (in a rollback) retry it or give up.
    fn fail(&mut self, error: StepError) {
        if let Some(cause) = self.state.rollback.clone() {
            // R2.4: a rollback whose route read or write fails retries without limit, so no
            // region is left Downgrading; it fails only when it cannot apply at all.
            let retry = if self.state.policy.revision_two() {
                error.retryable
            } else {
                error.retryable
                    && self.state.rollback_retries_used < self.state.policy.rollback_retries_max
            };
            if retry {
                let (delay_ms, due_at_ms) = self.rollback_backoff(self.state.rollback_retries_used);
                self.emit(MigrationEvent::RetryScheduled {
                    attempt: self.state.rollback_retries_used + 1,
                    delay_ms,
                    due_at_ms,
                    jitter_random: self.jitter_random,
                    rollback: true,
                    error,
                });
            } else {
                let message = format!(
                    "rollback failed: {}; it was rolling back after: {}",
                    error.message, cause.message
                );
                self.emit(MigrationEvent::RollbackFinished {
                    succeeded: false,
                    error: Some(error.message),
                });
                self.emit(MigrationEvent::Finished {
                    outcome: Outcome::Failed,
                    error: Some(message),
                });
            }
            return;
        }
        if error.retryable && self.state.retries_used < self.state.policy.retries_max {
            let (delay_ms, due_at_ms) = self.backoff(self.state.retries_used);
            self.emit(MigrationEvent::RetryScheduled {
                attempt: self.state.retries_used + 1,
                delay_ms,
                due_at_ms,
                jitter_random: self.jitter_random,
                rollback: false,
                error,
            });
            return;
        }
        let error = if error.retryable {
            fatal(
                ErrorKind::RetryBudgetExhausted,
                format!(
                    "retry budget exhausted after {} retries: {}",
                    self.state.retries_used, error.message
                ),
            )
        } else {
            error
        };
        self.emit(MigrationEvent::RollbackStarted { error });
    }

    fn metadata_error(&self) -> Option<StepError> {
        self.state.step.metadata_error.as_ref().map(|error| {
            retryable(
                ErrorKind::MetadataStore,
                format!("metadata store error: {error}"),
            )
        })
    }

    /// The region's route from the cached read, or the action that reads it.
    // The error is the step's next flow, used at once: boxing it would only add noise.
    #[allow(clippy::result_large_err)]
    fn region_route(&mut self) -> Result<RegionRoute, Flow> {
        if let Some(error) = self.metadata_error() {
            return Err(Flow::Fail(error));
        }
        let region_id = self.task().region_id;
        let table_id = region_id.table_id();
        let Some(cached) = &self.state.route else {
            return Err(Flow::Act(Action::ReadRoute { table_id }));
        };
        match &cached.route {
            None => Err(Flow::Fail(fatal(
                ErrorKind::TableRouteNotFound,
                format!("table route not found: table {table_id}"),
            ))),
            Some(TableRoute::Logical { physical_table_id }) => Err(Flow::Fail(fatal(
                ErrorKind::LogicalTable,
                format!(
                    "table {table_id} is a logical table (its regions belong to table {physical_table_id})"
                ),
            ))),
            Some(route) => route.region_route(region_id).cloned().ok_or_else(|| {
                Flow::Fail(fatal(
                    ErrorKind::RegionRouteNotFound,
                    format!("region route not found: region {region_id}"),
                ))
            }),
        }
    }

    /// The cached route with one region changed, for a CAS.
    fn cas_with(
        &self,
        change: RouteChange,
        edit: impl FnOnce(&mut RegionRoute),
        region_move: Option<RegionMove>,
    ) -> Flow {
        let region_id = self.task().region_id;
        let Some(cached) = &self.state.route else {
            return Flow::Act(Action::ReadRoute {
                table_id: region_id.table_id(),
            });
        };
        let (Some(version), Some(mut route)) = (cached.version, cached.route.clone()) else {
            return Flow::Fail(fatal(
                ErrorKind::TableRouteNotFound,
                format!("table route not found: table {}", region_id.table_id()),
            ));
        };
        if let Some(region_route) = route.region_route_mut(region_id) {
            edit(region_route);
        }
        Flow::Act(Action::CasRoute {
            table_id: region_id.table_id(),
            expected_version: version,
            route,
            change,
            region_move,
        })
    }

    fn cas_refused(&self, doing: &str) -> StepError {
        let task = self.task();
        retryable(
            ErrorKind::CasConflict,
            format!(
                "failed to update the table route while {doing} region {}: table {} was changed concurrently",
                task.region_id,
                task.region_id.table_id()
            ),
        )
    }

    /// Re-sends the outstanding instruction after a restart with a fresh wait (R2.7: the
    /// downtime is not charged, and an instruction is never re-sent with its old deadline). A
    /// downgrade or an upgrade waits for what is left of the budget (the time before the crash
    /// was charged at the resume); an open, a flush or a close waits its whole timeout again.
    /// Revision 1 procedures keep what was left of the deadline, as they were recorded
    /// deciding. With no time left, the send made before the crash timed out: since
    /// revision 3 that timeout is recorded and decided on at once, and nothing is sent (older
    /// procedures recorded a re-send with a zero timeout that the engine never sent).
    fn resend(&mut self, outstanding: Outstanding) -> Flow {
        let budgeted = super::state::is_budgeted(outstanding.instruction.kind());
        let (timeout_ms, deadline_ms) = if !budgeted && self.state.policy.revision_two() {
            (
                outstanding.timeout_ms,
                self.now_ms.saturating_add(outstanding.timeout_ms),
            )
        } else if budgeted && !self.state.policy.revision_two() {
            // Revision 1: never past the old deadline, even when it passed during the restart.
            (
                outstanding.deadline_ms.saturating_sub(self.now_ms),
                outstanding.deadline_ms,
            )
        } else if budgeted {
            let remaining_ms = self.state.remaining_budget_ms();
            (remaining_ms, self.now_ms.saturating_add(remaining_ms))
        } else if outstanding.deadline_ms > self.now_ms {
            (
                outstanding.deadline_ms.saturating_sub(self.now_ms),
                outstanding.deadline_ms,
            )
        } else {
            (
                outstanding.timeout_ms,
                self.now_ms.saturating_add(outstanding.timeout_ms),
            )
        };
        if timeout_ms == 0 && self.state.policy.times_out_a_resend_with_no_time_left() {
            // The budget was charged at the resume, up to the last event before the crash.
            self.emit(MigrationEvent::InstructionExpired {
                peer: outstanding.peer.id,
                instruction: outstanding.instruction.kind(),
            });
            return Flow::Continue;
        }
        self.emit(MigrationEvent::InstructionSent {
            peer: outstanding.peer.clone(),
            instruction: outstanding.instruction.clone(),
            timeout_ms,
            deadline_ms,
            attempt: outstanding.attempt,
            resend: true,
            regions: Vec::new(),
        });
        Flow::Act(Action::Send {
            peer: outstanding.peer,
            instruction: outstanding.instruction,
            timeout_ms,
        })
    }

    fn send(&mut self, peer: Peer, instruction: Instruction, timeout_ms: u64) -> Flow {
        let attempt = self.state.step.attempts + 1;
        self.emit(MigrationEvent::InstructionSent {
            peer: peer.clone(),
            instruction: instruction.clone(),
            timeout_ms,
            deadline_ms: self.now_ms.saturating_add(timeout_ms),
            attempt,
            resend: false,
            regions: Vec::new(),
        });
        Flow::Act(Action::Send {
            peer,
            instruction,
            timeout_ms,
        })
    }

    fn unexpected_reply(&self, expected: InstructionKind, peer: PeerId, reply: &Reply) -> String {
        format!(
            "unexpected reply from datanode {peer}: expected the reply to {expected}, got the reply to {}",
            reply.kind()
        )
    }

    // ---- States ------------------------------------------------------------------------

    fn start(&mut self) -> Flow {
        let route = match self.region_route() {
            Ok(route) => route,
            Err(flow) => return flow,
        };
        let task = self.task().clone();
        let Some(leader) = route.leader_peer.clone() else {
            return Flow::Fail(fatal(
                ErrorKind::NoLeader,
                format!("region {} has no leader in its route", task.region_id),
            ));
        };
        if leader.id == task.to_peer.id {
            self.enter(StateName::End, None);
        } else if leader.id != task.from_peer.id {
            let reason = format!(
                "invalid region leader peer: expected {}, found {}",
                task.from_peer.id, leader.id
            );
            self.enter(StateName::Abort, Some(reason));
        } else if route
            .follower_peers
            .iter()
            .any(|peer| peer.id == task.to_peer.id)
        {
            self.enter(self.after_the_candidate_opens(), None);
        } else {
            self.enter(StateName::OpenCandidateRegion, None);
        }
        Flow::Continue
    }

    fn open_candidate_region(&mut self) -> Flow {
        let task = self.task().clone();
        if let Some(answered) = self.state.step.answered.clone() {
            let to = task.to_peer.id;
            return match answered.answer {
                Answer::Reply(Reply::OpenRegion { result: true, .. }) => {
                    self.enter(self.after_the_candidate_opens(), None);
                    Flow::Continue
                }
                Answer::Reply(Reply::OpenRegion {
                    result: false,
                    error,
                }) => Flow::Fail(retryable(
                    ErrorKind::OpenRegionFailed,
                    format!(
                        "region {} is not opened by datanode {to}: {}",
                        task.region_id,
                        error.unwrap_or_else(|| "no reason given".to_string())
                    ),
                )),
                Answer::Reply(reply) => Flow::Fail(fatal(
                    ErrorKind::UnexpectedReply,
                    self.unexpected_reply(InstructionKind::OpenRegion, to, &reply),
                )),
                Answer::Timeout => Flow::Fail(retryable(
                    ErrorKind::MailboxTimeout,
                    format!(
                        "mailbox timeout for open candidate region {} on datanode {to}",
                        task.region_id
                    ),
                )),
                Answer::Unreachable => Flow::Fail(fatal(
                    ErrorKind::Unreachable,
                    format!(
                        "datanode {to} is unreachable (open candidate region {})",
                        task.region_id
                    ),
                )),
            };
        }
        if let Some(outstanding) = self.state.outstanding.clone() {
            return self.resend(outstanding);
        }
        if let Some(error) = self.metadata_error() {
            return Flow::Fail(error);
        }
        let table_id = task.region_id.table_id();
        if self.state.step.datanode_table_missing {
            return Flow::Fail(fatal(
                ErrorKind::DatanodeTableNotFound,
                format!(
                    "datanode table not found: table {table_id} on datanode {}",
                    task.from_peer.id
                ),
            ));
        }
        let Some(datanode_table) = self.state.from_datanode_table.clone() else {
            return Flow::Act(Action::ReadDatanodeTable {
                datanode_id: task.from_peer.id,
                table_id,
            });
        };
        let number = task.region_id.region_number();
        let instruction = Instruction::OpenRegion {
            region_id: task.region_id,
            engine: datanode_table.engine,
            storage_path: datanode_table.storage_path,
            region_options: datanode_table.region_options,
            region_wal_options: datanode_table
                .region_wal_options
                .into_iter()
                .filter(|(n, _)| *n == number)
                .collect(),
            skip_wal_replay: true,
        };
        self.send(task.to_peer, instruction, OPEN_CANDIDATE_TIMEOUT_MS)
    }

    /// The state after the candidate is open: FlushLeaderRegion (revision 2), else straight
    /// to UpdateMetadata::Downgrade.
    fn after_the_candidate_opens(&self) -> StateName {
        if self.state.policy.revision_two() {
            StateName::FlushLeaderRegion
        } else {
            StateName::UpdateMetadataDowngrade
        }
    }

    /// FlushLeaderRegion (R2.2): asks the leader to flush before it is marked Downgrading.
    /// Best effort: whatever comes back (a reply of any kind, a timeout, unreachable), the
    /// migration goes on; the wait is one lease at most and is not charged to the budget.
    fn flush_leader_region(&mut self) -> Flow {
        if self.state.step.answered.is_some() {
            self.enter(StateName::UpdateMetadataDowngrade, None);
            return Flow::Continue;
        }
        if let Some(outstanding) = self.state.outstanding.clone() {
            return self.resend(outstanding);
        }
        let task = self.task().clone();
        let instruction = Instruction::FlushRegion {
            region_id: task.region_id,
            timeout_ms: FLUSH_LEADER_TIMEOUT_MS,
        };
        self.send(task.from_peer, instruction, FLUSH_LEADER_TIMEOUT_MS)
    }

    fn update_metadata_downgrade(&mut self) -> Flow {
        match self.state.step.cas {
            Some(CasResult::Applied) => {
                self.enter(StateName::DowngradeLeaderRegion, None);
                return Flow::Continue;
            }
            Some(CasResult::Refused) => {
                return Flow::Fail(self.cas_refused("downgrading the leader of"));
            }
            None => {}
        }
        let route = match self.region_route() {
            Ok(route) => route,
            Err(flow) => return flow,
        };
        let from = self.task().from_peer.id;
        if route.leader_id() == Some(from) && !route.is_leader_downgrading() {
            let now_ms = self.now_ms;
            return self.cas_with(
                RouteChange::Downgrade,
                |region| {
                    region.leader_state = Some(LeaderState::Downgrading);
                    region.leader_down_since_ms = Some(now_ms);
                },
                None,
            );
        }
        // Already Downgrading, or the leader moved on: nothing to write (an idempotent re-run).
        self.enter(StateName::DowngradeLeaderRegion, None);
        Flow::Continue
    }

    /// After an in-state attempt: wait and try again, or give up.
    fn after_attempt(
        &mut self,
        result: AttemptResult,
        success: StateName,
        give_up: GiveUp,
    ) -> Flow {
        match result {
            AttemptResult::Succeeded => {
                if success == StateName::UpgradeCandidateRegion {
                    // Fast path: the old leader acknowledged, its lease need not run out.
                    self.emit(MigrationEvent::LeaseDeadlineReset);
                }
                self.enter(success, None);
                Flow::Continue
            }
            AttemptResult::Retryable
                if self.state.step.attempts < self.state.policy.in_state_attempts_max =>
            {
                self.emit(MigrationEvent::WaitStarted {
                    until_ms: self
                        .now_ms
                        .saturating_add(self.state.policy.in_state_retry_interval_ms),
                    reason: WaitReason::AttemptInterval,
                });
                Flow::Continue
            }
            AttemptResult::Retryable | AttemptResult::Stop => match give_up {
                GiveUp::SlowPath => self.slow_path(),
                GiveUp::Rollback => {
                    self.enter(StateName::UpdateMetadataRollback, None);
                    Flow::Continue
                }
            },
        }
    }

    /// Waits out the old leader's lease, then goes on to the upgrade. The lease ends one
    /// lease after the old leader's last heartbeat (R2.3), read first and recorded; with no
    /// heartbeat known, the deadline set when the downgrade began stands.
    fn slow_path(&mut self) -> Flow {
        let last_heartbeat = if self.state.policy.revision_two() {
            self.state.step.last_heartbeat
        } else {
            Some(None)
        };
        let Some(last_heartbeat_ms) = last_heartbeat else {
            return Flow::Act(Action::ReadLastHeartbeat {
                peer: self.task().from_peer.id,
            });
        };
        if let Some(last_heartbeat_ms) = last_heartbeat_ms {
            let deadline_ms = last_heartbeat_ms.saturating_add(REGION_LEASE_MS);
            if self.state.lease_deadline_ms != Some(deadline_ms) {
                self.emit(MigrationEvent::LeaseDeadlineSet { deadline_ms });
            }
        }
        match self.state.lease_deadline_ms {
            Some(deadline_ms) if deadline_ms > self.now_ms => {
                self.emit(MigrationEvent::WaitStarted {
                    until_ms: deadline_ms,
                    reason: WaitReason::LeaseExpiry,
                });
            }
            _ => self.enter(StateName::UpgradeCandidateRegion, None),
        }
        Flow::Continue
    }

    fn downgrade_leader_region(&mut self) -> Flow {
        if self.state.lease_deadline_ms.is_none() && !self.state.step.slow_path {
            self.emit(MigrationEvent::LeaseDeadlineSet {
                deadline_ms: self.now_ms.saturating_add(REGION_LEASE_MS),
            });
        }
        if self.state.step.slow_path {
            if self.state.step.waited {
                self.enter(StateName::UpgradeCandidateRegion, None);
                return Flow::Continue;
            }
            return self.slow_path();
        }
        let task = self.task().clone();
        if let Some(answered) = self.state.step.answered.clone() {
            let result = match answered.answer {
                Answer::Reply(Reply::DowngradeRegion { error: Some(_), .. }) => {
                    AttemptResult::Retryable
                }
                Answer::Reply(Reply::DowngradeRegion { .. }) => AttemptResult::Succeeded,
                Answer::Reply(_) => AttemptResult::Stop,
                Answer::Timeout => AttemptResult::Retryable,
                Answer::Unreachable => AttemptResult::Stop,
            };
            return self.after_attempt(result, StateName::UpgradeCandidateRegion, GiveUp::SlowPath);
        }
        let reject_write = self.state.wal != WalKind::Remote;
        self.timed_attempt(task.from_peer, |remaining_ms| {
            Instruction::DowngradeRegion {
                region_id: task.region_id,
                flush_timeout_ms: remaining_ms,
                reject_write,
            }
        })
    }

    /// The next downgrade or upgrade attempt: the outstanding one again after a restart, or
    /// a new one with what is left of the budget, or, with none left (exceeded deadline),
    /// UpdateMetadata::Rollback. The mailbox waits for the whole remaining budget (R2.1): a
    /// late reply within the budget is taken, and a timeout uses the budget up.
    fn timed_attempt(&mut self, peer: Peer, instruction: impl FnOnce(u64) -> Instruction) -> Flow {
        if let Some(outstanding) = self.state.outstanding.clone() {
            return self.resend(outstanding);
        }
        let remaining_ms = self.state.remaining_budget_ms();
        if remaining_ms == 0 {
            self.enter(StateName::UpdateMetadataRollback, None);
            return Flow::Continue;
        }
        let instruction = instruction(remaining_ms);
        let wait_ms = if self.state.policy.revision_two() {
            remaining_ms
        } else {
            remaining_ms.min(MAILBOX_RTT_MS)
        };
        self.send(peer, instruction, wait_ms)
    }

    fn upgrade_candidate_region(&mut self) -> Flow {
        let task = self.task().clone();
        if let Some(answered) = self.state.step.answered.clone() {
            let result = match answered.answer {
                Answer::Reply(Reply::UpgradeRegion { error: Some(_), .. }) => {
                    AttemptResult::Retryable
                }
                Answer::Reply(Reply::UpgradeRegion { exists: false, .. }) => AttemptResult::Stop,
                Answer::Reply(Reply::UpgradeRegion { ready: false, .. })
                    if self.state.policy.require_ready =>
                {
                    AttemptResult::Retryable
                }
                Answer::Reply(Reply::UpgradeRegion { .. }) => AttemptResult::Succeeded,
                Answer::Reply(_) => AttemptResult::Stop,
                Answer::Timeout => AttemptResult::Retryable,
                Answer::Unreachable => AttemptResult::Stop,
            };
            return self.after_attempt(result, StateName::UpdateMetadataUpgrade, GiveUp::Rollback);
        }
        let last_entry_id = self.state.last_entry_id;
        self.timed_attempt(task.to_peer, |remaining_ms| Instruction::UpgradeRegion {
            region_id: task.region_id,
            last_entry_id,
            replay_timeout_ms: remaining_ms,
            location_id: Some(task.from_peer.id),
        })
    }

    fn update_metadata_upgrade(&mut self) -> Flow {
        let task = self.task().clone();
        if self.state.step.hooks_called {
            self.enter(StateName::CloseDowngradedRegion, None);
            return Flow::Continue;
        }
        match self.state.step.cas {
            Some(CasResult::Applied) => return self.after_route_switch(),
            Some(CasResult::Refused) => {
                return Flow::Fail(self.cas_refused("upgrading the candidate of"))
            }
            None => {}
        }
        let route = match self.region_route() {
            Ok(route) => route,
            Err(flow) => return flow,
        };
        match route.leader_id() {
            Some(leader) if leader == task.to_peer.id => {
                if route.is_leader_downgrading() {
                    return Flow::Fail(fatal(
                        ErrorKind::UnexpectedRoute,
                        format!(
                            "unexpected intermediate state: region {} names the candidate {} as leader but is still Downgrading",
                            task.region_id, task.to_peer.id
                        ),
                    ));
                }
                // Already written (a re-run after a restart): carry on.
                self.after_route_switch()
            }
            Some(leader) if leader == task.from_peer.id => {
                let to_peer = task.to_peer.clone();
                self.cas_with(
                    RouteChange::Upgrade,
                    |region| {
                        region.leader_state = None;
                        region.leader_down_since_ms = None;
                        region.follower_peers.retain(|peer| peer.id != to_peer.id);
                        region.leader_peer = Some(to_peer);
                    },
                    Some(RegionMove {
                        region_id: task.region_id,
                        from_peer: task.from_peer.id,
                        to_peer: task.to_peer.id,
                    }),
                )
            }
            leader => Flow::Fail(fatal(
                ErrorKind::UnexpectedRoute,
                format!(
                    "unexpected region leader of region {}: expected {}, found {}",
                    task.region_id,
                    task.from_peer.id,
                    leader.map_or("none".to_string(), |id| id.to_string())
                ),
            )),
        }
    }

    fn after_route_switch(&mut self) -> Flow {
        let task = self.task().clone();
        let hooks = vec![
            Hook::DeregisterFailureDetector {
                peer: task.from_peer.id,
                region_id: task.region_id,
            },
            Hook::InvalidateTableCache {
                table_id: task.region_id.table_id(),
            },
        ];
        self.call_hooks(hooks);
        Flow::Continue
    }

    fn call_hooks(&mut self, hooks: Vec<Hook>) {
        self.hooks.extend(hooks.iter().cloned());
        self.emit(MigrationEvent::HooksCalled { hooks });
    }

    fn update_metadata_rollback(&mut self) -> Flow {
        let task = self.task().clone();
        if self.state.step.hooks_called {
            self.enter(
                StateName::Abort,
                Some("failed to upgrade the candidate region".to_string()),
            );
            return Flow::Continue;
        }
        let rollback_hooks = vec![
            Hook::RegisterFailureDetector {
                peer: task.from_peer.id,
                region_id: task.region_id,
            },
            Hook::InvalidateTableCache {
                table_id: task.region_id.table_id(),
            },
        ];
        match self.state.step.cas {
            Some(CasResult::Applied) => {
                self.call_hooks(rollback_hooks);
                return Flow::Continue;
            }
            Some(CasResult::Refused) => {
                return Flow::Fail(self.cas_refused("rolling back the downgrade of"))
            }
            None => {}
        }
        let route = match self.region_route() {
            Ok(route) => route,
            Err(flow) => return flow,
        };
        if route.is_leader_downgrading() {
            return self.cas_with(RouteChange::ClearDowngrading, clear_downgrading, None);
        }
        self.call_hooks(rollback_hooks);
        Flow::Continue
    }

    fn close_downgraded_region(&mut self) -> Flow {
        if self.state.step.answered.is_some() {
            // Best effort: whatever the old leader answered, the migration is done.
            self.enter(StateName::End, None);
            return Flow::Continue;
        }
        if let Some(outstanding) = self.state.outstanding.clone() {
            return self.resend(outstanding);
        }
        let task = self.task().clone();
        let instruction = Instruction::CloseRegion {
            region_id: task.region_id,
        };
        self.send(task.from_peer, instruction, CLOSE_REGION_TIMEOUT_MS)
    }

    /// The framework rollback: clear Downgrading if it is set, re-register the detector.
    fn rollback_step(&mut self) -> Flow {
        let task = self.task().clone();
        if !self.state.step.hooks_called {
            match self.state.step.cas {
                Some(CasResult::Refused) => {
                    return Flow::Fail(self.cas_refused("rolling back"));
                }
                Some(CasResult::Applied) => {}
                None => {
                    if let Some(error) = self.metadata_error() {
                        return Flow::Fail(error);
                    }
                    let Some(cached) = &self.state.route else {
                        return Flow::Act(Action::ReadRoute {
                            table_id: task.region_id.table_id(),
                        });
                    };
                    let table_id = task.region_id.table_id();
                    let region_route = match &cached.route {
                        // Revision 1: a missing route has nothing Downgrading to clear.
                        _ if !self.state.policy.revision_two() => None,
                        None => {
                            return Flow::Fail(fatal(
                                ErrorKind::TableRouteNotFound,
                                format!("the rollback cannot apply: table route not found: table {table_id}"),
                            ))
                        }
                        Some(route) => match route.region_route(task.region_id) {
                            Some(region_route) => Some(region_route),
                            None => {
                                return Flow::Fail(fatal(
                                    ErrorKind::RegionRouteNotFound,
                                    format!(
                                        "the rollback cannot apply: region route not found: region {}",
                                        task.region_id
                                    ),
                                ))
                            }
                        },
                    };
                    let downgrading = match region_route {
                        Some(region_route) => region_route.is_leader_downgrading(),
                        None => cached
                            .route
                            .as_ref()
                            .and_then(|route| route.region_route(task.region_id))
                            .is_some_and(RegionRoute::is_leader_downgrading),
                    };
                    if downgrading {
                        return self.cas_with(
                            RouteChange::ClearDowngrading,
                            clear_downgrading,
                            None,
                        );
                    }
                }
            }
            self.call_hooks(vec![Hook::RegisterFailureDetector {
                peer: task.from_peer.id,
                region_id: task.region_id,
            }]);
            return Flow::Continue;
        }
        let cause = self.state.rollback.clone().map(|error| error.message);
        self.emit(MigrationEvent::RollbackFinished {
            succeeded: true,
            error: None,
        });
        let outcome = if self.state.cancelled_by.is_some() || self.state.state == StateName::Abort {
            Outcome::Aborted
        } else {
            Outcome::Failed
        };
        self.emit(MigrationEvent::Finished {
            outcome,
            error: cause,
        });
        Flow::Continue
    }
}

enum GiveUp {
    SlowPath,
    Rollback,
}

fn clear_downgrading(region: &mut RegionRoute) {
    region.leader_state = None;
    region.leader_down_since_ms = None;
}
