//! Leadership in the engine, on an in-memory lease and a shared log that fences by epoch
//! (the same rules the PostgreSQL backend enforces in its transactions; `pg_failover.rs`
//! runs them against a real server): a standby takes over a killed leader and finishes its
//! migrations exactly once; a leader whose renewals stall halts by its own deadline; a
//! fenced append or route write halts the whole engine at once and nothing more is sent.

mod engine_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine_support::*;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::{
    CasConflict, MetadataError, MetadataErrorKind, MetadataStore, MetadataStoreLayer, Ports,
    RegionMove, SeededEntropy,
};
use regmig::domain::*;
use regmig::engine::leadership::{
    Candidate, Deposed, LeaderLease, LeadershipConfig, LeadershipError, LeaseError, LeaseGrant,
    LeaseState, MemoryLeaderLease, OpenAsLeader, OpenError,
};
use regmig::engine::{
    load_procedure, AppendMode, Engine, EngineConfig, MigrationRequest, SubmitOutcome,
};
use regmig::log::{
    AppendRequest, AuditEntry, AuditIndex, EventLog, ListedEvent, LogError, LogOptions, LogStore,
    StoredEvent,
};
use regmig::migration::{MigrationEvent, Outcome};
use uuid::Uuid;

/// A shared log that refuses a writer whose epoch is not the lease's: the fencing rule of a
/// shared backend, checked before each append (the PostgreSQL store checks it in the
/// append's own transaction).
struct EpochStore {
    shared: Arc<dyn LogStore>,
    lease: Arc<MemoryLeaderLease>,
    epoch: u64,
}

impl EpochStore {
    async fn check(&self) -> Result<(), LogError> {
        let current = self.lease.state().await.expect("memory lease").epoch;
        if current != self.epoch {
            return Err(LogError::Fenced {
                store: self.location(),
                epoch: self.epoch,
                current_epoch: current,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl LogStore for EpochStore {
    fn location(&self) -> String {
        format!("shared:{}", self.shared.location())
    }
    fn is_read_only(&self) -> bool {
        false
    }
    fn damage(&self) -> Option<&LogError> {
        None
    }
    fn writer_epoch(&self) -> Option<u64> {
        Some(self.epoch)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    async fn append(&self, request: AppendRequest) -> regmig::log::store::AppendResult {
        self.check().await?;
        self.shared.append(request).await
    }
    fn append_blocking(&self, request: AppendRequest) -> regmig::log::store::AppendResult {
        regmig::log::store::block_on(self.check())?;
        self.shared.append_blocking(request)
    }
    async fn sync(&self) -> Result<(), LogError> {
        self.shared.sync().await
    }
    fn sync_blocking(&self) -> Result<(), LogError> {
        self.shared.sync_blocking()
    }
    async fn next_seq(&self, procedure_id: Uuid) -> Result<u64, LogError> {
        self.shared.next_seq(procedure_id).await
    }
    async fn procedure_events(
        &self,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.shared.procedure_events(procedure_id, from_seq).await
    }
    async fn events_from(&self, from: u64, limit: usize) -> Result<Vec<ListedEvent>, LogError> {
        self.shared.events_from(from, limit).await
    }
    async fn open_procedures(&self) -> Result<Vec<(Uuid, u64)>, LogError> {
        self.shared.open_procedures().await
    }
    async fn open_procedure_of_region(&self, region_id: u64) -> Result<Option<Uuid>, LogError> {
        self.shared.open_procedure_of_region(region_id).await
    }
    async fn audit_entries(
        &self,
        index: AuditIndex,
        owners: std::ops::RangeInclusive<u64>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<AuditEntry>, LogError> {
        self.shared
            .audit_entries(index, owners, since_ms, until_ms)
            .await
    }
    async fn procedures(&self) -> Result<Vec<Uuid>, LogError> {
        self.shared.procedures().await
    }
}

/// Route writes fenced by the same rule.
struct EpochMetadata {
    shared: Arc<MemoryMetadataStore>,
    lease: Arc<MemoryLeaderLease>,
    epoch: u64,
}

#[async_trait]
impl MetadataStoreLayer for EpochMetadata {
    fn inner(&self) -> &dyn MetadataStore {
        &*self.shared
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let current = self.lease.state().await.expect("memory lease").epoch;
        if current != self.epoch {
            return Err(MetadataError::new(
                MetadataErrorKind::Fenced,
                format!(
                    "write the route of table {table_id}: epoch {} is not the current epoch {current}",
                    self.epoch
                ),
            ));
        }
        self.shared
            .cas_table_route(table_id, expected_version, route, region_moves)
            .await
    }
}

/// One cluster (log, metadata, mailbox) that every candidate of a test shares.
struct Cluster {
    _dir: tempfile::TempDir,
    log: Arc<dyn LogStore>,
    metadata: Arc<MemoryMetadataStore>,
    mailbox: Arc<ScriptedMailbox>,
    lease: Arc<MemoryLeaderLease>,
}

impl Cluster {
    fn new(reply_delay_ms: u64) -> Arc<Cluster> {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), LogOptions::default()).expect("open the log");
        let metadata = Arc::new(MemoryMetadataStore::new());
        add_table(&metadata, 1024, 8, 1, &[]);
        Arc::new(Cluster {
            log: log.store().clone(),
            _dir: dir,
            metadata,
            mailbox: Arc::new(ScriptedMailbox::with_delay(reply_delay_ms)),
            lease: Arc::new(MemoryLeaderLease::new()),
        })
    }
}

/// Opens an engine over the shared cluster with the granted epoch.
struct Opener(Arc<Cluster>);

#[async_trait]
impl OpenAsLeader for Opener {
    async fn open(&self, grant: &LeaseGrant) -> Result<Engine, OpenError> {
        let cluster = &self.0;
        let log = EventLog::with_store(Arc::new(EpochStore {
            shared: cluster.log.clone(),
            lease: cluster.lease.clone(),
            epoch: grant.epoch,
        }));
        let metadata: Arc<dyn MetadataStore> = Arc::new(EpochMetadata {
            shared: cluster.metadata.clone(),
            lease: cluster.lease.clone(),
            epoch: grant.epoch,
        });
        let ports = Ports::builder(cluster.mailbox.clone(), metadata)
            .entropy(Arc::new(SeededEntropy::new(grant.epoch)))
            .build();
        let config = EngineConfig {
            append_mode: AppendMode::Inline,
            ..EngineConfig::default()
        };
        Ok(Engine::with_log(log, config, ports).await?)
    }
}

const LEASE: Duration = Duration::from_millis(400);

fn candidate(cluster: &Arc<Cluster>, holder: &str, lease: Arc<dyn LeaderLease>) -> Candidate {
    candidate_with(cluster, LeadershipConfig::new(holder, LEASE), lease)
}

fn candidate_with(
    cluster: &Arc<Cluster>,
    config: LeadershipConfig,
    lease: Arc<dyn LeaderLease>,
) -> Candidate {
    Candidate::start(lease, config, Arc::new(Opener(cluster.clone()))).expect("a valid config")
}

async fn submit(engine: &Engine, number: u32) -> Uuid {
    let request = MigrationRequest::new(RegionId::new(1024, number), Peer::sim(1), Peer::sim(2));
    match engine.submit(request).await {
        Ok(SubmitOutcome::Started(id)) => id,
        other => panic!("region 1024:{number} not started: {other:?}"),
    }
}

/// Waits (real time, bounded) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every procedure's history: finished exactly once, with `outcome`.
fn assert_finished_once(log: &EventLog, procedures: &[Uuid], outcome: Outcome) {
    for &procedure_id in procedures {
        let events = load_procedure(log, procedure_id).expect("history");
        let finishes: Vec<_> = events
            .iter()
            .filter(|timed| timed.event.is_terminal())
            .collect();
        assert_eq!(finishes.len(), 1, "{procedure_id} finished {finishes:?}");
        assert!(
            matches!(&finishes[0].event, MigrationEvent::Finished { outcome: found, .. } if *found == outcome),
            "{procedure_id}: {:?}",
            finishes[0].event
        );
        assert!(
            events.last().unwrap().event.is_terminal(),
            "{procedure_id}: events after its end"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_a_killed_leader_and_finishes_its_migrations_once() {
    let cluster = Cluster::new(60);
    let a = candidate(&cluster, "a", cluster.lease.clone());
    let (grant_a, engine_a) = a.wait_leader().await.expect("a leads");
    assert_eq!(grant_a.epoch, 1);
    let b = candidate(&cluster, "b", cluster.lease.clone());
    let mut procedures = Vec::new();
    for number in 1..=4 {
        procedures.push(submit(&engine_a, number).await);
    }
    // Mid-way (each answer takes 60 ms): kill a, as a crash would.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let sent_before_kill = cluster.mailbox.received.lock().unwrap().len();
    a.kill();
    let killed = tokio::time::Instant::now();
    let (grant_b, engine_b) = b.wait_leader().await.expect("b takes over");
    assert_eq!(grant_b.epoch, 2);
    assert_eq!(grant_b.holder, "b");
    // Not before a's lease ran out.
    assert!(
        killed.elapsed() >= LEASE / 2,
        "took over after {:?}",
        killed.elapsed()
    );
    for &procedure_id in &procedures {
        let state = engine_b.wait(procedure_id).await.expect("finishes on b");
        assert_eq!(state.outcome, Some(Outcome::Completed), "{procedure_id}");
    }
    assert!(sent_before_kill > 0);
    assert_finished_once(engine_b.log(), &procedures, Outcome::Completed);
    for number in 1..=4 {
        let route = region_route(&cluster.metadata, RegionId::new(1024, number));
        assert_eq!(route.leader_peer.map(|peer| peer.id), Some(2));
    }
    // Its killed engine is fenced: nothing it tries reaches the log.
    let request = MigrationRequest::new(RegionId::new(1024, 8), Peer::sim(1), Peer::sim(2));
    drop(engine_a.submit(request).await);
    assert_eq!(cluster.log.open_procedures().await.unwrap(), vec![]);
    b.stop().await;
}

/// A lease whose calls hang while `stalled` (an engine cut off from the store).
struct StallingLease {
    lease: Arc<MemoryLeaderLease>,
    stalled: AtomicBool,
}

#[async_trait]
impl LeaderLease for StallingLease {
    fn location(&self) -> String {
        self.lease.location()
    }
    async fn try_acquire(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.lease.try_acquire(holder, lease).await
    }
    async fn renew(
        &self,
        grant: &LeaseGrant,
        lease: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.lease.renew(grant, lease).await
    }
    async fn release(&self, grant: &LeaseGrant) -> Result<(), LeaseError> {
        self.lease.release(grant).await
    }
    async fn state(&self) -> Result<LeaseState, LeaseError> {
        self.lease.state().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_stall_halts_by_its_own_deadline_before_the_takeover() {
    let cluster = Cluster::new(250);
    let stalling = Arc::new(StallingLease {
        lease: cluster.lease.clone(),
        stalled: AtomicBool::new(false),
    });
    let a = candidate(&cluster, "a", stalling.clone());
    let (_, engine_a) = a.wait_leader().await.expect("a leads");
    let procedure_id = submit(&engine_a, 1).await;
    // Renewals keep it leading past several leases.
    tokio::time::sleep(LEASE * 2).await;
    assert!(a.engine().is_some(), "a still leads: {:?}", a.role());
    stalling.stalled.store(true, Ordering::SeqCst);
    let stalled = tokio::time::Instant::now();
    assert_eq!(
        cluster.log.open_procedures().await.unwrap(),
        vec![(procedure_id, RegionId::new(1024, 1).as_u64())],
        "mid-way at the stall (each answer takes 250 ms)"
    );
    eventually("a halts", || a.engine().is_none()).await;
    let halted_after = stalled.elapsed();
    eventually("a records why", || !a.deposals().is_empty()).await;
    // Within one lease of the stall (its last renewal was sent before it), plus slack for a
    // loaded machine.
    assert!(
        halted_after <= LEASE + Duration::from_millis(300),
        "halted {halted_after:?} after the stall"
    );
    assert_eq!(a.deposals(), vec![(1, Deposed::LeaseLapsed)]);
    // Its procedures stopped at once: it sends nothing more.
    let sent = cluster.mailbox.received.lock().unwrap().len();
    let b = candidate(&cluster, "b", cluster.lease.clone());
    let (grant_b, engine_b) = b.wait_leader().await.expect("b takes over");
    assert_eq!(grant_b.epoch, 2);
    let state = engine_b.wait(procedure_id).await.expect("finishes on b");
    assert_eq!(state.outcome, Some(Outcome::Completed));
    assert_finished_once(engine_b.log(), &[procedure_id], Outcome::Completed);
    assert!(cluster.mailbox.received.lock().unwrap().len() > sent);
    b.stop().await;
    a.kill();
}

/// Another engine takes the lease behind the leader's back while its instructions are out:
/// its next append is fenced, which halts every procedure (not only the one that met it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_append_halts_every_procedure_at_once_and_nothing_more_is_sent() {
    let cluster = Cluster::new(100);
    let lease = cluster.lease.clone();
    let grant = lease
        .try_acquire("a", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let engine = Opener(cluster.clone()).open(&grant).await.unwrap();
    let procedures = [submit(&engine, 1).await, submit(&engine, 2).await];
    eventually("the first instructions are out", || {
        cluster.mailbox.received.lock().unwrap().len() >= 2
    })
    .await;
    lease.release(&grant).await.unwrap();
    let intruder = lease
        .try_acquire("intruder", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("granted");
    assert_eq!(intruder.epoch, 2);
    eventually("the engine halts", || engine.fenced().is_some()).await;
    let fenced = engine.fenced().unwrap();
    let fenced_procedure = procedures
        .iter()
        .find(|id| fenced.write == format!("append to migration {id}"))
        .unwrap_or_else(|| panic!("{fenced:?}"));
    assert_eq!(
        fenced.reason,
        format!(
            "the store at shared:{} refused a write with epoch 1: it is at epoch 2, another engine leads",
            cluster.log.location()
        )
    );
    eventually("every procedure stops", || engine.running_count() == 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Nothing was sent that is not in the log: each instruction is appended before it is
    // sent, and the fenced appends were not.
    let mut logged = 0;
    for procedure_id in procedures {
        logged += load_procedure(engine.log(), procedure_id)
            .unwrap()
            .iter()
            .filter(|timed| matches!(timed.event, MigrationEvent::InstructionSent { .. }))
            .count();
    }
    assert_eq!(cluster.mailbox.received.lock().unwrap().len(), logged);
    // Both stay open in the log for the new leader, the other one included.
    let open: Vec<Uuid> = cluster
        .log
        .open_procedures()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(open, procedures.to_vec(), "fenced on {fenced_procedure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_route_write_halts_the_engine_and_names_the_table() {
    let cluster = Cluster::new(0);
    let lease = cluster.lease.clone();
    let grant = lease
        .try_acquire("a", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    // The log takes the leader's appends (epoch 1), but its metadata store writes with a
    // stale epoch (0): every route write is fenced.
    let fenced_metadata = Arc::new(EpochMetadata {
        shared: cluster.metadata.clone(),
        lease: lease.clone(),
        epoch: 0,
    });
    let ports = Ports::builder(cluster.mailbox.clone(), fenced_metadata)
        .entropy(Arc::new(SeededEntropy::new(1)))
        .build();
    let log = EventLog::with_store(Arc::new(EpochStore {
        shared: cluster.log.clone(),
        lease: lease.clone(),
        epoch: grant.epoch,
    }));
    let config = EngineConfig {
        append_mode: AppendMode::Inline,
        ..EngineConfig::default()
    };
    let engine = Engine::with_log(log, config, ports).await.unwrap();
    let procedure_id = submit(&engine, 3).await;
    eventually("the engine halts", || engine.fenced().is_some()).await;
    let fenced = engine.fenced().unwrap();
    assert_eq!(fenced.write, "write the route of table 1024");
    assert_eq!(
        fenced.reason,
        "write the route of table 1024: epoch 0 is not the current epoch 1"
    );
    eventually("the procedure stops", || engine.running_count() == 0).await;
    // It stopped without recording the failure or retrying: the log ends before any
    // metadata failure, and the route is unchanged.
    let events = load_procedure(engine.log(), procedure_id).unwrap();
    assert!(
        !events
            .iter()
            .any(|timed| timed.event.name().contains("metadata")),
        "{:?}",
        events.iter().map(|t| t.event.name()).collect::<Vec<_>>()
    );
    let route = region_route(&cluster.metadata, RegionId::new(1024, 3));
    assert_eq!(route.leader_peer.map(|peer| peer.id), Some(1));
    assert!(matches!(
        engine
            .submit(MigrationRequest::new(
                RegionId::new(1024, 4),
                Peer::sim(1),
                Peer::sim(2)
            ))
            .await,
        Err(regmig::engine::SubmitError::ShuttingDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_whose_log_writes_with_another_epoch_is_not_run() {
    struct NoEpoch(Arc<Cluster>, Mutex<Vec<u64>>);
    #[async_trait]
    impl OpenAsLeader for NoEpoch {
        async fn open(&self, grant: &LeaseGrant) -> Result<Engine, OpenError> {
            self.1.lock().unwrap().push(grant.epoch);
            let log = EventLog::with_store(self.0.log.clone());
            let ports = Ports::builder(self.0.mailbox.clone(), self.0.metadata.clone()).build();
            Ok(Engine::with_log(log, EngineConfig::default(), ports).await?)
        }
    }
    let cluster = Cluster::new(0);
    let opener = Arc::new(NoEpoch(cluster.clone(), Mutex::new(Vec::new())));
    let a = Candidate::start(
        cluster.lease.clone(),
        LeadershipConfig::new("a", LEASE),
        opener.clone(),
    )
    .unwrap();
    eventually("two tries", || opener.1.lock().unwrap().len() >= 2).await;
    // Each try released its lease, so the next got the next epoch; it never led.
    assert_eq!(opener.1.lock().unwrap()[..2], [1, 2]);
    assert!(a.engine().is_none());
    a.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_engine_stops_releases_the_lease_and_a_standby_takes_over_at_once() {
    let cluster = Cluster::new(0);
    let long = Duration::from_secs(10);
    let mut config_a = LeadershipConfig::new("a", long);
    config_a.retry_every = Duration::from_secs(60);
    let a = candidate_with(&cluster, config_a, cluster.lease.clone());
    let (_, engine_a) = a.wait_leader().await.expect("a leads");
    let mut config_b = LeadershipConfig::new("b", long);
    config_b.retry_every = Duration::from_millis(20);
    let b = candidate_with(&cluster, config_b, cluster.lease.clone());
    let stopped = tokio::time::Instant::now();
    engine_a.shutdown().await;
    let (grant_b, _) = tokio::time::timeout(Duration::from_secs(5), b.wait_leader())
        .await
        .expect("b takes over in time")
        .expect("b takes over");
    assert_eq!(grant_b.epoch, 2);
    // Released, not lapsed: well within the 10 s lease.
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(a.deposals(), vec![(1, Deposed::EngineStopped)]);
    b.stop().await;
    a.kill();
}

#[test]
fn a_renewal_interval_of_a_third_of_the_lease_or_more_is_refused() {
    let mut config = LeadershipConfig::new("a", Duration::from_secs(3));
    config.renew_every = Duration::from_secs(1);
    match config.validate() {
        Err(LeadershipError::InvalidConfig { holder, reason }) => {
            assert_eq!(holder, "a");
            assert_eq!(
                reason,
                "renew_every (1s) must be above zero and under a third of the lease (3s)"
            );
        }
        other => panic!("{other:?}"),
    }
    config.renew_every = Duration::from_millis(999);
    assert!(config.validate().is_ok());
    config.holder = String::new();
    assert!(matches!(
        config.validate(),
        Err(LeadershipError::InvalidConfig { reason, .. }) if reason == "the holder name is empty"
    ));
}
