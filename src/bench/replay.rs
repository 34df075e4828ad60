//! Figure 5: events folded per second (`migration::fold` over decoded events), beside the
//! rate at which the same events are decoded from their payloads.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::error::BenchError;
use super::fixture;
use regmig::migration::{fold, MigrationEvent, TimedEvent};

/// What replaying came to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplayResult {
    /// Distinct procedures replayed.
    pub procedures: u64,
    /// Events decoded and folded (each procedure many times over).
    pub events: u64,
    /// Events decoded per second.
    pub decode_per_second: f64,
    /// Events folded per second.
    pub fold_per_second: f64,
}

/// Generates `procedures` histories, then decodes and folds them until `events` events
/// have gone through each.
pub fn measure(procedures: u64, events: u64) -> Result<ReplayResult, BenchError> {
    let encoded = fixture::histories(procedures)?;
    let per_pass: u64 = encoded.iter().map(|history| history.len() as u64).sum();
    if per_pass == 0 {
        return Err(BenchError::InvalidSizes("no events to replay".to_string()));
    }
    let passes = events.div_ceil(per_pass).max(1);

    let mut decoded: Vec<Vec<TimedEvent>> = Vec::new();
    let mut decode_time = Duration::ZERO;
    for pass in 0..passes {
        let started = Instant::now();
        let mut histories = Vec::with_capacity(encoded.len());
        for history in &encoded {
            let mut events = Vec::with_capacity(history.len());
            for (kind, at_ms, payload) in history {
                let event = MigrationEvent::decode(*kind, payload)
                    .map_err(|error| BenchError::Task(format!("decode: {error}")))?;
                events.push(TimedEvent {
                    at_ms: *at_ms,
                    event,
                });
            }
            histories.push(events);
        }
        decode_time += started.elapsed();
        if pass == 0 {
            decoded = histories;
        } else {
            black_box(histories);
        }
    }

    let started = Instant::now();
    let mut folded = 0u64;
    for _ in 0..passes {
        for history in &decoded {
            let state = fold(black_box(history));
            folded += black_box(state.report.counters.events);
        }
    }
    let fold_time = started.elapsed();
    let total = per_pass * passes;
    if folded != total {
        return Err(BenchError::Task(format!(
            "folded {folded} events, expected {total}"
        )));
    }
    Ok(ReplayResult {
        procedures: encoded.len() as u64,
        events: total,
        decode_per_second: total as f64 / decode_time.as_secs_f64().max(1e-9),
        fold_per_second: total as f64 / fold_time.as_secs_f64().max(1e-9),
    })
}
