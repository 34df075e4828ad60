//! The snapshot baselines of figure 2 write what they claim: baseline (a) three durable
//! operations per migration, baseline (b) one per recorded step; both run through the
//! engine's own procedure driver (`regmig::engine::ProcedureDriver`), so they make the same
//! decisions as the engine, on the same zero-latency cluster. The driver folds only what its
//! persistence kept.

use std::sync::Arc;

use regmig::cluster::sled_store::SledMetadataStore;
use regmig::cluster::{MetadataStore, Ports};
use regmig::domain::Peer;
use regmig::engine::{
    load_procedure, AppendMode, Batch, DriveError, Ended, Engine, EngineConfig, LockTable, Next,
    Persistence, ProcedureDriver,
};
use regmig::log::{EventLog, LogOptions};
use regmig::migration::{MigrationEvent, MigrationState, Observation, Outcome};
use regmig_tools::bench::driver::{self, drive, CollectingRecorder};
use regmig_tools::bench::migrations::{self, snapshot_migration, Design, RunLength};
use regmig_tools::bench::snapshot::{state_key, PersistPoints, SnapshotStore};
use regmig_tools::bench::world::{self, InstantMailbox, FIRST_LEADER, OTHER_PEER};

struct Cluster {
    _dir: tempfile::TempDir,
    log: EventLog,
    ports: Ports,
}

async fn cluster(tables: u32) -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EventLog::open(&dir.path().join("data"), LogOptions::default()).expect("log");
    let store = SledMetadataStore::open(&log).expect("store");
    world::create_tables(&store, tables).await.expect("tables");
    let ports = world::ports(Arc::new(InstantMailbox::new()), Arc::new(store));
    Cluster {
        _dir: dir,
        log,
        ports,
    }
}

/// The submission of a migration of bench region 0 from the first leader to the other peer.
async fn submitted(cluster: &Cluster) -> MigrationEvent {
    driver::submitted_event(
        cluster.ports.metadata.as_ref() as &dyn MetadataStore,
        world::region_of(0),
        Peer::sim(FIRST_LEADER),
        Peer::sim(OTHER_PEER),
    )
    .await
    .expect("submitted")
}

fn kinds(events: &[MigrationEvent]) -> Vec<u16> {
    events.iter().map(MigrationEvent::kind_code).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_original_writes_three_durable_operations_per_migration_and_keeps_nothing() {
    let cluster = cluster(1).await;
    let store = Arc::new(SnapshotStore::open(&cluster.log).expect("snapshots"));
    let locks = LockTable::new();
    let region = world::region_of(0);
    for (from, to) in [(FIRST_LEADER, OTHER_PEER), (OTHER_PEER, FIRST_LEADER)] {
        let state = snapshot_migration(
            &cluster.ports,
            &locks,
            Arc::clone(&store),
            PersistPoints::AsOriginal,
            region,
            from,
            to,
        )
        .await
        .expect("migration");
        assert_eq!(state.outcome, Some(Outcome::Completed));
    }
    // Per migration: the state after Start, the commit record, one delete of both.
    assert_eq!(store.durable_writes(), 2 * 2);
    assert_eq!(store.durable_deletes(), 2);
    assert_eq!(store.durable_operations(), 3 * 2);
    assert!(store.is_empty(), "a finished procedure leaves no snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_writes_once_per_recorded_step_and_keeps_the_final_state() {
    let region = world::region_of(0);
    // The steps, counted on a world of their own.
    let counting = cluster(1).await;
    let submitted = submitted(&counting).await;
    let mut recorder = CollectingRecorder::default();
    let counted = drive(
        &counting.ports,
        &LockTable::new(),
        driver::procedure_id(&counting.ports),
        submitted,
        &mut recorder,
    )
    .await
    .expect("drive");
    assert_eq!(counted.outcome, Some(Outcome::Completed));
    let steps = recorder.batches.len() as u64;
    assert!(recorder
        .batches
        .iter()
        .all(|(_, events)| !events.is_empty()));

    let cluster = cluster(1).await;
    let store = Arc::new(SnapshotStore::open(&cluster.log).expect("snapshots"));
    let state = snapshot_migration(
        &cluster.ports,
        &LockTable::new(),
        Arc::clone(&store),
        PersistPoints::EveryStep,
        region,
        FIRST_LEADER,
        OTHER_PEER,
    )
    .await
    .expect("migration");
    assert_eq!(state.outcome, Some(Outcome::Completed));
    assert_eq!(store.durable_writes(), steps);
    assert_eq!(store.durable_deletes(), 0);
    // Every transition and every reply is a step of its own.
    let transitions = state.report.path.len() as u64;
    let replies = state.report.counters.sent.values().sum::<u64>();
    assert!(
        steps >= transitions.max(replies),
        "{steps} steps for {transitions} transitions and {replies} replies"
    );
    let kept = store.snapshots().expect("snapshots");
    assert_eq!(kept.len(), 1, "the final state is kept as the record");
    let (key, value) = &kept[0];
    let json: serde_json::Value = serde_json::from_slice(value).expect("JSON");
    assert_eq!(json["state"]["outcome"], "completed");
    let procedure_id: uuid::Uuid = json["procedure_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("procedure id");
    assert_eq!(key, &state_key(procedure_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baselines_run_the_same_decisions_as_the_engine() {
    let region = world::region_of(0);
    let driven = cluster(1).await;
    let submitted = submitted(&driven).await;
    let mut recorder = CollectingRecorder::default();
    drive(
        &driven.ports,
        &LockTable::new(),
        driver::procedure_id(&driven.ports),
        submitted,
        &mut recorder,
    )
    .await
    .expect("drive");
    let driven_kinds: Vec<u16> = recorder
        .batches
        .iter()
        .flat_map(|(_, events)| kinds(events))
        .collect();

    let engine_cluster = cluster(1).await;
    let config = EngineConfig {
        append_mode: AppendMode::Inline,
        ..EngineConfig::default()
    };
    let engine = Engine::with_log(
        engine_cluster.log.clone(),
        config,
        engine_cluster.ports.clone(),
    )
    .await
    .expect("engine");
    let state = migrations::engine_migration(&engine, region, FIRST_LEADER, OTHER_PEER)
        .await
        .expect("engine migration");
    let (_, procedure_id) = engine_cluster
        .log
        .procedures_by_region(region.as_u64(), 0, u64::MAX)
        .expect("audit index")[0];
    let logged: Vec<MigrationEvent> = load_procedure(&engine_cluster.log, procedure_id)
        .expect("load")
        .into_iter()
        .map(|timed| timed.event)
        .collect();
    assert_eq!(state.counters.events, logged.len() as u64);
    assert_eq!(kinds(&logged), driven_kinds);
}

#[test]
fn measured_runs_count_three_operations_per_migration_for_the_original() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = migrations::measure(
        &dir.path().join("a"),
        Design::AsOriginal,
        3,
        RunLength::MigrationsPerWorker(2),
    )
    .expect("run");
    assert_eq!(run.completed, 6);
    assert_eq!(run.snapshot_operations, 3 * 6);

    let run = migrations::measure(
        &dir.path().join("log"),
        Design::EventLog,
        3,
        RunLength::MigrationsPerWorker(2),
    )
    .expect("run");
    assert_eq!(run.completed, 6);
    assert_eq!(run.snapshot_operations, 0);
}

/// A driver of a new procedure on `cluster` whose submission `persistence` has taken.
async fn submitted_driver<'a, P: Persistence>(
    cluster: &'a Cluster,
    locks: &'a LockTable,
    persistence: P,
) -> ProcedureDriver<'a, P>
where
    P::Error: std::fmt::Debug,
{
    let submitted = submitted(cluster).await;
    let mut driven = ProcedureDriver::new(
        &cluster.ports,
        locks,
        driver::procedure_id(&cluster.ports),
        MigrationState::default(),
        1,
        persistence,
    );
    assert_eq!(
        driven.record(vec![submitted]).await.expect("submit"),
        Next::Continue
    );
    driven
}

/// A persistence that keeps batches until its `refuse_at`-th (1-based), which it refuses.
struct RefusingAt {
    refuse_at: usize,
    kept: Vec<Vec<MigrationEvent>>,
}

#[async_trait::async_trait]
impl Persistence for RefusingAt {
    type Error = String;

    async fn persist(&mut self, batch: Batch<'_>, _state: &MigrationState) -> Result<(), String> {
        if self.kept.len() + 1 == self.refuse_at {
            return Err(format!("refused the batch at seq {}", batch.first_seq));
        }
        self.kept.push(batch.events.to_vec());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_folds_only_what_its_persistence_kept_and_releases_the_locks() {
    let cluster = cluster(1).await;
    let locks = LockTable::new();
    let persistence = RefusingAt {
        refuse_at: 3,
        kept: Vec::new(),
    };
    let mut driven = submitted_driver(&cluster, &locks, persistence).await;
    let procedure_id = driven.procedure_id();
    let error = driven.run(Observation::Begin).await.expect_err("refused");
    let kept: Vec<MigrationEvent> = driven.persistence().kept.concat();
    match error {
        DriveError::Persist {
            procedure_id: failed,
            error,
        } => {
            assert_eq!(failed, procedure_id);
            assert_eq!(
                error,
                format!("refused the batch at seq {}", kept.len() + 1)
            );
        }
        other => panic!("expected a persist error, got {other}"),
    }
    assert_eq!(driven.persistence().kept.len(), 2);
    assert_eq!(driven.state().report.counters.events, kept.len() as u64);
    assert_eq!(driven.state().outcome, None);
    assert_eq!(locks.held_keys(), 0, "a failed procedure holds no lock");
}

/// A persistence that keeps everything and says stop after its `stop_after`-th batch.
struct StoppingAfter {
    stop_after: usize,
    batches: usize,
}

#[async_trait::async_trait]
impl Persistence for StoppingAfter {
    type Error = String;

    async fn persisted(
        &mut self,
        _batch: Batch<'_>,
        _state: &MigrationState,
    ) -> Result<Next, String> {
        self.batches += 1;
        Ok(if self.batches == self.stop_after {
            Next::Stop
        } else {
            Next::Continue
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistence_that_says_stop_leaves_the_procedure_unfinished_like_a_crash() {
    let cluster = cluster(1).await;
    let locks = LockTable::new();
    let persistence = StoppingAfter {
        stop_after: 2,
        batches: 0,
    };
    let mut driven = submitted_driver(&cluster, &locks, persistence).await;
    assert_eq!(
        driven.run(Observation::Begin).await.expect("run"),
        Ended::Stopped
    );
    assert_eq!(driven.persistence().batches, 2);
    assert!(!driven.state().is_finished());
    assert_eq!(locks.held_keys(), 0, "a stopped procedure holds no lock");
}
