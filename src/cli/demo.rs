//! `regmig demo`: the main job. A migration campaign on the built-in simulated cluster, with
//! the embedded sled log: rebalance the datanodes, then evacuate the last one, with a write
//! workload and a few injected faults. Killed and run again on the same data directory, it
//! resumes the open migrations from the log and finishes the campaign.
//!
//! With `--store postgres://…` the same campaign runs with its history and routing metadata
//! in PostgreSQL, on engines elected on the database, and `--kill-leader-at` kills the
//! leader part-way: [`super::demo_pg`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use uuid::Uuid;

use super::demo_faults::{self, faults_used, FaultsUsed};
use super::{DATA_DIR_ENV, DEFAULT_DATA_DIR, EXIT_FAILED, EXIT_USAGE};
use crate::sim::campaign::{
    cluster_setup, remaining_moves, restore_routes, set_up, submitted_moves, CampaignConfig,
    CampaignError, CampaignRecord, MirroredMetadataStore, Phase, PlannedMove,
};
use crate::sim::cluster::SimCluster;
use crate::sim::datanode::SimOptions;
use regmig::cluster::sled_store::SledMetadataStore;
use regmig::engine::{
    load_procedure, AppendMode, BatchRegionStart, BatchRequest, Engine, EngineConfig,
    MigrationRequest, SubmitOutcome,
};
use regmig::log::{EventLog, LogOptions};
use regmig::migration::{fold, MigrationEvent, MigrationState, Outcome};

/// Arguments of `regmig demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the log and the durable routing metadata live.
    #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Datanodes in the simulated cluster, 2..=64 (first run only; each is a simulated task,
    /// and 64 keeps a run to seconds).
    #[arg(long, default_value_t = 5)]
    pub datanodes: u64,
    /// Tables, 1..=1000 (first run only). Tables × regions per table is at most 10000; a
    /// migration takes about the same real time whatever the cluster's size (release build).
    #[arg(long, default_value_t = 20)]
    pub tables: u32,
    /// Regions per table, 1..=1000 (first run only).
    #[arg(long, default_value_t = 10)]
    pub regions_per_table: u32,
    /// Seed of the simulated cluster (first run only).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Inject no faults.
    #[arg(long)]
    pub no_faults: bool,
    /// Who runs the campaign, recorded with each migration it submits (`regmig audit`).
    #[arg(long, default_value = "regmig demo", value_name = "ACTOR")]
    pub actor: String,
    /// Print the summary as one JSON document (and draw no progress bar).
    #[arg(long)]
    pub json: bool,
    /// After the summary, print the engine's metrics (`regmig::engine::metrics`) in the
    /// Prometheus text format; with --json, as the document's "metrics" field (a string
    /// holding that text), so stdout stays one JSON document.
    #[arg(long)]
    pub metrics: bool,
    /// Exit abruptly, as a kill would, once this many events were appended (tests).
    #[arg(long, hide = true)]
    pub exit_after_events: Option<u64>,
    /// Exit abruptly, as a kill would, once the first run's setup made this many durable
    /// writes (tests).
    #[arg(long, hide = true)]
    pub exit_after_setup_writes: Option<u64>,
    /// Keep the history and the routing metadata in this PostgreSQL database instead of
    /// --data-dir, and run the campaign on engines elected on it (--engines):
    /// postgres://USER@HOST[:PORT]/DATABASE[?schema=NAME&...] (README, "The PostgreSQL
    /// store"). It starts on an empty history (a new database or ?schema=NAME) and does not
    /// resume; the simulated cluster runs on the real clock. A password in the URL shows in
    /// the process list: prefer --password-file or PGPASSWORD.
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    pub store: Option<String>,
    /// The store's password: the first line of this file (with --store).
    #[arg(long, value_name = "FILE", requires = "store")]
    pub password_file: Option<PathBuf>,
    /// Engines in this process elected on the store (with --store), 1..=9: one leads and
    /// runs the migrations, the others stand by to take over (default 1).
    #[arg(long, value_name = "N")]
    pub engines: Option<u32>,
    /// Kill the leading engine (its tasks aborted, its database sessions terminated, as
    /// its machine dying would) once this many migrations have finished, and print how
    /// long the takeover took (with --store and --engines 2 or more).
    #[arg(long, value_name = "N")]
    pub kill_leader_at: Option<u64>,
}

/// Figures of a set of migrations.
#[derive(Debug, Default, Serialize)]
pub(super) struct Figures {
    migrations: u64,
    completed: u64,
    aborted: u64,
    failed: u64,
    unfinished: u64,
    duration_p50_ms: u64,
    duration_p99_ms: u64,
    retries: u64,
    slow_path_waits: u64,
    resends: u64,
}

pub(super) fn figures<'a>(states: impl IntoIterator<Item = &'a MigrationState>) -> Figures {
    let mut figures = Figures::default();
    let mut durations = Vec::new();
    for state in states {
        figures.migrations += 1;
        match state.outcome {
            Some(Outcome::Completed) => figures.completed += 1,
            Some(Outcome::Aborted) => figures.aborted += 1,
            Some(Outcome::Failed) => figures.failed += 1,
            None => figures.unfinished += 1,
        }
        if let Some(finished_at_ms) = state.report.finished_at_ms {
            durations.push(finished_at_ms.saturating_sub(state.report.submitted_at_ms));
        }
        figures.retries += u64::from(state.report.counters.retries);
        figures.slow_path_waits += u64::from(state.report.counters.slow_path_waits);
        figures.resends += u64::from(state.report.counters.resends);
    }
    durations.sort_unstable();
    let percentile = |p: usize| -> u64 {
        if durations.is_empty() {
            0
        } else {
            durations[((durations.len() - 1) * p) / 100]
        }
    };
    figures.duration_p50_ms = percentile(50);
    figures.duration_p99_ms = percentile(99);
    figures
}

/// How long regions could take no writes during this run's migrations, as the simulator
/// measured it (no datanode would have accepted a write), between each submit and end.
#[derive(Debug, Default, Serialize)]
pub(super) struct WritePause {
    migrations: u64,
    p50_ms: u64,
    p99_ms: u64,
    max_ms: u64,
}

pub(super) fn write_pause(mut pauses: Vec<u64>) -> WritePause {
    pauses.sort_unstable();
    let percentile = |p: usize| -> u64 {
        if pauses.is_empty() {
            0
        } else {
            pauses[((pauses.len() - 1) * p) / 100]
        }
    };
    WritePause {
        migrations: pauses.len() as u64,
        p50_ms: percentile(50),
        p99_ms: percentile(99),
        max_ms: pauses.last().copied().unwrap_or(0),
    }
}

/// What one run of the demo did.
#[derive(Debug, Serialize)]
pub(super) struct Summary {
    /// The data directory (sled), or none on PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) data_dir: Option<String>,
    /// The PostgreSQL store, without its password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) store: Option<String>,
    pub(super) datanodes: u64,
    pub(super) regions: u64,
    pub(super) tables: u32,
    pub(super) resumed: u64,
    pub(super) phases: Vec<(String, u64)>,
    pub(super) this_run: Figures,
    pub(super) all_time: Figures,
    pub(super) write_pause: WritePause,
    pub(super) invariant_violations: Vec<String>,
    pub(super) virtual_time_ms: u64,
    pub(super) real_time_ms: u64,
    pub(super) example_ids: BTreeMap<String, String>,
    /// On PostgreSQL: the engines, the kill and the takeover, the exactly-once check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) election: Option<super::demo_pg::ElectionReport>,
    /// With `--metrics`: the engine's metrics in the Prometheus text format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) metrics: Option<String>,
}

/// The config a first run saves, from the arguments.
pub(super) fn config_of(args: &DemoArgs) -> CampaignConfig {
    CampaignConfig {
        datanodes: args.datanodes,
        tables: args.tables,
        regions_per_table: args.regions_per_table,
        seed: args.seed,
        faults: !args.no_faults,
        ..CampaignConfig::default()
    }
}

/// Runs the demo; returns the exit code.
pub fn run(args: DemoArgs) -> u8 {
    // Checked before anything is opened or written, even when a saved config will be used.
    if let Err(error) = config_of(&args).check_bounds(|name| format!("--{name}")) {
        eprintln!("error: {error}");
        return EXIT_USAGE;
    }
    let election = match super::demo_pg::Election::of(&args) {
        Ok(election) => election,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_USAGE;
        }
    };
    // The embedder picks the exporter; the demo's is Prometheus's text format.
    let metrics = args.metrics.then(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map(|()| handle)
    });
    let metrics = match metrics.transpose() {
        Ok(metrics) => metrics,
        Err(error) => {
            eprintln!("error: cannot install the metrics recorder: {error}");
            return EXIT_FAILED;
        }
    };
    if let Some(election) = election {
        return super::demo_pg::run(&args, election, metrics.as_ref());
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return EXIT_FAILED;
        }
    };
    let code = runtime.block_on(async {
        match campaign(&args, metrics.as_ref()).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error}");
                EXIT_FAILED
            }
        }
    });
    runtime.shutdown_background();
    code
}

pub(super) fn now_wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The latest event time in the log, so virtual time never runs backwards across runs.
/// What the datanodes of the previous run did for the migrations still open, in order: each
/// open, downgrade and upgrade whose success the log recorded. A real datanode keeps a
/// candidate it opened while the control plane restarts; the new simulated cluster is built
/// from the routes alone, so it is told again, or a resumed migration would find its
/// candidate gone and abort where an uninterrupted run completes.
fn datanode_work_of_open_migrations(
    log: &EventLog,
) -> Result<Vec<(regmig::domain::PeerId, regmig::domain::Instruction)>, CampaignError> {
    use regmig::domain::{Instruction, Reply};
    let mut work = Vec::new();
    for (id, _) in log.open_procedures()? {
        let mut sent: Option<Instruction> = None;
        for timed in regmig::engine::load_procedure(log, id)? {
            match timed.event {
                MigrationEvent::InstructionSent { instruction, .. } => sent = Some(instruction),
                MigrationEvent::ReplyReceived { peer, reply } => {
                    let succeeded = match &reply {
                        Reply::OpenRegion { result, .. } => *result,
                        Reply::DowngradeRegion { exists, error, .. } => *exists && error.is_none(),
                        Reply::UpgradeRegion {
                            ready,
                            exists,
                            error,
                        } => *ready && *exists && error.is_none(),
                        _ => false,
                    };
                    match sent.take() {
                        Some(instruction) if succeeded && instruction.kind() == reply.kind() => {
                            work.push((peer, instruction));
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
    Ok(work)
}

fn last_recorded_ms(log: &EventLog) -> Result<u64, CampaignError> {
    let mut ids = log.procedures()?;
    let recent = ids.split_off(ids.len().saturating_sub(64));
    let mut latest = 0;
    for id in recent
        .into_iter()
        .chain(log.open_procedures()?.into_iter().map(|(id, _)| id))
    {
        if let Some(last) = load_procedure(log, id)?.last() {
            latest = latest.max(last.at_ms);
        }
    }
    Ok(latest)
}

/// Exits as a kill would (`--exit-after-events`, `--exit-after-setup-writes`): no shutdown,
/// nothing flushed beyond what is durable, the exit code of a SIGKILL seen by a shell.
fn exit_as_a_kill() -> ! {
    std::process::exit(137)
}

async fn campaign(
    args: &DemoArgs,
    metrics: Option<&PrometheusHandle>,
) -> Result<u8, CampaignError> {
    let started = Instant::now();
    let log = EventLog::open(&args.data_dir, LogOptions::default())?;
    let store = SledMetadataStore::open(&log)?;
    let record = CampaignRecord::open(&log)?;
    let config = match record.config()? {
        Some(config) => {
            // A directory written by another version, or by hand, is input too.
            if let Err(error) = config.check_bounds(|name| format!("the saved {name}")) {
                eprintln!(
                    "error: {}: {error}; use another --data-dir to start a new campaign",
                    args.data_dir.display()
                );
                return Ok(EXIT_USAGE);
            }
            config
        }
        None => config_of(args),
    };
    // The phase is the setup's last write: without one, this run sets the campaign up, or
    // finishes the setup a kill interrupted (with the config recorded first, if it was).
    let (phase, fresh) = match record.phase()? {
        Some(phase) => (phase, false),
        None if !log.procedures()?.is_empty() => {
            // Another history (a `sim run`, an embedder's): the demo must not join it.
            eprintln!(
                "error: {} holds a log that is not a demo campaign's; use another --data-dir",
                args.data_dir.display()
            );
            return Ok(EXIT_USAGE);
        }
        None => {
            let mut setup_writes: u64 = 0;
            let mut written = || {
                setup_writes += 1;
                if args
                    .exit_after_setup_writes
                    .is_some_and(|limit| setup_writes >= limit)
                {
                    exit_as_a_kill();
                }
            };
            (set_up(&store, &record, &config, &mut written).await?, true)
        }
    };
    // A first run starts at the wall clock. A resumed one continues the virtual clock where
    // the log stopped: the simulated cluster was down for no time, so how long the restart
    // took in real time (seconds, or a day) changes no deadline, budget or outcome.
    let last_ms = last_recorded_ms(&log)?;
    let epoch_base_ms = if last_ms == 0 {
        now_wall_ms()
    } else {
        last_ms + 1
    };
    let (setup, routes) = cluster_setup(&store, &log, &config, epoch_base_ms).await?;
    let regions: u64 = setup.tables.iter().map(|t| t.regions.len() as u64).sum();
    let cluster = SimCluster::new(setup, SimOptions::default())?;
    restore_routes(&cluster, &routes);
    if !fresh {
        // The simulated datanodes died with the previous run: they come back holding no
        // lease, and heartbeats grant leases from the durable routes again (none to a leader
        // still marked Downgrading).
        for peer in 1..=config.datanodes {
            cluster.crash_now(peer);
            cluster.restart_now(peer);
        }
    }
    if !fresh {
        for (peer, instruction) in datanode_work_of_open_migrations(&log)? {
            cluster.apply_instruction_now(peer, &instruction);
        }
    }
    cluster.start();
    let mut ports = cluster.ports();
    ports.metadata = Arc::new(MirroredMetadataStore::new(
        cluster.metadata(),
        store.clone(),
    ));
    if config.faults {
        let used = if fresh {
            FaultsUsed::default()
        } else {
            faults_used(&log)?
        };
        demo_faults::inject(&cluster, &mut ports, &config, &used);
    }
    // Cancels given with `regmig cancel` while no engine ran reach their migrations before
    // these take a step; new ones are served below as they come.
    let cancels_on_open = super::cancel::take_pending(&args.data_dir);
    let engine_config = EngineConfig {
        append_mode: AppendMode::Inline,
        cancels_on_open: cancels_on_open.clone(),
        ..EngineConfig::default()
    };
    let engine = Engine::with_log(log.clone(), engine_config, ports).await?;
    for (request, answer) in cancels_on_open
        .iter()
        .zip(engine.cancels_on_open_answered().await)
    {
        super::cancel::answer_taken(&args.data_dir, request, &answer);
    }
    let progress = super::progress::Progress::new("migrations", args.json);
    let appended = Arc::new(AtomicU64::new(0));
    {
        let appended = appended.clone();
        let progress = progress.clone();
        let exit_after = args.exit_after_events;
        engine.set_observer(Box::new(move |event| {
            let count = appended.fetch_add(1, Ordering::SeqCst) + 1;
            if matches!(event.event, MigrationEvent::Finished { .. }) {
                progress.inc();
            }
            if exit_after.is_some_and(|limit| count >= limit) {
                exit_as_a_kill();
            }
        }));
    }
    let say = |line: String| {
        if !args.json {
            progress.println(&line);
        }
    };
    say(format!(
        "regmig demo: {} datanodes, {regions} regions over {} tables, data in {}",
        config.datanodes,
        config.tables,
        args.data_dir.display()
    ));
    let mut run_ids: Vec<Uuid> = Vec::new();
    let resumed: Vec<Uuid> = engine.list_open()?.into_iter().map(|(id, _)| id).collect();
    if !resumed.is_empty() {
        say(format!(
            "resuming {} open migrations from the log",
            resumed.len()
        ));
    }
    let work = async {
        progress.start("resuming", resumed.len() as u64);
        for id in &resumed {
            let _ = engine.wait(*id).await;
        }
        run_ids.extend(resumed.iter().copied());
        let mut phases = Vec::new();
        let mut phase = phase;
        loop {
            if phase == Phase::Done {
                if phases.is_empty() && resumed.is_empty() {
                    say("the campaign is already complete; nothing to do".to_string());
                }
                break;
            }
            let submitted = submitted_moves(&log, phase, &config)?;
            let moves = remaining_moves(phase, &config, &cluster.region_routes_now(), &submitted);
            let trigger = phase.trigger(&config);
            say(format!("{trigger}: {} migrations", moves.len()));
            progress.start(trigger.clone(), moves.len() as u64);
            let phase_started_ms = cluster.clock().elapsed_ms();
            let ids = submit_moves(&engine, phase, &config, &moves, &args.actor, &say).await;
            for id in &ids {
                let _ = engine.wait(*id).await;
            }
            if phase == Phase::Evacuate {
                say(format!(
                    "{trigger}: took {} of virtual time",
                    format_ms(
                        cluster
                            .clock()
                            .elapsed_ms()
                            .saturating_sub(phase_started_ms)
                    )
                ));
            }
            phases.push((trigger, ids.len() as u64));
            run_ids.extend(ids);
            let next = match phase {
                Phase::Rebalance => Phase::Evacuate,
                _ => Phase::Done,
            };
            record.set_phase(next).await?;
            phase = next;
        }
        Ok::<_, CampaignError>(phases)
    };
    // Cancels given with `regmig cancel`: those recorded while no engine ran at once, new
    // ones as they come.
    let cancels = super::cancel::serve(&engine, &args.data_dir);
    let phases = tokio::select! {
        biased;
        never = cancels => match never {},
        _ = tokio::signal::ctrl_c() => {
            progress.abandon();
            engine.shutdown().await;
            cluster.stop();
            eprintln!(
                "stopped: every open migration is in the log; run `regmig demo --data-dir {}` again to resume",
                args.data_dir.display()
            );
            return Ok(EXIT_FAILED);
        }
        phases = work => phases?,
    };
    progress.finish();
    let virtual_time_ms = cluster.clock().elapsed_ms();
    let epoch_base_ms = cluster.clock().epoch_base_ms();
    let mut pauses = Vec::new();
    for id in &run_ids {
        let state = fold(&load_procedure(&log, *id)?);
        // Only migrations submitted by this run: the simulated cluster knows nothing of
        // the time before it started (a resumed migration's first part).
        if state.report.submitted_at_ms < epoch_base_ms {
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
    let write_pause = write_pause(pauses);
    let invariant_violations: Vec<String> = cluster
        .final_check()
        .into_iter()
        .map(|violation| violation.to_string())
        .collect();
    cluster.stop();
    engine.shutdown().await;
    let mut all_states = Vec::new();
    let mut example_ids = BTreeMap::new();
    for id in log.procedures()? {
        let state = fold(&load_procedure(&log, id)?);
        let label = match state.outcome {
            Some(Outcome::Completed) if state.report.counters.slow_path_waits > 0 => "slow_path",
            Some(Outcome::Completed) if state.report.counters.retries > 0 => "retried",
            Some(outcome) => outcome.name(),
            None => "unfinished",
        };
        example_ids
            .entry(label.to_string())
            .or_insert(id.to_string());
        all_states.push((id, state));
    }
    let this_run = figures(
        all_states
            .iter()
            .filter(|(id, _)| run_ids.contains(id))
            .map(|(_, state)| state),
    );
    let all_time = figures(all_states.iter().map(|(_, state)| state));
    let summary = Summary {
        data_dir: Some(args.data_dir.display().to_string()),
        store: None,
        datanodes: config.datanodes,
        regions,
        tables: config.tables,
        resumed: resumed.len() as u64,
        phases,
        this_run,
        all_time,
        write_pause,
        invariant_violations,
        virtual_time_ms,
        real_time_ms: started.elapsed().as_millis() as u64,
        example_ids,
        election: None,
        metrics: metrics.map(PrometheusHandle::render),
    };
    print_report(&summary, args.json);
    Ok(if summary.invariant_violations.is_empty() {
        0
    } else {
        EXIT_FAILED
    })
}

/// Submits a phase's moves to `engine`: the evacuation as one batch per source, destination
/// and table (spec R2.5: the regions of a batch move together, so the evacuation takes about
/// one migration's time), the other phases one migration at a time. Returns the ids
/// started; each move not submitted is said with the reason.
pub(super) async fn submit_moves(
    engine: &Engine,
    phase: Phase,
    config: &CampaignConfig,
    moves: &[PlannedMove],
    actor: &str,
    say: &dyn Fn(String),
) -> Vec<Uuid> {
    let trigger = phase.trigger(config);
    let mut ids = Vec::new();
    if phase == Phase::Evacuate {
        let mut batches: BTreeMap<
            (u64, u64, regmig::domain::TableId),
            Vec<regmig::domain::RegionId>,
        > = BTreeMap::new();
        for (region_id, from, to) in moves {
            batches
                .entry((*from, *to, region_id.table_id()))
                .or_default()
                .push(*region_id);
        }
        say(format!("  as {} batches", batches.len()));
        for ((from, to, _table), regions) in batches {
            let batch = BatchRequest::new(
                regions,
                regmig::domain::Peer::sim(from),
                regmig::domain::Peer::sim(to),
            )
            .with_trigger(trigger.clone())
            .by(actor, phase.reason(config));
            match engine.submit_batch(batch).await {
                Ok(submitted) => {
                    for (region_id, start) in submitted.regions {
                        match start {
                            BatchRegionStart::Started(id) => ids.push(id),
                            BatchRegionStart::Refused(error) => {
                                say(format!("  {region_id}: not submitted: {error}"))
                            }
                        }
                    }
                }
                Err(error) => say(format!("  batch {from} -> {to}: not submitted: {error}")),
            }
        }
        return ids;
    }
    for (region_id, from, to) in moves {
        let request = MigrationRequest::new(
            *region_id,
            regmig::domain::Peer::sim(*from),
            regmig::domain::Peer::sim(*to),
        )
        .with_trigger(trigger.clone())
        .by(actor, phase.reason(config));
        match engine.submit(request).await {
            Ok(SubmitOutcome::Started(id)) => ids.push(id),
            Ok(SubmitOutcome::AlreadyMigrated) => {}
            Err(error) => say(format!("  {region_id}: not submitted: {error}")),
        }
    }
    ids
}

/// Prints what a run did: with `json` one JSON document (the metrics in it), else the
/// summary for people followed by the metrics text.
pub(super) fn print_report(summary: &Summary, json: bool) {
    if json {
        match serde_json::to_string_pretty(summary) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("error: cannot encode the summary: {error}"),
        }
        return;
    }
    print_summary(summary);
    if let Some(metrics) = &summary.metrics {
        print!("{metrics}");
    }
}

fn print_summary(summary: &Summary) {
    println!();
    println!(
        "{:<10} {:>10} {:>9} {:>7} {:>11} {:>8} {:>8} {:>8} {:>16}",
        "",
        "migrations",
        "completed",
        "aborted",
        "failed",
        "p50",
        "p99",
        "retries",
        "slow-path waits"
    );
    for (label, figures) in [
        ("this run", &summary.this_run),
        ("all time", &summary.all_time),
    ] {
        println!(
            "{:<10} {:>10} {:>9} {:>7} {:>11} {:>8} {:>8} {:>8} {:>16}",
            label,
            figures.migrations,
            figures.completed,
            figures.aborted,
            if figures.unfinished > 0 {
                format!("{} (+{} open)", figures.failed, figures.unfinished)
            } else {
                figures.failed.to_string()
            },
            format_ms(figures.duration_p50_ms),
            format_ms(figures.duration_p99_ms),
            figures.retries,
            figures.slow_path_waits
        );
    }
    println!(
        "write pause (no datanode taking writes for the region), over the {} migrations this run submitted and finished: p50 {}, p99 {}, max {}",
        summary.write_pause.migrations,
        format_ms(summary.write_pause.p50_ms),
        format_ms(summary.write_pause.p99_ms),
        format_ms(summary.write_pause.max_ms)
    );
    println!();
    if summary.invariant_violations.is_empty() {
        println!("invariants: ok (never two writers for a region, no acknowledged write lost)");
    } else {
        println!("invariants VIOLATED:");
        for violation in &summary.invariant_violations {
            println!("  {violation}");
        }
    }
    if let Some(election) = &summary.election {
        super::demo_pg::print_election(election);
        println!(
            "real time {} (the simulated cluster ran on the real clock)",
            format_ms(summary.real_time_ms)
        );
    } else {
        println!(
            "virtual time {}, real time {}",
            format_ms(summary.virtual_time_ms),
            format_ms(summary.real_time_ms)
        );
    }
    let source = match (&summary.store, &summary.data_dir) {
        (Some(store), _) => format!("--store {}", shell_word(store)),
        (None, dir) => format!("--data-dir {}", shell_word(dir.as_deref().unwrap_or(""))),
    };
    let pick = |labels: &[&str]| {
        labels
            .iter()
            .find_map(|label| summary.example_ids.get(*label))
            .cloned()
            .unwrap_or_else(|| "ID".to_string())
    };
    let interesting = pick(&["aborted", "failed", "slow_path", "retried", "completed"]);
    println!("\nTry next:");
    println!("  regmig list {source} --outcome aborted");
    println!("  regmig show {interesting} {source}");
    println!("  regmig replay {interesting} --check {source}");
    println!(
        "  regmig audit --from {} --since 7d {source}",
        summary.datanodes
    );
    println!("  regmig timeline {interesting} -o timeline.svg {source}");
    println!("  regmig log verify {source}");
}

/// `text` as one word a POSIX shell reads back as `text`: as is when it holds only safe
/// characters, else in single quotes (a `'` written `'\''`), so a suggested command that
/// is pasted never runs what a directory's name holds.
pub(super) fn shell_word(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

pub(super) fn format_ms(ms: u64) -> String {
    if ms >= 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_data_dir_is_quoted_for_the_shell_only_when_it_needs_it() {
        assert_eq!(super::shell_word("./regmig-data"), "./regmig-data");
        assert_eq!(super::shell_word("/tmp/my dir;rm x"), "'/tmp/my dir;rm x'");
        assert_eq!(super::shell_word("it's"), "'it'\\''s'");
        assert_eq!(super::shell_word(""), "''");
    }
}
