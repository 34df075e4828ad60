//! The folded state of a migration: everything the original kept in memory, derived from
//! the procedure's events, so a resumed procedure has exactly what it had.

use std::collections::BTreeMap;

use serde::Serialize;

use super::events::{
    MigrationEvent, MigrationTask, Outcome, RetryPolicy, StateName, StepError, TimedEvent,
    WaitReason,
};
use crate::domain::{
    DatanodeTable, Instruction, InstructionKind, Peer, PeerId, Reply, TableRoute, WalKind,
};

/// The name of [`Status::HistoryMissing`].
pub const HISTORY_MISSING_STATUS: &str = "history_missing";

/// Where the procedure stands, coarsely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Status {
    /// Working on its current state.
    Running,
    /// Waiting until a time (attempt interval or lease expiry).
    Waiting {
        /// Until when.
        until_ms: u64,
        /// Why.
        reason: WaitReason,
    },
    /// Backing off before a framework retry.
    Retrying {
        /// When the retry is due.
        until_ms: u64,
    },
    /// Undoing what it did.
    RollingBack,
    /// Ended in End.
    Completed,
    /// Chose Abort, or was cancelled, and rolled back.
    Aborted,
    /// Failed.
    Failed,
    /// Its history was cut: `regmig log salvage` found events of it missing from
    /// `missing_from_seq` on, closed it and wrote a marker there, so no engine runs it and how
    /// it ended is unknown (check the region on the cluster). The fold never gives this
    /// status (it sees events, not the marker): a history read from the log does
    /// ([`crate::engine::store::History::status`]).
    HistoryMissing {
        /// The first seq of the procedure that is missing.
        missing_from_seq: u64,
    },
}

impl Status {
    /// The name shown in lists.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Waiting { .. } => "waiting",
            Status::Retrying { .. } => "retrying",
            Status::RollingBack => "rolling_back",
            Status::Completed => "completed",
            Status::Aborted => "aborted",
            Status::Failed => "failed",
            Status::HistoryMissing { .. } => HISTORY_MISSING_STATUS,
        }
    }
}

/// An instruction sent and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outstanding {
    /// To whom.
    pub peer: Peer,
    /// What.
    pub instruction: Instruction,
    /// The mailbox timeout of the first send.
    pub timeout_ms: u64,
    /// When the answer is due at the latest.
    pub deadline_ms: u64,
    /// When it was first sent (operation time counts from here); after a resume, when it
    /// was re-sent.
    pub first_sent_at_ms: u64,
    /// Set by a resume: the time before the crash is charged, the re-send counts afresh.
    pub interrupted: bool,
    /// The attempt within the state visit.
    pub attempt: u32,
}

/// What answered the last instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Answer {
    /// A reply.
    Reply(Reply),
    /// The mailbox timed out.
    Timeout,
    /// The peer was unreachable.
    Unreachable,
}

/// A finished instruction, waiting for the current state to act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answered {
    /// What had been asked.
    pub asked: InstructionKind,
    /// The peer.
    pub peer: PeerId,
    /// What came back.
    pub answer: Answer,
}

/// The result of the last route compare-and-swap, waiting to be acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CasResult {
    /// Applied.
    Applied,
    /// Lost to a concurrent writer.
    Refused,
}

/// Progress inside one visit of a state; reset when a state is entered, a retry is
/// scheduled, or a rollback starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StepProgress {
    /// Instructions sent in this visit (re-sends not counted).
    pub attempts: u32,
    /// The last answer, not yet acted on.
    pub answered: Option<Answered>,
    /// The last CAS result, not yet acted on.
    pub cas: Option<CasResult>,
    /// A metadata failure, not yet acted on.
    pub metadata_error: Option<String>,
    /// Whether the read of a datanode table found nothing.
    pub datanode_table_missing: bool,
    /// Whether an in-state attempt interval or lease wait has elapsed.
    pub waited: bool,
    /// Whether the slow path's lease wait was chosen.
    pub slow_path: bool,
    /// Whether the hooks after a route change have been called.
    pub hooks_called: bool,
    /// The old leader's last heartbeat, once read in this visit (`Some(None)`: unknown).
    pub last_heartbeat: Option<Option<u64>>,
    /// The old leader this visit's downgrade found unreachable (evidence for refusing a
    /// cancel while its lease runs out: see `check_cancel`).
    pub leader_unreachable: Option<PeerId>,
    /// When [`StepProgress::last_heartbeat`] was read (how stale the heartbeat was then).
    pub last_heartbeat_read_at_ms: Option<u64>,
}

/// A cached route read, dropped whenever it may be stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedRoute {
    /// The version read; `None` when the table has no route.
    pub version: Option<u64>,
    /// The route; `None` when the table has no route.
    pub route: Option<TableRoute>,
}

/// Which instructions a count in [`Counters::sent`] is of: to which datanode, of which
/// kind. Spelled `PEER.kind` ("2.open_region") in text and as a JSON key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SentKey {
    /// The datanode sent to.
    pub peer: PeerId,
    /// What was sent.
    pub kind: InstructionKind,
}

impl SentKey {
    /// Instructions of `kind` sent to `peer`.
    pub fn new(peer: PeerId, kind: InstructionKind) -> Self {
        SentKey { peer, kind }
    }
}

impl std::fmt::Display for SentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.peer, self.kind.name())
    }
}

impl Serialize for SentKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Summary figures for the CLI: reporting only, folded from each event alone by
/// [`Counters::count`]; part of the [`MigrationReport`], which `decide` cannot see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Instructions sent, by datanode and kind (re-sends included).
    pub sent: BTreeMap<SentKey, u64>,
    /// Framework retries scheduled (rollback retries included).
    pub retries: u32,
    /// Lease waits of the slow path.
    pub slow_path_waits: u32,
    /// Re-sends after a restart.
    pub resends: u32,
    /// Times the procedure was resumed after a restart.
    pub resumes: u32,
    /// Time spent waiting for locks.
    pub lock_wait_ms: u64,
    /// Events folded.
    pub events: u64,
}

impl Counters {
    /// Counts one event.
    pub fn count(&mut self, event: &MigrationEvent) {
        self.events += 1;
        match event {
            MigrationEvent::LocksAcquired { waited_ms, .. } => {
                self.lock_wait_ms = self.lock_wait_ms.saturating_add(*waited_ms)
            }
            MigrationEvent::Resumed => self.resumes += 1,
            MigrationEvent::InstructionSent {
                peer,
                instruction,
                resend,
                ..
            } => {
                if *resend {
                    self.resends += 1;
                }
                *self
                    .sent
                    .entry(SentKey::new(peer.id, instruction.kind()))
                    .or_insert(0) += 1;
            }
            MigrationEvent::WaitStarted { reason, .. } if *reason == WaitReason::LeaseExpiry => {
                self.slow_path_waits += 1
            }
            MigrationEvent::RetryScheduled { .. } => self.retries += 1,
            _ => {}
        }
    }
}

/// A migration procedure's state, derived by folding its events: what decisions need
/// ([`DecisionState`], all `decide` is given) apart from what only people and tools read
/// ([`MigrationReport`]), as raft-rs keeps its hard state apart from its soft state.
///
/// It dereferences to its decision part, so `state.task` reads the task; the report is
/// `state.report`. Both serialize flat, as one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationState {
    /// What `decide` reads.
    #[serde(flatten)]
    pub decision: DecisionState,
    /// What only reporting reads.
    #[serde(flatten)]
    pub report: MigrationReport,
}

impl std::ops::Deref for MigrationState {
    type Target = DecisionState;

    fn deref(&self) -> &DecisionState {
        &self.decision
    }
}

/// What a procedure's decisions depend on, folded from its events: the only state
/// [`decide`](super::decide()) is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionState {
    /// The task; `None` until the submitted event is folded.
    pub task: Option<MigrationTask>,
    /// Lock keys: catalog.
    pub catalog: String,
    /// Lock keys: schema.
    pub schema: String,
    /// The table's WAL kind.
    pub wal: WalKind,
    /// How it retries.
    pub policy: RetryPolicy,
    /// The current state.
    pub state: StateName,
    /// Whether a state was entered yet (a new procedure enters Start first).
    #[serde(skip)]
    pub started: bool,
    /// Why Abort was chosen.
    pub abort_reason: Option<String>,
    /// Whether the procedure holds its locks (never true right after a restart).
    pub locks_held: bool,
    /// The old leader's lease deadline, while one is set.
    pub lease_deadline_ms: Option<u64>,
    /// Time spent in downgrade and upgrade operations.
    pub operations_elapsed_ms: u64,
    /// Framework retries used.
    pub retries_used: u32,
    /// Rollback retries used.
    pub rollback_retries_used: u32,
    /// The old leader's last entry id, from its downgrade reply.
    pub last_entry_id: Option<u64>,
    /// The instruction sent and not answered, if any.
    pub outstanding: Option<Outstanding>,
    /// A wait in progress.
    pub waiting: Option<(u64, WaitReason)>,
    /// Progress inside the current state visit.
    pub step: StepProgress,
    /// The last route read, while it can be trusted.
    pub route: Option<CachedRoute>,
    /// The old leader's datanode table, once read.
    pub from_datanode_table: Option<DatanodeTable>,
    /// Set once the new route (leader = to_peer) is known to be written.
    pub new_route_written: bool,
    /// Set while rolling back: the failure that caused it.
    pub rollback: Option<StepError>,
    /// Who cancelled, and why.
    pub cancelled_by: Option<(String, String)>,
    /// The terminal outcome.
    pub outcome: Option<Outcome>,
    /// When the last event was recorded (a resume charges an outstanding operation up to it).
    pub last_event_at_ms: u64,
    /// Events folded so far (numbers the event a [`FoldError`] names).
    #[serde(skip)]
    pub events_folded: u64,
    /// The first assumption the folded log broke, if any; `decide` refuses such a state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<FoldError>,
}

/// What a procedure's events tell people and tools beyond what its decisions need: who
/// asked, the states it went through and when, how it ended, the summary figures. Folded
/// beside the [`DecisionState`]; `decide` never sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// What asked for it.
    pub trigger: String,
    /// The operator's reason, if any.
    pub reason: Option<String>,
    /// Who asked for it, if recorded.
    pub actor: Option<String>,
    /// When it was submitted.
    pub submitted_at_ms: u64,
    /// States entered, in order (repeats kept).
    pub path: Vec<StateName>,
    /// Time each state visit began: (state, entered_at_ms).
    pub state_times: Vec<(StateName, u64)>,
    /// The error of the last rollback attempt that failed (it is being retried).
    pub rollback_last_error: Option<String>,
    /// Whether a rollback ran to completion.
    pub rolled_back: bool,
    /// The final error.
    pub final_error: Option<String>,
    /// When the procedure finished.
    pub finished_at_ms: Option<u64>,
    /// Summary figures.
    pub counters: Counters,
    /// The batch this procedure's region belongs to (spec R2.5); `None` for a single
    /// migration.
    pub batch: Option<BatchMembership>,
}

/// How a procedure's log breaks what folding assumes of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "broken")]
pub enum FoldError {
    /// The first event is not `Submitted`: the log does not start with its task.
    #[error("event 1 is {kind}, but a procedure's log starts with Submitted")]
    NotStartedBySubmitted {
        /// The first event's kind name.
        kind: &'static str,
    },
    /// A second `Submitted`: a procedure has one task.
    #[error("event {event_number} is a second Submitted")]
    SubmittedTwice {
        /// Its position in the log (1-based).
        event_number: u64,
    },
    /// A datanode's answer with no instruction outstanding: nothing says what it answers.
    #[error(
        "event {event_number} ({kind}) answers peer {peer}, but no instruction is outstanding"
    )]
    AnswerWithoutInstruction {
        /// Its position in the log (1-based).
        event_number: u64,
        /// Its kind name.
        kind: &'static str,
        /// The peer that answered.
        peer: PeerId,
    },
}

/// A procedure's place in a batch, from its [`MigrationEvent::BatchJoined`] event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchMembership {
    /// The batch's id.
    pub batch_id: uuid::Uuid,
    /// Every region the batch was asked to move.
    pub regions: Vec<crate::domain::RegionId>,
}

/// How a batch ended as a whole, from the outcomes of its regions (spec R2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchOutcome {
    /// Every region completed (or was already on the target).
    Completed,
    /// Some regions completed and some did not.
    Partial,
    /// No region completed and at least one was aborted (and none failed).
    Aborted,
    /// No region completed and at least one failed.
    Failed,
}

impl BatchOutcome {
    /// The name used in scenario files and CLI output.
    pub fn name(self) -> &'static str {
        match self {
            BatchOutcome::Completed => "completed",
            BatchOutcome::Partial => "partial",
            BatchOutcome::Aborted => "aborted",
            BatchOutcome::Failed => "failed",
        }
    }

    /// The batch's outcome once every region has one; `None` while any region is open
    /// (`None` in `regions`) or when the batch has no region at all.
    pub fn of(regions: &[Option<Outcome>]) -> Option<BatchOutcome> {
        if regions.is_empty() || regions.iter().any(Option::is_none) {
            return None;
        }
        let completed = regions
            .iter()
            .filter(|outcome| **outcome == Some(Outcome::Completed))
            .count();
        Some(if completed == regions.len() {
            BatchOutcome::Completed
        } else if completed > 0 {
            BatchOutcome::Partial
        } else if regions.contains(&Some(Outcome::Failed)) {
            BatchOutcome::Failed
        } else {
            BatchOutcome::Aborted
        })
    }
}

impl Default for DecisionState {
    fn default() -> Self {
        DecisionState {
            task: None,
            catalog: String::new(),
            schema: String::new(),
            wal: WalKind::Local,
            policy: RetryPolicy::default(),
            state: StateName::Start,
            started: false,
            abort_reason: None,
            locks_held: false,
            lease_deadline_ms: None,
            operations_elapsed_ms: 0,
            retries_used: 0,
            rollback_retries_used: 0,
            last_entry_id: None,
            outstanding: None,
            waiting: None,
            step: StepProgress::default(),
            route: None,
            from_datanode_table: None,
            new_route_written: false,
            rollback: None,
            cancelled_by: None,
            outcome: None,
            last_event_at_ms: 0,
            events_folded: 0,
            broken: None,
        }
    }
}

impl MigrationState {
    /// Folds one event into both parts. An event that breaks what folding assumes (see
    /// [`FoldError`]) is recorded in [`DecisionState::broken`] (the first one only), never
    /// replaced by a guess.
    pub fn apply(&mut self, at_ms: u64, event: &MigrationEvent) {
        self.report.apply(at_ms, event);
        self.decision.apply(at_ms, event);
    }
}

impl MigrationReport {
    /// Folds one event into the report.
    pub fn apply(&mut self, at_ms: u64, event: &MigrationEvent) {
        self.counters.count(event);
        match event {
            MigrationEvent::Submitted {
                trigger,
                reason,
                actor,
                ..
            } => {
                self.trigger = trigger.clone();
                self.reason = reason.clone();
                self.actor = actor.clone();
                self.submitted_at_ms = at_ms;
            }
            MigrationEvent::StateEntered { state, .. } => {
                self.path.push(*state);
                self.state_times.push((*state, at_ms));
            }
            MigrationEvent::RetryScheduled {
                rollback: true,
                error,
                ..
            } => self.rollback_last_error = Some(error.message.clone()),
            MigrationEvent::RollbackFinished { succeeded, .. } => self.rolled_back = *succeeded,
            MigrationEvent::BatchJoined { batch_id, regions } => {
                self.batch = Some(BatchMembership {
                    batch_id: *batch_id,
                    regions: regions.clone(),
                });
            }
            MigrationEvent::Finished { error, .. } => {
                self.final_error = error.clone();
                self.finished_at_ms = Some(at_ms);
            }
            _ => {}
        }
    }

    /// The states entered, each consecutive repeat collapsed into one (scenario `path`).
    pub fn collapsed_path(&self) -> Vec<StateName> {
        let mut path: Vec<StateName> = Vec::with_capacity(self.path.len());
        for state in &self.path {
            if path.last() != Some(state) {
                path.push(*state);
            }
        }
        path
    }
}

impl DecisionState {
    /// The coarse status.
    pub fn status(&self) -> Status {
        match self.outcome {
            Some(Outcome::Completed) => return Status::Completed,
            Some(Outcome::Aborted) => return Status::Aborted,
            Some(Outcome::Failed) => return Status::Failed,
            None => {}
        }
        match self.waiting {
            Some((until_ms, WaitReason::Backoff)) => Status::Retrying { until_ms },
            Some((_, WaitReason::RollbackBackoff)) => Status::RollingBack,
            Some((until_ms, reason)) => Status::Waiting { until_ms, reason },
            None if self.rollback.is_some() => Status::RollingBack,
            None => Status::Running,
        }
    }

    /// Whether the procedure has ended.
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    /// What is left of the timeout budget for downgrade and upgrade operations.
    pub fn remaining_budget_ms(&self) -> u64 {
        let timeout_ms = self.task.as_ref().map(|t| t.timeout_ms).unwrap_or(0);
        timeout_ms.saturating_sub(self.operations_elapsed_ms)
    }

    /// Framework retries left.
    pub fn retries_left(&self) -> u32 {
        self.policy.retries_max.saturating_sub(self.retries_used)
    }

    /// Folds one event into the decision part. An event that breaks what folding assumes
    /// (see [`FoldError`]) is recorded in [`DecisionState::broken`] (the first one only),
    /// never replaced by a guess.
    pub fn apply(&mut self, at_ms: u64, event: &MigrationEvent) {
        let previous_event_at_ms = self.last_event_at_ms;
        self.last_event_at_ms = at_ms;
        self.events_folded += 1;
        // Without a task, every event so far was this one or already broke.
        let submitted = matches!(event, MigrationEvent::Submitted { .. });
        if self.task.is_none() && !submitted {
            self.break_on(FoldError::NotStartedBySubmitted { kind: event.name() });
        } else if self.task.is_some() && submitted {
            self.break_on(FoldError::SubmittedTwice {
                event_number: self.events_folded,
            });
        }
        match event {
            MigrationEvent::Submitted {
                task,
                catalog,
                schema,
                wal,
                policy,
                ..
            } => {
                self.task = Some(task.clone());
                self.catalog = catalog.clone();
                self.schema = schema.clone();
                self.wal = *wal;
                self.policy = policy.clone();
                self.state = StateName::Start;
            }
            MigrationEvent::LockWaitStarted { .. } => {}
            MigrationEvent::LocksAcquired { .. } => {
                self.locks_held = true;
            }
            MigrationEvent::Resumed => {
                // Locks and cached reads live in memory only: a restart drops them, and a CAS
                // may have been applied without its event, so every read is done again.
                self.locks_held = false;
                self.route = None;
                self.from_datanode_table = None;
                self.step.cas = None;
                self.step.metadata_error = None;
                // R2.7: a downgrade or upgrade outstanding at the crash is charged up to the
                // last event before the crash; the downtime is not charged, and its re-send
                // counts afresh from when it is sent.
                let revision_two = self.policy.revision_two();
                if let Some(outstanding) = &mut self.outstanding {
                    if revision_two && is_budgeted(outstanding.instruction.kind()) {
                        self.operations_elapsed_ms = self.operations_elapsed_ms.saturating_add(
                            previous_event_at_ms.saturating_sub(outstanding.first_sent_at_ms),
                        );
                        outstanding.interrupted = true;
                    }
                }
            }
            MigrationEvent::StateEntered { state, reason } => {
                self.state = *state;
                if *state == StateName::Abort {
                    self.abort_reason = reason.clone();
                }
                self.started = true;
                self.step = StepProgress::default();
                // R2.6: the table lock is not held between states, so a route write reads
                // the route afresh (under the lock) instead of trusting an older read.
                if self.policy.revision_two()
                    && matches!(
                        state,
                        StateName::UpdateMetadataDowngrade
                            | StateName::UpdateMetadataUpgrade
                            | StateName::UpdateMetadataRollback
                    )
                {
                    self.route = None;
                }
            }
            MigrationEvent::RouteRead { version, route, .. } => {
                self.route = Some(CachedRoute {
                    version: *version,
                    route: route.clone(),
                });
            }
            MigrationEvent::DatanodeTableRead { datanode_table, .. } => {
                self.from_datanode_table = datanode_table.clone();
                self.step.datanode_table_missing = datanode_table.is_none();
            }
            MigrationEvent::MetadataFailed { operation, error } => {
                self.route = None;
                self.step.metadata_error = Some(format!("{operation}: {error}"));
            }
            MigrationEvent::InstructionSent {
                peer,
                instruction,
                timeout_ms,
                deadline_ms,
                attempt,
                resend,
                ..
            } => {
                // A re-send after a resume counts from now (its earlier part was charged at
                // the resume); any other keeps the first send's time.
                let first_sent_at_ms = match (&self.outstanding, resend) {
                    (Some(previous), true) if !previous.interrupted => previous.first_sent_at_ms,
                    _ => at_ms,
                };
                if !*resend {
                    self.step.attempts += 1;
                }
                self.step.waited = false;
                self.outstanding = Some(Outstanding {
                    peer: peer.clone(),
                    instruction: instruction.clone(),
                    timeout_ms: *timeout_ms,
                    deadline_ms: *deadline_ms,
                    first_sent_at_ms,
                    interrupted: false,
                    attempt: *attempt,
                });
            }
            MigrationEvent::ReplyReceived { peer, reply } => {
                if let Reply::DowngradeRegion {
                    last_entry_id: Some(last_entry_id),
                    exists: true,
                    error: None,
                } = reply
                {
                    self.last_entry_id = Some(*last_entry_id);
                }
                self.answer(*peer, Answer::Reply(reply.clone()), event.name());
            }
            MigrationEvent::MailboxTimedOut { peer, .. }
            | MigrationEvent::InstructionExpired { peer, .. } => {
                self.answer(*peer, Answer::Timeout, event.name())
            }
            MigrationEvent::PeerUnreachable { peer, instruction } => {
                if *instruction == InstructionKind::DowngradeRegion {
                    self.step.leader_unreachable = Some(*peer);
                }
                self.answer(*peer, Answer::Unreachable, event.name())
            }
            MigrationEvent::OperationTimed { elapsed_ms, .. } => {
                self.operations_elapsed_ms = self.operations_elapsed_ms.saturating_add(*elapsed_ms);
            }
            MigrationEvent::RouteCasApplied { change, .. } => {
                self.route = None;
                self.step.cas = Some(CasResult::Applied);
                if *change == super::events::RouteChange::Upgrade {
                    self.new_route_written = true;
                }
            }
            MigrationEvent::RouteCasRefused { .. } => {
                self.route = None;
                self.step.cas = Some(CasResult::Refused);
            }
            MigrationEvent::LeaseDeadlineSet { deadline_ms } => {
                self.lease_deadline_ms = Some(*deadline_ms);
            }
            MigrationEvent::LeaseDeadlineReset => self.lease_deadline_ms = None,
            MigrationEvent::WaitStarted { until_ms, reason } => {
                self.waiting = Some((*until_ms, *reason));
                self.step.answered = None;
                if *reason == WaitReason::LeaseExpiry {
                    self.step.slow_path = true;
                }
            }
            MigrationEvent::WaitElapsed => {
                if let Some((_, reason)) = self.waiting.take() {
                    if matches!(
                        reason,
                        WaitReason::AttemptInterval | WaitReason::LeaseExpiry
                    ) {
                        self.step.waited = true;
                    }
                }
            }
            MigrationEvent::RetryScheduled {
                due_at_ms,
                rollback,
                ..
            } => {
                if *rollback {
                    self.rollback_retries_used += 1;
                    self.waiting = Some((*due_at_ms, WaitReason::RollbackBackoff));
                } else {
                    self.retries_used += 1;
                    self.waiting = Some((*due_at_ms, WaitReason::Backoff));
                }
                self.outstanding = None;
                self.step = StepProgress::default();
            }
            MigrationEvent::HooksCalled { .. } => self.step.hooks_called = true,
            MigrationEvent::OperatorCancelled { actor, reason } => {
                self.cancelled_by = Some((actor.clone(), reason.clone()));
                self.outstanding = None;
                self.waiting = None;
                self.step = StepProgress::default();
            }
            MigrationEvent::CancelRefused { .. } => {}
            MigrationEvent::RollbackStarted { error } => {
                self.rollback = Some(error.clone());
                self.outstanding = None;
                self.waiting = None;
                self.route = None;
                self.step = StepProgress::default();
            }
            MigrationEvent::RollbackFinished { .. } => {
                self.step = StepProgress::default();
            }
            MigrationEvent::LastHeartbeatRead {
                last_heartbeat_ms, ..
            } => {
                self.step.last_heartbeat = Some(*last_heartbeat_ms);
                self.step.last_heartbeat_read_at_ms = Some(at_ms);
            }
            MigrationEvent::BatchJoined { .. } => {}
            MigrationEvent::Finished { outcome, .. } => {
                self.outcome = Some(*outcome);
                self.outstanding = None;
                self.waiting = None;
            }
        }
    }

    fn answer(&mut self, peer: PeerId, answer: Answer, kind: &'static str) {
        let Some(outstanding) = self.outstanding.take() else {
            self.break_on(FoldError::AnswerWithoutInstruction {
                event_number: self.events_folded,
                kind,
                peer,
            });
            return;
        };
        self.step.answered = Some(Answered {
            asked: outstanding.instruction.kind(),
            peer,
            answer,
        });
    }

    /// Keeps the first broken assumption.
    fn break_on(&mut self, error: FoldError) {
        if self.broken.is_none() {
            self.broken = Some(error);
        }
    }
}

/// Whether an instruction's time is charged to the migration's timeout budget.
pub fn is_budgeted(kind: InstructionKind) -> bool {
    matches!(
        kind,
        InstructionKind::DowngradeRegion | InstructionKind::UpgradeRegion
    )
}

/// Folds a procedure's events, in order, into its state; a broken assumption is kept in
/// [`DecisionState::broken`] (tools that show a damaged log still see the rest).
pub fn fold<'a>(events: impl IntoIterator<Item = &'a TimedEvent>) -> MigrationState {
    let mut state = MigrationState::default();
    for timed in events {
        state.apply(timed.at_ms, &timed.event);
    }
    state
}

/// Folds only the decision part of a procedure's events (what replaying decisions needs).
pub fn fold_decision<'a>(events: impl IntoIterator<Item = &'a TimedEvent>) -> DecisionState {
    let mut state = DecisionState::default();
    for timed in events {
        state.apply(timed.at_ms, &timed.event);
    }
    state
}

/// Folds a procedure's events into its state, or says which assumption the log breaks.
pub fn try_fold<'a>(
    events: impl IntoIterator<Item = &'a TimedEvent>,
) -> Result<MigrationState, FoldError> {
    let state = fold(events);
    match state.decision.broken {
        Some(error) => Err(error),
        None => Ok(state),
    }
}
