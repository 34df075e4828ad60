//! A small deterministic fake world, driven by the engine's own procedure driver.
//!
//! The world holds what the engine would talk to: a versioned table-route store, a
//! datanode-table store, a mailbox whose answers are scripted per instruction kind, scripted
//! compare-and-swap refusals and metadata-store failures, and a virtual clock. A run lends the
//! world to port implementations ([`MetadataStore`], [`Mailbox`], [`Clock`], [`Entropy`],
//! [`ClusterHooks`], [`LeaseRenewals`]) and runs the engine's [`ProcedureDriver`] on them,
//! with a persistence that keeps the events in memory: the driver is the only code that
//! decides, appends, performs and feeds the observation back. A run ends when the procedure
//! finishes, a stop condition holds ([`Persistence::before_action`]), or a bound on its
//! decisions is reached.
//!
//! Time: `now_ms` only moves when the world acts. A send that is answered takes
//! `reply_delay_ms` (a reply slower than the send's timeout becomes a timeout), a timeout takes
//! the send's mailbox timeout (at most one mailbox round trip for a downgrade or an upgrade, not
//! their whole flush or replay timeout; `timeout_elapsed_ms` overrides it, like the original's
//! mocked timeouts that fail at once), an unreachable peer takes `unreachable_delay_ms`, reads
//! and writes take `io_delay_ms`, taking locks takes no time (the driver takes them in its
//! own lock table), and a wait jumps to its `until_ms`.
//!
//! Datanodes: by default each send is answered afresh after `reply_delay_ms`. With
//! [`World::datanode_keeps_working`], a downgrade or an upgrade whose mailbox timed out keeps
//! running on its datanode (it was told a flush or replay timeout longer than the mailbox's),
//! so the next send of it is answered once `reply_delay_ms` has passed since the first
//! unanswered send: the next attempt finds the datanode further.
//!
//! Crashes: stop after event k ([`Stop::AfterEvents`]) or when a predicate holds
//! ([`Stop::When`]), optionally after the driver performed
//! the pending action (a CAS applied before the crash stays applied though its event is
//! lost), then fold the prefix and feed `Observation::Resumed` with [`World::resume`], on the
//! same world.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use regmig::cluster::memory::apply_region_move;
use regmig::cluster::{
    CasConflict, Clock, ClusterHooks, Entropy, LeaseRenewals, Mailbox, MetadataError,
    MetadataErrorKind, MetadataStore, Ports, RegionMove,
};
use regmig::domain::{
    DatanodeTable, Instruction, InstructionKind, MailboxOutcome, Peer, PeerId, RegionId,
    RegionRoute, Reply, TableId, TableInfo, TableRoute, VersionedTableRoute, WalKind,
};
use regmig::engine::{Batch, DriveError, Ended, LockTable, Persistence, ProcedureDriver, Proceed};
use regmig::migration::{
    fold, Action, Hook, Input, MigrationEvent, MigrationState, MigrationTask, Observation, Outcome,
    RetryPolicy, RouteChange, TimedEvent, DEFAULT_TIMEOUT_MS,
};
use uuid::Uuid;

/// The table of the migrated region.
pub const TABLE_ID: TableId = 1024;
/// The migrated region's number.
pub const REGION_NUMBER: u32 = 1;
/// The old leader.
pub const FROM: PeerId = 1;
/// The candidate.
pub const TO: PeerId = 2;
/// A third datanode.
pub const OTHER: PeerId = 3;
/// When every world starts (ms since the epoch).
pub const START_MS: u64 = 1_700_000_000_000;
/// The old leader's last entry id in default downgrade replies.
pub const LAST_ENTRY_ID: u64 = 42;
/// The error text of an injected store failure.
pub const STORE_ERROR: &str = "injected store error";
/// The `operation` of a failed route read, as the driver names it.
pub const READ_ROUTE_OPERATION: &str = "read the route of table 1024";
/// The `operation` of a failed datanode-table read of the old leader, as the driver names it.
pub const READ_DATANODE_TABLE_OPERATION: &str =
    "read the datanode table of table 1024 on datanode 1";
/// The `operation` of a failed route compare-and-swap, as the driver names it.
pub const CAS_ROUTE_OPERATION: &str = "write the route of table 1024";
/// The id of the procedure a world runs.
pub const PROCEDURE_ID: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);

/// The migrated region.
pub fn region_id() -> RegionId {
    RegionId::new(TABLE_ID, REGION_NUMBER)
}

/// The default task: region 1024:1 from peer 1 to peer 2, default timeout.
pub fn task() -> MigrationTask {
    MigrationTask {
        region_id: region_id(),
        from_peer: Peer::sim(FROM),
        to_peer: Peer::sim(TO),
        timeout_ms: DEFAULT_TIMEOUT_MS,
    }
}

/// What is submitted: the task, the table's WAL kind and the retry policy.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The task.
    pub task: MigrationTask,
    /// The table's WAL.
    pub wal: WalKind,
    /// The retry policy.
    pub policy: RetryPolicy,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            task: task(),
            wal: WalKind::Local,
            policy: RetryPolicy::default(),
        }
    }
}

impl Setup {
    /// The same setup with another timeout.
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.task.timeout_ms = timeout_ms;
        self
    }

    /// The submitted event of this setup.
    pub fn submitted(&self) -> MigrationEvent {
        MigrationEvent::Submitted {
            task: self.task.clone(),
            catalog: "greptime".to_string(),
            schema: "public".to_string(),
            wal: self.wal,
            policy: self.policy.clone(),
            trigger: "test".to_string(),
            reason: None,
            actor: None,
        }
    }
}

/// A region route led by `leader`, with `followers`, not Downgrading.
pub fn region_route(leader: Option<PeerId>, followers: &[PeerId]) -> RegionRoute {
    RegionRoute {
        region_id: region_id(),
        leader_peer: leader.map(Peer::sim),
        follower_peers: followers.iter().copied().map(Peer::sim).collect(),
        leader_state: None,
        leader_down_since_ms: None,
    }
}

/// A physical table route holding the migrated region and region 2 (led by peer 3).
pub fn table_route(region: RegionRoute) -> TableRoute {
    TableRoute::Physical {
        region_routes: vec![
            region,
            RegionRoute {
                region_id: RegionId::new(TABLE_ID, 2),
                leader_peer: Some(Peer::sim(OTHER)),
                follower_peers: vec![],
                leader_state: None,
                leader_down_since_ms: None,
            },
        ],
    }
}

/// The old leader's datanode table: what the candidate needs to open the region.
pub fn from_datanode_table() -> DatanodeTable {
    DatanodeTable {
        datanode_id: FROM,
        table_id: TABLE_ID,
        region_numbers: vec![REGION_NUMBER],
        engine: "mito".to_string(),
        storage_path: "greptime/public/1024".to_string(),
        region_options: BTreeMap::from([("ttl".to_string(), "7d".to_string())]),
        region_wal_options: BTreeMap::from([
            (REGION_NUMBER, "wal-of-region-1".to_string()),
            (2, "wal-of-region-2".to_string()),
        ]),
    }
}

/// The default successful reply to an instruction.
pub fn ok_reply(kind: InstructionKind, last_entry_id: Option<u64>) -> Reply {
    match kind {
        InstructionKind::OpenRegion => Reply::OpenRegion {
            result: true,
            error: None,
        },
        InstructionKind::DowngradeRegion => Reply::DowngradeRegion {
            last_entry_id,
            exists: true,
            error: None,
        },
        InstructionKind::UpgradeRegion => Reply::UpgradeRegion {
            ready: true,
            exists: true,
            error: None,
        },
        InstructionKind::CloseRegion => Reply::CloseRegion {
            result: true,
            error: None,
        },
        InstructionKind::FlushRegion => Reply::FlushRegion {
            result: true,
            error: None,
        },
    }
}

/// What a scripted metadata read does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadScript {
    /// Answers with the stored value.
    Ok,
    /// The store fails.
    StoreError,
}

/// What a scripted route compare-and-swap does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasScript {
    /// Applied when the version matches (refused otherwise, as a real store would).
    Apply,
    /// A concurrent writer bumped the version just before: refused.
    Refuse,
    /// The store fails; nothing is written.
    StoreError,
}

/// Outcomes chosen from the procedure's state rather than from queues (property tests).
/// Each method returns `None` to fall back to the world's queues and defaults. `state` is
/// the state the pending action was decided on.
pub trait Oracle: Send {
    /// How a route read goes.
    fn route_read(&mut self, _state: &MigrationState) -> Option<ReadScript> {
        None
    }
    /// How a datanode-table read goes.
    fn datanode_table_read(&mut self, _state: &MigrationState) -> Option<ReadScript> {
        None
    }
    /// How a route compare-and-swap goes.
    fn cas(&mut self, _state: &MigrationState, _change: RouteChange) -> Option<CasScript> {
        None
    }
    /// How a send goes, and how long a reply takes (`None`: the world's `reply_delay_ms`).
    fn mailbox(
        &mut self,
        _state: &MigrationState,
        _instruction: &Instruction,
    ) -> Option<(MailboxOutcome, Option<u64>)> {
        None
    }
    /// The jitter value of the next input.
    fn jitter(&mut self, _state: &MigrationState) -> Option<u32> {
        None
    }
}

/// An instruction the world received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// When.
    pub at_ms: u64,
    /// To whom.
    pub peer: PeerId,
    /// What.
    pub instruction: Instruction,
    /// With which mailbox timeout.
    pub timeout_ms: u64,
    /// What came back.
    pub outcome: MailboxOutcome,
}

/// A predicate on the folded state and the pending action.
pub type StopPredicate = Box<dyn Fn(&MigrationState, &Action) -> bool + Send>;

/// When a run stops before the procedure finishes (a crash, or a point to inspect).
pub enum Stop {
    /// Only at Finish (or the step bound).
    Never,
    /// Once the log holds at least `count` events.
    AfterEvents {
        /// How many events.
        count: usize,
        /// Whether the world performs the pending action first (its observation is lost,
        /// as in a crash right after the action).
        perform: bool,
    },
    /// When the predicate holds on the folded state and the pending action.
    When {
        /// The condition.
        predicate: StopPredicate,
        /// Whether the world performs the pending action first.
        perform: bool,
    },
}

impl Stop {
    /// Stops before performing the action for which `predicate` holds.
    pub fn before(predicate: impl Fn(&MigrationState, &Action) -> bool + Send + 'static) -> Self {
        Stop::When {
            predicate: Box::new(predicate),
            perform: false,
        }
    }

    /// Stops right after performing the action for which `predicate` holds, its observation
    /// lost.
    pub fn after_performing(
        predicate: impl Fn(&MigrationState, &Action) -> bool + Send + 'static,
    ) -> Self {
        Stop::When {
            predicate: Box::new(predicate),
            perform: true,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// The whole log, the given prefix included.
    pub log: Vec<TimedEvent>,
    /// Every action decided in this run, in order (the pending one included; a run from a
    /// pending action does not list that one again).
    pub actions: Vec<Action>,
    /// The last action decided.
    pub last_action: Option<Action>,
    /// How the procedure ended, if it did.
    pub outcome: Option<Outcome>,
    /// The table's route at the end.
    pub route: Option<VersionedTableRoute>,
    /// Whether the run stopped on its stop condition (a crash) rather than at Finish.
    pub stopped: bool,
}

impl Run {
    /// The log folded.
    pub fn state(&self) -> MigrationState {
        fold(&self.log)
    }

    /// The events of the log, without their times.
    pub fn events(&self) -> Vec<MigrationEvent> {
        self.log.iter().map(|timed| timed.event.clone()).collect()
    }
}

/// The fake world.
pub struct World {
    /// The virtual clock (ms since the epoch).
    pub now_ms: u64,
    /// Table routes by table.
    pub routes: BTreeMap<TableId, VersionedTableRoute>,
    /// Datanode tables by (datanode, table).
    pub datanode_tables: BTreeMap<(PeerId, TableId), DatanodeTable>,
    /// Scripted mailbox outcomes per instruction kind; an empty queue answers ok.
    pub mailbox: BTreeMap<InstructionKind, VecDeque<MailboxOutcome>>,
    /// Scripted route reads; an empty queue answers ok.
    pub route_reads: VecDeque<ReadScript>,
    /// Scripted datanode-table reads; an empty queue answers ok.
    pub datanode_table_reads: VecDeque<ReadScript>,
    /// Scripted route compare-and-swaps; an empty queue applies.
    pub cas: VecDeque<CasScript>,
    /// Jitter values of the inputs after each action; an empty queue gives `default_jitter`.
    /// (The first input of a run carries its own: none for an observation alone.)
    pub jitter: VecDeque<u32>,
    /// The jitter value once the queue is empty.
    pub default_jitter: u32,
    /// How long an answered send takes.
    pub reply_delay_ms: u64,
    /// How long a timeout takes; `None`: the send's mailbox timeout.
    pub timeout_elapsed_ms: Option<u64>,
    /// Whether a downgrade or an upgrade goes on running on its datanode after the mailbox
    /// gave up on it (see the module's doc); off by default.
    pub datanode_keeps_working: bool,
    /// When each datanode began the downgrade or upgrade it is still working on, by peer and
    /// instruction kind (only with `datanode_keeps_working`).
    pub working_since: BTreeMap<(PeerId, InstructionKind), u64>,
    /// How long finding a peer unreachable takes.
    pub unreachable_delay_ms: u64,
    /// How long a read or a write takes.
    pub io_delay_ms: u64,
    /// The old leader's last entry id in default downgrade replies.
    pub last_entry_id: Option<u64>,
    /// State-keyed outcomes, consulted before the queues.
    pub oracle: Option<Box<dyn Oracle>>,
    /// A bound on the decisions of one run.
    pub steps_max: usize,
    /// Every instruction received, in order.
    pub sent: Vec<Sent>,
    /// Every hook the driver called, in order.
    pub hooks: Vec<Hook>,
    /// What a read of a datanode's last heartbeat answers (R2.3); `None`: unknown.
    pub last_heartbeat_ms: Option<u64>,
}

impl Default for World {
    fn default() -> Self {
        World::new(region_route(Some(FROM), &[]))
    }
}

/// Where a run starts.
enum Start {
    /// Decide on an input.
    Input(Input),
    /// Perform an action decided earlier, then go on.
    Pending(Action),
}

impl World {
    /// A world whose table route (version 0) holds `region`, with the old leader's datanode
    /// table, at `START_MS`.
    pub fn new(region: RegionRoute) -> Self {
        let mut routes = BTreeMap::new();
        routes.insert(
            TABLE_ID,
            VersionedTableRoute {
                table_id: TABLE_ID,
                version: 0,
                route: table_route(region),
            },
        );
        let mut datanode_tables = BTreeMap::new();
        datanode_tables.insert((FROM, TABLE_ID), from_datanode_table());
        World {
            now_ms: START_MS,
            routes,
            datanode_tables,
            mailbox: BTreeMap::new(),
            route_reads: VecDeque::new(),
            datanode_table_reads: VecDeque::new(),
            cas: VecDeque::new(),
            jitter: VecDeque::new(),
            default_jitter: 0,
            reply_delay_ms: 100,
            timeout_elapsed_ms: None,
            datanode_keeps_working: false,
            working_since: BTreeMap::new(),
            unreachable_delay_ms: 0,
            io_delay_ms: 0,
            last_entry_id: Some(LAST_ENTRY_ID),
            oracle: None,
            steps_max: 500,
            sent: Vec::new(),
            hooks: Vec::new(),
            last_heartbeat_ms: None,
        }
    }

    /// A world where the candidate is already a follower of the region.
    pub fn with_candidate_follower() -> Self {
        World::new(region_route(Some(FROM), &[TO]))
    }

    /// Queues mailbox outcomes for one instruction kind.
    pub fn script(
        &mut self,
        kind: InstructionKind,
        outcomes: impl IntoIterator<Item = MailboxOutcome>,
    ) -> &mut Self {
        self.mailbox.entry(kind).or_default().extend(outcomes);
        self
    }

    /// The migrated table's route now.
    pub fn route(&self) -> Option<VersionedTableRoute> {
        self.routes.get(&TABLE_ID).cloned()
    }

    /// The migrated region's route now.
    pub fn region(&self) -> Option<RegionRoute> {
        self.routes
            .get(&TABLE_ID)
            .and_then(|route| route.route.region_route(region_id()).cloned())
    }

    /// Edits the migrated region's route and bumps the version, as another writer would.
    pub fn edit_region(&mut self, edit: impl FnOnce(&mut RegionRoute)) {
        let route = self
            .routes
            .get_mut(&TABLE_ID)
            .expect("the table has a route");
        edit(
            route
                .route
                .region_route_mut(region_id())
                .expect("the table route holds the region"),
        );
        route.version += 1;
    }

    /// The log of a freshly submitted procedure.
    pub fn submit(&self, setup: &Setup) -> Vec<TimedEvent> {
        vec![TimedEvent {
            at_ms: self.now_ms,
            event: setup.submitted(),
        }]
    }

    /// Submits and runs to the end.
    pub fn run_submitted(&mut self, setup: &Setup) -> Run {
        let log = self.submit(setup);
        self.run(log, Observation::Begin, Stop::Never)
    }

    /// Continues a (truncated) log after a restart, to the end.
    pub fn resume(&mut self, log: Vec<TimedEvent>) -> Run {
        self.run(log, Observation::Resumed, Stop::Never)
    }

    /// Performs `action` (decided on `log`, not performed) and runs on, to the end.
    pub fn continue_run(&mut self, log: Vec<TimedEvent>, action: &Action) -> Run {
        self.perform_and_run(log, action, Stop::Never)
    }

    /// Runs the driver from `log`, deciding on `first` (an observation alone, or an input
    /// with its jitter) and then on what the world answers to each action, until `stop`.
    pub fn run(&mut self, log: Vec<TimedEvent>, first: impl Into<Input>, stop: Stop) -> Run {
        self.drive(log, Start::Input(first.into()), stop)
    }

    /// Runs the driver from `log`, whose last decision's `action` is pending: performs it,
    /// then decides on what the world answers to each action, until `stop`.
    pub fn perform_and_run(&mut self, log: Vec<TimedEvent>, action: &Action, stop: Stop) -> Run {
        self.drive(log, Start::Pending(action.clone()), stop)
    }

    /// Lends the world to the ports and runs the engine's driver on them.
    fn drive(&mut self, log: Vec<TimedEvent>, start: Start, stop: Stop) -> Run {
        let state = fold(&log);
        let next_seq = log.len() as u64 + 1;
        let pending = match &start {
            Start::Pending(action) => Some(action.clone()),
            Start::Input(_) => None,
        };
        let lent = Arc::new(Mutex::new(Lent {
            world: std::mem::take(self),
            state: state.clone(),
            pending,
        }));
        let mut recorder = Recorder {
            log,
            lent: lent.clone(),
            stop,
            actions: Vec::new(),
            steps_max: lent_world(&lent).world.steps_max,
            exhausted: false,
        };
        let ended = {
            let ports = WorldPorts(lent.clone()).ports();
            let locks = LockTable::new();
            let mut driver =
                ProcedureDriver::new(&ports, &locks, PROCEDURE_ID, state, next_seq, &mut recorder);
            runtime().block_on(async {
                match start {
                    Start::Input(input) => driver.run(input).await,
                    Start::Pending(action) => driver.run_pending(action).await,
                }
            })
        };
        *self = std::mem::take(&mut lent_world(&lent).world);
        let Recorder {
            log,
            mut actions,
            exhausted,
            ..
        } = recorder;
        let (outcome, stopped) = match ended {
            Ok(Ended::Finished(outcome)) => {
                actions.push(Action::Finish { outcome });
                (Some(outcome), false)
            }
            Ok(Ended::Stopped) if exhausted => panic!(
                "no end after {} decisions; log tail: {:#?}",
                self.steps_max,
                &log[log.len().saturating_sub(10)..]
            ),
            Ok(Ended::Stopped) => (None, true),
            Err(DriveError::Decide { error, .. }) => panic!(
                "decide refused its input at {}: {error}; log tail: {:#?}",
                self.now_ms,
                &log[log.len().saturating_sub(6)..]
            ),
            Err(DriveError::Persist { error, .. }) => match error {},
        };
        Run {
            log,
            last_action: actions.last().cloned(),
            actions,
            outcome,
            route: self.route(),
            stopped,
        }
    }
}

/// One current-thread runtime per test thread: the world's ports answer at once, so a run
/// never waits on real time (the driver's mailbox timeout needs the timer enabled).
fn runtime() -> &'static tokio::runtime::Runtime {
    thread_local! {
        static RUNTIME: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime"),
        ));
    }
    RUNTIME.with(|runtime| *runtime)
}

/// The world while a run has lent it to the ports, with what the ports need to know of the
/// procedure: the state the pending action was decided on (for the oracle), and that action
/// (a compare-and-swap's change).
struct Lent {
    world: World,
    state: MigrationState,
    pending: Option<Action>,
}

/// A metadata read.
#[derive(Clone, Copy)]
enum Read {
    Route,
    DatanodeTable,
}

impl Lent {
    /// Takes a read's time and says how it goes: the oracle's word, else the next scripted
    /// read of its kind, else ok.
    fn read(&mut self, read: Read) -> ReadScript {
        let Lent { world, state, .. } = self;
        world.now_ms += world.io_delay_ms;
        let oracle = world.oracle.as_mut().and_then(|oracle| match read {
            Read::Route => oracle.route_read(state),
            Read::DatanodeTable => oracle.datanode_table_read(state),
        });
        oracle
            .or_else(|| match read {
                Read::Route => world.route_reads.pop_front(),
                Read::DatanodeTable => world.datanode_table_reads.pop_front(),
            })
            .unwrap_or(ReadScript::Ok)
    }
}

fn lent_world(lent: &Mutex<Lent>) -> MutexGuard<'_, Lent> {
    lent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The driver's persistence in a world: keeps the log in memory, and stops where the run's
/// [`Stop`] says (or at the decision bound).
struct Recorder {
    log: Vec<TimedEvent>,
    lent: Arc<Mutex<Lent>>,
    stop: Stop,
    actions: Vec<Action>,
    steps_max: usize,
    exhausted: bool,
}

/// A world's persistence never fails.
#[derive(Debug)]
pub enum Never {}

#[async_trait]
impl Persistence for Recorder {
    type Error = Never;

    async fn persist(&mut self, batch: Batch<'_>, _state: &MigrationState) -> Result<(), Never> {
        self.log.extend(batch.events.iter().map(|event| TimedEvent {
            at_ms: batch.at_ms,
            event: event.clone(),
        }));
        Ok(())
    }

    fn before_action(&mut self, state: &MigrationState, action: &Action) -> Proceed {
        self.actions.push(action.clone());
        {
            let mut lent = lent_world(&self.lent);
            lent.state = state.clone();
            lent.pending = Some(action.clone());
        }
        if self.actions.len() > self.steps_max {
            self.exhausted = true;
            return Proceed::StopBefore;
        }
        let (stopped, perform) = match &self.stop {
            Stop::Never => (false, false),
            Stop::AfterEvents { count, perform } => (self.log.len() >= *count, *perform),
            Stop::When { predicate, perform } => (predicate(state, action), *perform),
        };
        match (stopped, perform) {
            (false, _) => Proceed::Perform,
            (true, false) => Proceed::StopBefore,
            (true, true) => Proceed::StopAfter,
        }
    }
}

/// The ports over a lent world.
#[derive(Clone)]
struct WorldPorts(Arc<Mutex<Lent>>);

impl WorldPorts {
    fn lent(&self) -> MutexGuard<'_, Lent> {
        lent_world(&self.0)
    }

    fn ports(self) -> Ports {
        let ports = Arc::new(self);
        Ports::builder(ports.clone(), ports.clone())
            .hooks(ports.clone())
            .clock(ports.clone())
            .entropy(ports.clone())
            .lease_renewals(ports)
            .build()
    }
}

fn store_failure() -> MetadataError {
    MetadataError::new(MetadataErrorKind::Unavailable, STORE_ERROR)
}

#[async_trait]
impl MetadataStore for WorldPorts {
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError> {
        let mut lent = self.lent();
        match lent.read(Read::Route) {
            ReadScript::StoreError => Err(store_failure()),
            ReadScript::Ok => Ok(lent.world.routes.get(&table_id).cloned()),
        }
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let mut lent = self.lent();
        let Lent {
            world,
            state,
            pending,
        } = &mut *lent;
        let Some(Action::CasRoute { change, .. }) = pending else {
            panic!("a route compare-and-swap while {pending:?} is pending");
        };
        let change: RouteChange = *change;
        world.now_ms += world.io_delay_ms;
        let script = world
            .oracle
            .as_mut()
            .and_then(|oracle| oracle.cas(state, change))
            .or_else(|| world.cas.pop_front())
            .unwrap_or(CasScript::Apply);
        match script {
            CasScript::StoreError => return Err(store_failure()),
            CasScript::Refuse => {
                if let Some(current) = world.routes.get_mut(&table_id) {
                    current.version += 1;
                }
            }
            CasScript::Apply => {}
        }
        let actual_version = world.routes.get(&table_id).map(|route| route.version);
        if actual_version != Some(expected_version) {
            return Ok(Err(CasConflict {
                table_id,
                expected_version,
                actual_version,
            }));
        }
        let to_version = expected_version + 1;
        world.routes.insert(
            table_id,
            VersionedTableRoute {
                table_id,
                version: to_version,
                route,
            },
        );
        for region_move in &region_moves {
            apply_region_move(&mut world.datanode_tables, table_id, region_move);
        }
        Ok(Ok(to_version))
    }

    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, MetadataError> {
        let mut lent = self.lent();
        match lent.read(Read::DatanodeTable) {
            ReadScript::StoreError => Err(store_failure()),
            ReadScript::Ok => Ok(lent
                .world
                .datanode_tables
                .get(&(datanode_id, table_id))
                .cloned()),
        }
    }

    /// The driver never reads table infos (submit validation does, outside the world).
    async fn table_info(&self, table_id: TableId) -> Result<Option<TableInfo>, MetadataError> {
        Err(MetadataError::new(
            MetadataErrorKind::Other,
            format!("the world keeps no table info (table {table_id})"),
        ))
    }
}

#[async_trait]
impl Mailbox for WorldPorts {
    async fn send(&self, peer: &Peer, instruction: Instruction, timeout_ms: u64) -> MailboxOutcome {
        let mut lent = self.lent();
        let Lent { world, state, .. } = &mut *lent;
        let kind = instruction.kind();
        let scripted = world
            .oracle
            .as_mut()
            .and_then(|oracle| oracle.mailbox(state, &instruction));
        let (outcome, delay_ms) = match scripted {
            Some((outcome, delay_ms)) => (outcome, delay_ms),
            None => (
                world
                    .mailbox
                    .get_mut(&kind)
                    .and_then(VecDeque::pop_front)
                    .unwrap_or_else(|| MailboxOutcome::Reply(ok_reply(kind, world.last_entry_id))),
                None,
            ),
        };
        let mut reply_delay_ms = delay_ms.unwrap_or(world.reply_delay_ms);
        let keeps_working = world.datanode_keeps_working
            && matches!(
                kind,
                InstructionKind::DowngradeRegion | InstructionKind::UpgradeRegion
            )
            && matches!(outcome, MailboxOutcome::Reply(_));
        if keeps_working {
            let since_ms = *world
                .working_since
                .entry((peer.id, kind))
                .or_insert(world.now_ms);
            reply_delay_ms = (since_ms + reply_delay_ms).saturating_sub(world.now_ms);
            if reply_delay_ms <= timeout_ms {
                world.working_since.remove(&(peer.id, kind));
            }
        }
        let (outcome, elapsed_ms) = match outcome {
            MailboxOutcome::Reply(_) if reply_delay_ms > timeout_ms => {
                (MailboxOutcome::Timeout, timeout_ms)
            }
            MailboxOutcome::Reply(reply) => (MailboxOutcome::Reply(reply), reply_delay_ms),
            MailboxOutcome::Timeout => (
                MailboxOutcome::Timeout,
                world.timeout_elapsed_ms.unwrap_or(timeout_ms),
            ),
            MailboxOutcome::Unreachable => {
                (MailboxOutcome::Unreachable, world.unreachable_delay_ms)
            }
        };
        world.sent.push(Sent {
            at_ms: world.now_ms,
            peer: peer.id,
            instruction,
            timeout_ms,
            outcome: outcome.clone(),
        });
        world.now_ms += elapsed_ms;
        outcome
    }
}

#[async_trait]
impl Clock for WorldPorts {
    fn now_ms(&self) -> u64 {
        self.lent().world.now_ms
    }

    async fn sleep_until_ms(&self, deadline_ms: u64) {
        let mut lent = self.lent();
        lent.world.now_ms = lent.world.now_ms.max(deadline_ms);
    }
}

impl Entropy for WorldPorts {
    fn next_u32(&self) -> u32 {
        let mut lent = self.lent();
        let Lent { world, state, .. } = &mut *lent;
        world
            .oracle
            .as_mut()
            .and_then(|oracle| oracle.jitter(state))
            .or_else(|| world.jitter.pop_front())
            .unwrap_or(world.default_jitter)
    }

    /// Ids are fixed in a world ([`PROCEDURE_ID`]); any bytes asked for are zeros.
    fn fill(&self, bytes: &mut [u8]) {
        bytes.fill(0);
    }
}

#[async_trait]
impl ClusterHooks for WorldPorts {
    async fn register_failure_detector(&self, peer: PeerId, region_id: RegionId) {
        self.lent()
            .world
            .hooks
            .push(Hook::RegisterFailureDetector { peer, region_id });
    }

    async fn deregister_failure_detector(&self, peer: PeerId, region_id: RegionId) {
        self.lent()
            .world
            .hooks
            .push(Hook::DeregisterFailureDetector { peer, region_id });
    }

    async fn invalidate_table_cache(&self, table_id: TableId) {
        self.lent()
            .world
            .hooks
            .push(Hook::InvalidateTableCache { table_id });
    }
}

#[async_trait]
impl LeaseRenewals for WorldPorts {
    async fn last_heartbeat_ms(&self, _peer: PeerId) -> Option<u64> {
        let mut lent = self.lent();
        lent.world.now_ms += lent.world.io_delay_ms;
        lent.world.last_heartbeat_ms
    }
}

/// The indexes k (1..=len) after which a log can end: the end of a decision's batch.
/// Every batch is appended atomically, so a crash never leaves part of one.
pub fn batch_ends(log: &[TimedEvent]) -> Vec<usize> {
    (1..=log.len())
        .filter(|&k| {
            k == log.len() || log[k].event.role() != regmig::migration::EventRole::Decision
        })
        .collect()
}
