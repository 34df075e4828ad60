//! Figure 6: bytes on disk per event, and memory while many migrations run at once and
//! after they finish. Run in a child process ([`super::child`]) so that its RSS is its own.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::BenchError;
use super::memory;
use super::migrations::engine_migration;
use super::runtime;
use super::world::{self, InstantMailbox, FIRST_LEADER, OTHER_PEER};
use regmig::cluster::sled_store::SledMetadataStore;
use regmig::engine::{AppendMode, Engine, EngineConfig};
use regmig::log::{EventLog, LogOptions, SLED_SUBDIR};

/// How long the process rests before RSS is read (freed memory, finished tasks).
const SETTLE: Duration = Duration::from_millis(300);
/// Key bytes of an event record: prefix, procedure id, seq.
pub const EVENT_KEY_BYTES: u64 = 1 + 16 + 8;
/// Events read per call when counting.
const COUNT_CHUNK_EVENTS: usize = 4096;

/// What a campaign came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignResult {
    /// Migrations run, all at once.
    pub migrations: u64,
    /// How long they took.
    pub elapsed_ms: f64,
    /// Events in the log afterwards.
    pub events: u64,
    /// Key and record bytes of those events (what is logically stored).
    pub logical_bytes: u64,
    /// The sled directory's size on disk after the engine closed.
    pub disk_bytes: u64,
    /// RSS after setup, before the first submit (MiB).
    pub rss_before_mib: Option<f64>,
    /// Peak RSS while the migrations ran (MiB).
    pub peak_rss_mib: Option<f64>,
    /// Whether the peak could be reset before the campaign.
    pub peak_reset: bool,
    /// RSS once every migration finished (MiB).
    pub rss_after_mib: Option<f64>,
    /// RSS after that, once malloc has returned its free memory to the system (MiB; glibc
    /// only): what is still in use, as against what malloc keeps for later.
    pub rss_after_trim_mib: Option<f64>,
}

/// Runs `migrations` migrations at once (each on its own one-region table) through the
/// engine in a new data directory under `work_dir`.
pub fn run(work_dir: &Path, migrations: u64) -> Result<CampaignResult, BenchError> {
    let data_dir = work_dir.join("campaign");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .map_err(|error| BenchError::io("remove", &data_dir, error))?;
    }
    let tables = u32::try_from(migrations)
        .map_err(|_| BenchError::InvalidSizes(format!("{migrations} migrations")))?;
    let runtime = runtime::multi_thread()?;
    let mut result = runtime.block_on(async {
        let log = EventLog::open(&data_dir, LogOptions::default())?;
        let store = SledMetadataStore::open(&log)?;
        world::create_tables(&store, tables).await?;
        let ports = world::ports(Arc::new(InstantMailbox::new()), Arc::new(store));
        let config = EngineConfig {
            append_mode: AppendMode::GroupCommit,
            ..EngineConfig::default()
        };
        let engine = Engine::with_log(log.clone(), config, ports).await?;
        tokio::time::sleep(SETTLE).await;
        let rss_before_mib = memory::rss_mib();
        let peak_reset = memory::reset_peak_rss();
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..tables {
            let engine = engine.clone();
            tasks.spawn(async move {
                engine_migration(&engine, world::region_of(index), FIRST_LEADER, OTHER_PEER).await
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|error| BenchError::Task(format!("migration: {error}")))??;
        }
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        let peak_rss_mib = memory::peak_rss_mib();
        tokio::time::sleep(SETTLE).await;
        let rss_after_mib = memory::rss_mib();
        let rss_after_trim_mib = memory::trim_heap().then(memory::rss_mib).flatten();
        engine.shutdown().await;
        drop(engine);

        let (events, logical_bytes) = count_events(&log)?;
        Ok::<_, BenchError>(CampaignResult {
            migrations,
            elapsed_ms,
            events,
            logical_bytes,
            disk_bytes: 0,
            rss_before_mib,
            peak_rss_mib,
            peak_reset,
            rss_after_mib,
            rss_after_trim_mib,
        })
    })?;
    // Every clone of the log is gone with the runtime's tasks: sled has closed its files.
    drop(runtime);
    result.disk_bytes = memory::disk_usage_bytes(&data_dir.join(SLED_SUBDIR))?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(result)
}

/// Events in the log and their key + record bytes.
pub fn count_events(log: &EventLog) -> Result<(u64, u64), BenchError> {
    let mut events = 0u64;
    let mut bytes = 0u64;
    let mut from_global_seq = 1;
    loop {
        let records = log.events_from(from_global_seq, COUNT_CHUNK_EVENTS)?;
        let Some(last) = records.last() else {
            return Ok((events, bytes));
        };
        from_global_seq = last.global_seq + 1;
        for record in &records {
            events += 1;
            bytes += EVENT_KEY_BYTES + record.encoded_len() as u64;
        }
    }
}
