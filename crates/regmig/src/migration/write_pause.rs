//! The write pause: how long a migration kept its region from taking writes, as its events
//! show. One definition, used by the engine's metrics (event by event) and by the tools'
//! reports (over a whole history).
//!
//! The pause starts at the first downgrade sent with `reject_write` (the old leader stops
//! taking writes when it receives it) and ends at the route write that ends it (the
//! upgrade's, or the rollback's clearing of Downgrading), or at `Finished`.

use crate::domain::Instruction;

use super::events::{MigrationEvent, RouteChange, TimedEvent};

/// Follows one procedure's events and measures its write pause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WritePause {
    started_at_ms: Option<u64>,
    ended_at_ms: Option<u64>,
}

impl WritePause {
    /// Takes the next event, recorded at `at_ms`. Returns the pause in ms when this event
    /// ends it (at most once per procedure).
    pub fn observe(&mut self, at_ms: u64, event: &MigrationEvent) -> Option<u64> {
        match (self.started_at_ms, self.ended_at_ms) {
            (None, _) => {
                if matches!(
                    event,
                    MigrationEvent::InstructionSent {
                        instruction: Instruction::DowngradeRegion {
                            reject_write: true,
                            ..
                        },
                        ..
                    }
                ) {
                    self.started_at_ms = Some(at_ms);
                }
                None
            }
            (Some(started_at_ms), None) => {
                let ends = matches!(
                    event,
                    MigrationEvent::RouteCasApplied {
                        change: RouteChange::Upgrade | RouteChange::ClearDowngrading,
                        ..
                    } | MigrationEvent::Finished { .. }
                );
                if !ends {
                    return None;
                }
                self.ended_at_ms = Some(at_ms);
                Some(at_ms.saturating_sub(started_at_ms))
            }
            (Some(_), Some(_)) => None,
        }
    }

    /// The pause so far: `None` when it never started; a pause that has not ended runs to
    /// `last_at_ms`.
    pub fn pause_ms(&self, last_at_ms: u64) -> Option<u64> {
        let started_at_ms = self.started_at_ms?;
        let ended_at_ms = self.ended_at_ms.unwrap_or(last_at_ms);
        Some(ended_at_ms.saturating_sub(started_at_ms))
    }
}

/// The write pause a whole history shows (a pause still running ends at the last event).
pub fn write_pause_ms(events: &[TimedEvent]) -> Option<u64> {
    let mut pause = WritePause::default();
    for timed in events {
        pause.observe(timed.at_ms, &timed.event);
    }
    pause.pause_ms(events.last()?.at_ms)
}
