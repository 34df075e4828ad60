//! The bridge between the log's records and the migration's events.

use uuid::Uuid;

use crate::log::salvage::{HistoryGap, HISTORY_GAP_KIND};
use crate::log::{EventLog, LogError, NewEvent, Record};
use crate::migration::events::{DecodeError, EncodeError};
use crate::migration::{MigrationEvent, MigrationState, Status, TimedEvent};

/// A record whose payload this version cannot decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("procedure {procedure_id}, event {seq}: {error}")]
pub struct UndecodableEvent {
    /// The procedure.
    pub procedure_id: Uuid,
    /// The event's sequence number.
    pub seq: u64,
    /// Why it could not be decoded.
    pub error: DecodeError,
}

/// Why a procedure's history could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The log failed or holds a damaged record.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record's payload could not be decoded.
    #[error(transparent)]
    Undecodable(#[from] UndecodableEvent),
}

/// Encodes migration events for an append, all recorded at `at_ms`.
pub fn encode_events(at_ms: u64, events: &[MigrationEvent]) -> Result<Vec<NewEvent>, EncodeError> {
    events
        .iter()
        .map(|event| encode_event(at_ms, event))
        .collect()
}

/// Encodes migration events for an append, each recorded at its own time.
pub fn encode_timed_events(events: &[TimedEvent]) -> Result<Vec<NewEvent>, EncodeError> {
    events
        .iter()
        .map(|timed| encode_event(timed.at_ms, &timed.event))
        .collect()
}

fn encode_event(at_ms: u64, event: &MigrationEvent) -> Result<NewEvent, EncodeError> {
    Ok(NewEvent {
        kind: event.kind_code(),
        recorded_at_ms: at_ms,
        payload: event.encode()?,
    })
}

/// Decodes one record into a timed migration event.
pub fn decode_record(record: &Record) -> Result<TimedEvent, UndecodableEvent> {
    let event =
        MigrationEvent::decode(record.kind, &record.payload).map_err(|error| UndecodableEvent {
            procedure_id: record.procedure_id,
            seq: record.seq,
            error,
        })?;
    Ok(TimedEvent {
        at_ms: record.recorded_at_ms,
        event,
    })
}

/// A procedure's history as the log holds it: its events, and whether `regmig log salvage`
/// cut it (a [`HISTORY_GAP_KIND`] marker after the last event it could copy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The events, in seq order, up to the marker if there is one.
    pub events: Vec<TimedEvent>,
    /// The first seq missing, when salvage cut the history there.
    pub missing_from_seq: Option<u64>,
}

impl History {
    /// The procedure's status: the folded `state`'s, unless salvage cut the history before
    /// it finished ([`Status::HistoryMissing`]: closed, its end unknown).
    pub fn status(&self, state: &MigrationState) -> Status {
        match self.missing_from_seq {
            Some(missing_from_seq) if !state.is_finished() => {
                Status::HistoryMissing { missing_from_seq }
            }
            _ => state.status(),
        }
    }
}

impl From<Vec<TimedEvent>> for History {
    /// A history salvage did not cut.
    fn from(events: Vec<TimedEvent>) -> History {
        History {
            events,
            missing_from_seq: None,
        }
    }
}

/// Reads and decodes a procedure's whole history; empty when the procedure is unknown. A
/// salvage marker ends it: the events after it are missing.
pub fn load_procedure(log: &EventLog, procedure_id: Uuid) -> Result<Vec<TimedEvent>, LoadError> {
    load_history(log, procedure_id).map(|history| history.events)
}

/// [`load_procedure`] for an async caller: awaits the log store's read instead of blocking
/// a thread on it (a networked store's read does not hold a thread while it waits).
pub async fn load_procedure_async(
    log: &EventLog,
    procedure_id: Uuid,
) -> Result<Vec<TimedEvent>, LoadError> {
    load_history_async(log, procedure_id)
        .await
        .map(|history| history.events)
}

/// Reads and decodes a procedure's whole history, with where salvage cut it if it did;
/// empty when the procedure is unknown.
pub fn load_history(log: &EventLog, procedure_id: Uuid) -> Result<History, LoadError> {
    decode_history(&log.procedure_events(procedure_id, 1)?)
}

/// [`load_history`] for an async caller (see [`load_procedure_async`]).
pub async fn load_history_async(log: &EventLog, procedure_id: Uuid) -> Result<History, LoadError> {
    decode_history(&log.procedure_events_async(procedure_id, 1).await?)
}

/// Decodes a procedure's records (in seq order), up to a salvage marker.
pub fn decode_history(records: &[Record]) -> Result<History, LoadError> {
    let mut history = History {
        events: Vec::with_capacity(records.len()),
        missing_from_seq: None,
    };
    for record in records {
        if record.kind == HISTORY_GAP_KIND {
            // `regmig log salvage` marked the rest of this history missing (and closed the
            // procedure, so no engine resumes it): what is known ends here. The marker's
            // seq is the first missing one should its payload not read.
            let gap = HistoryGap::decode(&record.payload);
            history.missing_from_seq = Some(gap.map_or(record.seq, |gap| gap.missing_from_seq));
            break;
        }
        history.events.push(decode_record(record)?);
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::fold;

    fn record(seq: u64, kind: u16, payload: Vec<u8>) -> Record {
        Record {
            format_version: crate::log::FORMAT_VERSION,
            kind,
            procedure_id: Uuid::from_u128(1),
            seq,
            global_seq: seq,
            recorded_at_ms: 1_000 + seq,
            payload,
            prev_hash: None,
        }
    }

    fn event(seq: u64) -> Record {
        let encoded = encode_events(0, &[MigrationEvent::Resumed])
            .unwrap()
            .remove(0);
        record(seq, encoded.kind, encoded.payload)
    }

    #[test]
    fn a_salvage_marker_ends_the_history_and_makes_an_unfinished_one_history_missing() {
        let gap = HistoryGap {
            missing_from_seq: 2,
            salvaged_from: "old".to_string(),
            reason: "event 2 is missing".to_string(),
        };
        let marker = record(2, HISTORY_GAP_KIND, gap.encode());
        let history = decode_history(&[event(1), marker, event(3)]).unwrap();
        assert_eq!(history.events.len(), 1);
        assert_eq!(history.missing_from_seq, Some(2));
        assert_eq!(
            history.status(&fold(&history.events)),
            Status::HistoryMissing {
                missing_from_seq: 2
            }
        );
        // A marker whose payload does not read: the history is missing from its seq.
        let unreadable = record(3, HISTORY_GAP_KIND, vec![0xc1]);
        let history = decode_history(&[event(1), event(2), unreadable]).unwrap();
        assert_eq!(history.missing_from_seq, Some(3));
        // No marker: the fold's status.
        let whole = decode_history(&[event(1), event(2)]).unwrap();
        assert_eq!(whole.missing_from_seq, None);
        assert_eq!(whole.status(&fold(&whole.events)), Status::Running);
    }
}
