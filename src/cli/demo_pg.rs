//! `regmig demo --store postgres://… --engines N [--kill-leader-at K]`: the demo's campaign
//! with its history and routing metadata in PostgreSQL, run by N engines of this process
//! elected on the database (issue 16).
//!
//! # Design
//! - **Engines.** Each engine is a [`Candidate`] on a [`PgLeaderLease`] (lease [`LEASE`]);
//!   the one granted the lease opens a [`PgStore`] and a [`PgMetadataStore`] with the
//!   granted epoch (every append and route write is fenced by it) and resumes every open
//!   migration from the shared log. Each engine's sessions carry its name as their
//!   `application_name` (`regmig_demo_<pid>_<n>`), so a kill can end them.
//! - **The data plane** is the one simulated cluster of the sled demo, shared by the engines
//!   (the datanodes do not die with a control plane), on the **real clock**: elected
//!   engines time their lease by the database's clock and cannot run on paused virtual
//!   time. Its routes are the ones the datanodes act on; every route write the simulated
//!   store accepts is then written to PostgreSQL by the leader, fenced
//!   ([`PgMirroredMetadataStore`]), and a new leader first copies any route the killed one
//!   changed but did not write through. The first layout is written before the engines
//!   start, under a setup lease of its own: a leader's open must end well within its lease,
//!   which is not renewed before the engine runs.
//! - **The campaign** (rebalance, then evacuate the last datanode, the same faults) is
//!   driven from the log: after a takeover, what is left of a phase is derived from the
//!   migrations the log holds, as the sled demo does after a restart. Its phase lives in
//!   memory: a demo on PostgreSQL starts on an empty history and does not resume (refused
//!   otherwise, exit 2).
//! - **The kill** (`--kill-leader-at K`): once K migrations have finished, the leader's
//!   tasks are aborted and its database sessions terminated (`pg_terminate_backend`), as
//!   its machine dying would; a standby takes the lease once it lapses by the database's
//!   clock. The takeover time is from the kill to the first event the new leader records
//!   (its first `Resumed`, or its first submission when nothing was open).
//! - **The check**: every migration in the log ended exactly once (one terminal event, the
//!   last), none was resumed more often than there were takeovers, and the simulator's
//!   invariants held.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::sync::Notify;
use uuid::Uuid;

use super::demo::{
    config_of, figures, format_ms, now_wall_ms, print_report, submit_moves, write_pause, DemoArgs,
    Summary,
};
use super::demo_faults::{self, faults_used};
use super::progress::Progress;
use super::{EXIT_FAILED, EXIT_USAGE};
use crate::sim::campaign::{
    initial_routes, remaining_moves, submitted_moves, CampaignConfig, CampaignError, Phase,
};
use crate::sim::cluster::{ClusterSetup, RegionSetup, SimCluster, SimMetadataStore, TableSetup};
use crate::sim::datanode::SimOptions;
use regmig::cluster::pg_store::PgMetadataStore;
use regmig::cluster::{
    CasConflict, Clock, MetadataError, MetadataErrorKind, MetadataStore, MetadataStoreLayer,
    RegionMove,
};
use regmig::domain::{TableId, TableRoute, WalKind};
use regmig::engine::leadership::{
    Candidate, LeaderLease, LeadershipConfig, LeaseGrant, OpenAsLeader, OpenError, Role,
};
use regmig::engine::{load_procedure, Engine, EngineConfig};
use regmig::log::{EventLog, LogError, LogOptions, LogStore, PgStore};
use regmig::migration::{fold, MigrationEvent, MigrationState, Outcome};
use regmig::pg::lease::PgLeaderLease;
use regmig::pg::PgConfig;

/// The leader lease of the demo's engines: a takeover comes about this long after a kill.
pub const LEASE: Duration = Duration::from_millis(1_000);
/// How often a standby tries to take the lease.
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// The most engines one demo runs.
pub const ENGINES_MAX: u32 = 9;
/// How long the campaign waits for an engine to lead before it gives up.
const LEADER_WAIT: Duration = Duration::from_secs(30);
/// How often the campaign looks at the engines' roles.
const ROLE_POLL: Duration = Duration::from_millis(10);
/// Tries of a durable route write after the simulated store accepted it (a dropped
/// connection), 200 ms apart.
const DURABLE_WRITE_TRIES: u32 = 10;

/// How the demo runs on PostgreSQL, from the arguments.
#[derive(Debug, Clone)]
pub struct Election {
    /// The store's URL as given (with the password, if any: never shown).
    url: String,
    /// The store, for messages.
    store: String,
    config: PgConfig,
    engines: u32,
    kill_leader_at: Option<u64>,
}

impl Election {
    /// `None` for a demo on sled; the message of a refused combination (exit 2).
    pub fn of(args: &DemoArgs) -> Result<Option<Election>, String> {
        let Some(url) = &args.store else {
            if args.engines.is_some() {
                return Err("--engines needs --store: engines are elected on a PostgreSQL database; a data directory is held by one engine".to_string());
            }
            if args.kill_leader_at.is_some() {
                return Err("--kill-leader-at needs --store and --engines 2 or more: only engines elected on a PostgreSQL database take over from each other".to_string());
            }
            return Ok(None);
        };
        let engines = args.engines.unwrap_or(1);
        if !(1..=ENGINES_MAX).contains(&engines) {
            return Err(format!(
                "--engines is {engines}, outside the allowed range 1..={ENGINES_MAX}"
            ));
        }
        match args.kill_leader_at {
            Some(0) => {
                return Err(
                    "--kill-leader-at is 0: give the number of finished migrations after which the leader is killed (1 or more)".to_string(),
                )
            }
            Some(_) if engines < 2 => {
                return Err(format!(
                    "--kill-leader-at needs --engines 2 or more (given {engines}): with one engine nobody takes over"
                ))
            }
            _ => {}
        }
        if args.exit_after_events.is_some() {
            return Err("--exit-after-events is for the demo on a data directory".to_string());
        }
        if args.exit_after_setup_writes.is_some() {
            return Err(
                "--exit-after-setup-writes is for the demo on a data directory".to_string(),
            );
        }
        let config = PgConfig::from_url(url).map_err(|error| error.to_string())?;
        let config = match &args.password_file {
            Some(path) => config.password_file(path).map_err(|e| e.to_string())?,
            None => config,
        };
        Ok(Some(Election {
            url: url.clone(),
            store: config.redacted(),
            config,
            engines,
            kill_leader_at: args.kill_leader_at,
        }))
    }

    /// Engine `number`'s configuration: the store, its sessions named after the engine.
    fn engine_config(
        &self,
        name: &str,
        password_file: Option<&std::path::Path>,
    ) -> Result<PgConfig, LogError> {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let config =
            PgConfig::from_url(&format!("{}{separator}application_name={name}", self.url))?;
        match password_file {
            Some(path) => config.password_file(path),
            None => Ok(config),
        }
    }
}

/// The engines, the kill and the takeover, and the exactly-once check of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ElectionReport {
    /// Engines elected on the store.
    pub engines: u32,
    /// The leader lease (ms).
    pub lease_ms: u64,
    /// Each term: the engine and the epoch it led with, in order.
    pub leaders: Vec<(String, u64)>,
    /// The kill, when one was asked for and happened.
    pub kill: Option<KillReport>,
    /// Why no kill happened although one was asked for.
    pub kill_skipped: Option<String>,
    /// Migrations in the log.
    pub migrations: u64,
    /// Whether every one ended exactly once (one terminal event, the last of its history).
    pub ended_exactly_once: bool,
    /// The migrations that did not (each with what is wrong), at most 20.
    pub not_ended_once: Vec<String>,
    /// Migrations resumed by a new leader (each at most once per takeover).
    pub resumed: u64,
}

/// The leader's kill and the takeover.
#[derive(Debug, Clone, Serialize)]
pub struct KillReport {
    /// The engine killed.
    pub engine: String,
    /// Its epoch.
    pub epoch: u64,
    /// Migrations finished when it was killed.
    pub after_migrations: u64,
    /// Migrations open in the log at the kill.
    pub open_at_kill: u64,
    /// The engine that took over.
    pub new_leader: Option<String>,
    /// Kill to the first event the new leader recorded (ms).
    pub takeover_ms: Option<u64>,
}

/// The election part of the summary, after the figures.
pub fn print_election(report: &ElectionReport) {
    let leaders: Vec<String> = report
        .leaders
        .iter()
        .map(|(engine, epoch)| format!("{engine} (epoch {epoch})"))
        .collect();
    println!(
        "engines: {} elected on the store, lease {}; led by {}",
        report.engines,
        format_ms(report.lease_ms),
        leaders.join(", then ")
    );
    if let Some(kill) = &report.kill {
        println!(
            "leader killed after {} migrations finished ({} open): {} (epoch {})",
            kill.after_migrations, kill.open_at_kill, kill.engine, kill.epoch
        );
        match (&kill.new_leader, kill.takeover_ms) {
            (Some(engine), Some(takeover_ms)) => println!(
                "takeover: {takeover_ms} ms (kill -> first event recorded by the new leader, {engine})"
            ),
            (Some(engine), None) => {
                println!("takeover: {engine} leads, but recorded nothing after the kill")
            }
            _ => println!("takeover: none"),
        }
    }
    if let Some(reason) = &report.kill_skipped {
        println!("leader not killed: {reason}");
    }
    if report.ended_exactly_once {
        println!(
            "every migration ended exactly once: ok ({} migrations, {} resumed by a new leader)",
            report.migrations, report.resumed
        );
    } else {
        println!("migrations that did not end exactly once:");
        for problem in &report.not_ended_once {
            println!("  {problem}");
        }
    }
}

/// Why the demo on PostgreSQL stopped.
#[derive(Debug, thiserror::Error)]
enum PgDemoError {
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Leadership(String),
}

/// Runs the demo on PostgreSQL; returns the exit code.
pub fn run(args: &DemoArgs, election: Election, metrics: Option<&PrometheusHandle>) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return EXIT_FAILED;
        }
    };
    let code = runtime.block_on(async {
        match campaign(args, &election, metrics).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {}: {error}", election.store);
                EXIT_FAILED
            }
        }
    });
    runtime.shutdown_background();
    code
}

/// What the engines' openers share.
struct Shared {
    cluster: Arc<SimCluster>,
    config: CampaignConfig,
    /// Route writes the simulated store may have accepted but the store not yet (by table:
    /// how many): a new leader copies those routes before it resumes anything.
    pending_durable: Arc<std::sync::Mutex<BTreeMap<TableId, u64>>>,
    /// Migrations finished, seen by any engine.
    finished: AtomicU64,
    /// Finished migrations after which the leader is killed.
    kill_at: Option<u64>,
    /// Told once `finished` reaches `kill_at`.
    kill_due: Notify,
    /// Counts the migrations of the phase running, whichever engine finishes them.
    progress: Progress,
}

/// One engine: its candidate and its name (its sessions' `application_name`).
struct Node {
    name: String,
    candidate: Candidate,
    killed: AtomicBool,
}

/// Opens an engine as leader: the log and the metadata store with the granted epoch.
struct Opener {
    config: PgConfig,
    shared: Arc<Shared>,
}

#[async_trait]
impl OpenAsLeader for Opener {
    async fn open(&self, grant: &LeaseGrant) -> Result<Engine, OpenError> {
        let shared = &self.shared;
        let store = PgStore::open_async(
            self.config.clone(),
            LogOptions::default(),
            Some(grant.epoch),
        )
        .await?;
        let log = EventLog::with_store(Arc::new(store));
        let durable = PgMetadataStore::open(&log).await?;
        // Quick (a few tables at most): the open must end well within the lease, which is
        // not renewed before the engine runs.
        let pending: Vec<TableId> = lock(&shared.pending_durable).keys().copied().collect();
        for table_id in pending {
            if let Some(route) = shared.cluster.metadata().route_now(table_id) {
                write_durable(&durable, table_id, route.route, Vec::new()).await?;
            }
            lock(&shared.pending_durable).remove(&table_id);
        }
        let mut ports = shared.cluster.ports();
        ports.metadata = Arc::new(PgMirroredMetadataStore {
            primary: shared.cluster.metadata(),
            durable,
            pending: shared.pending_durable.clone(),
        });
        if shared.config.faults {
            // What earlier leaders already delivered is in the log.
            let reader = log.clone();
            let used = tokio::task::spawn_blocking(move || faults_used(&reader)).await??;
            demo_faults::inject(&shared.cluster, &mut ports, &shared.config, &used);
        }
        let engine = Engine::with_log(log, EngineConfig::default(), ports).await?;
        let observed = Arc::clone(shared);
        engine.set_observer(Box::new(move |event| {
            if matches!(event.event, MigrationEvent::Finished { .. }) {
                observed.progress.inc();
                let finished = observed.finished.fetch_add(1, Ordering::SeqCst) + 1;
                if observed.kill_at == Some(finished) {
                    observed.kill_due.notify_one();
                }
            }
        }));
        Ok(engine)
    }
}

/// The simulated cluster's metadata, each accepted route write then written to PostgreSQL
/// with the leader's epoch (fenced). Reads and injected faults are the simulated store's.
struct PgMirroredMetadataStore {
    primary: Arc<SimMetadataStore>,
    durable: PgMetadataStore,
    /// Counted up before a route write, down once the store has it too.
    pending: Arc<std::sync::Mutex<BTreeMap<TableId, u64>>>,
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl MetadataStoreLayer for PgMirroredMetadataStore {
    fn inner(&self) -> &dyn MetadataStore {
        &*self.primary
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        *lock(&self.pending).entry(table_id).or_insert(0) += 1;
        let result = self
            .primary
            .cas_table_route(
                table_id,
                expected_version,
                route.clone(),
                region_moves.clone(),
            )
            .await;
        if matches!(result, Ok(Ok(_))) {
            write_durable(&self.durable, table_id, route, region_moves).await?;
        }
        // Written through, or refused by the simulated store: nothing is pending. (After
        // an error of the durable write, the count stays up: the next leader copies it.)
        let mut pending = lock(&self.pending);
        if let Some(count) = pending.get_mut(&table_id) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&table_id);
            }
        }
        result
    }
}

/// Writes `route` over the store's route of the table (a compare-and-swap on the version
/// read, which also moves the datanode-table entries), retrying a failed connection a
/// bounded number of times; a fenced write fails at once.
async fn write_durable(
    durable: &PgMetadataStore,
    table_id: TableId,
    route: TableRoute,
    region_moves: Vec<RegionMove>,
) -> Result<(), MetadataError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let written = async {
            match durable.table_route(table_id).await? {
                Some(current) => {
                    durable
                        .cas_table_route(
                            table_id,
                            current.version,
                            route.clone(),
                            region_moves.clone(),
                        )
                        .await
                }
                None => durable
                    .put_table_route(table_id, route.clone())
                    .await
                    .map(Ok),
            }
        }
        .await;
        match written {
            Ok(Ok(_)) => return Ok(()),
            Err(error) if error.kind == MetadataErrorKind::Fenced => return Err(error),
            Err(error) if tries >= DURABLE_WRITE_TRIES => return Err(error),
            // Another write of the table came between the read and the swap: read again.
            Ok(Err(_)) if tries >= DURABLE_WRITE_TRIES => {
                return Err(MetadataError::new(
                    MetadataErrorKind::Other,
                    format!("the route of table {table_id} kept changing under its durable write ({tries} tries)"),
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Writes the simulated cluster's first layout (routes, datanode tables, table infos) to
/// the store, before the engines start: under a lease of its own (`<prefix>_setup`, long
/// enough for the writes, released after), so that it is fenced like any writer and waits
/// out a lease left by an earlier run.
async fn write_layout(
    cluster: &SimCluster,
    config: &CampaignConfig,
    store_config: PgConfig,
    holder: &str,
) -> Result<(), PgDemoError> {
    const SETUP_LEASE: Duration = Duration::from_secs(120);
    let lease = PgLeaderLease::new(store_config.clone())
        .map_err(|error| PgDemoError::Leadership(error.to_string()))?;
    let until = Instant::now() + LEADER_WAIT;
    let grant = loop {
        match lease.try_acquire(holder, SETUP_LEASE).await {
            Ok(Some(grant)) => break grant,
            Ok(None) if Instant::now() < until => tokio::time::sleep(RETRY_EVERY).await,
            Ok(None) => {
                return Err(PgDemoError::Leadership(format!(
                "another engine holds the leader lease of {} and did not let it lapse within {}",
                store_config.redacted(),
                format_ms(LEADER_WAIT.as_millis() as u64)
            )))
            }
            Err(error) => return Err(PgDemoError::Leadership(error.to_string())),
        }
    };
    let store = PgStore::open_async(store_config, LogOptions::default(), Some(grant.epoch)).await?;
    let log = EventLog::with_store(Arc::new(store));
    let durable = PgMetadataStore::open(&log).await?;
    let sim = cluster.metadata().inner();
    for table_index in 0..config.tables {
        let table_id = 1024 + table_index;
        let Some(route) = cluster.metadata().route_now(table_id) else {
            continue;
        };
        for datanode_id in 1..=config.datanodes {
            if let Some(table) = sim.datanode_table(datanode_id, table_id).await? {
                durable.put_datanode_table(table).await?;
            }
        }
        if let Some(info) = sim.table_info(table_id).await? {
            durable.put_table_info(info).await?;
        }
        durable.put_table_route(table_id, route.route).await?;
    }
    lease
        .release(&grant)
        .await
        .map_err(|error| PgDemoError::Leadership(error.to_string()))
}

/// The simulated cluster of a new campaign: the first layout of `config`.
fn setup_of(config: &CampaignConfig, epoch_base_ms: u64) -> ClusterSetup {
    let tables = initial_routes(config)
        .into_iter()
        .map(|(table_id, route)| TableSetup {
            id: table_id,
            catalog: "greptime".to_string(),
            schema: "public".to_string(),
            wal: WalKind::Local,
            logical: false,
            regions: match route {
                TableRoute::Physical { region_routes } => region_routes
                    .iter()
                    .filter_map(|region| {
                        Some(RegionSetup {
                            number: region.region_id.region_number(),
                            leader: region.leader_id()?,
                            followers: Vec::new(),
                            last_entry_id: 0,
                        })
                    })
                    .collect(),
                TableRoute::Logical { .. } => Vec::new(),
            },
        })
        .collect();
    ClusterSetup {
        seed: config.seed,
        peers: (1..=config.datanodes).collect(),
        tables,
        writes_per_second: Some(config.writes_per_second).filter(|rate| *rate > 0),
        flush_writes_per_second: None,
        epoch_base_ms,
    }
}

/// The engine leading now, among those not killed: its index, epoch and engine.
async fn wait_for_leader(nodes: &[Node]) -> Result<(usize, u64, Engine), PgDemoError> {
    let until = Instant::now() + LEADER_WAIT;
    loop {
        for (index, node) in nodes.iter().enumerate() {
            if node.killed.load(Ordering::SeqCst) {
                continue;
            }
            if let Role::Leader { grant, engine } = node.candidate.role() {
                return Ok((index, grant.epoch, engine));
            }
        }
        if Instant::now() >= until {
            return Err(PgDemoError::Leadership(format!(
                "no engine took the lead within {}",
                format_ms(LEADER_WAIT.as_millis() as u64)
            )));
        }
        tokio::time::sleep(ROLE_POLL).await;
    }
}

fn leads(node: &Node, epoch: u64) -> bool {
    matches!(node.candidate.role(), Role::Leader { grant, .. } if grant.epoch == epoch)
}

/// Returns once `node` no longer leads with `epoch` (deposed: its lease lapsed, a write
/// was fenced).
async fn deposed(node: &Node, epoch: u64) {
    while leads(node, epoch) {
        tokio::time::sleep(ROLE_POLL).await;
    }
}

/// The migrations of `phase` in the log, in submit order, and what each planned.
fn phase_history(
    log: &EventLog,
    phase: Phase,
    config: &CampaignConfig,
) -> Result<(Vec<Uuid>, Vec<crate::sim::campaign::SubmittedMove>), CampaignError> {
    let trigger = phase.trigger(config);
    let mut ids = Vec::new();
    for procedure_id in log.procedures()? {
        let state = fold(&load_procedure(log, procedure_id)?);
        if state.report.trigger == trigger && state.task.is_some() {
            ids.push(procedure_id);
        }
    }
    Ok((ids, submitted_moves(log, phase, config)?))
}

/// Runs what is left of `phase` on the leader's `engine`: first the phase's migrations the
/// log holds (the open ones this engine resumed), then the moves still to submit. Returns
/// every migration of the phase; an error when the engine stopped leading part-way.
async fn run_phase(
    engine: &Engine,
    cluster: &SimCluster,
    phase: Phase,
    config: &CampaignConfig,
    actor: &str,
    progress: &Progress,
    say: &dyn Fn(String),
) -> Result<Vec<Uuid>, PgDemoError> {
    let log = engine.log().clone();
    let history_config = config.clone();
    let (mut ids, submitted) =
        tokio::task::spawn_blocking(move || phase_history(&log, phase, &history_config))
            .await
            .map_err(|error| PgDemoError::Leadership(format!("reading the log: {error}")))??;
    for id in &ids {
        engine
            .wait(*id)
            .await
            .map_err(|error| PgDemoError::Leadership(error.to_string()))?;
    }
    let moves = remaining_moves(phase, config, &cluster.region_routes_now(), &submitted);
    let trigger = phase.trigger(config);
    progress.start(trigger.clone(), moves.len() as u64);
    if ids.is_empty() {
        say(format!("{trigger}: {} migrations", moves.len()));
    } else {
        say(format!(
            "{trigger}: {} migrations of the phase in the log, {} still to submit",
            ids.len(),
            moves.len()
        ));
    }
    let started = submit_moves(engine, phase, config, &moves, actor, say).await;
    for id in &started {
        engine
            .wait(*id)
            .await
            .map_err(|error| PgDemoError::Leadership(error.to_string()))?;
    }
    ids.extend(started);
    Ok(ids)
}

/// How a step of the campaign loop ended.
enum Step {
    /// The kill is due.
    Kill,
    /// The leader stopped leading by itself.
    Deposed,
    /// The phase ran.
    Ran(Result<Vec<Uuid>, PgDemoError>),
}

async fn campaign(
    args: &DemoArgs,
    election: &Election,
    metrics: Option<&PrometheusHandle>,
) -> Result<u8, PgDemoError> {
    let started = Instant::now();
    let progress = Progress::new("migrations", args.json);
    let say = |line: String| {
        if !args.json {
            progress.println(&line);
        }
    };
    // A demo on PostgreSQL starts on an empty history: it keeps its phase in memory.
    match PgStore::open_read_only_async(election.config.clone()).await {
        Ok(store) => {
            let count = store.procedures().await?.len();
            if count > 0 {
                eprintln!(
                    "error: {} already holds {count} migrations; the demo on PostgreSQL starts on an empty history (it does not resume): use a new database or another ?schema=NAME",
                    election.store
                );
                return Ok(EXIT_USAGE);
            }
        }
        Err(LogError::NoLogAtStore { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let config = config_of(args);
    let setup = setup_of(&config, now_wall_ms());
    let regions: u64 = setup.tables.iter().map(|t| t.regions.len() as u64).sum();
    let cluster = SimCluster::new(setup, SimOptions::default()).map_err(CampaignError::from)?;
    cluster.start();
    let shared = Arc::new(Shared {
        cluster: cluster.clone(),
        config: config.clone(),
        pending_durable: Arc::default(),
        finished: AtomicU64::new(0),
        kill_at: election.kill_leader_at,
        kill_due: Notify::new(),
        progress: progress.clone(),
    });
    say(format!(
        "regmig demo: {} datanodes, {regions} regions over {} tables, history in {}; {} engine{} elected on it (lease {})",
        config.datanodes,
        config.tables,
        election.store,
        election.engines,
        if election.engines == 1 { "" } else { "s" },
        format_ms(LEASE.as_millis() as u64)
    ));
    let pid = std::process::id();
    write_layout(
        &cluster,
        &config,
        election.engine_config(
            &format!("regmig_demo_{pid}_setup"),
            args.password_file.as_deref(),
        )?,
        &format!("regmig_demo_{pid}_setup"),
    )
    .await?;
    let mut nodes = Vec::new();
    for number in 1..=election.engines {
        let name = format!("regmig_demo_{pid}_{number}");
        let config = election.engine_config(&name, args.password_file.as_deref())?;
        let lease = PgLeaderLease::new(config.clone())
            .map_err(|error| PgDemoError::Leadership(error.to_string()))?;
        let mut leadership = LeadershipConfig::new(name.clone(), LEASE);
        leadership.retry_every = RETRY_EVERY;
        let opener = Arc::new(Opener {
            config,
            shared: shared.clone(),
        });
        let candidate = Candidate::start(Arc::new(lease), leadership, opener)
            .map_err(|error| PgDemoError::Leadership(error.to_string()))?;
        nodes.push(Node {
            name,
            candidate,
            killed: AtomicBool::new(false),
        });
    }
    let mut phase = Phase::Rebalance;
    let mut phases: Vec<(String, u64)> = Vec::new();
    let mut run_ids: Vec<Uuid> = Vec::new();
    let mut leaders: Vec<(String, u64)> = Vec::new();
    let mut kill: Option<(KillReport, u64)> = None;
    let work = async {
        loop {
            let (index, epoch, engine) = wait_for_leader(&nodes).await?;
            let node = &nodes[index];
            if leaders.last() != Some(&(node.name.clone(), epoch)) {
                say(format!("{} leads (epoch {epoch})", node.name));
                leaders.push((node.name.clone(), epoch));
                if let Some((report, _)) = kill.as_mut() {
                    report.new_leader.get_or_insert_with(|| node.name.clone());
                }
            }
            if phase == Phase::Done {
                break;
            }
            let phase_started = Instant::now();
            let armed = kill.is_none() && shared.kill_at.is_some() && nodes.len() > 1;
            let step = tokio::select! {
                biased;
                () = shared.kill_due.notified(), if armed => Step::Kill,
                () = deposed(node, epoch) => Step::Deposed,
                ran = run_phase(&engine, &cluster, phase, &config, &args.actor, &progress, &say) => Step::Ran(ran),
            };
            match step {
                Step::Kill => {
                    let open_at_kill = engine.log().store().open_procedures().await?.len() as u64;
                    let after = shared.finished.load(Ordering::SeqCst);
                    let killed_ms = cluster.clock().now_ms();
                    kill_node(node, &election.config).await?;
                    drop(engine);
                    say(format!(
                        "killed the leader {} (epoch {epoch}) after {after} migrations finished, {open_at_kill} open: tasks aborted, database sessions terminated",
                        node.name
                    ));
                    kill = Some((
                        KillReport {
                            engine: node.name.clone(),
                            epoch,
                            after_migrations: after,
                            open_at_kill,
                            new_leader: None,
                            takeover_ms: None,
                        },
                        killed_ms,
                    ));
                }
                Step::Deposed => say(format!(
                    "{} stopped leading (epoch {epoch}): {:?}",
                    node.name,
                    node.candidate.deposals().last()
                )),
                Step::Ran(Err(error)) if !leads(node, epoch) => say(format!(
                    "{} stopped leading (epoch {epoch}) during the phase: {error}",
                    node.name
                )),
                Step::Ran(Err(error)) => return Err(error),
                Step::Ran(Ok(ids)) => {
                    let trigger = phase.trigger(&config);
                    if phase == Phase::Evacuate {
                        say(format!(
                            "{trigger}: took {}",
                            format_ms(phase_started.elapsed().as_millis() as u64)
                        ));
                    }
                    phases.push((trigger, ids.len() as u64));
                    for id in ids {
                        if !run_ids.contains(&id) {
                            run_ids.push(id);
                        }
                    }
                    phase = match phase {
                        Phase::Rebalance => Phase::Evacuate,
                        _ => Phase::Done,
                    };
                }
            }
        }
        Ok::<_, PgDemoError>(())
    };
    let interrupted = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => true,
        done = work => { done?; false }
    };
    if interrupted {
        progress.abandon();
    } else {
        progress.finish();
    }
    for node in nodes {
        if node.killed.load(Ordering::SeqCst) {
            drop(node);
        } else {
            node.candidate.stop().await;
        }
    }
    if interrupted {
        cluster.stop();
        eprintln!(
            "stopped: every migration submitted is in {}; the demo on PostgreSQL does not resume",
            election.store
        );
        return Ok(EXIT_FAILED);
    }
    let reader = EventLog::with_store(Arc::new(
        PgStore::open_read_only_async(election.config.clone()).await?,
    ));
    let history = tokio::task::spawn_blocking(move || read_history(&reader))
        .await
        .map_err(|error| PgDemoError::Leadership(format!("reading the log: {error}")))??;
    let epoch_base_ms = cluster.clock().epoch_base_ms();
    let mut pauses = Vec::new();
    for (id, state, _) in &history {
        if !run_ids.contains(id) {
            continue;
        }
        if let (Some(task), Some(finished_at_ms)) = (&state.task, state.report.finished_at_ms) {
            pauses.push(cluster.unwritable_ms(
                task.region_id,
                state.report.submitted_at_ms.saturating_sub(epoch_base_ms),
                finished_at_ms.saturating_sub(epoch_base_ms),
            ));
        }
    }
    let invariant_violations: Vec<String> = cluster
        .final_check()
        .into_iter()
        .map(|violation| violation.to_string())
        .collect();
    cluster.stop();
    let takeovers = leaders.len().saturating_sub(1) as u64;
    let mut not_ended_once = Vec::new();
    let mut resumed = 0;
    let mut example_ids = BTreeMap::new();
    for (id, state, events) in &history {
        let terminal = events
            .iter()
            .filter(|(_, event)| event.is_terminal())
            .count();
        let last_terminal = events.last().is_some_and(|(_, event)| event.is_terminal());
        let resumes = events
            .iter()
            .filter(|(_, event)| matches!(event, MigrationEvent::Resumed))
            .count() as u64;
        if terminal != 1 || !last_terminal {
            not_ended_once.push(format!(
                "{id}: {terminal} terminal events{}",
                if last_terminal { "" } else { ", not last" }
            ));
        } else if resumes > takeovers {
            not_ended_once.push(format!(
                "{id}: resumed {resumes} times in {takeovers} takeovers"
            ));
        }
        resumed += u64::from(resumes > 0);
        let label = match state.outcome {
            Some(Outcome::Completed) if state.report.counters.slow_path_waits > 0 => "slow_path",
            Some(Outcome::Completed) if state.report.counters.retries > 0 => "retried",
            Some(outcome) => outcome.name(),
            None => "unfinished",
        };
        example_ids
            .entry(label.to_string())
            .or_insert(id.to_string());
    }
    let kill_report = kill.map(|(mut report, killed_ms)| {
        report.takeover_ms = history
            .iter()
            .flat_map(|(_, _, events)| events.iter().map(|(at_ms, _)| *at_ms))
            .filter(|at_ms| *at_ms > killed_ms)
            .min()
            .map(|at_ms| at_ms - killed_ms);
        report
    });
    let kill_skipped = match (election.kill_leader_at, &kill_report) {
        (Some(at), None) => Some(format!(
            "the campaign ended ({} migrations finished) before the kill point --kill-leader-at {at}",
            shared.finished.load(Ordering::SeqCst)
        )),
        _ => None,
    };
    let states: Vec<&MigrationState> = history.iter().map(|(_, state, _)| state).collect();
    let this_run = figures(
        history
            .iter()
            .filter(|(id, _, _)| run_ids.contains(id))
            .map(|(_, state, _)| state),
    );
    let report = ElectionReport {
        engines: election.engines,
        lease_ms: LEASE.as_millis() as u64,
        leaders,
        kill: kill_report,
        kill_skipped,
        migrations: history.len() as u64,
        ended_exactly_once: not_ended_once.is_empty(),
        not_ended_once: not_ended_once.into_iter().take(20).collect(),
        resumed,
    };
    let ok = report.ended_exactly_once && invariant_violations.is_empty();
    let summary = Summary {
        data_dir: None,
        store: Some(election.store.clone()),
        datanodes: config.datanodes,
        regions,
        tables: config.tables,
        resumed: 0,
        phases,
        this_run,
        all_time: figures(states),
        write_pause: write_pause(pauses),
        invariant_violations,
        virtual_time_ms: cluster.clock().elapsed_ms(),
        real_time_ms: started.elapsed().as_millis() as u64,
        example_ids,
        election: Some(report),
        metrics: metrics.map(PrometheusHandle::render),
    };
    print_report(&summary, args.json);
    Ok(if ok { 0 } else { EXIT_FAILED })
}

/// Kills `node` as its machine dying would: its tasks aborted, then its database sessions
/// (the log's, the metadata store's, the lease's) terminated.
async fn kill_node(node: &Node, config: &PgConfig) -> Result<(), PgDemoError> {
    node.candidate.kill();
    node.killed.store(true, Ordering::SeqCst);
    let control = regmig::pg::connect_session(config).await?;
    control
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&node.name],
        )
        .await
        .map_err(|error| {
            regmig::pg::schema::database(config, "terminate the killed leader's sessions", error)
        })?;
    Ok(())
}

/// A migration of the log: its id, folded state, and events with their times (epoch ms).
type History = Vec<(Uuid, MigrationState, Vec<(u64, MigrationEvent)>)>;

/// Every migration of the log.
fn read_history(log: &EventLog) -> Result<History, CampaignError> {
    let mut history = Vec::new();
    for id in log.procedures()? {
        let timed = load_procedure(log, id)?;
        let state = fold(&timed);
        history.push((
            id,
            state,
            timed.into_iter().map(|t| (t.at_ms, t.event)).collect(),
        ));
    }
    Ok(history)
}
