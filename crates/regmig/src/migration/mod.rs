//! The migration model, pure: no I/O, no clock reads, no tokio.
//!
//! - [`events`]: what can happen to a procedure ([`MigrationEvent`]), with kind codes.
//! - [`state`]: [`fold`] turns a procedure's events into its [`MigrationState`]: the
//!   [`DecisionState`] that `decide` is given, and the [`MigrationReport`] it never sees.
//! - [`decide`](mod@decide): [`decide()`] turns a state, the time and an input into events and
//!   the next [`Action`].
//! - [`replay`]: re-runs today's `decide` on a recorded log and reports where it differs.
//! - [`write_pause`]: how long a migration kept its region from taking writes.

pub mod decide;
pub mod events;
pub mod replay;
pub mod state;
pub mod write_pause;

pub use decide::{
    check_cancel, decide, lock_keys, table_lock_key, Action, DecideError, Decision, Input,
    LockMode, Observation,
};
pub use events::{
    EncodeError, ErrorKind, EventRole, Hook, MigrationEvent, MigrationTask, Outcome, RetryPolicy,
    RouteChange, StateName, StepError, TimedEvent, WaitReason, BEHAVIOUR_REVISION,
    DEFAULT_TIMEOUT_MS,
};
pub use state::{
    fold, fold_decision, try_fold, BatchMembership, BatchOutcome, Counters, DecisionState,
    FoldError, MigrationReport, MigrationState, SentKey, Status, HISTORY_MISSING_STATUS,
};
pub use write_pause::{write_pause_ms, WritePause};
