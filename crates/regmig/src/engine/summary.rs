//! What an embedder reads about one migration: [`MigrationSummary`], a small view folded
//! from its events. The model's own state ([`MigrationState`]: cached reads, step progress,
//! outstanding instruction, locks) stays behind it; a tool that needs all of it folds the
//! history itself ([`Engine::history`](super::Engine::history) and
//! [`fold`](crate::migration::fold)).

use uuid::Uuid;

use crate::domain::{PeerId, RegionId};
use crate::migration::{Counters, MigrationState, Outcome, StateName, Status};

/// One migration as its events tell it (issue 15's "small public summary").
///
/// Times are ms since the Unix epoch, as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSummary {
    /// The procedure.
    pub procedure_id: Uuid,
    /// The region it moves.
    pub region_id: RegionId,
    /// The region's leader when it was submitted.
    pub from_peer: PeerId,
    /// The datanode it moves the region to.
    pub to_peer: PeerId,
    /// The batch it belongs to (spec R2.5), if any.
    pub batch_id: Option<Uuid>,
    /// What asked for it ("operator", "rebalance", ...).
    pub trigger: String,
    /// Who asked, if recorded.
    pub actor: Option<String>,
    /// Why, if recorded.
    pub reason: Option<String>,
    /// Its current (or last) state, as the spec names it.
    pub state: StateName,
    /// Running, waiting, retrying or finished; [`Status::HistoryMissing`] from
    /// [`Engine::get`](super::Engine::get) when `regmig log salvage` cut its history.
    pub status: Status,
    /// How it ended; `None` while it runs.
    pub outcome: Option<Outcome>,
    /// The error it ended with (aborted or failed).
    pub final_error: Option<String>,
    /// Whether a rollback restored the old route.
    pub rolled_back: bool,
    /// The operator's cancel that ended it: (actor, reason).
    pub cancelled_by: Option<(String, String)>,
    /// The states entered, in order, each consecutive repeat (a retry) collapsed into one:
    /// the scenario contract's `path`.
    pub path: Vec<StateName>,
    /// Framework retries used (of [`crate::migration::RetryPolicy::retries_max`]).
    pub retries_used: u32,
    /// The downgrade-and-upgrade budget, in ms.
    pub timeout_ms: u64,
    /// How much of that budget datanode operations used so far, in ms.
    pub operations_elapsed_ms: u64,
    /// When it was submitted.
    pub submitted_at_ms: u64,
    /// When it finished.
    pub finished_at_ms: Option<u64>,
    /// Reporting counts: instructions sent by "PEER.instruction", retries, slow-path waits,
    /// re-sends, resumes, lock wait, events.
    pub counters: Counters,
}

impl MigrationSummary {
    /// The summary of a folded procedure; `None` when its history has no submit.
    pub fn of(procedure_id: Uuid, state: &MigrationState) -> Option<MigrationSummary> {
        let task = state.task.as_ref()?;
        Some(MigrationSummary {
            procedure_id,
            region_id: task.region_id,
            from_peer: task.from_peer.id,
            to_peer: task.to_peer.id,
            batch_id: state.report.batch.as_ref().map(|batch| batch.batch_id),
            trigger: state.report.trigger.clone(),
            actor: state.report.actor.clone(),
            reason: state.report.reason.clone(),
            state: state.state,
            status: state.status(),
            outcome: state.outcome,
            final_error: state.report.final_error.clone(),
            rolled_back: state.report.rolled_back,
            cancelled_by: state.cancelled_by.clone(),
            path: state.report.collapsed_path(),
            retries_used: state.retries_used,
            timeout_ms: task.timeout_ms,
            operations_elapsed_ms: state.operations_elapsed_ms,
            submitted_at_ms: state.report.submitted_at_ms,
            finished_at_ms: state.report.finished_at_ms,
            counters: state.report.counters.clone(),
        })
    }

    /// Whether it has finished (it has an outcome).
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }
}
