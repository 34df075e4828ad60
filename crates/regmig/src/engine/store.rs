//! The bridge between the log's records and the migration's events.

use uuid::Uuid;

use crate::log::salvage::HISTORY_GAP_KIND;
use crate::log::{EventLog, LogError, NewEvent, Record};
use crate::migration::events::{DecodeError, EncodeError};
use crate::migration::{MigrationEvent, TimedEvent};

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

/// Reads and decodes a procedure's whole history; empty when the procedure is unknown. A
/// salvage marker ends it: the events after it are missing.
pub fn load_procedure(log: &EventLog, procedure_id: Uuid) -> Result<Vec<TimedEvent>, LoadError> {
    decode_history(&log.procedure_events(procedure_id, 1)?)
}

/// [`load_procedure`] for an async caller: awaits the log store's read instead of blocking
/// a thread on it (a networked store's read does not hold a thread while it waits).
pub async fn load_procedure_async(
    log: &EventLog,
    procedure_id: Uuid,
) -> Result<Vec<TimedEvent>, LoadError> {
    decode_history(&log.procedure_events_async(procedure_id, 1).await?)
}

/// Decodes a procedure's records, up to a salvage marker.
fn decode_history(records: &[Record]) -> Result<Vec<TimedEvent>, LoadError> {
    let mut events = Vec::with_capacity(records.len());
    for record in records {
        if record.kind == HISTORY_GAP_KIND {
            // `regmig log salvage` marked the rest of this history missing (and closed the
            // procedure, so no engine resumes it): what is known ends here.
            break;
        }
        events.push(decode_record(record)?);
    }
    Ok(events)
}
