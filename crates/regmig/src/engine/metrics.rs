//! The engine's metrics, through the [`metrics`] facade: the embedder installs the recorder
//! (a Prometheus exporter, statsd, a test recorder); with none installed, recording costs a
//! no-op call. Every metric is derived from the events the engine appends (and, for the
//! append latency, from timing the append itself), so a metric never says something the log
//! does not.
//!
//! The names, their labels and units (modelled on upstream's migration metrics: execution
//! time per state, errors by state and kind, per-datanode counts, failures, per-stage time):
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `regmig_migrations_submitted_total` | counter | | migrations recorded as submitted |
//! | `regmig_migrations_finished_total` | counter | `outcome` (completed, aborted, failed) | migrations finished |
//! | `regmig_state_duration_seconds` | histogram | `state` | time spent in a state, recorded when it is left (not measured across a restart) |
//! | `regmig_operation_duration_seconds` | histogram | `operation` (downgrade_region, upgrade_region) | a downgrade or upgrade operation, first send to answer, as charged to the timeout budget |
//! | `regmig_instructions_sent_total` | counter | `instruction`, `peer` | instructions sent to a datanode (one carrying several regions of a batch counts once) |
//! | `regmig_instruction_answers_total` | counter | `instruction`, `peer`, `answer` (reply, timeout, unreachable, expired: no time left at a resume) | what came back |
//! | `regmig_errors_total` | counter | `state`, `kind` | step failures (retried or rolled back), by the state they happened in |
//! | `regmig_retries_total` | counter | `scope` (state, rollback) | retries scheduled |
//! | `regmig_slow_path_waits_total` | counter | | waits for the old leader's lease to run out |
//! | `regmig_slow_path_wait_seconds` | histogram | | how long each such wait was set to last |
//! | `regmig_write_pause_seconds` | histogram | | how long a migration kept its region from taking writes ([`crate::migration::write_pause`]) |
//! | `regmig_log_append_seconds` | histogram | | one durable append as the engine waited for it (group commit included) |
//! | `regmig_log_append_events` | histogram | | events per append |
//!
//! Label values are the names used everywhere else: states as [`StateName::name`],
//! instructions as [`InstructionKind::name`], peers as their datanode id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

use crate::domain::{InstructionKind, PeerId};
use crate::migration::{MigrationEvent, StateName, WaitReason, WritePause};

/// Migrations recorded as submitted.
pub const MIGRATIONS_SUBMITTED: &str = "regmig_migrations_submitted_total";
/// Migrations finished, by `outcome`.
pub const MIGRATIONS_FINISHED: &str = "regmig_migrations_finished_total";
/// Time spent in a state, by `state`.
pub const STATE_DURATION: &str = "regmig_state_duration_seconds";
/// A downgrade or upgrade operation's time, by `operation`.
pub const OPERATION_DURATION: &str = "regmig_operation_duration_seconds";
/// Instructions sent, by `instruction` and `peer`.
pub const INSTRUCTIONS_SENT: &str = "regmig_instructions_sent_total";
/// Answers to instructions, by `instruction`, `peer` and `answer`.
pub const INSTRUCTION_ANSWERS: &str = "regmig_instruction_answers_total";
/// Step failures, by `state` and `kind`.
pub const ERRORS: &str = "regmig_errors_total";
/// Retries scheduled, by `scope`.
pub const RETRIES: &str = "regmig_retries_total";
/// Slow-path (lease expiry) waits.
pub const SLOW_PATH_WAITS: &str = "regmig_slow_path_waits_total";
/// How long each slow-path wait was set to last.
pub const SLOW_PATH_WAIT_DURATION: &str = "regmig_slow_path_wait_seconds";
/// A migration's write pause.
pub const WRITE_PAUSE: &str = "regmig_write_pause_seconds";
/// One durable append, as the engine waited for it.
pub const LOG_APPEND_DURATION: &str = "regmig_log_append_seconds";
/// Events per append.
pub const LOG_APPEND_EVENTS: &str = "regmig_log_append_events";

/// What the metrics need to remember of a running procedure between its events.
#[derive(Debug, Default)]
struct Tracked {
    /// The state it is in and when it entered it; `None` after a restart until the next
    /// state begins (the time the engine was down is no state's).
    state: Option<(StateName, u64)>,
    /// The last state it entered, for labelling errors (kept across a restart's gap).
    last_state: Option<StateName>,
    write_pause: WritePause,
}

/// Room the map of tracked procedures may keep beyond four times the procedures it holds. A
/// finished procedure's entry is removed, but a hash map keeps the capacity of the most
/// procedures that ever ran at once (about 1.2 MB after 10,000, figure 6 of BENCHMARKS.md):
/// above this slack it shrinks, so its memory follows the procedures running now.
const TRACKED_CAPACITY_SLACK_MAX: usize = 1024;

/// Turns appended events into metrics.
#[derive(Debug, Default)]
pub(crate) struct EngineMetrics {
    /// The procedures running now (an entry goes with the procedure's `Finished` event).
    procedures: Mutex<HashMap<Uuid, Tracked>>,
}

fn seconds(ms: u64) -> f64 {
    Duration::from_millis(ms).as_secs_f64()
}

fn peer_label(peer: PeerId) -> String {
    peer.to_string()
}

impl EngineMetrics {
    /// Records one durable append of `events` that took `elapsed`.
    pub(crate) fn append_done(&self, elapsed: Duration, events: usize) {
        metrics::histogram!(LOG_APPEND_DURATION).record(elapsed.as_secs_f64());
        metrics::histogram!(LOG_APPEND_EVENTS).record(events as f64);
    }

    /// Takes one appended event of `procedure_id`, recorded at `at_ms`.
    pub(crate) fn observe(&self, procedure_id: Uuid, at_ms: u64, event: &MigrationEvent) {
        let mut procedures = self
            .procedures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let tracked = procedures.entry(procedure_id).or_default();
        if let Some(pause_ms) = tracked.write_pause.observe(at_ms, event) {
            metrics::histogram!(WRITE_PAUSE).record(seconds(pause_ms));
        }
        match event {
            MigrationEvent::Submitted { .. } => {
                metrics::counter!(MIGRATIONS_SUBMITTED).increment(1);
            }
            MigrationEvent::Resumed => tracked.state = None,
            MigrationEvent::StateEntered { state, .. } => {
                if let Some((left, entered_at_ms)) = tracked.state.take() {
                    metrics::histogram!(STATE_DURATION, "state" => left.name())
                        .record(seconds(at_ms.saturating_sub(entered_at_ms)));
                }
                tracked.state = Some((*state, at_ms));
                tracked.last_state = Some(*state);
            }
            MigrationEvent::OperationTimed {
                operation,
                elapsed_ms,
            } => {
                metrics::histogram!(OPERATION_DURATION, "operation" => operation.name())
                    .record(seconds(*elapsed_ms));
            }
            // One instruction carrying several regions of a batch counts once.
            MigrationEvent::InstructionSent {
                peer, instruction, ..
            } if !event.carried_by_another_region() => {
                metrics::counter!(
                    INSTRUCTIONS_SENT,
                    "instruction" => instruction.kind().name(),
                    "peer" => peer_label(peer.id)
                )
                .increment(1);
            }
            MigrationEvent::ReplyReceived { peer, reply } => {
                answer(reply.kind(), *peer, "reply");
            }
            MigrationEvent::MailboxTimedOut { peer, instruction } => {
                answer(*instruction, *peer, "timeout");
            }
            MigrationEvent::PeerUnreachable { peer, instruction } => {
                answer(*instruction, *peer, "unreachable");
            }
            MigrationEvent::InstructionExpired { peer, instruction } => {
                answer(*instruction, *peer, "expired");
            }
            MigrationEvent::RetryScheduled {
                rollback, error, ..
            } => {
                let scope = if *rollback { "rollback" } else { "state" };
                metrics::counter!(RETRIES, "scope" => scope).increment(1);
                failure(tracked.last_state, error.kind);
            }
            MigrationEvent::RollbackStarted { error } => failure(tracked.last_state, error.kind),
            MigrationEvent::WaitStarted {
                until_ms,
                reason: WaitReason::LeaseExpiry,
            } => {
                metrics::counter!(SLOW_PATH_WAITS).increment(1);
                metrics::histogram!(SLOW_PATH_WAIT_DURATION)
                    .record(seconds(until_ms.saturating_sub(at_ms)));
            }
            MigrationEvent::Finished { outcome, .. } => {
                if let Some((left, entered_at_ms)) = tracked.state.take() {
                    metrics::histogram!(STATE_DURATION, "state" => left.name())
                        .record(seconds(at_ms.saturating_sub(entered_at_ms)));
                }
                metrics::counter!(MIGRATIONS_FINISHED, "outcome" => outcome.name()).increment(1);
                procedures.remove(&procedure_id);
                // Shrunk to room for twice its entries, the map has at most four times their
                // room (its buckets are a power of two): half of them, and the slack, must
                // go before the next shrink, so the cost is amortized.
                let entries = procedures.len();
                if procedures.capacity() > 4 * entries + TRACKED_CAPACITY_SLACK_MAX {
                    procedures.shrink_to(2 * entries);
                }
            }
            _ => {}
        }
    }

    /// Procedures tracked now, and the map's capacity.
    #[cfg(test)]
    fn tracked_and_capacity(&self) -> (usize, usize) {
        let procedures = self
            .procedures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (procedures.len(), procedures.capacity())
    }
}

fn answer(instruction: InstructionKind, peer: PeerId, answer: &'static str) {
    metrics::counter!(
        INSTRUCTION_ANSWERS,
        "instruction" => instruction.name(),
        "peer" => peer_label(peer),
        "answer" => answer
    )
    .increment(1);
}

fn failure(state: Option<StateName>, kind: crate::migration::ErrorKind) {
    let state = state.map_or("none", StateName::name);
    metrics::counter!(ERRORS, "state" => state, "kind" => kind.name()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::Outcome;

    /// Many procedures at once, then all finished: the map forgets them and gives back its
    /// capacity, instead of keeping room for the most that ever ran at once.
    #[test]
    fn finished_procedures_leave_no_entry_and_no_capacity_beyond_the_slack() {
        let metrics = EngineMetrics::default();
        let procedures: Vec<Uuid> = (0..10_000u128).map(Uuid::from_u128).collect();
        for procedure_id in &procedures {
            metrics.observe(*procedure_id, 1, &MigrationEvent::Resumed);
        }
        let (tracked, capacity_at_peak) = metrics.tracked_and_capacity();
        assert_eq!(tracked, 10_000);
        assert!(capacity_at_peak >= 10_000);
        let still_running = 10;
        for procedure_id in &procedures[still_running..] {
            let finished = MigrationEvent::Finished {
                outcome: Outcome::Completed,
                error: None,
            };
            metrics.observe(*procedure_id, 2, &finished);
        }
        let (tracked, capacity) = metrics.tracked_and_capacity();
        assert_eq!(tracked, still_running);
        assert!(
            capacity <= 4 * still_running + TRACKED_CAPACITY_SLACK_MAX,
            "capacity {capacity} for {tracked} procedures (it was {capacity_at_peak})"
        );
    }
}
