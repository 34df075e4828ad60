//! Replay check: re-run today's [`decide`] on the inputs a log recorded and compare.
//!
//! Every decision was appended as one batch: an input event followed by the events `decide`
//! produced, all with the same timestamp. For each input event, fold the events before it,
//! rebuild the input from the log, decide, and compare with what the log holds up to the
//! next input or note.

use super::decide::{decide, Input, Observation};
use super::events::{EventRole, MigrationEvent, TimedEvent};
use super::state::DecisionState;
use crate::domain::{MailboxOutcome, VersionedTableRoute};

/// Where today's logic and the log part ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Index (0-based) in the procedure's events of the input whose decision differs.
    pub input_index: usize,
    /// Index of the first event that differs (or where one is missing).
    pub event_index: usize,
    /// What the log holds there.
    pub recorded: Option<MigrationEvent>,
    /// What today's `decide` produces there.
    pub decided: Option<MigrationEvent>,
    /// A sentence for operators.
    pub message: String,
}

/// Rebuilds the observation an input event recorded; `None` for events that are not inputs.
pub fn observation_of(event: &MigrationEvent) -> Option<Observation> {
    Some(match event.clone() {
        MigrationEvent::Resumed => Observation::Resumed,
        MigrationEvent::LocksAcquired {
            lock_keys,
            waited_ms,
        } => Observation::LocksAcquired {
            lock_keys,
            waited_ms,
        },
        MigrationEvent::RouteRead {
            table_id,
            version,
            route,
        } => Observation::RouteRead {
            table_id,
            route: match (version, route) {
                (Some(version), Some(route)) => Some(VersionedTableRoute {
                    table_id,
                    version,
                    route,
                }),
                _ => None::<VersionedTableRoute>,
            },
        },
        MigrationEvent::DatanodeTableRead {
            datanode_id,
            table_id,
            datanode_table,
        } => Observation::DatanodeTableRead {
            datanode_id,
            table_id,
            datanode_table,
        },
        MigrationEvent::MetadataFailed { operation, error } => {
            Observation::MetadataFailed { operation, error }
        }
        MigrationEvent::ReplyReceived { reply, .. } => {
            Observation::Mailbox(MailboxOutcome::Reply(reply))
        }
        MigrationEvent::MailboxTimedOut { .. } => Observation::Mailbox(MailboxOutcome::Timeout),
        MigrationEvent::PeerUnreachable { .. } => Observation::Mailbox(MailboxOutcome::Unreachable),
        MigrationEvent::RouteCasApplied {
            table_id,
            change,
            from_version,
            to_version,
        } => Observation::CasApplied {
            table_id,
            change,
            from_version,
            to_version,
        },
        MigrationEvent::RouteCasRefused {
            table_id,
            change,
            expected_version,
            actual_version,
        } => Observation::CasRefused {
            table_id,
            change,
            expected_version,
            actual_version,
        },
        MigrationEvent::WaitElapsed => Observation::WaitElapsed,
        MigrationEvent::LastHeartbeatRead {
            peer,
            last_heartbeat_ms,
        } => Observation::LastHeartbeatRead {
            peer,
            last_heartbeat_ms,
        },
        MigrationEvent::OperatorCancelled { actor, reason } => {
            Observation::Cancel { actor, reason }
        }
        _ => return None,
    })
}

/// The jitter value a recorded decision used, if it scheduled a retry.
pub fn recorded_jitter(decision: &[TimedEvent]) -> u32 {
    decision
        .iter()
        .find_map(|timed| match &timed.event {
            MigrationEvent::RetryScheduled { jitter_random, .. } => Some(*jitter_random),
            _ => None,
        })
        .unwrap_or(0)
}

/// The end (exclusive) of the decision recorded for the input at `input_index`: the input
/// and the decision events after it, up to the next input or note.
pub fn decision_end(events: &[TimedEvent], input_index: usize) -> usize {
    events[input_index + 1..]
        .iter()
        .position(|later| later.event.role() != EventRole::Decision)
        .map_or(events.len(), |offset| input_index + 1 + offset)
}

/// Re-runs `decide` at every recorded input; `Ok(decisions checked)` when all agree.
// A divergence is reported once, at the end of a check: its size does not matter.
#[allow(clippy::result_large_err)]
pub fn check(events: &[TimedEvent]) -> Result<usize, Divergence> {
    let mut state = DecisionState::default();
    let mut checked = 0;
    let mut index = 0;
    // The decision taken right after submit (Begin) records nothing, so only inputs matter.
    while index < events.len() {
        let timed = &events[index];
        let Some(observation) = (timed.event.role() == EventRole::Input)
            .then(|| observation_of(&timed.event))
            .flatten()
        else {
            state.apply(timed.at_ms, &timed.event);
            index += 1;
            continue;
        };
        let end = decision_end(events, index);
        let recorded = &events[index..end];
        let input = Input {
            observation,
            jitter_random: recorded_jitter(recorded),
        };
        let decided = match decide(&state, timed.at_ms, input) {
            Ok(decision) => decision.events,
            Err(error) => {
                return Err(Divergence {
                    input_index: index,
                    event_index: index,
                    recorded: Some(timed.event.clone()),
                    decided: None,
                    message: format!(
                        "event {} ({}): today's logic rejects this input: {error}",
                        index + 1,
                        timed.event.name()
                    ),
                })
            }
        };
        let longest = decided.len().max(recorded.len());
        for offset in 0..longest {
            let logged = recorded.get(offset).map(|timed| as_decided(&timed.event));
            let logged = logged.as_ref();
            let today = decided.get(offset);
            let same_time = recorded
                .get(offset)
                .is_none_or(|timed| timed.at_ms == timed_at(recorded));
            if logged != today || !same_time {
                return Err(Divergence {
                    input_index: index,
                    event_index: index + offset,
                    recorded: logged.cloned(),
                    decided: today.cloned(),
                    message: format!(
                        "event {}: the log has {} where today's logic decides {}",
                        index + offset + 1,
                        logged.map_or("nothing".to_string(), |e| format!("{e:?}")),
                        today.map_or("nothing".to_string(), |e| format!("{e:?}")),
                    ),
                });
            }
        }
        for timed in recorded {
            state.apply(timed.at_ms, &timed.event);
        }
        checked += 1;
        index = end;
    }
    Ok(checked)
}

/// An event as `decide` writes it: the regions an instruction carried are the engine's
/// grouping of a batch's sends (spec R2.5), recorded after the decision, not part of it.
fn as_decided(event: &MigrationEvent) -> MigrationEvent {
    let mut event = event.clone();
    if let MigrationEvent::InstructionSent { regions, .. } = &mut event {
        regions.clear();
    }
    event
}

fn timed_at(batch: &[TimedEvent]) -> u64 {
    batch.first().map_or(0, |timed| timed.at_ms)
}
