//! What the inspect commands say about a migration, derived from its events: the summary
//! (one row of `list` and `audit`), the details of `show` (routes, states, instructions,
//! retries, waits), event payloads as JSON, and the selection of migrations by region,
//! peer, table and time through the log's audit indexes.
//!
//! Field names are part of the `--json` contract: snake_case, units last, never renamed.

use serde::Serialize;
use uuid::Uuid;

use super::common::{format_time, CliError};
use regmig::domain::{PeerId, RegionId, RegionRoute, Reply, TableId};
use regmig::engine::store::{decode_history, History};
use regmig::log::EventLog;
use regmig::migration::events::kind_name;
use regmig::migration::{
    fold, write_pause_ms, MigrationEvent, MigrationState, RetryPolicy, RouteChange, StateName,
    Status, TimedEvent,
};

/// The batch a migration belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    /// The batch's id (shared by the procedures of all its regions).
    pub batch_id: String,
    /// Every region the batch moves, "TABLE:NUMBER".
    pub regions: Vec<String>,
}

/// The status of a migration that has not started because it waits for a lock another
/// migration holds (the model's status says `running`: it knows no locks).
pub const QUEUED_STATUS: &str = "queued";

/// A migration queued for a lock: which, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuedForLock {
    /// The lock.
    pub lock_key: String,
    /// When it queued (its LockWaitStarted), ms since the Unix epoch.
    pub since_ms: u64,
}

/// One migration in a line: what, when, why, how it ended. A row of `list` and `audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The migration's id (a uuid v7).
    pub procedure_id: String,
    /// The region, "TABLE:NUMBER".
    pub region: String,
    /// The region, packed (`table_id << 32 | number`), for selecting; never printed (every
    /// output spells a region "TABLE:NUMBER").
    #[serde(skip)]
    pub region_id: u64,
    /// The region's table.
    pub table_id: TableId,
    /// The old leader.
    pub from_peer: PeerId,
    /// The new leader.
    pub to_peer: PeerId,
    /// What asked for the migration ("scenario", "rebalance", "operator"...).
    pub trigger: String,
    /// Who asked for it, when the submit said (logs written before actors have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The operator's reason, if one was given.
    pub reason: Option<String>,
    /// The batch this region's migration belongs to (spec R2.5): its id and every region
    /// it moves; absent for a single-region migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSummary>,
    /// The state the migration is in (its last state entered).
    pub state: &'static str,
    /// running, queued, waiting, retrying, rolling_back, completed, aborted, failed, or
    /// history_missing: `regmig log salvage` cut its history before it finished and closed
    /// it, so how it ended is unknown.
    pub status: &'static str,
    /// With history_missing: the first event missing (salvage cut the history there); left
    /// out of JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_missing_from_seq: Option<u64>,
    /// completed, aborted or failed; null while it runs.
    pub outcome: Option<&'static str>,
    /// When it was submitted (event 1), ms since the Unix epoch.
    pub submitted_at_ms: u64,
    /// The same, RFC 3339 UTC.
    pub submitted_at: String,
    /// When it finished, ms since the Unix epoch; null while it runs.
    pub finished_at_ms: Option<u64>,
    /// The same, RFC 3339 UTC.
    pub finished_at: Option<String>,
    /// From submit to finish (or to the last event while it runs).
    pub duration_ms: u64,
    /// The final error; null when completed or running.
    pub final_error: Option<String>,
    /// Framework retries scheduled (rollback retries included).
    pub retries: u32,
    /// Framework retries still allowed.
    pub retries_left: u32,
    /// Lease waits of the slow path.
    pub slow_path_waits: u32,
    /// Times the engine resumed it after a restart.
    pub resumes: u32,
    /// Time spent waiting for locks other migrations held; while it still waits, the
    /// wait so far (from when it queued to its last event).
    pub lock_wait_ms: u64,
    /// The lock it is queued for, while it waits for one (it has not started yet);
    /// left out of JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_lock: Option<QueuedForLock>,
    /// Who holds that lock (filled by `list` and `region` from the log; left out of JSON
    /// when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lock_held_by: Vec<String>,
    /// The downgrade and upgrade budget.
    pub timeout_ms: u64,
    /// Budget spent in downgrade and upgrade operations.
    pub budget_used_ms: u64,
    /// Budget left.
    pub budget_left_ms: u64,
    /// The old leader's last entry id, from its downgrade reply.
    pub last_entry_id: Option<u64>,
    /// Whether a rollback ran to completion.
    pub rolled_back: bool,
    /// Retries of the rollback so far (it retries without limit while the region is
    /// Downgrading).
    pub rollback_attempts: u32,
    /// Why the last rollback attempt failed, while it is being retried.
    pub rollback_last_error: Option<String>,
    /// The write pause the log shows: from the first downgrade sent with reject_write to the
    /// route switch or the rollback's clearing (the new leader takes writes from its next
    /// lease); null when no downgrade was sent.
    pub write_pause_ms: Option<u64>,
    /// Events in its history.
    pub events: u64,
    /// The states entered, each consecutive repeat collapsed into one.
    pub path: Vec<&'static str>,
}

impl Summary {
    /// Whether it may still take a step: not finished, and not closed by salvage.
    pub fn is_open(&self) -> bool {
        self.outcome.is_none() && self.history_missing_from_seq.is_none()
    }
}

/// Folds a history and summarizes it.
pub fn summarize(procedure_id: Uuid, history: &History) -> Result<Summary, CliError> {
    let state = fold(&history.events);
    summary_of(procedure_id, &state, history)
}

/// Summarizes a folded history.
pub fn summary_of(
    procedure_id: Uuid,
    state: &MigrationState,
    history: &History,
) -> Result<Summary, CliError> {
    let events = &history.events;
    let Some(task) = &state.task else {
        return Err(CliError::NotSubmitted {
            procedure_id,
            kind: events.first().map_or("missing", |timed| timed.event.name()),
        });
    };
    let end_ms = state
        .report
        .finished_at_ms
        .unwrap_or(state.last_event_at_ms);
    let status = history.status(state);
    let history_missing_from_seq = match status {
        Status::HistoryMissing { missing_from_seq } => Some(missing_from_seq),
        _ => None,
    };
    // A migration salvage closed waits for nothing.
    let queued = queued_for_lock(state, events).filter(|_| history_missing_from_seq.is_none());
    Ok(Summary {
        procedure_id: procedure_id.to_string(),
        region: task.region_id.to_string(),
        region_id: task.region_id.as_u64(),
        table_id: task.region_id.table_id(),
        from_peer: task.from_peer.id,
        to_peer: task.to_peer.id,
        trigger: state.report.trigger.clone(),
        actor: state.report.actor.clone(),
        reason: state.report.reason.clone(),
        batch: state.report.batch.as_ref().map(|batch| BatchSummary {
            batch_id: batch.batch_id.to_string(),
            regions: batch.regions.iter().map(ToString::to_string).collect(),
        }),
        state: state.state.name(),
        status: if queued.is_some() {
            QUEUED_STATUS
        } else {
            status.name()
        },
        history_missing_from_seq,
        outcome: state.outcome.map(|outcome| outcome.name()),
        submitted_at_ms: state.report.submitted_at_ms,
        submitted_at: format_time(state.report.submitted_at_ms),
        finished_at_ms: state.report.finished_at_ms,
        finished_at: state.report.finished_at_ms.map(format_time),
        duration_ms: end_ms.saturating_sub(state.report.submitted_at_ms),
        final_error: state.report.final_error.clone(),
        retries: state.report.counters.retries,
        retries_left: state.retries_left(),
        slow_path_waits: state.report.counters.slow_path_waits,
        resumes: state.report.counters.resumes,
        lock_wait_ms: state.report.counters.lock_wait_ms
            + queued.map_or(0, |(_, since_ms)| end_ms.saturating_sub(since_ms)),
        waiting_for_lock: queued.map(|(lock_key, since_ms)| QueuedForLock {
            lock_key: lock_key.to_string(),
            since_ms,
        }),
        lock_held_by: Vec::new(),
        timeout_ms: task.timeout_ms,
        budget_used_ms: state.operations_elapsed_ms,
        budget_left_ms: state.remaining_budget_ms(),
        last_entry_id: state.last_entry_id,
        rolled_back: state.report.rolled_back,
        rollback_attempts: state.rollback_retries_used,
        rollback_last_error: if state.outcome.is_none() {
            state.report.rollback_last_error.clone()
        } else {
            None
        },
        write_pause_ms: write_pause_ms(events),
        events: state.report.counters.events,
        path: state
            .report
            .collapsed_path()
            .into_iter()
            .map(|state| state.name())
            .collect(),
    })
}

/// The lock a migration is queued for and since when: its last lock wait not yet answered,
/// when it holds no locks and has not finished.
fn queued_for_lock<'a>(state: &MigrationState, events: &'a [TimedEvent]) -> Option<(&'a str, u64)> {
    if state.locks_held || state.is_finished() {
        return None;
    }
    // A wait answered by a later LocksAcquired (before a restart dropped the locks) is over.
    for timed in events.iter().rev() {
        match &timed.event {
            MigrationEvent::LockWaitStarted { lock_key } => {
                return Some((lock_key.as_str(), timed.at_ms))
            }
            MigrationEvent::LocksAcquired { .. } => return None,
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Details for `show` and `timeline`.
// ---------------------------------------------------------------------------------------------

/// A region's route at one point of the migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteView {
    /// The table route's version.
    pub version: u64,
    /// The leader's peer id, if there is a leader.
    pub leader_peer: Option<PeerId>,
    /// The followers' peer ids.
    pub follower_peers: Vec<PeerId>,
    /// "downgrading" while the leader is being migrated away, else null.
    pub leader_state: Option<&'static str>,
    /// "read" when the log holds this route as read; "cas" when it is the last route
    /// read with the compare-and-swaps applied after it.
    pub source: &'static str,
    /// The event that read (or last changed) it.
    pub seq: u64,
}

impl RouteView {
    fn of(route: &RegionRoute, version: u64, source: &'static str, seq: u64) -> Self {
        RouteView {
            version,
            leader_peer: route.leader_id(),
            follower_peers: route.follower_peers.iter().map(|peer| peer.id).collect(),
            leader_state: route.is_leader_downgrading().then_some("downgrading"),
            source,
            seq,
        }
    }
}

/// One visit of a state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateSpan {
    /// The state.
    pub state: &'static str,
    /// The StateEntered event.
    pub seq: u64,
    /// When it was entered.
    pub entered_at_ms: u64,
    /// Since submit.
    pub offset_ms: u64,
    /// Until the next state (or the finish, or the last event while it runs).
    pub duration_ms: u64,
}

/// An instruction sent to a datanode, with its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstructionView {
    /// The InstructionSent event.
    pub seq: u64,
    /// When it was sent.
    pub at_ms: u64,
    /// Since submit.
    pub offset_ms: u64,
    /// To whom.
    pub peer: PeerId,
    /// open_region, downgrade_region, upgrade_region or close_region.
    pub instruction: &'static str,
    /// The attempt within the state visit (1-based).
    pub attempt: u32,
    /// True when re-sent after a restart.
    pub resend: bool,
    /// The mailbox timeout.
    pub timeout_ms: u64,
    /// The answer; null when none came (the engine stopped first).
    pub answer: Option<AnswerView>,
}

/// What came back for an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerView {
    /// The answering event.
    pub seq: u64,
    /// When it came.
    pub at_ms: u64,
    /// Since submit.
    pub offset_ms: u64,
    /// ok, error, not_exists, not_ready, wrong_reply, timeout or unreachable (the reply
    /// tokens of scenario files).
    pub result: &'static str,
    /// The datanode's error, or a note ("last_entry_id 100").
    pub detail: Option<String>,
}

/// A framework retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryView {
    /// The RetryScheduled event.
    pub seq: u64,
    /// When it was scheduled.
    pub at_ms: u64,
    /// Since submit.
    pub offset_ms: u64,
    /// The retry number (1-based) over the whole procedure.
    pub attempt: u32,
    /// The backoff, jitter included.
    pub delay_ms: u64,
    /// True for a retry of the rollback.
    pub rollback: bool,
    /// The failure's kind.
    pub error_kind: String,
    /// The failure.
    pub error: String,
}

/// A wait: an attempt interval, a lease expiry (the slow path), or a backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitView {
    /// The event that started it (WaitStarted or RetryScheduled).
    pub seq: u64,
    /// When it started.
    pub at_ms: u64,
    /// Since submit.
    pub offset_ms: u64,
    /// Until when.
    pub until_ms: u64,
    /// attempt_interval, lease_expiry, backoff or rollback_backoff.
    pub reason: String,
}

/// A wait for a lock another migration held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockWaitView {
    /// The LockWaitStarted event.
    pub seq: u64,
    /// When the wait began.
    pub at_ms: u64,
    /// Since submit.
    pub offset_ms: u64,
    /// The contended lock.
    pub lock_key: String,
    /// How long it waited; null while it still waits.
    pub waited_ms: Option<u64>,
    /// The migrations that held the lock when the wait began (filled by `show` from the
    /// log; left out of JSON when none was found).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<String>,
}

/// A route compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteChangeView {
    /// The event.
    pub seq: u64,
    /// When.
    pub at_ms: u64,
    /// Since submit.
    pub offset_ms: u64,
    /// downgrade, upgrade or clear_downgrading.
    pub change: String,
    /// Whether it was applied (false: a concurrent writer won).
    pub applied: bool,
    /// The version it replaced (applied) or expected (refused).
    pub from_version: u64,
    /// The new version (applied) or the version found (refused).
    pub to_version: Option<u64>,
}

/// The rollback, if one started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackView {
    /// The RollbackStarted event.
    pub seq: u64,
    /// When it started.
    pub started_at_ms: u64,
    /// Since submit.
    pub offset_ms: u64,
    /// The failure that caused it.
    pub error: String,
    /// The failure's kind (snake_case).
    pub error_kind: String,
    /// Whether that failure was one a framework retry could have cured.
    pub retryable: bool,
    /// When it finished; null if it has not.
    pub finished_at_ms: Option<u64>,
    /// Whether it succeeded; null if it has not finished.
    pub succeeded: Option<bool>,
}

/// Everything `show` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detail {
    /// The summary.
    #[serde(flatten)]
    pub summary: Summary,
    /// The old leader's address.
    pub from_addr: String,
    /// The new leader's address.
    pub to_addr: String,
    /// Lock keys: the table's catalog.
    pub catalog: String,
    /// Lock keys: the table's schema.
    pub schema: String,
    /// The retry policy recorded at submit.
    pub policy: RetryPolicy,
    /// Why Abort was chosen, if it was.
    pub abort_reason: Option<String>,
    /// Who cancelled, if anyone.
    pub cancelled_by: Option<String>,
    /// Cancels that were refused (after the new route was written): "ACTOR: REASON
    /// (refused: WHY)", in the order asked. Left out of JSON when there were none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cancels_refused: Vec<String>,
    /// The first route read.
    pub route_before: Option<RouteView>,
    /// The last route known: read, or derived from the compare-and-swaps after the last read.
    pub route_after: Option<RouteView>,
    /// Every state visit.
    pub states: Vec<StateSpan>,
    /// Every instruction, with its answer.
    pub instructions: Vec<InstructionView>,
    /// Every framework retry.
    pub retries_scheduled: Vec<RetryView>,
    /// Every wait (attempt intervals, lease expiry, backoffs).
    pub waits: Vec<WaitView>,
    /// Every wait for a lock another migration held.
    pub lock_waits: Vec<LockWaitView>,
    /// Every route compare-and-swap.
    pub route_changes: Vec<RouteChangeView>,
    /// The rollback, if any.
    pub rollback: Option<RollbackView>,
}

/// Derives everything `show` prints from a history.
pub fn detail(procedure_id: Uuid, history: &History) -> Result<Detail, CliError> {
    let events = &history.events;
    let state = fold(events);
    let summary = summary_of(procedure_id, &state, history)?;
    let Some(task) = state.task.clone() else {
        return Err(CliError::NotSubmitted {
            procedure_id,
            kind: "missing",
        });
    };
    let start_ms = state.report.submitted_at_ms;
    let offset = |at_ms: u64| at_ms.saturating_sub(start_ms);
    let end_ms = state
        .report
        .finished_at_ms
        .unwrap_or(state.last_event_at_ms);
    let region_id: RegionId = task.region_id;

    let mut route_before = None;
    // The last route known, as (route, version, source, seq).
    let mut current: Option<(RegionRoute, u64, &'static str, u64)> = None;
    let mut states: Vec<StateSpan> = Vec::new();
    let mut instructions: Vec<InstructionView> = Vec::new();
    let mut retries_scheduled = Vec::new();
    let mut waits = Vec::new();
    let mut lock_waits: Vec<LockWaitView> = Vec::new();
    let mut route_changes = Vec::new();
    let mut rollback: Option<RollbackView> = None;
    let mut cancels_refused = Vec::new();

    for (index, timed) in events.iter().enumerate() {
        let seq = index as u64 + 1;
        let at_ms = timed.at_ms;
        match &timed.event {
            MigrationEvent::StateEntered { state, .. } => {
                if let Some(previous) = states.last_mut() {
                    previous.duration_ms = at_ms.saturating_sub(previous.entered_at_ms);
                }
                states.push(StateSpan {
                    state: state.name(),
                    seq,
                    entered_at_ms: at_ms,
                    offset_ms: offset(at_ms),
                    duration_ms: end_ms.saturating_sub(at_ms),
                });
            }
            MigrationEvent::RouteRead {
                version: Some(version),
                route: Some(route),
                ..
            } => {
                if let Some(region_route) = route.region_route(region_id) {
                    let view = RouteView::of(region_route, *version, "read", seq);
                    if route_before.is_none() {
                        route_before = Some(view);
                    }
                    current = Some((region_route.clone(), *version, "read", seq));
                }
            }
            MigrationEvent::RouteCasApplied {
                change,
                from_version,
                to_version,
                ..
            } => {
                if let Some((route, version, source, last_seq)) = current.as_mut() {
                    apply_change(route, *change, &task.to_peer, at_ms);
                    *version = *to_version;
                    *source = "cas";
                    *last_seq = seq;
                }
                route_changes.push(RouteChangeView {
                    seq,
                    at_ms,
                    offset_ms: offset(at_ms),
                    change: snake_name(change),
                    applied: true,
                    from_version: *from_version,
                    to_version: Some(*to_version),
                });
            }
            MigrationEvent::CancelRefused {
                actor,
                reason,
                refusal,
            } => cancels_refused.push(format!("{actor}: {reason} (refused: {refusal})")),
            MigrationEvent::RouteCasRefused {
                change,
                expected_version,
                actual_version,
                ..
            } => route_changes.push(RouteChangeView {
                seq,
                at_ms,
                offset_ms: offset(at_ms),
                change: snake_name(change),
                applied: false,
                from_version: *expected_version,
                to_version: *actual_version,
            }),
            MigrationEvent::InstructionSent {
                peer,
                instruction,
                timeout_ms,
                attempt,
                resend,
                ..
            } => instructions.push(InstructionView {
                seq,
                at_ms,
                offset_ms: offset(at_ms),
                peer: peer.id,
                instruction: instruction.kind().name(),
                attempt: *attempt,
                resend: *resend,
                timeout_ms: *timeout_ms,
                answer: None,
            }),
            MigrationEvent::ReplyReceived { .. }
            | MigrationEvent::MailboxTimedOut { .. }
            | MigrationEvent::InstructionExpired { .. }
            | MigrationEvent::PeerUnreachable { .. } => {
                let asked = instructions
                    .iter_mut()
                    .rev()
                    .find(|sent| sent.answer.is_none());
                let (result, detail) = match &timed.event {
                    MigrationEvent::ReplyReceived { reply, .. } => {
                        reply_result(asked.as_ref().map(|sent| sent.instruction), reply)
                    }
                    MigrationEvent::MailboxTimedOut { .. } => ("timeout", None),
                    MigrationEvent::InstructionExpired { .. } => ("expired", None),
                    _ => ("unreachable", None),
                };
                if let Some(sent) = asked {
                    sent.answer = Some(AnswerView {
                        seq,
                        at_ms,
                        offset_ms: offset(at_ms),
                        result,
                        detail,
                    });
                }
            }
            MigrationEvent::RetryScheduled {
                attempt,
                delay_ms,
                due_at_ms,
                rollback: of_rollback,
                error,
                ..
            } => {
                retries_scheduled.push(RetryView {
                    seq,
                    at_ms,
                    offset_ms: offset(at_ms),
                    attempt: *attempt,
                    delay_ms: *delay_ms,
                    rollback: *of_rollback,
                    error_kind: snake_name(&error.kind),
                    error: error.message.clone(),
                });
                waits.push(WaitView {
                    seq,
                    at_ms,
                    offset_ms: offset(at_ms),
                    until_ms: *due_at_ms,
                    reason: if *of_rollback {
                        "rollback_backoff".to_string()
                    } else {
                        "backoff".to_string()
                    },
                });
            }
            MigrationEvent::WaitStarted { until_ms, reason } => waits.push(WaitView {
                seq,
                at_ms,
                offset_ms: offset(at_ms),
                until_ms: *until_ms,
                reason: snake_name(reason),
            }),
            MigrationEvent::LockWaitStarted { lock_key } => lock_waits.push(LockWaitView {
                seq,
                at_ms,
                offset_ms: offset(at_ms),
                lock_key: lock_key.clone(),
                waited_ms: None,
                held_by: Vec::new(),
            }),
            MigrationEvent::LocksAcquired { waited_ms, .. } => {
                if let Some(wait) = lock_waits
                    .last_mut()
                    .filter(|wait| wait.waited_ms.is_none())
                {
                    wait.waited_ms = Some(*waited_ms);
                }
            }
            MigrationEvent::RollbackStarted { error } => {
                rollback = Some(RollbackView {
                    seq,
                    started_at_ms: at_ms,
                    offset_ms: offset(at_ms),
                    error: error.message.clone(),
                    error_kind: snake_name(&error.kind),
                    retryable: error.retryable,
                    finished_at_ms: None,
                    succeeded: None,
                });
            }
            MigrationEvent::RollbackFinished { succeeded, .. } => {
                if let Some(rollback) = rollback.as_mut() {
                    rollback.finished_at_ms = Some(at_ms);
                    rollback.succeeded = Some(*succeeded);
                }
            }
            _ => {}
        }
    }
    let route_after =
        current.map(|(route, version, source, seq)| RouteView::of(&route, version, source, seq));
    Ok(Detail {
        summary,
        from_addr: task.from_peer.addr.clone(),
        to_addr: task.to_peer.addr.clone(),
        catalog: state.catalog.clone(),
        schema: state.schema.clone(),
        policy: state.policy.clone(),
        abort_reason: state.abort_reason.clone(),
        cancelled_by: state
            .cancelled_by
            .as_ref()
            .map(|(actor, reason)| format!("{actor}: {reason}")),
        cancels_refused,
        route_before,
        route_after,
        states,
        instructions,
        retries_scheduled,
        waits,
        lock_waits,
        route_changes,
        rollback,
    })
}

/// Applies a compare-and-swap's change to a region's route, as `decide` wrote it.
fn apply_change(
    route: &mut RegionRoute,
    change: RouteChange,
    to_peer: &regmig::domain::Peer,
    at_ms: u64,
) {
    match change {
        RouteChange::Downgrade => {
            route.leader_state = Some(regmig::domain::LeaderState::Downgrading);
            route.leader_down_since_ms = Some(at_ms);
        }
        RouteChange::Upgrade => {
            route.leader_state = None;
            route.leader_down_since_ms = None;
            route.follower_peers.retain(|peer| peer.id != to_peer.id);
            route.leader_peer = Some(to_peer.clone());
        }
        RouteChange::ClearDowngrading => {
            route.leader_state = None;
            route.leader_down_since_ms = None;
        }
    }
}

/// A reply as a scenario reply token, with the datanode's words.
pub fn reply_result(asked: Option<&'static str>, reply: &Reply) -> (&'static str, Option<String>) {
    if asked.is_some_and(|asked| asked != reply.kind().name()) {
        return (
            "wrong_reply",
            Some(format!("a {} reply", reply.kind().name())),
        );
    }
    match reply {
        Reply::OpenRegion { result, error }
        | Reply::CloseRegion { result, error }
        | Reply::FlushRegion { result, error } => match (result, error) {
            (true, None) => ("ok", None),
            (_, error) => ("error", Some(error.clone().unwrap_or_default())),
        },
        Reply::DowngradeRegion {
            last_entry_id,
            exists,
            error,
        } => match (exists, error) {
            (_, Some(error)) => ("error", Some(error.clone())),
            (false, None) => ("not_exists", None),
            (true, None) => ("ok", last_entry_id.map(|id| format!("last_entry_id {id}"))),
        },
        Reply::UpgradeRegion {
            ready,
            exists,
            error,
        } => match (ready, exists, error) {
            (_, _, Some(error)) => ("error", Some(error.clone())),
            (_, false, None) => ("not_exists", None),
            (false, true, None) => ("not_ready", None),
            (true, true, None) => ("ok", None),
        },
    }
}

/// The snake_case name serde gives a unit enum value.
/// A value's serde name (snake_case for our enums), e.g. a wait reason or a route change.
pub fn snake_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "unknown".to_string(),
    }
}

/// An event's fields as JSON (the variant's fields; `{}` for one without fields), in the
/// spellings of every other output ([`display_spellings`]).
pub fn payload_json(event: &MigrationEvent) -> serde_json::Value {
    match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(mut outer)) if outer.len() == 1 => {
            let key = outer.keys().next().cloned().unwrap_or_default();
            display_spellings(outer.remove(&key).unwrap_or_default())
        }
        _ => serde_json::Value::Object(serde_json::Map::new()),
    }
}

/// A payload as the log's encoding spells it, respelled as every output spells it:
/// - a region (`region_id`, packed `table_id << 32 | number`) becomes `region`,
///   "TABLE:NUMBER"; a list of regions (`regions`) holds "TABLE:NUMBER" strings;
/// - a migration state (`state`) is named as the spec names it (`UpdateMetadata::Downgrade`);
/// - the tag of a nested enum (an instruction, a reply, a route: `{"OpenRegion": {..}}`) is
///   snake_case (`open_region`, as `MailboxTimedOut` and `OperationTimed` name it).
///
/// Values are never dropped; a number that is no region is left as it is.
pub fn display_spellings(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let region = |value: &Value| {
        value
            .as_u64()
            .map(|packed| Value::String(RegionId(packed).to_string()))
    };
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, field)| match (key.as_str(), field) {
                    ("region_id", field) => match region(&field) {
                        Some(text) => ("region".to_string(), text),
                        None => (key, display_spellings(field)),
                    },
                    ("regions", Value::Array(items)) => (
                        key,
                        Value::Array(
                            items
                                .into_iter()
                                .map(|item| region(&item).unwrap_or(item))
                                .collect(),
                        ),
                    ),
                    ("state", Value::String(serde_name)) => {
                        (key, Value::String(spec_state_name(&serde_name)))
                    }
                    (_, field) => (snake_case(&key), display_spellings(field)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(display_spellings).collect()),
        other => other,
    }
}

/// A state's spec name from its serde name ("UpdateMetadataDowngrade" →
/// "UpdateMetadata::Downgrade"); a name this version does not know is kept.
pub fn spec_state_name(serde_name: &str) -> String {
    StateName::ALL
        .into_iter()
        .find(|state| {
            serde_json::to_value(state)
                .ok()
                .is_some_and(|value| value == serde_name)
        })
        .map_or_else(|| serde_name.to_string(), |state| state.name().to_string())
}

/// "OpenRegion" → "open_region"; a key already in snake_case (or a map key such as a
/// region number) is kept.
fn snake_case(key: &str) -> String {
    if !key.starts_with(|c: char| c.is_ascii_uppercase()) {
        return key.to_string();
    }
    let mut out = String::with_capacity(key.len() + 4);
    for (index, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if index > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The name of an event kind code ("Unknown" for a code this version does not know).
pub fn kind_label(kind: u16) -> &'static str {
    if kind == regmig::log::salvage::HISTORY_GAP_KIND {
        return "HistoryGap";
    }
    kind_name(kind).unwrap_or("Unknown")
}

// ---------------------------------------------------------------------------------------------
// Selection through the audit indexes.
// ---------------------------------------------------------------------------------------------

/// Which migrations a `list` or `audit` is about. Region, peer and table are answered from
/// the log's audit indexes (in that order of preference); without them every procedure is
/// read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only this region.
    pub region: Option<RegionId>,
    /// Only migrations from or to this peer.
    pub peer: Option<PeerId>,
    /// Only migrations off this peer (the old leader).
    pub from_peer: Option<PeerId>,
    /// Only migrations onto this peer (the new leader).
    pub to_peer: Option<PeerId>,
    /// Only regions of this table.
    pub table: Option<TableId>,
    /// Submitted at or after (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Submitted at or before (ms since the epoch).
    pub until_ms: Option<u64>,
}

impl Selection {
    /// Whether a summary matches every filter (the index only narrows the candidates).
    pub fn matches(&self, summary: &Summary) -> bool {
        self.region
            .is_none_or(|region| summary.region_id == region.as_u64())
            && self
                .peer
                .is_none_or(|peer| summary.from_peer == peer || summary.to_peer == peer)
            && self.from_peer.is_none_or(|peer| summary.from_peer == peer)
            && self.to_peer.is_none_or(|peer| summary.to_peer == peer)
            && self.table.is_none_or(|table| summary.table_id == table)
            && self
                .since_ms
                .is_none_or(|since| summary.submitted_at_ms >= since)
            && self
                .until_ms
                .is_none_or(|until| summary.submitted_at_ms <= until)
    }
}

/// The ids of the candidate migrations, from an index when the selection names a region, a
/// peer or a table.
pub fn candidates(log: &EventLog, selection: &Selection) -> Result<Vec<Uuid>, CliError> {
    let since_ms = selection.since_ms.unwrap_or(0);
    let until_ms = selection.until_ms.unwrap_or(u64::MAX);
    let ids = if let Some(region) = selection.region {
        ids_of(log.procedures_by_region(region.as_u64(), since_ms, until_ms)?)
    } else if let Some(peer) = selection.peer.or(selection.from_peer).or(selection.to_peer) {
        ids_of(log.procedures_by_peer(peer, since_ms, until_ms)?)
    } else if let Some(table) = selection.table {
        procedures_by_table(log, table, since_ms, until_ms)?
    } else {
        log.procedures()?
    };
    Ok(ids)
}

fn ids_of(found: Vec<(u64, Uuid)>) -> Vec<Uuid> {
    found.into_iter().map(|(_, id)| id).collect()
}

/// The procedures opened on any region of `table` within the time range, from the region
/// audit index: a table's regions are one contiguous run of region ids (`table << 32 |
/// number`), so this is one range read of the index.
fn procedures_by_table(
    log: &EventLog,
    table: TableId,
    since_ms: u64,
    until_ms: u64,
) -> Result<Vec<Uuid>, CliError> {
    let first_region = RegionId::new(table, 0).as_u64();
    let last_region = RegionId::new(table, u32::MAX).as_u64();
    let found = log.procedures_by_regions(first_region..=last_region, since_ms, until_ms)?;
    Ok(found.into_iter().map(|entry| entry.procedure_id).collect())
}

/// Loads, summarizes and filters the selected migrations, ordered by submit time then id.
pub fn select_summaries(
    log: &EventLog,
    selection: &Selection,
) -> Result<Vec<(Summary, MigrationState)>, CliError> {
    select_summaries_with_archive(log, selection, None)
}

/// [`select_summaries`] over the live log and, with `archive`, the archived migrations
/// in that directory too (the archive is checked to join the live log first).
pub fn select_summaries_with_archive(
    log: &EventLog,
    selection: &Selection,
    archive: Option<&std::path::Path>,
) -> Result<Vec<(Summary, MigrationState)>, CliError> {
    let mut selected = Vec::new();
    for procedure_id in candidates(log, selection)? {
        let history = super::common::load_history(log, procedure_id)?;
        let state = fold(&history.events);
        let summary = summary_of(procedure_id, &state, &history)?;
        if selection.matches(&summary) {
            selected.push((summary, state));
        }
    }
    if let Some(dir) = archive {
        let contents = regmig::archive::verify_archive(log, dir)?;
        let mut by_procedure: std::collections::BTreeMap<Uuid, Vec<regmig::log::Record>> =
            std::collections::BTreeMap::new();
        for record in contents.records {
            by_procedure
                .entry(record.procedure_id)
                .or_default()
                .push(record);
        }
        for (procedure_id, mut records) in by_procedure {
            records.sort_by_key(|record| record.seq);
            let history = decode_history(&records)?;
            let state = fold(&history.events);
            let summary = summary_of(procedure_id, &state, &history)?;
            if selection.matches(&summary) {
                selected.push((summary, state));
            }
        }
    }
    selected.sort_by(|(a, _), (b, _)| {
        (a.submitted_at_ms, &a.procedure_id).cmp(&(b.submitted_at_ms, &b.procedure_id))
    });
    Ok(selected)
}
