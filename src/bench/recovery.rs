//! Figures 3 and 4: resuming the open procedures of a fixture (time and peak memory), and
//! the latency of a region query (the audit index, then each procedure's summary). Run in a
//! child process ([`super::child`]) so that the peak RSS is this work's alone.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use super::error::BenchError;
use super::memory;
use super::runtime;
use super::world::{self, InstantMailbox};
use regmig::cluster::sled_store::SledMetadataStore;
use regmig::domain::RegionId;
use regmig::engine::{decode_record, load_procedure, AppendMode, Engine, EngineConfig};
use regmig::log::{EventLog, LogOptions};
use regmig::migration::{fold, MigrationEvent};

/// The longest a resume may take before the bench gives up on it.
const RESUME_TIMEOUT: Duration = Duration::from_secs(600);
/// Events read per call of a full scan.
const SCAN_CHUNK_EVENTS: usize = 4096;

/// What resuming a fixture came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeResult {
    /// From opening the log to every open procedure having taken its first step.
    pub resume_ms: f64,
    /// Of which: opening the event log (sled's own recovery included).
    pub open_log_ms: f64,
    /// Of which: `Engine::with_log` (reading and folding every open procedure).
    pub engine_open_ms: f64,
    /// Procedures the engine resumed.
    pub resumed: u64,
    /// RSS before opening (MiB).
    pub rss_before_mib: Option<f64>,
    /// Peak RSS while resuming (MiB).
    pub peak_rss_mib: Option<f64>,
    /// Whether the peak could be reset before resuming (else it covers the whole process).
    pub peak_reset: bool,
    /// Median latency of a region query (ms).
    pub audit_median_ms: f64,
    /// Slowest region query (ms).
    pub audit_max_ms: f64,
    /// Region queries made.
    pub audit_queries: u64,
    /// Procedures a region query returned, on average.
    pub audit_procedures_mean: f64,
    /// The same query answered by scanning every event (no index), when asked (ms).
    pub full_scan_ms: Option<f64>,
}

/// A procedure's summary, as `regmig audit` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcedureSummary {
    /// The procedure.
    pub procedure_id: Uuid,
    /// Its status name.
    pub status: &'static str,
    /// States visited.
    pub states: usize,
    /// Events folded.
    pub events: u64,
}

/// The region query: the audit index, then every procedure's history folded into a summary.
pub fn region_query(log: &EventLog, region: RegionId) -> Result<Vec<ProcedureSummary>, BenchError> {
    let mut summaries = Vec::new();
    for (_, procedure_id) in log.procedures_by_region(region.as_u64(), 0, u64::MAX)? {
        let state = fold(&load_procedure(log, procedure_id)?);
        summaries.push(ProcedureSummary {
            procedure_id,
            status: state.status().name(),
            states: state.report.path.len(),
            events: state.report.counters.events,
        });
    }
    Ok(summaries)
}

/// The same answer without the audit index: every event is read in global order, the
/// procedures whose first event names the region are kept, then loaded and folded.
pub fn region_query_by_scan(
    log: &EventLog,
    region: RegionId,
) -> Result<Vec<ProcedureSummary>, BenchError> {
    let mut matching = Vec::new();
    let mut from_global_seq = 1;
    loop {
        let records = log.events_from(from_global_seq, SCAN_CHUNK_EVENTS)?;
        let Some(last) = records.last() else {
            break;
        };
        from_global_seq = last.global_seq + 1;
        for record in &records {
            if record.seq != 1 {
                continue;
            }
            let timed = decode_record(record)
                .map_err(|error| BenchError::Load(regmig::engine::LoadError::Undecodable(error)))?;
            if let MigrationEvent::Submitted { task, .. } = &timed.event {
                if task.region_id == region {
                    matching.push(record.procedure_id);
                }
            }
        }
    }
    let mut summaries = Vec::new();
    for procedure_id in matching {
        let state = fold(&load_procedure(log, procedure_id)?);
        summaries.push(ProcedureSummary {
            procedure_id,
            status: state.status().name(),
            states: state.report.path.len(),
            events: state.report.counters.events,
        });
    }
    Ok(summaries)
}

/// Copies the fixture in `fixture_dir` to `work_dir`, opens the engine on the copy, waits
/// until every open procedure has taken its first step (its `Resumed` event is durable),
/// then halts it and runs the region queries.
pub fn resume_and_audit(
    fixture_dir: &Path,
    work_dir: &Path,
    audit_regions: &[RegionId],
    full_scan: bool,
) -> Result<ResumeResult, BenchError> {
    let data_dir = work_dir.join("data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .map_err(|error| BenchError::io("remove", &data_dir, error))?;
    }
    memory::copy_dir(fixture_dir, &data_dir)?;
    let rss_before_mib = memory::rss_mib();
    let peak_reset = memory::reset_peak_rss();
    // A current-thread runtime: no resumed task runs before the observer is installed.
    let runtime = runtime::current_thread()?;
    let result = runtime.block_on(async {
        let started = Instant::now();
        let log = EventLog::open(&data_dir, LogOptions::default())?;
        let open_log_ms = started.elapsed().as_secs_f64() * 1e3;
        let store = SledMetadataStore::open(&log)?;
        let ports = world::ports(Arc::new(InstantMailbox::new()), Arc::new(store));
        let config = EngineConfig {
            append_mode: AppendMode::GroupCommit,
            ..EngineConfig::default()
        };
        let engine_started = Instant::now();
        let engine = Engine::with_log(log.clone(), config, ports).await?;
        let engine_open_ms = engine_started.elapsed().as_secs_f64() * 1e3;
        let resumed = engine.running_count() as u64;
        let first_steps = Arc::new(AtomicU64::new(0));
        let all_stepped = Arc::new(Notify::new());
        {
            let first_steps = Arc::clone(&first_steps);
            let all_stepped = Arc::clone(&all_stepped);
            engine.set_observer(Box::new(move |event| {
                if matches!(event.event, MigrationEvent::Resumed)
                    && first_steps.fetch_add(1, Ordering::SeqCst) + 1 == resumed
                {
                    all_stepped.notify_one();
                }
            }));
        }
        if resumed > 0
            && tokio::time::timeout(RESUME_TIMEOUT, all_stepped.notified())
                .await
                .is_err()
        {
            return Err(BenchError::Task(format!(
                "only {} of {resumed} procedures took a step within {RESUME_TIMEOUT:?}",
                first_steps.load(Ordering::SeqCst)
            )));
        }
        let resume_ms = started.elapsed().as_secs_f64() * 1e3;
        let peak_rss_mib = memory::peak_rss_mib();
        engine.shutdown().await;

        let mut latencies = Vec::with_capacity(audit_regions.len());
        let mut procedures = 0usize;
        for region in audit_regions {
            let started = Instant::now();
            let summaries = region_query(&log, *region)?;
            latencies.push(started.elapsed());
            procedures += summaries.len();
        }
        let full_scan_ms = match (full_scan, audit_regions.first()) {
            (true, Some(region)) => {
                let started = Instant::now();
                let summaries = region_query_by_scan(&log, *region)?;
                let elapsed = started.elapsed();
                let indexed = region_query(&log, *region)?;
                if summaries.len() != indexed.len() {
                    return Err(BenchError::Task(format!(
                        "region {region}: the scan found {} procedures, the index {}",
                        summaries.len(),
                        indexed.len()
                    )));
                }
                Some(elapsed.as_secs_f64() * 1e3)
            }
            _ => None,
        };
        let audit_max_ms = latencies
            .iter()
            .max()
            .map(|latency| latency.as_secs_f64() * 1e3)
            .unwrap_or(0.0);
        let audit_queries = latencies.len() as u64;
        let audit_median_ms = super::appends::median(&mut latencies).as_secs_f64() * 1e3;
        drop(engine);
        Ok(ResumeResult {
            resume_ms,
            open_log_ms,
            engine_open_ms,
            resumed,
            rss_before_mib,
            peak_rss_mib,
            peak_reset,
            audit_median_ms,
            audit_max_ms,
            audit_queries,
            audit_procedures_mean: procedures as f64 / audit_queries.max(1) as f64,
            full_scan_ms,
        })
    });
    drop(runtime);
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}
