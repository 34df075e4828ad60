//! Event streams: one procedure's events from a seq on, and every procedure's events in log
//! order (for an embedder's own audit sink). Both read what the log already holds, then
//! follow live appends, with no gap and no repeat: the log is read after the live
//! subscription is taken, live events already read are skipped by their seq, and a
//! subscriber that falls behind the live channel reads the missed events back from the log.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;
use uuid::Uuid;

use super::{EngineError, Inner, ProcedureEvent};
use crate::log::salvage::HISTORY_GAP_KIND;
use crate::log::{EventLog, Record};

use super::store::{decode_record, LoadError};

/// How many records one log read of [`EngineEvents`] takes.
const LOG_READ_RECORDS_MAX: usize = 512;

fn decode(record: &Record) -> Result<ProcedureEvent, EngineError> {
    let timed = decode_record(record).map_err(LoadError::from)?;
    Ok(ProcedureEvent {
        procedure_id: record.procedure_id,
        seq: record.seq,
        at_ms: timed.at_ms,
        event: timed.event,
    })
}

/// Reads `procedure_id`'s events from `from_seq` on, awaiting the log store.
async fn read_procedure(
    log: &EventLog,
    procedure_id: Uuid,
    from_seq: u64,
) -> Result<Vec<ProcedureEvent>, EngineError> {
    let records = log.procedure_events_async(procedure_id, from_seq).await?;
    records
        .iter()
        .take_while(|record| record.kind != HISTORY_GAP_KIND)
        .map(decode)
        .collect()
}

/// One procedure's events, from a seq on: first those the log holds, then each one as it is
/// appended. Ends after the procedure's `Finished` event, or, for a procedure this engine no
/// longer runs (it stopped or was never resumed here), after the last event the log holds.
///
/// Made by [`Engine::subscribe`](super::Engine::subscribe).
pub struct ProcedureEvents {
    inner: Arc<Inner>,
    procedure_id: Uuid,
    next_seq: u64,
    buffered: VecDeque<ProcedureEvent>,
    live: Option<broadcast::Receiver<ProcedureEvent>>,
    finished: bool,
}

impl ProcedureEvents {
    pub(super) async fn start(
        inner: Arc<Inner>,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<ProcedureEvents, EngineError> {
        // Live first, then the log: an event appended in between is in both, and its seq
        // tells the repeat apart.
        let live = inner.subscribe_live(procedure_id);
        let from_seq = from_seq.max(1);
        let buffered: VecDeque<ProcedureEvent> = read_procedure(&inner.log, procedure_id, from_seq)
            .await?
            .into();
        if buffered.is_empty() && live.is_none() {
            // Nothing from `from_seq` on and not running: is the procedure known at all?
            if read_procedure(&inner.log, procedure_id, 1)
                .await?
                .is_empty()
            {
                return Err(EngineError::UnknownProcedure { procedure_id });
            }
        }
        Ok(ProcedureEvents {
            inner,
            procedure_id,
            next_seq: from_seq,
            buffered,
            live,
            finished: false,
        })
    }

    /// The procedure this stream follows.
    pub fn procedure_id(&self) -> Uuid {
        self.procedure_id
    }

    /// The next event; `None` once the stream has ended (see the type's docs). An error is
    /// a log that failed or holds an event this version cannot read.
    pub async fn next(&mut self) -> Option<Result<ProcedureEvent, EngineError>> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                if event.seq < self.next_seq {
                    continue;
                }
                self.next_seq = event.seq + 1;
                self.finished = event.event.is_terminal();
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            let live = self.live.as_mut()?;
            let refill = match live.recv().await {
                Ok(event) if event.seq < self.next_seq => continue,
                Ok(event) if event.seq == self.next_seq => {
                    self.buffered.push_back(event);
                    continue;
                }
                // Ahead of what was read (cannot happen while appends are in seq order) or
                // behind the channel: the log has every event.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => {
                    // The procedure's task ended: what it appended is all in the log.
                    self.live = None;
                    true
                }
            };
            if refill {
                match read_procedure(&self.inner.log, self.procedure_id, self.next_seq).await {
                    Ok(events) => self.buffered.extend(events),
                    Err(error) => {
                        self.finished = true;
                        return Some(Err(error));
                    }
                }
                if self.buffered.is_empty() && self.live.is_none() {
                    return None;
                }
            }
        }
    }

    /// Collects the rest of the stream (for a procedure that finishes).
    pub async fn collect(mut self) -> Result<Vec<ProcedureEvent>, EngineError> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event?);
        }
        Ok(events)
    }
}

/// One event of the whole log, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Its position in the whole log (from 1, without gaps).
    pub global_seq: u64,
    /// The event and its procedure.
    pub event: ProcedureEvent,
}

/// Every procedure's events in log order from a global seq on: what the log holds, then
/// each append as it becomes durable. Ends when the engine stops. Events a salvage marked
/// missing are skipped (they are not migration events).
///
/// Made by [`Engine::subscribe_all`](super::Engine::subscribe_all).
pub struct EngineEvents {
    inner: Arc<Inner>,
    next_global_seq: u64,
    buffered: VecDeque<LoggedEvent>,
}

impl EngineEvents {
    pub(super) fn start(inner: Arc<Inner>, from_global_seq: u64) -> EngineEvents {
        EngineEvents {
            inner,
            next_global_seq: from_global_seq.max(1),
            buffered: VecDeque::new(),
        }
    }

    /// The next event; `None` once the engine has stopped and every durable event was
    /// given. An error is a log that failed or an event this version cannot read (the
    /// stream goes on after it).
    pub async fn next(&mut self) -> Option<Result<LoggedEvent, EngineError>> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Some(Ok(event));
            }
            // Registered before the read, so an append after it still wakes this wait.
            let appended = self.inner.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let records = self
                .inner
                .log
                .events_from_async(self.next_global_seq, LOG_READ_RECORDS_MAX)
                .await;
            let records = match records {
                Ok(records) => records,
                Err(error) => return Some(Err(error.into())),
            };
            if !records.is_empty() {
                for record in &records {
                    if record.kind == HISTORY_GAP_KIND {
                        self.next_global_seq = record.global_seq + 1;
                        continue;
                    }
                    match decode(record) {
                        Ok(event) => {
                            self.next_global_seq = record.global_seq + 1;
                            self.buffered.push_back(LoggedEvent {
                                global_seq: record.global_seq,
                                event,
                            });
                        }
                        // Give what came before it first; the next read starts at it.
                        Err(_) if !self.buffered.is_empty() => break,
                        Err(error) => {
                            self.next_global_seq = record.global_seq + 1;
                            return Some(Err(error));
                        }
                    }
                }
                continue;
            }
            if self.inner.halted() {
                return None;
            }
            let mut halt = self.inner.halt_signal();
            tokio::select! {
                _ = appended => {}
                _ = halt.wait_for(|halted| *halted) => {}
            }
        }
    }
}

impl std::fmt::Debug for ProcedureEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcedureEvents")
            .field("procedure_id", &self.procedure_id)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}
