//! The events of a migration: everything a procedure did and everything it was told.
//!
//! Each event has a stable kind code (stored in the log envelope) and a name an operator can
//! read. Payloads are encoded with rmp-serde's *named* form, so fields can be added later.

use serde::{Deserialize, Serialize};

use crate::domain::{
    DatanodeTable, Instruction, InstructionKind, Peer, PeerId, RegionId, Reply, TableId,
    TableRoute, WalKind,
};

/// One region migration as submitted: what moves where, within which time budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationTask {
    /// The region to move.
    pub region_id: RegionId,
    /// Its current leader.
    pub from_peer: Peer,
    /// Its new leader.
    pub to_peer: Peer,
    /// Budget for the downgrade and upgrade operations together.
    pub timeout_ms: u64,
}

/// Default timeout of a migration's downgrade and upgrade operations.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// How a procedure retries. Recorded in the submitted event, so a restart never changes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Framework retries of a state that failed with a retryable error, per procedure.
    pub retries_max: u32,
    /// The first framework backoff; each later one doubles.
    pub initial_backoff_ms: u64,
    /// Random extra delay on each backoff, at most this percentage of it.
    pub jitter_percent_max: u32,
    /// Attempts at a downgrade or an upgrade inside one visit of its state.
    pub in_state_attempts_max: u32,
    /// Pause between two such attempts.
    pub in_state_retry_interval_ms: u64,
    /// Retries of the rollback itself. Revision 1 only: since revision 2 (R2.4) a rollback
    /// retries without limit, with its backoff capped at 30 s, so that no region is left
    /// Downgrading. Kept so that older logs decode.
    pub rollback_retries_max: u32,
    /// Whether an upgrade must report `ready` (the candidate caught up) to succeed.
    pub require_ready: bool,
    /// The behaviour revision the procedure follows ([`BEHAVIOUR_REVISION`] for new ones).
    /// A procedure submitted by an older version (its log has no such field: revision 1)
    /// keeps the rules it started with, so replaying its log decides exactly as recorded.
    #[serde(default = "revision_one")]
    pub revision: u32,
}

/// The behaviour revision of this version. Revision 2 is `shared/spec/region-migration.md`
/// "Revision 2" (late replies taken, FlushLeaderRegion, lease waits from the last heartbeat,
/// endless rollback, the table lock only around route writes, downtime not charged).
/// Revision 3 (issue 15) changes one thing: after a restart, an outstanding instruction with
/// no time left to wait is recorded as timed out, not re-sent with a zero timeout (which
/// recorded a send the mailbox never got).
/// Revision 4 (issue 18) changes one thing: a cancel is refused while the downgrade found
/// the old leader unreachable, its last heartbeat is older than one heartbeat interval, and
/// the procedure waits out its lease (see
/// [`check_cancel`](crate::migration::check_cancel)): a rollback then would hand the
/// region back to a leader nobody can reach. Earlier revisions took such a cancel.
pub const BEHAVIOUR_REVISION: u32 = 4;

fn revision_one() -> u32 {
    1
}

impl RetryPolicy {
    /// Whether the procedure follows revision 2 of the behaviour.
    pub fn revision_two(&self) -> bool {
        self.revision >= 2
    }

    /// Whether a re-send with no time left is recorded as a timeout instead of a send
    /// (revision 3, see [`BEHAVIOUR_REVISION`]).
    pub fn times_out_a_resend_with_no_time_left(&self) -> bool {
        self.revision >= 3
    }

    /// Whether a cancel is refused while the old leader is unreachable and the procedure
    /// waits out its lease (revision 4, see [`BEHAVIOUR_REVISION`]).
    pub fn refuses_a_cancel_that_strands_the_region(&self) -> bool {
        self.revision >= 4
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries_max: 3,
            initial_backoff_ms: 500,
            jitter_percent_max: 25,
            in_state_attempts_max: 3,
            in_state_retry_interval_ms: 500,
            rollback_retries_max: 3,
            require_ready: true,
            revision: BEHAVIOUR_REVISION,
        }
    }
}

/// The states of a migration, named as in the scenario spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StateName {
    /// Reads the route and picks the first real step.
    Start,
    /// Opens the candidate region on the target peer.
    OpenCandidateRegion,
    /// Marks the leader Downgrading in the route.
    UpdateMetadataDowngrade,
    /// Downgrades the old leader.
    DowngradeLeaderRegion,
    /// Upgrades the candidate once it has replayed the WAL.
    UpgradeCandidateRegion,
    /// Writes the new route.
    UpdateMetadataUpgrade,
    /// Clears Downgrading after a failed upgrade.
    UpdateMetadataRollback,
    /// Closes the old leader's region.
    CloseDowngradedRegion,
    /// Done: the region moved (or had already).
    End,
    /// The state machine gave up; the procedure rolls back.
    Abort,
    /// Flushes the leader before it is marked Downgrading (revision 2, R2.2). Declared last
    /// so the older variants keep their positions.
    FlushLeaderRegion,
}

impl StateName {
    /// Every state.
    pub const ALL: [StateName; 11] = [
        StateName::Start,
        StateName::OpenCandidateRegion,
        StateName::FlushLeaderRegion,
        StateName::UpdateMetadataDowngrade,
        StateName::DowngradeLeaderRegion,
        StateName::UpgradeCandidateRegion,
        StateName::UpdateMetadataUpgrade,
        StateName::UpdateMetadataRollback,
        StateName::CloseDowngradedRegion,
        StateName::End,
        StateName::Abort,
    ];

    /// The name used in scenario files and CLI output.
    pub fn name(self) -> &'static str {
        match self {
            StateName::Start => "Start",
            StateName::OpenCandidateRegion => "OpenCandidateRegion",
            StateName::FlushLeaderRegion => "FlushLeaderRegion",
            StateName::UpdateMetadataDowngrade => "UpdateMetadata::Downgrade",
            StateName::DowngradeLeaderRegion => "DowngradeLeaderRegion",
            StateName::UpgradeCandidateRegion => "UpgradeCandidateRegion",
            StateName::UpdateMetadataUpgrade => "UpdateMetadata::Upgrade",
            StateName::UpdateMetadataRollback => "UpdateMetadata::Rollback",
            StateName::CloseDowngradedRegion => "CloseDowngradedRegion",
            StateName::End => "End",
            StateName::Abort => "Abort",
        }
    }

    /// Parses a state name as written in scenario files.
    pub fn from_name(name: &str) -> Option<StateName> {
        StateName::ALL
            .into_iter()
            .find(|state| state.name() == name)
    }

    /// Whether a cancel may still roll the migration back from this state.
    pub fn cancellable(self) -> bool {
        !matches!(
            self,
            StateName::UpdateMetadataUpgrade | StateName::CloseDowngradedRegion | StateName::End
        )
    }
}

impl std::fmt::Display for StateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of failure a step met; the message says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The metadata store failed a read or write.
    MetadataStore,
    /// The table has no route.
    TableRouteNotFound,
    /// The table's route has no such region.
    RegionRouteNotFound,
    /// The table is logical: it has no regions of its own.
    LogicalTable,
    /// The region's route names no leader.
    NoLeader,
    /// The old leader's datanode table is missing.
    DatanodeTableNotFound,
    /// The candidate could not be opened.
    OpenRegionFailed,
    /// The datanode did not answer in time.
    MailboxTimeout,
    /// There is no channel to the datanode.
    Unreachable,
    /// The datanode answered with a reply of another kind.
    UnexpectedReply,
    /// A route compare-and-swap lost to a concurrent writer.
    CasConflict,
    /// The route changed under the migration in a way it cannot continue from.
    UnexpectedRoute,
    /// The framework retry budget is used up.
    RetryBudgetExhausted,
    /// The state machine chose Abort.
    MigrationAborted,
    /// An operator cancelled the migration.
    Cancelled,
}

impl ErrorKind {
    /// The snake_case name, as serialized in events and used in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::MetadataStore => "metadata_store",
            ErrorKind::TableRouteNotFound => "table_route_not_found",
            ErrorKind::RegionRouteNotFound => "region_route_not_found",
            ErrorKind::LogicalTable => "logical_table",
            ErrorKind::NoLeader => "no_leader",
            ErrorKind::DatanodeTableNotFound => "datanode_table_not_found",
            ErrorKind::OpenRegionFailed => "open_region_failed",
            ErrorKind::MailboxTimeout => "mailbox_timeout",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::UnexpectedReply => "unexpected_reply",
            ErrorKind::CasConflict => "cas_conflict",
            ErrorKind::UnexpectedRoute => "unexpected_route",
            ErrorKind::RetryBudgetExhausted => "retry_budget_exhausted",
            ErrorKind::MigrationAborted => "migration_aborted",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

/// A step's failure, as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A sentence naming what failed.
    pub message: String,
    /// Whether the framework retries the state.
    pub retryable: bool,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a procedure is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Framework backoff before retrying a state.
    Backoff,
    /// Backoff before retrying the rollback.
    RollbackBackoff,
    /// The pause between two in-state attempts.
    AttemptInterval,
    /// The slow path: waiting out the old leader's lease.
    LeaseExpiry,
}

/// Which route change a compare-and-swap made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteChange {
    /// Mark the leader Downgrading.
    Downgrade,
    /// Make the candidate the leader.
    Upgrade,
    /// Clear Downgrading (UpdateMetadata::Rollback or the framework rollback).
    ClearDowngrading,
}

/// A side effect whose failure is only logged; also what a fake cluster records of the
/// engine's calls on its hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// Watch (peer, region) for failures again.
    RegisterFailureDetector {
        /// The peer.
        peer: PeerId,
        /// The region.
        region_id: RegionId,
    },
    /// Stop watching (peer, region).
    DeregisterFailureDetector {
        /// The peer.
        peer: PeerId,
        /// The region.
        region_id: RegionId,
    },
    /// Drop cached routes of a table.
    InvalidateTableCache {
        /// The table.
        table_id: TableId,
    },
}

/// How a procedure ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ended in End.
    Completed,
    /// The state machine chose Abort (or an operator cancelled) and the procedure rolled back.
    Aborted,
    /// A non-retryable error or a used-up budget; rolled back, or its rollback failed too.
    Failed,
}

impl Outcome {
    /// The name used in scenario files and CLI output.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "failed",
        }
    }
}

/// Everything that can happen to a migration procedure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MigrationEvent {
    /// The task was accepted; always the first event.
    Submitted {
        /// What moves where.
        task: MigrationTask,
        /// The table's catalog (lock key).
        catalog: String,
        /// The table's schema (lock key).
        schema: String,
        /// The table's WAL kind (decides `reject_write`).
        wal: WalKind,
        /// How the procedure retries.
        policy: RetryPolicy,
        /// What asked for it (e.g. "rebalance", "evacuate peer 3", "operator").
        trigger: String,
        /// The operator's reason, if any.
        reason: Option<String>,
        /// Who asked for it (a person or a service), if known. Added after format 2's first
        /// logs: absent in older records (read as `None`) and not written when `None`, so
        /// a submit without an actor encodes exactly as before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor: Option<String>,
    },
    /// The procedure waits for a lock another procedure holds.
    LockWaitStarted {
        /// The contended lock.
        lock_key: String,
    },
    /// The procedure holds all its locks.
    LocksAcquired {
        /// The keys held.
        lock_keys: Vec<String>,
        /// How long it waited for them.
        waited_ms: u64,
    },
    /// The engine resumed the procedure after a restart.
    Resumed,
    /// A state was entered.
    StateEntered {
        /// The state.
        state: StateName,
        /// Why Abort was chosen (Abort only).
        reason: Option<String>,
    },
    /// A table route was read.
    RouteRead {
        /// The table.
        table_id: TableId,
        /// The route's version, when it exists.
        version: Option<u64>,
        /// The route, when it exists.
        route: Option<TableRoute>,
    },
    /// A datanode table was read.
    DatanodeTableRead {
        /// The datanode.
        datanode_id: PeerId,
        /// The table.
        table_id: TableId,
        /// The value, when it exists.
        datanode_table: Option<DatanodeTable>,
    },
    /// The metadata store failed a read or a write.
    MetadataFailed {
        /// What was being done.
        operation: String,
        /// The store's error.
        error: String,
    },
    /// An instruction was sent.
    InstructionSent {
        /// To whom.
        peer: Peer,
        /// The full instruction.
        instruction: Instruction,
        /// The mailbox timeout of this send.
        timeout_ms: u64,
        /// When the answer is due at the latest (ms since the epoch).
        deadline_ms: u64,
        /// The attempt within the state visit (1-based).
        attempt: u32,
        /// True when the same instruction is sent again after a restart.
        resend: bool,
        /// Every region the one instruction carried, this one included, in the
        /// instruction's order, when it carried more than this one (a batch's step, spec
        /// R2.5: one instruction per datanode carrying every region in that step); empty
        /// for an instruction about this region alone. Added with batch instructions:
        /// absent in older records (read as empty) and not written when empty, so a single
        /// migration's send encodes exactly as before.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        regions: Vec<RegionId>,
    },
    /// A datanode answered.
    ReplyReceived {
        /// Who answered.
        peer: PeerId,
        /// The full reply.
        reply: Reply,
    },
    /// The mailbox gave up waiting for an answer.
    MailboxTimedOut {
        /// The silent peer.
        peer: PeerId,
        /// What it was asked.
        instruction: InstructionKind,
    },
    /// The peer could not be reached at all.
    PeerUnreachable {
        /// The peer.
        peer: PeerId,
        /// What it was asked.
        instruction: InstructionKind,
    },
    /// Time spent in a downgrade or upgrade operation, charged to the timeout budget.
    OperationTimed {
        /// The operation.
        operation: InstructionKind,
        /// From its first send to its answer (or timeout).
        elapsed_ms: u64,
    },
    /// A route compare-and-swap was applied.
    RouteCasApplied {
        /// The table.
        table_id: TableId,
        /// The change.
        change: RouteChange,
        /// The version it replaced.
        from_version: u64,
        /// The new version.
        to_version: u64,
    },
    /// A route compare-and-swap lost to a concurrent writer.
    RouteCasRefused {
        /// The table.
        table_id: TableId,
        /// The change.
        change: RouteChange,
        /// The version it expected.
        expected_version: u64,
        /// The version found, if any.
        actual_version: Option<u64>,
    },
    /// The old leader's lease deadline was set.
    LeaseDeadlineSet {
        /// The deadline (ms since the epoch).
        deadline_ms: u64,
    },
    /// The old leader acknowledged its downgrade: no lease wait needed.
    LeaseDeadlineReset,
    /// The procedure waits until a time.
    WaitStarted {
        /// Until when (ms since the epoch).
        until_ms: u64,
        /// Why.
        reason: WaitReason,
    },
    /// The wait is over.
    WaitElapsed,
    /// A state failed with a retryable error and will be retried.
    RetryScheduled {
        /// The retry number (1-based), counted over the whole procedure.
        attempt: u32,
        /// Backoff including jitter.
        delay_ms: u64,
        /// When the retry is due (ms since the epoch).
        due_at_ms: u64,
        /// The random value the jitter came from.
        jitter_random: u32,
        /// True for a retry of the rollback.
        rollback: bool,
        /// What failed.
        error: StepError,
    },
    /// Side effects were called (failures are only logged).
    HooksCalled {
        /// The hooks.
        hooks: Vec<Hook>,
    },
    /// An operator cancelled the procedure.
    OperatorCancelled {
        /// Who.
        actor: String,
        /// Why.
        reason: String,
    },
    /// An operator's cancel was refused.
    CancelRefused {
        /// Who asked.
        actor: String,
        /// Why they asked.
        reason: String,
        /// Why it was refused.
        refusal: String,
    },
    /// The procedure started rolling back.
    RollbackStarted {
        /// The failure that caused it.
        error: StepError,
    },
    /// The rollback finished.
    RollbackFinished {
        /// False when the rollback itself failed.
        succeeded: bool,
        /// Why it failed.
        error: Option<String>,
    },
    /// The terminal outcome.
    Finished {
        /// How it ended.
        outcome: Outcome,
        /// The final error (none when completed).
        error: Option<String>,
    },
    /// When the old leader last renewed its leases, as the control plane saw its heartbeats
    /// (revision 2, R2.3); read when the downgrade gives up, so replay decides the same.
    LastHeartbeatRead {
        /// The old leader.
        peer: PeerId,
        /// Its last heartbeat (ms since the epoch); `None` when unknown.
        last_heartbeat_ms: Option<u64>,
    },
    /// The procedure moves one region of a batch (spec R2.5); recorded with the submit, right
    /// after [`MigrationEvent::Submitted`]. Every region of a batch is its own procedure with
    /// its own events, deadline, budget and retries, so each resumes where its events end and
    /// each is rolled back alone; this event ties them together.
    BatchJoined {
        /// The batch's id (shared by all its procedures).
        batch_id: uuid::Uuid,
        /// Every region the batch was asked to move, in the order submitted.
        regions: Vec<RegionId>,
    },
    /// At a resume, the instruction outstanding at the crash had no time left to wait: it
    /// counts as timed out and is not sent again (behaviour revision 3, issue 15; R2.7 never
    /// re-sends with an old deadline, and a zero wait would record a send the mailbox never
    /// got). The procedure goes on as after a [`MigrationEvent::MailboxTimedOut`].
    InstructionExpired {
        /// The peer the instruction was sent to before the crash.
        peer: PeerId,
        /// What it was asked.
        instruction: InstructionKind,
    },
}

/// The role an event plays when a log is replayed against today's decision logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRole {
    /// Something the procedure observed; a decision follows it in the same batch.
    Input,
    /// Produced by `decide`.
    Decision,
    /// Written by the engine outside a decision (submit, lock waits, refused cancels).
    Note,
}

impl MigrationEvent {
    /// The name an operator reads in a list.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind_code()).unwrap_or("Unknown")
    }

    /// How replay treats this event.
    pub fn role(&self) -> EventRole {
        match self {
            MigrationEvent::Submitted { .. }
            | MigrationEvent::LockWaitStarted { .. }
            | MigrationEvent::BatchJoined { .. }
            | MigrationEvent::CancelRefused { .. } => EventRole::Note,
            MigrationEvent::LocksAcquired { .. }
            | MigrationEvent::Resumed
            | MigrationEvent::RouteRead { .. }
            | MigrationEvent::DatanodeTableRead { .. }
            | MigrationEvent::MetadataFailed { .. }
            | MigrationEvent::ReplyReceived { .. }
            | MigrationEvent::MailboxTimedOut { .. }
            | MigrationEvent::PeerUnreachable { .. }
            | MigrationEvent::RouteCasApplied { .. }
            | MigrationEvent::RouteCasRefused { .. }
            | MigrationEvent::WaitElapsed
            | MigrationEvent::LastHeartbeatRead { .. }
            | MigrationEvent::OperatorCancelled { .. } => EventRole::Input,
            _ => EventRole::Decision,
        }
    }

    /// Whether this is an `InstructionSent` of a region whose instruction another region's
    /// event stands for: one instruction carrying several regions of a batch (spec R2.5) is
    /// counted once, in the event of the first region it carried.
    pub fn carried_by_another_region(&self) -> bool {
        match self {
            MigrationEvent::InstructionSent {
                instruction,
                regions,
                ..
            } => regions
                .first()
                .is_some_and(|first| *first != instruction.region_id()),
            _ => false,
        }
    }

    /// Whether this event ends the procedure.
    pub fn is_terminal(&self) -> bool {
        matches!(self, MigrationEvent::Finished { .. })
    }

    /// Encodes the payload (rmp-serde, named form). An event that cannot be encoded is an
    /// error, never an empty payload.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        rmp_serde::to_vec_named(self).map_err(|error| EncodeError {
            kind: self.kind_code(),
            kind_name: self.name(),
            message: error.to_string(),
        })
    }

    /// Decodes a payload written by [`MigrationEvent::encode`].
    pub fn decode(kind: u16, payload: &[u8]) -> Result<MigrationEvent, DecodeError> {
        let event: MigrationEvent =
            rmp_serde::from_slice(payload).map_err(|error| DecodeError {
                kind,
                kind_name: kind_name(kind),
                message: error.to_string(),
            })?;
        if event.kind_code() != kind {
            return Err(DecodeError {
                kind,
                kind_name: kind_name(kind),
                message: format!(
                    "payload is a {} event (kind {}), envelope says kind {kind}",
                    event.name(),
                    event.kind_code()
                ),
            });
        }
        Ok(event)
    }
}

/// Defines the event kinds once: each row gives a variant its stable kind code, stored in
/// the log envelope (never reuse a code), and its name (the variant's).
macro_rules! event_kinds {
    ($($code:literal => $variant:ident,)*) => {
        impl MigrationEvent {
            /// The stable kind code stored in the log envelope.
            pub fn kind_code(&self) -> u16 {
                match self {
                    $(MigrationEvent::$variant { .. } => $code,)*
                }
            }
        }

        /// The name of a kind code, if this version knows it.
        pub fn kind_name(kind: u16) -> Option<&'static str> {
            match kind {
                $($code => Some(stringify!($variant)),)*
                _ => None,
            }
        }
    };
}

event_kinds! {
    1 => Submitted,
    2 => LockWaitStarted,
    3 => LocksAcquired,
    4 => Resumed,
    5 => StateEntered,
    6 => RouteRead,
    7 => DatanodeTableRead,
    8 => MetadataFailed,
    9 => InstructionSent,
    10 => ReplyReceived,
    11 => MailboxTimedOut,
    12 => PeerUnreachable,
    13 => OperationTimed,
    14 => RouteCasApplied,
    15 => RouteCasRefused,
    16 => LeaseDeadlineSet,
    17 => LeaseDeadlineReset,
    18 => WaitStarted,
    19 => WaitElapsed,
    20 => RetryScheduled,
    21 => HooksCalled,
    22 => OperatorCancelled,
    23 => CancelRefused,
    24 => RollbackStarted,
    25 => RollbackFinished,
    26 => Finished,
    27 => LastHeartbeatRead,
    28 => BatchJoined,
    29 => InstructionExpired,
}

/// A payload this version cannot decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode event of kind {kind} ({}): {message}", kind_name.unwrap_or("unknown to this version"))]
pub struct DecodeError {
    /// The envelope's kind code.
    pub kind: u16,
    /// Its name, when known.
    pub kind_name: Option<&'static str>,
    /// What went wrong.
    pub message: String,
}

/// An event that could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode event of kind {kind} ({kind_name}): {message}")]
pub struct EncodeError {
    /// The event's kind code.
    pub kind: u16,
    /// Its name.
    pub kind_name: &'static str,
    /// What went wrong.
    pub message: String,
}

/// An event with the time it was recorded, as `fold` consumes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedEvent {
    /// When it was recorded (ms since the epoch).
    pub at_ms: u64,
    /// The event.
    pub event: MigrationEvent,
}
