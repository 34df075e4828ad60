//! Runs a scenario: the real engine, on the simulated cluster, in virtual time.
//!
//! Everything runs on one current-thread tokio runtime with paused time, the engine appends
//! inline (no background thread decides any order), and all randomness comes from the
//! scenario's seed: the same file gives a byte-identical log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use uuid::Uuid;

use super::cluster::{ClusterSetup, RegionSetup, SetupError, SimCluster, TableSetup};
use super::datanode::SimOptions;
use super::scenario::{
    check_expectations, sent_key, CrashTrigger, FaultSpec, InvariantsResult, MigrationResult,
    MigrationSpec, RegionResult, Scenario, ScenarioOutcome,
};
use regmig::cluster::Clock;
use regmig::domain::{RegionId, RegionRoute};
use regmig::engine::{
    load_procedure, AppendMode, BatchRegionStart, BatchRequest, Engine, EngineConfig, EngineError,
    MigrationRequest, SubmitContext, SubmitError, SubmitOutcome,
};
use regmig::log::{encode_record, Durability, EventLog, LogError, LogOptions};
use regmig::migration::{BatchOutcome, MigrationEvent, MigrationState, Outcome, TimedEvent};

/// Virtual time 0 of every simulation: 2026-01-01T00:00:00Z.
pub const SIM_EPOCH_BASE_MS: u64 = 1_767_225_600_000;
/// A run that has not finished by this virtual time is stopped and fails.
pub const SIM_VIRTUAL_TIME_MAX_MS: u64 = 3_600_000;

/// How many times a restart retries opening a data directory the crashed engine's log has
/// not released yet, [`REOPEN_RETRY_DELAY_MS`] of real time apart (10 s in all).
pub const REOPEN_ATTEMPTS_MAX: u32 = 1_000;
/// Real time between two attempts to reopen the data directory after a crash.
pub const REOPEN_RETRY_DELAY_MS: u64 = 10;

/// How to run a scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where the log goes. `None`: a fresh temporary directory (`regmig-sim-*`), removed
    /// when the run passes or cannot be run at all; a failing run's log is kept, at the path
    /// its result names, to be inspected and replayed.
    pub data_dir: Option<PathBuf>,
    /// Delete a given `data_dir` after a run that passed, too (a failing run's is kept).
    pub discard_data_dir: bool,
    /// Skip fdatasync (fuzzing only; crashes here are engine halts, never machine crashes).
    pub unsynced_log: bool,
    /// The broken datanode model, for the invariant checker's own test.
    pub sim_options: SimOptions,
}

/// Why a scenario could not be run at all (an invalid run is not a failed expectation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The cluster described cannot be built.
    #[error("cannot build the cluster: {0}")]
    Setup(#[from] SetupError),
    /// The data directory could not be made.
    #[error("cannot create a data directory: {0}")]
    DataDir(std::io::Error),
    /// The runtime could not be made.
    #[error("cannot start the simulation runtime: {0}")]
    Runtime(std::io::Error),
    /// The engine could not open its log.
    #[error("the engine failed: {0}")]
    Engine(#[from] EngineError),
    /// The log failed.
    #[error("the log failed: {0}")]
    Log(#[from] LogError),
}

/// A finished run: its outcome and what the log holds.
#[derive(Debug)]
pub struct ScenarioRun {
    /// The result, as `--json` prints it.
    pub outcome: ScenarioOutcome,
    /// Every record of the log, encoded, in global order (equal for equal seeds).
    pub log_fingerprint: Vec<u8>,
    /// Events of the first migration's procedure (for crash sweeps).
    pub first_migration_events: u64,
}

/// Runs a scenario on a fresh current-thread runtime with paused time.
pub fn run_scenario(scenario: &Scenario, options: &RunOptions) -> Result<ScenarioRun, RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(RunError::Runtime)?;
    let result = runtime.block_on(run(scenario, options));
    runtime.shutdown_background();
    result
}

fn cluster_setup(scenario: &Scenario) -> ClusterSetup {
    ClusterSetup {
        seed: scenario.seed,
        peers: scenario.cluster.peers.clone(),
        tables: scenario
            .cluster
            .tables
            .iter()
            .map(|table| TableSetup {
                id: table.id,
                catalog: table.catalog.clone(),
                schema: table.schema.clone(),
                wal: table.wal,
                logical: table.logical,
                regions: table
                    .regions
                    .iter()
                    .map(|region| RegionSetup {
                        number: region.number,
                        leader: region.leader,
                        followers: region.followers.clone(),
                        last_entry_id: region.last_entry_id,
                    })
                    .collect(),
            })
            .collect(),
        writes_per_second: scenario.workload.as_ref().map(|w| w.writes_per_second),
        flush_writes_per_second: Some(scenario.cluster.flush_writes_per_second),
        epoch_base_ms: SIM_EPOCH_BASE_MS,
    }
}

/// Engine crashes still to come, each with how long the engine then stays down.
#[derive(Default)]
struct CrashPlan {
    /// Crash once any migration's event count reaches k (each fires once): (k, down ms).
    /// A batch's count is every event of every one of its regions, in the order appended.
    after_events: Vec<(u64, u64)>,
    /// Events appended so far per migration (a single procedure, or a batch by its id),
    /// over every engine session of the run.
    appended: BTreeMap<Uuid, u64>,
    /// The batch of each procedure that joined one.
    batch_of: BTreeMap<Uuid, Uuid>,
    /// Crash at these virtual times (ms from the start): (at, down ms).
    at_ms: Vec<(u64, u64)>,
}

/// What became of a migration's submit.
enum Submitted {
    Pending,
    Started {
        id: Uuid,
        at_ms: u64,
    },
    Noop,
    Rejected(SubmitError),
    /// A batch: each region's start, in the order of `regions`.
    Batch {
        batch_id: Uuid,
        regions: Vec<(RegionId, BatchRegionStart)>,
        at_ms: u64,
    },
}

impl Submitted {
    /// The procedures this submit started.
    fn started_ids(&self) -> Vec<Uuid> {
        match self {
            Submitted::Started { id, .. } => vec![*id],
            Submitted::Batch { regions, .. } => regions
                .iter()
                .filter_map(|(_, start)| match start {
                    BatchRegionStart::Started(id) => Some(*id),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

struct Sim {
    cluster: Arc<SimCluster>,
    data_dir: PathBuf,
    config: EngineConfig,
    plan: Arc<Mutex<CrashPlan>>,
    /// Set by the observer when it halts the engine; cleared by whoever restarts it.
    crash_pending: Arc<AtomicBool>,
    /// Wakes the run loop when the observer halts the engine.
    crash: Arc<Notify>,
    /// How long the engine the observer halted stays down (virtual ms).
    crash_down_ms: Arc<AtomicU64>,
    /// The routes when each procedure finished (route expectations are read then).
    routes_at_end: Arc<Mutex<BTreeMap<Uuid, BTreeMap<RegionId, RegionRoute>>>>,
}

impl Sim {
    /// Opens the engine on the data directory. `reopening`: right after a crash of the
    /// previous engine in this process, whose log may not have released the directory yet.
    async fn open_engine(&self, reopening: bool) -> Result<Engine, RunError> {
        let mut attempts = 0;
        let engine = loop {
            let mut ports = self.cluster.ports();
            ports.submit_metadata = self.cluster.validation_view();
            match Engine::open(&self.data_dir, self.config.clone(), ports).await {
                // sled 0.34 lets go of its lock on the db file from a background thread
                // after the last handle is dropped (spacejam/sled#1289): wait for it, in real
                // time (a blocking sleep does not move virtual time).
                Err(EngineError::Log(LogError::InUse { .. }))
                    if reopening && attempts < REOPEN_ATTEMPTS_MAX =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(REOPEN_RETRY_DELAY_MS));
                }
                result => break result?,
            }
        };
        let halt = engine.halt_handle();
        let plan = self.plan.clone();
        let crash = self.crash.clone();
        let crash_pending = self.crash_pending.clone();
        let crash_down_ms = self.crash_down_ms.clone();
        let routes_at_end = self.routes_at_end.clone();
        let cluster = Arc::downgrade(&self.cluster);
        engine.set_observer(Box::new(move |event| {
            if event.event.is_terminal() {
                if let Some(cluster) = cluster.upgrade() {
                    routes_at_end
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(event.procedure_id, cluster.region_routes_now());
                }
            }
            let mut plan = plan.lock().unwrap_or_else(|e| e.into_inner());
            if let MigrationEvent::BatchJoined { batch_id, .. } = &event.event {
                plan.batch_of.insert(event.procedure_id, *batch_id);
            }
            let migration = plan
                .batch_of
                .get(&event.procedure_id)
                .copied()
                .unwrap_or(event.procedure_id);
            let appended = plan.appended.entry(migration).or_insert(0);
            *appended += 1;
            let appended = *appended;
            if let Some(position) = plan.after_events.iter().position(|(k, _)| appended >= *k) {
                let (_, down_ms) = plan.after_events.remove(position);
                halt.halt();
                crash_down_ms.store(down_ms, Ordering::SeqCst);
                crash_pending.store(true, Ordering::SeqCst);
                crash.notify_one();
            }
        }));
        Ok(engine)
    }

    /// Stops the engine as a crash would, keeps it down `down_ms` of virtual time (the
    /// cluster runs on), and opens it again on the same data directory.
    async fn restart(&self, engine: Engine, down_ms: u64) -> Result<Engine, RunError> {
        engine.halt();
        engine.shutdown().await;
        drop(engine);
        if down_ms > 0 {
            let clock = self.cluster.clock();
            let until_ms = clock.now_ms().saturating_add(down_ms);
            clock.sleep_until_ms(until_ms).await;
        }
        self.open_engine(true).await
    }
}

/// Waits until every started procedure has finished (pending forever while one is halted).
async fn all_finished(engine: &Engine, ids: &[Uuid]) {
    for id in ids {
        match engine.wait(*id).await {
            Ok(_) => {}
            Err(_) => std::future::pending::<()>().await,
        }
    }
}

/// Who and why a scenario's migration records, with its budget.
fn scenario_context(spec: &MigrationSpec) -> SubmitContext {
    SubmitContext {
        timeout_ms: spec.timeout_ms,
        trigger: "scenario".to_string(),
        reason: spec.reason.clone(),
        actor: spec.actor.clone(),
    }
}

async fn run(scenario: &Scenario, options: &RunOptions) -> Result<ScenarioRun, RunError> {
    // A temporary directory is removed when this returns, unless a failed run keeps it.
    let mut temporary = None;
    let data_dir = match &options.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(RunError::DataDir)?;
            dir.clone()
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("regmig-sim-")
                .tempdir()
                .map_err(RunError::DataDir)?;
            let path = dir.path().to_path_buf();
            temporary = Some(dir);
            path
        }
    };
    let cluster = SimCluster::new(cluster_setup(scenario), options.sim_options)?;
    for script in &scenario.scripts {
        match script.region {
            Some(region) => cluster.script_region_replies(
                script.peer,
                script.instruction,
                region,
                script.replies.iter().cloned(),
            ),
            None => cluster.script_replies(
                script.peer,
                script.instruction,
                script.replies.iter().cloned(),
            ),
        }
    }
    let mut plan = CrashPlan::default();
    for fault in &scenario.faults {
        match fault {
            FaultSpec::MetadataCasConflict { count, at_ms } => {
                cluster.inject_cas_conflicts(*count, *at_ms)
            }
            FaultSpec::MetadataUnavailable { count, at_ms } => {
                cluster.inject_metadata_unavailable(*count, *at_ms)
            }
            FaultSpec::MetadataCasConflictUntil { at_ms, until_ms } => {
                cluster.inject_cas_conflicts_until(*at_ms, *until_ms)
            }
            FaultSpec::MetadataUnavailableUntil { at_ms, until_ms } => {
                cluster.inject_metadata_unavailable_until(*at_ms, *until_ms)
            }
            FaultSpec::Partition {
                peer,
                at_ms,
                heal_after_ms,
            } => cluster.partition(*peer, *at_ms, *heal_after_ms),
            FaultSpec::DatanodeCrash {
                peer,
                at_ms,
                restart_after_ms,
            } => cluster.crash_datanode(*peer, *at_ms, *restart_after_ms),
            FaultSpec::MessageDelay {
                peer,
                delay_ms,
                at_ms,
            } => cluster.inject_message_delay(*peer, *delay_ms, *at_ms),
            FaultSpec::EngineCrash {
                trigger,
                restart_after_ms,
            } => match trigger {
                CrashTrigger::AfterEvents(k) => plan.after_events.push((*k, *restart_after_ms)),
                CrashTrigger::AtMs(at_ms) => plan.at_ms.push((*at_ms, *restart_after_ms)),
            },
        }
    }
    plan.after_events.sort_unstable();
    plan.at_ms.sort_unstable();
    let mut time_crashes: Vec<(u64, u64)> = plan.at_ms.clone();
    cluster.start();
    let clock = cluster.clock();
    let sim = Sim {
        cluster: cluster.clone(),
        data_dir: data_dir.clone(),
        config: EngineConfig {
            log: LogOptions {
                durability: if options.unsynced_log {
                    Durability::UnsyncedForTestsOnly
                } else {
                    Durability::Durable
                },
                ..LogOptions::default()
            },
            append_mode: AppendMode::Inline,
            ..EngineConfig::default()
        },
        plan: Arc::new(Mutex::new(plan)),
        crash_pending: Arc::new(AtomicBool::new(false)),
        crash: Arc::new(Notify::new()),
        crash_down_ms: Arc::new(AtomicU64::new(0)),
        routes_at_end: Arc::new(Mutex::new(BTreeMap::new())),
    };
    let mut engine = sim.open_engine(false).await?;

    // Submits in time order; equal times in file order.
    let mut order: Vec<usize> = (0..scenario.migrations.len()).collect();
    order.sort_by_key(|&index| scenario.migrations[index].at_ms);
    let mut next_submit = 0;
    let mut submitted: Vec<Submitted> = scenario
        .migrations
        .iter()
        .map(|_| Submitted::Pending)
        .collect();
    let mut failures = Vec::new();
    // Cancels in time order (equal times in file order).
    let mut cancels: Vec<&super::scenario::CancelSpec> = scenario.cancels.iter().collect();
    cancels.sort_by_key(|cancel| cancel.at_ms);
    let mut next_cancel = 0;
    loop {
        let now_ms = clock.elapsed_ms();
        while next_submit < order.len() && scenario.migrations[order[next_submit]].at_ms <= now_ms {
            // A crash while the previous submit ran: the next submit goes to the reopened
            // engine, as it would after a real crash (never to the halted one).
            if sim.crash_pending.swap(false, Ordering::SeqCst) {
                let down_ms = sim.crash_down_ms.load(Ordering::SeqCst);
                engine = sim.restart(engine, down_ms).await?;
            }
            let index = order[next_submit];
            let spec = &scenario.migrations[index];
            if !spec.regions.is_empty() {
                let batch = BatchRequest {
                    context: scenario_context(spec),
                    ..BatchRequest::new(
                        spec.regions.clone(),
                        regmig::domain::Peer::sim(spec.from),
                        regmig::domain::Peer::sim(spec.to),
                    )
                };
                submitted[index] = match engine.submit_batch(batch).await {
                    Ok(batch) => Submitted::Batch {
                        batch_id: batch.batch_id,
                        regions: batch.regions,
                        at_ms: now_ms,
                    },
                    Err(error) => Submitted::Rejected(error),
                };
                next_submit += 1;
                continue;
            }
            let request = MigrationRequest {
                context: scenario_context(spec),
                ..MigrationRequest::new(
                    spec.region,
                    regmig::domain::Peer::sim(spec.from),
                    regmig::domain::Peer::sim(spec.to),
                )
            };
            submitted[index] = match engine.submit(request).await {
                Ok(SubmitOutcome::Started(id)) => Submitted::Started { id, at_ms: now_ms },
                Ok(SubmitOutcome::AlreadyMigrated) => Submitted::Noop,
                Err(error) => Submitted::Rejected(error),
            };
            next_submit += 1;
        }
        // After the submits of the same instant: a cancel at a migration's own `at` finds it.
        while next_cancel < cancels.len() && cancels[next_cancel].at_ms <= now_ms {
            let cancel = cancels[next_cancel];
            next_cancel += 1;
            if sim.crash_pending.swap(false, Ordering::SeqCst) {
                let down_ms = sim.crash_down_ms.load(Ordering::SeqCst);
                engine = sim.restart(engine, down_ms).await?;
            }
            // A cancel of a migration not started (refused, no-op, not yet submitted) or
            // already finished does nothing; one the engine refuses is recorded by it.
            let ids = submitted
                .get(cancel.migration)
                .map(Submitted::started_ids)
                .unwrap_or_default();
            for id in ids {
                for _ in 0..2 {
                    if sim.crash_pending.swap(false, Ordering::SeqCst) {
                        let down_ms = sim.crash_down_ms.load(Ordering::SeqCst);
                        engine = sim.restart(engine, down_ms).await?;
                    }
                    let answered = engine.cancel(id, &cancel.actor, &cancel.reason).await;
                    // The engine crashed while taking it: the operator, never answered,
                    // asks the reopened engine again.
                    if answered.is_err() && sim.crash_pending.load(Ordering::SeqCst) {
                        continue;
                    }
                    break;
                }
            }
        }
        let ids: Vec<Uuid> = submitted.iter().flat_map(Submitted::started_ids).collect();
        let next_submit_at = order
            .get(next_submit)
            .map(|&index| SIM_EPOCH_BASE_MS + scenario.migrations[index].at_ms);
        let next_crash_at = time_crashes.first().map(|(at, _)| SIM_EPOCH_BASE_MS + at);
        let next_cancel_at = cancels
            .get(next_cancel)
            .map(|cancel| SIM_EPOCH_BASE_MS + cancel.at_ms);
        let limit_at = SIM_EPOCH_BASE_MS + SIM_VIRTUAL_TIME_MAX_MS;
        let everything_submitted = next_submit_at.is_none();
        tokio::select! {
            biased;
            () = sim.crash.notified() => {
                // Already restarted by the submit loop when the flag is clear.
                if sim.crash_pending.swap(false, Ordering::SeqCst) {
                    let down_ms = sim.crash_down_ms.load(Ordering::SeqCst);
                    engine = sim.restart(engine, down_ms).await?;
                }
            }
            () = clock.sleep_until_ms(next_crash_at.unwrap_or(u64::MAX)), if next_crash_at.is_some() => {
                let (_, down_ms) = time_crashes.remove(0);
                engine = sim.restart(engine, down_ms).await?;
            }
            () = clock.sleep_until_ms(next_submit_at.unwrap_or(u64::MAX)), if next_submit_at.is_some() => {}
            () = clock.sleep_until_ms(next_cancel_at.unwrap_or(u64::MAX)), if next_cancel_at.is_some() => {}
            () = all_finished(&engine, &ids), if everything_submitted => break,
            () = clock.sleep_until_ms(limit_at) => {
                failures.push(format!(
                    "the run did not finish within {} s of virtual time",
                    SIM_VIRTUAL_TIME_MAX_MS / 1000
                ));
                break;
            }
        }
    }
    let end_ms = clock.elapsed_ms();
    // `settle`: the cluster runs on (heartbeats, workload, invariant checks) after the last
    // migration ends, so what happens next is checked too.
    let settle_ms = scenario
        .expects
        .iter()
        .filter_map(|expect| expect.settle_ms)
        .max()
        .unwrap_or(0);
    if settle_ms > 0 && failures.is_empty() {
        let until_ms = clock.now_ms().saturating_add(settle_ms);
        clock.sleep_until_ms(until_ms).await;
    }
    cluster.stop();
    let routes_at_end = sim
        .routes_at_end
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();

    let mut migrations = Vec::new();
    let mut first_migration_events = 0;
    let mut ended_regions = Vec::new();
    for (index, spec) in scenario.migrations.iter().enumerate() {
        // A finished migration's route is the one it left (read when it ended).
        let route = match &submitted[index] {
            Submitted::Started { id, .. } => match routes_at_end.get(id) {
                Some(routes) => routes.get(&spec.region).cloned(),
                None => cluster.metadata().region_route_now(spec.region),
            },
            _ => cluster.metadata().region_route_now(spec.region),
        };
        let mut result = route_result(spec.region, route.as_ref());
        if !spec.regions.is_empty() {
            result.region = spec
                .regions
                .iter()
                .map(RegionId::to_string)
                .collect::<Vec<_>>()
                .join(",");
        }
        match &submitted[index] {
            Submitted::Pending => {
                result.outcome = "not_submitted".to_string();
            }
            Submitted::Noop => result.outcome = "noop".to_string(),
            Submitted::Rejected(error) => {
                result.outcome = "rejected".to_string();
                result.error = Some(format!("{}: {error}", error.kind()));
            }
            Submitted::Batch {
                batch_id,
                regions,
                at_ms,
            } => {
                let mut batch = BatchResults {
                    result: &mut result,
                    failures: &mut failures,
                    ended_regions: &mut ended_regions,
                };
                let batch_events = batch.fill(
                    &engine,
                    &cluster,
                    &routes_at_end,
                    (index, *batch_id, *at_ms, end_ms),
                    regions,
                )?;
                if index == 0 {
                    first_migration_events = batch_events;
                }
            }
            Submitted::Started { id, at_ms } => {
                let events = load_procedure(engine.log(), *id).map_err(EngineError::from)?;
                let state = regmig::migration::fold(&events);
                if index == 0 {
                    first_migration_events = events.len() as u64;
                }
                fill_from_log(&mut result, *id, &state, &events, *at_ms, end_ms);
                result.unwritable_ms = cluster.unwritable_ms(
                    spec.region,
                    *at_ms,
                    at_ms.saturating_add(result.virtual_time_ms),
                );
                if state.is_finished() {
                    ended_regions.push(spec.region);
                } else {
                    failures.push(format!(
                        "migration {} ({}): did not finish (status {})",
                        index + 1,
                        spec.region,
                        state.status().name()
                    ));
                }
            }
        }
        for failure in check_expectations(&scenario.expects[index], &result, index + 1) {
            failures.push(failure);
        }
        migrations.push(result);
    }

    // final_check() returns every violation seen, the lost-write check included.
    let mut violations: Vec<String> = cluster
        .final_check()
        .into_iter()
        .map(|violation| violation.to_string())
        .collect();
    for region in cluster.downgrading_regions() {
        if ended_regions.contains(&region) {
            violations.push(format!(
                "region {region} is left Downgrading after its migration ended"
            ));
        }
    }
    let report = engine.log().verify()?;
    for problem in &report.problems {
        violations.push(format!("the log does not verify: {problem}"));
    }
    let log_fingerprint = fingerprint(engine.log())?;
    engine.shutdown().await;
    drop(engine);
    let invariants_ok = violations.is_empty();
    let outcome = ScenarioOutcome {
        name: scenario.name.clone(),
        ok: failures.is_empty() && invariants_ok,
        failures,
        migrations,
        invariants: InvariantsResult {
            ok: invariants_ok,
            violations,
        },
        data_dir: data_dir.display().to_string(),
    };
    match temporary {
        Some(dir) if !outcome.ok => {
            let _ = dir.keep();
        }
        Some(_) => {}
        None if options.discard_data_dir && outcome.ok => {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        None => {}
    }
    Ok(ScenarioRun {
        outcome,
        log_fingerprint,
        first_migration_events,
    })
}

/// Where a batch's results go.
struct BatchResults<'a> {
    result: &'a mut MigrationResult,
    failures: &'a mut Vec<String>,
    ended_regions: &'a mut Vec<RegionId>,
}

impl BatchResults<'_> {
    /// Fills a batch's result from its regions' logs; returns how many events the batch
    /// appended over all its regions (the crash sweep crashes after each of them).
    fn fill(
        &mut self,
        engine: &Engine,
        cluster: &SimCluster,
        routes_at_end: &BTreeMap<Uuid, BTreeMap<RegionId, RegionRoute>>,
        (index, batch_id, at_ms, end_ms): (usize, Uuid, u64, u64),
        regions: &[(RegionId, BatchRegionStart)],
    ) -> Result<u64, RunError> {
        let result = &mut *self.result;
        result.region = regions
            .iter()
            .map(|(region, _)| region.to_string())
            .collect::<Vec<_>>()
            .join(",");
        result.procedure_id = Some(batch_id.to_string());
        let mut outcomes = Vec::new();
        let mut errors = Vec::new();
        let mut batch_events = 0;
        // The first refusal, "KIND: message", as a rejected submit reports it.
        let mut first_refusal: Option<String> = None;
        for (region, start) in regions {
            let (outcome, route, unwritable_ms) = match start {
                // Refused alone (its table or route is missing): it did not complete.
                BatchRegionStart::Refused(error) => {
                    errors.push(format!("region {region}: {}: {error}", error.kind()));
                    first_refusal.get_or_insert_with(|| format!("{}: {error}", error.kind()));
                    (None, cluster.metadata().region_route_now(*region), 0)
                }
                BatchRegionStart::Started(id) => {
                    let events = load_procedure(engine.log(), *id).map_err(EngineError::from)?;
                    let state = regmig::migration::fold(&events);
                    let mut member = route_result(*region, None);
                    fill_from_log(&mut member, *id, &state, &events, at_ms, end_ms);
                    batch_events += member.events;
                    result.events += member.events;
                    result.virtual_time_ms = result.virtual_time_ms.max(member.virtual_time_ms);
                    result.rolled_back |= member.rolled_back;
                    if result.path.is_empty() {
                        result.path = member.path;
                    }
                    for (key, count) in member.sent {
                        *result.sent.entry(key).or_insert(0) += count;
                    }
                    if let Some(error) = member.error {
                        errors.push(format!("region {region}: {error}"));
                    }
                    if state.is_finished() {
                        self.ended_regions.push(*region);
                    } else {
                        self.failures.push(format!(
                            "migration {} (region {region} of a batch): did not finish \
                             (status {})",
                            index + 1,
                            state.status().name()
                        ));
                    }
                    let route = match routes_at_end.get(id) {
                        Some(routes) => routes.get(region).cloned(),
                        None => cluster.metadata().region_route_now(*region),
                    };
                    let unwritable_ms = cluster.unwritable_ms(
                        *region,
                        at_ms,
                        at_ms.saturating_add(member.virtual_time_ms),
                    );
                    (state.outcome, route, unwritable_ms)
                }
            };
            let route_part = route_result(*region, route.as_ref());
            result.unwritable_ms = result.unwritable_ms.max(unwritable_ms);
            let refused = matches!(start, BatchRegionStart::Refused(_));
            result.regions.push(RegionResult {
                region: region.to_string(),
                outcome: match outcome {
                    Some(outcome) => outcome.name(),
                    None if refused => "rejected",
                    None => "running",
                }
                .to_string(),
                leader: route_part.leader,
                followers: route_part.followers,
                leader_state: route_part.leader_state,
                unwritable_ms,
            });
            // For the batch's outcome a refused region counts as not completed.
            outcomes.push(if refused {
                Some(Outcome::Aborted)
            } else {
                outcome
            });
        }
        result.outcome = BatchOutcome::of(&outcomes)
            .map_or("running", BatchOutcome::name)
            .to_string();
        result.error = if errors.is_empty() {
            None
        } else {
            Some(errors.join("; "))
        };
        let all_refused = regions
            .iter()
            .all(|(_, start)| matches!(start, BatchRegionStart::Refused(_)));
        if all_refused {
            // No region started: the batch is a refused submit, not an aborted procedure.
            result.outcome = "rejected".to_string();
            result.error = first_refusal;
            result.procedure_id = None;
        }
        Ok(batch_events)
    }
}

fn route_result(region: RegionId, route: Option<&RegionRoute>) -> MigrationResult {
    MigrationResult {
        region: region.to_string(),
        procedure_id: None,
        outcome: String::new(),
        error: None,
        rolled_back: false,
        path: Vec::new(),
        leader: route.and_then(RegionRoute::leader_id),
        followers: route
            .map(|r| r.follower_peers.iter().map(|p| p.id).collect())
            .unwrap_or_default(),
        leader_state: if route.is_some_and(RegionRoute::is_leader_downgrading) {
            "downgrading".to_string()
        } else {
            "none".to_string()
        },
        sent: Default::default(),
        virtual_time_ms: 0,
        unwritable_ms: 0,
        events: 0,
        regions: Vec::new(),
    }
}

fn fill_from_log(
    result: &mut MigrationResult,
    id: Uuid,
    state: &MigrationState,
    events: &[TimedEvent],
    submitted_at_ms: u64,
    end_ms: u64,
) {
    result.procedure_id = Some(id.to_string());
    result.outcome = match state.outcome {
        Some(outcome) => outcome.name().to_string(),
        None => state.status().name().to_string(),
    };
    result.error = state.report.final_error.clone();
    result.rolled_back = state.report.rolled_back;
    result.path = state
        .report
        .path
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    for timed in events {
        // An instruction that carried several regions of a batch counts once.
        if let MigrationEvent::InstructionSent {
            peer,
            instruction,
            resend: false,
            ..
        } = &timed.event
        {
            if timed.event.carried_by_another_region() {
                continue;
            }
            *result
                .sent
                .entry(sent_key(peer.id, instruction.kind()))
                .or_insert(0) += 1;
        }
    }
    let finished_ms = state
        .report
        .finished_at_ms
        .map(|at| at - SIM_EPOCH_BASE_MS)
        .unwrap_or(end_ms);
    result.virtual_time_ms = finished_ms.saturating_sub(submitted_at_ms);
    result.events = events.len() as u64;
}

/// Every record of a log, encoded, in global order.
pub fn fingerprint(log: &EventLog) -> Result<Vec<u8>, LogError> {
    let mut bytes = Vec::new();
    let mut from = 1;
    loop {
        let records = log.events_from(from, 4096)?;
        let Some(last) = records.last() else {
            return Ok(bytes);
        };
        from = last.global_seq + 1;
        for record in &records {
            bytes.extend_from_slice(&encode_record(record));
        }
    }
}

/// The result of `--crash-at-every-event`.
#[derive(Debug)]
pub struct CrashSweep {
    /// The uninterrupted run.
    pub baseline: ScenarioOutcome,
    /// One run per k: crash after event k of the first migration (of the whole batch).
    pub runs: Vec<(u64, ScenarioOutcome)>,
    /// The crash points tried: the first migration's events (for a batch, every event of
    /// every one of its regions: a crash after event k stops the batch after the k-th event
    /// it appended, whichever region appended it).
    pub crash_points: u64,
}

impl CrashSweep {
    /// Whether every run met every expectation.
    pub fn ok(&self) -> bool {
        self.baseline.ok && self.runs.iter().all(|(_, run)| run.ok)
    }
}

/// Runs the scenario once, then once per event k of its first migration with an engine
/// crash after event k, checking the expectations every time. `on_crash_run` hears
/// (crash runs done, crash runs in all) once the uninterrupted run has told how many there
/// are, then after each.
pub fn run_crash_at_every_event(
    scenario: &Scenario,
    options: &RunOptions,
    on_crash_run: &mut dyn FnMut(u64, u64),
) -> Result<CrashSweep, RunError> {
    let baseline = run_scenario(
        scenario,
        &RunOptions {
            discard_data_dir: true,
            data_dir: None,
            ..options.clone()
        },
    )?;
    let mut runs = Vec::new();
    on_crash_run(0, baseline.first_migration_events);
    for k in 1..=baseline.first_migration_events {
        let mut crashing = scenario.clone();
        crashing.faults.push(FaultSpec::EngineCrash {
            trigger: CrashTrigger::AfterEvents(k),
            restart_after_ms: 0,
        });
        let run = run_scenario(
            &crashing,
            &RunOptions {
                discard_data_dir: true,
                data_dir: None,
                ..options.clone()
            },
        )?;
        runs.push((k, run.outcome));
        on_crash_run(k, baseline.first_migration_events);
    }
    Ok(CrashSweep {
        baseline: baseline.outcome,
        runs,
        crash_points: baseline.first_migration_events,
    })
}
