//! Figure 2: end-to-end migrations per second with N concurrent migrations on the
//! zero-latency cluster, with the durable log and the durable `SledMetadataStore`, beside the
//! two snapshot baselines ([`super::snapshot`]) on the same cluster and store.
//!
//! Each of N workers owns one table (one region) and migrates its region back and forth
//! between two datanodes until the run time is up; the rate is the migrations completed
//! over the time until the last one finished.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::driver::{self, drive};
use super::error::BenchError;
use super::runtime;
use super::snapshot::{PersistPoints, SnapshotRecorder, SnapshotStore};
use super::world::{self, InstantMailbox, FIRST_LEADER, OTHER_PEER};
use regmig::cluster::sled_store::SledMetadataStore;
use regmig::cluster::{MetadataStore, Ports};
use regmig::domain::{Peer, PeerId, RegionId};
use regmig::engine::{
    AppendMode, Engine, EngineConfig, LockTable, MigrationRequest, MigrationSummary, SubmitOutcome,
};
use regmig::log::{EventLog, LogOptions};
use regmig::migration::{MigrationState, Outcome};

/// Which design runs the migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Design {
    /// regmig: every event in the log, group commit.
    EventLog,
    /// Baseline (a), the original's persist points.
    AsOriginal,
    /// Baseline (b), the whole state at every step.
    SnapshotEveryStep,
}

impl Design {
    /// The name used in the table.
    pub fn name(self) -> &'static str {
        match self {
            Design::EventLog => "event log (regmig)",
            Design::AsOriginal => "baseline (a) as the original",
            Design::SnapshotEveryStep => "baseline (b) snapshot at every step",
        }
    }
}

/// What one run of migrations came to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MigrationRun {
    /// The design.
    pub design: Design,
    /// Concurrent migrations.
    pub concurrency: usize,
    /// Migrations completed.
    pub completed: u64,
    /// From the first submit to the last completion.
    pub elapsed: Duration,
    /// Durable operations of the snapshot store (0 for the event log).
    pub snapshot_operations: u64,
    /// CPU time of the whole process (every thread, user + system) during the run.
    pub cpu: Duration,
}

impl MigrationRun {
    /// Adds another round of the same design and concurrency.
    pub fn add(&mut self, other: &MigrationRun) {
        self.completed += other.completed;
        self.elapsed += other.elapsed;
        self.snapshot_operations += other.snapshot_operations;
        self.cpu += other.cpu;
    }

    /// CPU time per migration.
    pub fn cpu_per_migration(&self) -> Duration {
        self.cpu.div_f64(self.completed.max(1) as f64)
    }

    /// Migrations per second.
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// How long to run, or how many migrations each worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLength {
    /// Workers start new migrations until this much time has passed.
    Time(Duration),
    /// Each worker does exactly this many migrations.
    MigrationsPerWorker(u64),
}

/// Runs `concurrency` workers of `design` in a new data directory `dir`.
pub fn measure(
    dir: &Path,
    design: Design,
    concurrency: usize,
    length: RunLength,
) -> Result<MigrationRun, BenchError> {
    let runtime = runtime::multi_thread()?;
    let log = EventLog::open(dir, LogOptions::default())?;
    let store = SledMetadataStore::open(&log)?;
    let tables = u32::try_from(concurrency)
        .map_err(|_| BenchError::InvalidSizes(format!("{concurrency} workers")))?;
    runtime.block_on(world::create_tables(&store, tables))?;
    let mailbox = Arc::new(InstantMailbox::new());
    let ports = world::ports(mailbox, Arc::new(store));
    let cpu_before = process_cpu();
    let mut run = runtime.block_on(async {
        match design {
            Design::EventLog => {
                let config = EngineConfig {
                    log: LogOptions::default(),
                    append_mode: AppendMode::GroupCommit,
                    ..EngineConfig::default()
                };
                let engine = Engine::with_log(log.clone(), config, ports).await?;
                let run = run_workers(concurrency, length, move |region, from, to| {
                    let engine = engine.clone();
                    async move { engine_migration(&engine, region, from, to).await }
                })
                .await?;
                Ok::<_, BenchError>(MigrationRun {
                    design,
                    concurrency,
                    completed: run.0,
                    elapsed: run.1,
                    snapshot_operations: 0,
                    cpu: Duration::ZERO,
                })
            }
            Design::AsOriginal | Design::SnapshotEveryStep => {
                let points = if design == Design::AsOriginal {
                    PersistPoints::AsOriginal
                } else {
                    PersistPoints::EveryStep
                };
                let snapshots = Arc::new(SnapshotStore::open(&log)?);
                let locks = Arc::new(LockTable::new());
                let shared = Arc::new(ports);
                let store_for_workers = Arc::clone(&snapshots);
                let run = run_workers(concurrency, length, move |region, from, to| {
                    let ports = Arc::clone(&shared);
                    let locks = Arc::clone(&locks);
                    let snapshots = Arc::clone(&store_for_workers);
                    async move {
                        snapshot_migration(&ports, &locks, snapshots, points, region, from, to)
                            .await
                    }
                })
                .await?;
                Ok(MigrationRun {
                    design,
                    concurrency,
                    completed: run.0,
                    elapsed: run.1,
                    snapshot_operations: snapshots.durable_operations(),
                    cpu: Duration::ZERO,
                })
            }
        }
    })?;
    run.cpu = process_cpu().saturating_sub(cpu_before);
    drop(runtime);
    Ok(run)
}

/// User + system CPU time of this process so far (every thread).
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Runs one migration through the engine: submit, wait, check it completed.
pub async fn engine_migration(
    engine: &Engine,
    region: RegionId,
    from: PeerId,
    to: PeerId,
) -> Result<MigrationSummary, BenchError> {
    let request =
        MigrationRequest::new(region, Peer::sim(from), Peer::sim(to)).with_trigger("bench");
    let procedure_id = match engine.submit(request).await? {
        SubmitOutcome::Started(procedure_id) => procedure_id,
        SubmitOutcome::AlreadyMigrated => {
            return Err(BenchError::Task(format!(
                "region {region} is already on datanode {to}"
            )))
        }
    };
    let summary = engine.wait(procedure_id).await?;
    completed(procedure_id, region, summary.outcome, &summary.final_error)?;
    Ok(summary)
}

/// Runs one migration through `decide` with a snapshot store at the given persist points.
pub async fn snapshot_migration(
    ports: &Ports,
    locks: &LockTable,
    store: Arc<SnapshotStore>,
    points: PersistPoints,
    region: RegionId,
    from: PeerId,
    to: PeerId,
) -> Result<MigrationState, BenchError> {
    let metadata: &dyn MetadataStore = ports.metadata.as_ref();
    let submitted =
        driver::submitted_event(metadata, region, Peer::sim(from), Peer::sim(to)).await?;
    let procedure_id = driver::procedure_id(ports);
    let mut recorder = SnapshotRecorder::new(store, points);
    let state = drive(ports, locks, procedure_id, submitted, &mut recorder).await?;
    completed(
        procedure_id,
        region,
        state.outcome,
        &state.report.final_error,
    )?;
    Ok(state)
}

fn completed(
    procedure_id: uuid::Uuid,
    region: RegionId,
    outcome: Option<Outcome>,
    final_error: &Option<String>,
) -> Result<(), BenchError> {
    if outcome == Some(Outcome::Completed) {
        return Ok(());
    }
    Err(BenchError::NotCompleted {
        procedure_id,
        region: region.to_string(),
        outcome: outcome
            .map(|outcome| outcome.name().to_string())
            .unwrap_or_else(|| "unfinished".to_string()),
        error: final_error.clone().unwrap_or_default(),
    })
}

/// Runs `workers` loops, worker `i` migrating region `i` back and forth; returns the
/// migrations completed and the time from start to the last completion.
async fn run_workers<F, Fut, T>(
    workers: usize,
    length: RunLength,
    migrate: F,
) -> Result<(u64, Duration), BenchError>
where
    F: Fn(RegionId, PeerId, PeerId) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, BenchError>> + Send + 'static,
    T: Send + 'static,
{
    let migrate = Arc::new(migrate);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..workers {
        let migrate = Arc::clone(&migrate);
        tasks.spawn(async move {
            let region = world::region_of(index as u32);
            let (mut from, mut to) = (FIRST_LEADER, OTHER_PEER);
            let mut done = 0u64;
            loop {
                let go_on = match length {
                    RunLength::Time(run) => started.elapsed() < run,
                    RunLength::MigrationsPerWorker(count) => done < count,
                };
                if !go_on {
                    return Ok::<u64, BenchError>(done);
                }
                migrate(region, from, to).await?;
                std::mem::swap(&mut from, &mut to);
                done += 1;
            }
        });
    }
    let mut completed = 0u64;
    while let Some(joined) = tasks.join_next().await {
        completed +=
            joined.map_err(|error| BenchError::Task(format!("migration worker: {error}")))??;
    }
    Ok((completed, started.elapsed()))
}
