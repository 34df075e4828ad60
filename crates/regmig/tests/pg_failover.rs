//! Several engines on one PostgreSQL database (a real server, one per test binary, one
//! database per test), with leader election and fencing:
//! - the leader is killed (its tasks aborted, its database sessions terminated) at several
//!   points of a small campaign: a standby takes over, every migration ends exactly once,
//!   and no procedure is resumed by two engines;
//! - a partitioned leader (its store calls stalled past the lease, then released): what it
//!   had in flight is fenced, it halts, and nothing it does after the takeover reaches the
//!   log or the metadata;
//! - two engines on one database without election: the second is refused, naming the store.

mod engine_support;
mod pg_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use engine_support::{ScriptedMailbox, EPOCH_BASE_MS};
use pg_support::server;
use regmig::cluster::pg_store::PgMetadataStore;
use regmig::cluster::{
    CasConflict, Mailbox, MetadataError, MetadataErrorKind, MetadataStore, Ports, RegionMove,
};
use regmig::domain::*;
use regmig::engine::leadership::{
    Candidate, LeaderLease, LeadershipConfig, LeaseGrant, OpenAsLeader, OpenError,
};
use regmig::engine::{
    encode_events, load_procedure, Engine, EngineConfig, MigrationRequest, SubmitOutcome,
};
use regmig::log::{
    AppendRequest, AuditEntry, AuditIndex, EventLog, ListedEvent, LogError, LogOptions, LogStore,
    PgStore, StoredEvent,
};
use regmig::migration::{MigrationEvent, Outcome};
use regmig::pg::lease::PgLeaderLease;
use regmig::pg::PgConfig;
use uuid::Uuid;

const TABLE: TableId = 1024;
const REGIONS: u32 = 6;
const LEASE: Duration = Duration::from_millis(800);

/// A database for one test: its URL, and each engine's configuration, which names the
/// engine as the sessions' `application_name` so a test can terminate them.
struct Database {
    url: String,
    name: String,
}

impl Database {
    fn new(prefix: &str) -> Database {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let url = server().create_database(&name).expect("create a database");
        Database { url, name }
    }

    fn config(&self, engine: &str) -> PgConfig {
        PgConfig::from_url(&format!("{}?application_name={engine}", self.url))
            .expect("the test server's URL parses")
    }

    /// Ends every session of `engine` at the server, as its machine dying would.
    fn terminate_sessions(&self, engine: &str) {
        server()
            .psql(
                "postgres",
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{}' AND application_name = '{engine}'",
                    self.name
                ),
            )
            .expect("terminate the sessions");
    }

    /// Writes the table's route, datanode table and info without election (before any).
    async fn seed(&self) {
        let log = EventLog::with_store(Arc::new(
            PgStore::open_async(self.config("seed"), LogOptions::default(), None)
                .await
                .expect("open the log for setup"),
        ));
        let metadata = PgMetadataStore::open(&log)
            .await
            .expect("open the metadata");
        let region_routes = (1..=REGIONS)
            .map(|number| RegionRoute {
                region_id: RegionId::new(TABLE, number),
                leader_peer: Some(Peer::sim(1)),
                follower_peers: vec![],
                leader_state: None,
                leader_down_since_ms: None,
            })
            .collect();
        metadata
            .put_table_route(TABLE, TableRoute::Physical { region_routes })
            .await
            .unwrap();
        metadata
            .put_datanode_table(DatanodeTable {
                datanode_id: 1,
                table_id: TABLE,
                region_numbers: (1..=REGIONS).collect(),
                engine: "mito".to_string(),
                storage_path: format!("data/{TABLE}"),
                region_options: Default::default(),
                region_wal_options: Default::default(),
            })
            .await
            .unwrap();
        metadata
            .put_table_info(TableInfo {
                table_id: TABLE,
                catalog: "greptime".to_string(),
                schema: "public".to_string(),
                name: format!("t{TABLE}"),
                wal: WalKind::Local,
            })
            .await
            .unwrap();
    }

    /// A reader of the shared history.
    async fn reader(&self) -> EventLog {
        EventLog::with_store(Arc::new(
            PgStore::open_read_only_async(self.config("reader"))
                .await
                .expect("open the log for reading"),
        ))
    }
}

/// What every engine of a test saw: who sent which instruction when.
#[derive(Default)]
struct Sends {
    sent: Mutex<Vec<(String, std::time::Instant)>>,
}

/// One engine's mailbox: the shared scripted datanodes, each send tagged with the engine.
struct TaggedMailbox {
    engine: String,
    datanodes: Arc<ScriptedMailbox>,
    sends: Arc<Sends>,
}

#[async_trait]
impl Mailbox for TaggedMailbox {
    async fn send(&self, peer: &Peer, instruction: Instruction, timeout_ms: u64) -> MailboxOutcome {
        self.sends
            .sent
            .lock()
            .unwrap()
            .push((self.engine.clone(), std::time::Instant::now()));
        self.datanodes.send(peer, instruction, timeout_ms).await
    }
}

/// Opens an engine on the shared database with the granted epoch; counts its appends.
struct PgOpener {
    config: PgConfig,
    engine: String,
    datanodes: Arc<ScriptedMailbox>,
    sends: Arc<Sends>,
    appended: Arc<AtomicU64>,
}

#[async_trait]
impl OpenAsLeader for PgOpener {
    async fn open(&self, grant: &LeaseGrant) -> Result<Engine, OpenError> {
        let store = PgStore::open_async(
            self.config.clone(),
            LogOptions::default(),
            Some(grant.epoch),
        )
        .await?;
        let log = EventLog::with_store(Arc::new(store));
        let metadata = Arc::new(PgMetadataStore::open(&log).await?);
        let mailbox = Arc::new(TaggedMailbox {
            engine: self.engine.clone(),
            datanodes: self.datanodes.clone(),
            sends: self.sends.clone(),
        });
        let ports = Ports::builder(mailbox, metadata).build();
        let engine = Engine::with_log(log, EngineConfig::default(), ports).await?;
        let appended = self.appended.clone();
        engine.set_observer(Box::new(move |_| {
            appended.fetch_add(1, Ordering::SeqCst);
        }));
        Ok(engine)
    }
}

struct Node {
    name: String,
    candidate: Candidate,
    appended: Arc<AtomicU64>,
}

fn start_node(
    database: &Database,
    name: &str,
    datanodes: &Arc<ScriptedMailbox>,
    sends: &Arc<Sends>,
) -> Node {
    let config = database.config(name);
    let lease = Arc::new(PgLeaderLease::new(config.clone()).expect("a lease"));
    let appended = Arc::new(AtomicU64::new(0));
    let opener = Arc::new(PgOpener {
        config,
        engine: name.to_string(),
        datanodes: datanodes.clone(),
        sends: sends.clone(),
        appended: appended.clone(),
    });
    let mut leadership = LeadershipConfig::new(name, LEASE);
    leadership.retry_every = Duration::from_millis(50);
    Node {
        name: name.to_string(),
        candidate: Candidate::start(lease, leadership, opener).expect("a valid config"),
        appended,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Each procedure finished exactly once, last, completed; at most `takeovers` resumes each.
fn check_history(log: &EventLog, procedures: &[Uuid], takeovers: usize) -> Vec<Vec<u64>> {
    let mut resumed_at = Vec::new();
    for &procedure_id in procedures {
        let events = load_procedure(log, procedure_id).expect("history");
        let finishes: Vec<_> = events.iter().filter(|t| t.event.is_terminal()).collect();
        assert_eq!(
            finishes.len(),
            1,
            "{procedure_id} finished {} times",
            finishes.len()
        );
        assert!(
            matches!(
                &finishes[0].event,
                MigrationEvent::Finished {
                    outcome: Outcome::Completed,
                    ..
                }
            ),
            "{procedure_id}: {:?}",
            finishes[0].event
        );
        assert!(events.last().unwrap().event.is_terminal());
        let resumes: Vec<u64> = events
            .iter()
            .filter(|t| matches!(t.event, MigrationEvent::Resumed))
            .map(|t| t.at_ms)
            .collect();
        assert!(
            resumes.len() <= takeovers,
            "{procedure_id} resumed {} times in {takeovers} takeovers",
            resumes.len()
        );
        resumed_at.push(resumes);
    }
    resumed_at
}

/// Runs the campaign on three engines and kills the leader once it appended `kill_after`
/// events; returns the takeover time (kill to the new leader's first resume) in ms.
async fn campaign_with_a_kill(kill_after: u64) -> u64 {
    let database = Database::new("failover");
    database.seed().await;
    let datanodes = Arc::new(ScriptedMailbox::with_delay(30));
    let sends = Arc::new(Sends::default());
    let a = start_node(&database, "engine_a", &datanodes, &sends);
    let (grant, engine) = a.candidate.wait_leader().await.expect("a leads");
    assert_eq!(grant.epoch, 1);
    let mut standbys = vec![
        start_node(&database, "engine_b", &datanodes, &sends),
        start_node(&database, "engine_c", &datanodes, &sends),
    ];
    let mut procedures = Vec::new();
    for number in 1..=REGIONS {
        let request =
            MigrationRequest::new(RegionId::new(TABLE, number), Peer::sim(1), Peer::sim(2));
        match engine.submit(request).await {
            Ok(SubmitOutcome::Started(id)) => procedures.push(id),
            other => panic!("not started: {other:?}"),
        }
    }
    wait_until("the kill point", Duration::from_secs(20), || {
        a.appended.load(Ordering::SeqCst) >= kill_after
    })
    .await;
    // Kill a: its tasks, then its sessions.
    a.candidate.kill();
    let killed_ms = now_ms();
    database.terminate_sessions(&a.name);
    drop(engine);
    let open_at_kill = database.reader().await.open_procedures().unwrap().len();
    // One standby takes over; the other stays standby.
    let new_leader = tokio::select! {
        led = standbys[0].candidate.wait_leader() => { led.expect("b leads"); 0 }
        led = standbys[1].candidate.wait_leader() => { led.expect("c leads"); 1 }
    };
    let leader = standbys.remove(new_leader);
    let (grant, engine) = leader.candidate.wait_leader().await.unwrap();
    assert_eq!(grant.epoch, 2, "{} took over", leader.name);
    assert!(standbys[0].candidate.engine().is_none());
    for &procedure_id in &procedures {
        let state = tokio::time::timeout(Duration::from_secs(30), engine.wait(procedure_id))
            .await
            .expect("finishes in time")
            .expect("finishes");
        assert_eq!(state.outcome, Some(Outcome::Completed), "{procedure_id}");
    }
    let reader = database.reader().await;
    // Every instruction sent, by either engine, was in the log first.
    let mut logged = 0;
    for &procedure_id in &procedures {
        logged += load_procedure(&reader, procedure_id)
            .unwrap()
            .iter()
            .filter(|timed| matches!(timed.event, MigrationEvent::InstructionSent { .. }))
            .count();
    }
    let sent = sends.sent.lock().unwrap().len();
    assert!(sent <= logged, "{sent} instructions sent, {logged} logged");
    assert_eq!(reader.open_procedures().unwrap(), vec![]);
    let resumed = check_history(&reader, &procedures, 1);
    let resumed_count = resumed.iter().filter(|r| !r.is_empty()).count();
    assert_eq!(
        resumed_count, open_at_kill,
        "every procedure open at the kill was resumed once, by the new leader"
    );
    for number in 1..=REGIONS {
        let route = reader_route(&database, number).await;
        assert_eq!(route, Some(2), "region {number}'s leader");
    }
    let first_resume = resumed.iter().flatten().min().copied();
    leader.candidate.stop().await;
    for standby in standbys {
        standby.candidate.stop().await;
    }
    drop(a);
    match first_resume {
        Some(at_ms) => at_ms.saturating_sub(killed_ms),
        None => panic!("nothing was open at the kill point {kill_after}"),
    }
}

/// Region `number`'s leader peer, read from the shared metadata.
async fn reader_route(database: &Database, number: u32) -> Option<PeerId> {
    let log = database.reader().await;
    let metadata = PgMetadataStore::open(&log).await.unwrap();
    metadata
        .table_route(TABLE)
        .await
        .unwrap()
        .and_then(|route| {
            route
                .route
                .region_route(RegionId::new(TABLE, number))
                .cloned()
        })
        .and_then(|route| route.leader_peer)
        .map(|peer| peer.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_a_killed_leader_at_several_points_of_a_campaign() {
    // Right after the submissions, early, mid-way and late in the campaign (6 migrations of
    // about 15 events each).
    let mut takeovers = Vec::new();
    for kill_after in [REGIONS as u64 + 1, 20, 45, 70] {
        let takeover_ms = campaign_with_a_kill(kill_after).await;
        takeovers.push((kill_after, takeover_ms));
    }
    eprintln!("takeover (kill to first resume) by kill point: {takeovers:?}");
    for (kill_after, takeover_ms) in takeovers {
        assert!(
            takeover_ms <= LEASE.as_millis() as u64 + 1_000,
            "takeover after {kill_after} events took {takeover_ms} ms"
        );
    }
}

/// Calls wait at a gate while it is closed (a network partition between this engine and the
/// database); counts what was held.
#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    opened: tokio::sync::Notify,
    held: AtomicU64,
}

impl Gate {
    async fn pass(&self) {
        if self.closed.load(Ordering::SeqCst) {
            self.held.fetch_add(1, Ordering::SeqCst);
            let opened = self.opened.notified();
            if self.closed.load(Ordering::SeqCst) {
                opened.await;
            }
        }
    }
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }
}

/// A log store whose every call waits at the gate.
struct Partitioned {
    store: Arc<dyn LogStore>,
    gate: Arc<Gate>,
    /// What the appends held at the gate came back with.
    held_results: Mutex<Vec<String>>,
}

#[async_trait]
impl LogStore for Partitioned {
    fn location(&self) -> String {
        self.store.location()
    }
    fn is_read_only(&self) -> bool {
        false
    }
    fn damage(&self) -> Option<&LogError> {
        None
    }
    fn writer_epoch(&self) -> Option<u64> {
        self.store.writer_epoch()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    async fn append(&self, request: AppendRequest) -> regmig::log::store::AppendResult {
        let held = self.gate.closed.load(Ordering::SeqCst);
        self.gate.pass().await;
        let result = self.store.append(request).await;
        if held {
            self.held_results.lock().unwrap().push(match &result {
                Err(error) => error.kind_name().to_string(),
                Ok(_) => "written".to_string(),
            });
        }
        result
    }
    fn append_blocking(&self, request: AppendRequest) -> regmig::log::store::AppendResult {
        regmig::log::store::block_on(self.append(request))
    }
    async fn sync(&self) -> Result<(), LogError> {
        self.gate.pass().await;
        self.store.sync().await
    }
    fn sync_blocking(&self) -> Result<(), LogError> {
        regmig::log::store::block_on(self.sync())
    }
    async fn next_seq(&self, procedure_id: Uuid) -> Result<u64, LogError> {
        self.gate.pass().await;
        self.store.next_seq(procedure_id).await
    }
    async fn procedure_events(&self, id: Uuid, from: u64) -> Result<Vec<StoredEvent>, LogError> {
        self.gate.pass().await;
        self.store.procedure_events(id, from).await
    }
    async fn events_from(&self, from: u64, limit: usize) -> Result<Vec<ListedEvent>, LogError> {
        self.gate.pass().await;
        self.store.events_from(from, limit).await
    }
    async fn open_procedures(&self) -> Result<Vec<(Uuid, u64)>, LogError> {
        self.gate.pass().await;
        self.store.open_procedures().await
    }
    async fn open_procedure_of_region(&self, region_id: u64) -> Result<Option<Uuid>, LogError> {
        self.gate.pass().await;
        self.store.open_procedure_of_region(region_id).await
    }
    async fn audit_entries(
        &self,
        index: AuditIndex,
        owners: std::ops::RangeInclusive<u64>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<AuditEntry>, LogError> {
        self.gate.pass().await;
        self.store
            .audit_entries(index, owners, since_ms, until_ms)
            .await
    }
    async fn procedures(&self) -> Result<Vec<Uuid>, LogError> {
        self.gate.pass().await;
        self.store.procedures().await
    }
}

/// A metadata store whose every call waits at the gate.
struct PartitionedMetadata {
    store: Arc<PgMetadataStore>,
    gate: Arc<Gate>,
    held_results: Mutex<Vec<String>>,
}

#[async_trait]
impl MetadataStore for PartitionedMetadata {
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError> {
        self.gate.pass().await;
        self.store.table_route(table_id).await
    }
    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let held = self.gate.closed.load(Ordering::SeqCst);
        self.gate.pass().await;
        let result = self
            .store
            .cas_table_route(table_id, expected_version, route, region_moves)
            .await;
        if held {
            self.held_results.lock().unwrap().push(match &result {
                Err(error) => error.kind.name().to_string(),
                Ok(_) => "written".to_string(),
            });
        }
        result
    }
    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, MetadataError> {
        self.gate.pass().await;
        self.store.datanode_table(datanode_id, table_id).await
    }
    async fn table_info(&self, table_id: TableId) -> Result<Option<TableInfo>, MetadataError> {
        self.gate.pass().await;
        self.store.table_info(table_id).await
    }
}

/// Every event and the route, as the database holds them.
async fn snapshot(database: &Database) -> (Vec<(Uuid, u64)>, Option<VersionedTableRoute>) {
    let reader = database.reader().await;
    let mut events = Vec::new();
    for procedure_id in reader.procedures().unwrap() {
        events.push((procedure_id, reader.next_seq(procedure_id).unwrap()));
    }
    let metadata = PgMetadataStore::open(&reader).await.unwrap();
    (events, metadata.table_route(TABLE).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_leader_is_fenced_and_nothing_it_does_after_the_takeover_lands() {
    let database = Database::new("partition");
    database.seed().await;
    let datanodes = Arc::new(ScriptedMailbox::with_delay(30));
    let sends = Arc::new(Sends::default());
    // a leads at epoch 1 with no renewals (they are cut off with the rest).
    let config_a = database.config("engine_a");
    let lease = PgLeaderLease::new(config_a.clone()).unwrap();
    let grant = lease
        .try_acquire("engine_a", LEASE)
        .await
        .unwrap()
        .expect("a leads");
    let gate = Arc::new(Gate::default());
    let store = PgStore::open_async(config_a.clone(), LogOptions::default(), Some(grant.epoch))
        .await
        .unwrap();
    let direct_log = EventLog::with_store(Arc::new(store));
    let direct_metadata = Arc::new(PgMetadataStore::open(&direct_log).await.unwrap());
    let log_store = Arc::new(Partitioned {
        store: direct_log.store().clone(),
        gate: gate.clone(),
        held_results: Mutex::new(Vec::new()),
    });
    let metadata = Arc::new(PartitionedMetadata {
        store: direct_metadata.clone(),
        gate: gate.clone(),
        held_results: Mutex::new(Vec::new()),
    });
    let mailbox = Arc::new(TaggedMailbox {
        engine: "engine_a".to_string(),
        datanodes: datanodes.clone(),
        sends: sends.clone(),
    });
    let engine_a = Engine::with_log(
        EventLog::with_store(log_store.clone()),
        EngineConfig::default(),
        Ports::builder(mailbox, metadata.clone()).build(),
    )
    .await
    .unwrap();
    let appended = Arc::new(AtomicU64::new(0));
    let counter = appended.clone();
    engine_a.set_observer(Box::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let mut procedures = Vec::new();
    for number in 1..=REGIONS {
        let request =
            MigrationRequest::new(RegionId::new(TABLE, number), Peer::sim(1), Peer::sim(2));
        match engine_a.submit(request).await {
            Ok(SubmitOutcome::Started(id)) => procedures.push(id),
            other => panic!("not started: {other:?}"),
        }
    }
    wait_until("a is mid-way", Duration::from_secs(20), || {
        appended.load(Ordering::SeqCst) >= 20
    })
    .await;
    // The partition: every store call of a stalls; its lease runs out by the database's
    // clock and b takes over.
    gate.close();
    let b = start_node(&database, "engine_b", &datanodes, &sends);
    let (grant_b, engine_b) = b.candidate.wait_leader().await.expect("b takes over");
    assert_eq!(grant_b.epoch, 2);
    for &procedure_id in &procedures {
        let state = tokio::time::timeout(Duration::from_secs(30), engine_b.wait(procedure_id))
            .await
            .expect("finishes in time")
            .expect("finishes");
        assert_eq!(state.outcome, Some(Outcome::Completed));
    }
    assert!(
        gate.held.load(Ordering::SeqCst) > 0,
        "a's procedures stalled in store calls"
    );
    let before = snapshot(&database).await;
    // The partition heals: everything a had in flight goes through, and is fenced.
    gate.open();
    wait_until("a halts", Duration::from_secs(10), || {
        engine_a.fenced().is_some()
    })
    .await;
    wait_until("a's procedures stop", Duration::from_secs(10), || {
        engine_a.running_count() == 0
    })
    .await;
    let held_appends = log_store.held_results.lock().unwrap().clone();
    assert!(!held_appends.is_empty());
    assert!(
        held_appends.iter().all(|result| result == "fenced"),
        "{held_appends:?}"
    );
    assert!(
        metadata
            .held_results
            .lock()
            .unwrap()
            .iter()
            .all(|result| result == "fenced"),
        "{:?}",
        metadata.held_results.lock().unwrap()
    );
    // Its next append and route write are fenced too.
    let route = direct_metadata.table_route(TABLE).await.unwrap().unwrap();
    let error = direct_metadata
        .cas_table_route(TABLE, route.version, route.route.clone(), Vec::new())
        .await
        .expect_err("fenced");
    assert_eq!(error.kind, MetadataErrorKind::Fenced);
    let request = AppendRequest {
        procedure_id: procedures[0],
        expected_next_seq: direct_log.next_seq(procedures[0]).unwrap(),
        events: encode_events(EPOCH_BASE_MS, &[MigrationEvent::Resumed]).unwrap(),
        opens: None,
        closes: false,
    };
    assert!(matches!(
        direct_log.append(request).await,
        Err(LogError::Fenced {
            epoch: 1,
            current_epoch: 2,
            ..
        })
    ));
    assert!(matches!(
        engine_a
            .submit(MigrationRequest::new(
                RegionId::new(TABLE, 1),
                Peer::sim(2),
                Peer::sim(1)
            ))
            .await,
        Err(regmig::engine::SubmitError::ShuttingDown)
    ));
    // Nothing reached the log or the metadata after the takeover.
    assert_eq!(snapshot(&database).await, before);
    let reader = database.reader().await;
    assert_eq!(reader.open_procedures().unwrap(), vec![]);
    check_history(&reader, &procedures, 1);
    b.candidate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_without_election_is_refused_naming_the_store() {
    let database = Database::new("no_election");
    database.seed().await;
    let config = database.config("engine_a");
    let first = EventLog::with_store(Arc::new(
        PgStore::open_async(config.clone(), LogOptions::default(), None)
            .await
            .unwrap(),
    ));
    let metadata: Arc<dyn MetadataStore> = Arc::new(PgMetadataStore::open(&first).await.unwrap());
    let engine = Engine::with_log(
        first,
        EngineConfig::default(),
        Ports::builder(Arc::new(ScriptedMailbox::with_delay(0)), metadata).build(),
    )
    .await
    .unwrap();
    let second =
        PgStore::open_async(database.config("engine_b"), LogOptions::default(), None).await;
    match second {
        Err(LogError::StoreInUse { store, .. }) => {
            assert_eq!(store, database.config("engine_b").redacted());
        }
        Err(other) => panic!("refused with {other:?}"),
        Ok(_) => panic!("a second writer without election was let in"),
    }
    // And an elected engine fences the one without election.
    let lease = PgLeaderLease::new(database.config("engine_c")).unwrap();
    lease
        .try_acquire("engine_c", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("granted");
    let submitted = engine
        .submit(MigrationRequest::new(
            RegionId::new(TABLE, 1),
            Peer::sim(1),
            Peer::sim(2),
        ))
        .await;
    assert!(submitted.is_err(), "{submitted:?}");
    let fenced = engine.fenced().expect("halted by the fence");
    assert!(
        fenced
            .reason
            .ends_with("refused a write with epoch 0: it is at epoch 1, another engine leads"),
        "{fenced:?}"
    );
}
