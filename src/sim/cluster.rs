//! The simulated cluster: datanodes ([`super::datanode`]), heartbeats, a write workload and
//! fault injection, behind the engine's ports ([`SimMailbox`], [`SimMetadataStore`],
//! [`SimHooks`], [`TokioClock`], a seeded [`Entropy`]).
//!
//! # Determinism
//! Run it on a tokio current-thread runtime with paused time (`tokio::time::pause()`): virtual
//! time then only moves when every task waits, and the same seed and the same calls give the
//! same trace. All state sits behind one std mutex (never held across an await), maps are
//! BTreeMaps, the only randomness is the seeded generator lent out by [`SimCluster::entropy`],
//! and each periodic activity (heartbeats, workload) is one task.
//!
//! # Time
//! Times given to and reported by the cluster (`at_ms`, lease deadlines, trace, violations)
//! are virtual ms since the cluster was created. The engine sees epoch ms through
//! [`SimCluster::clock`]: `epoch_base_ms` plus the same virtual ms.
//!
//! # Behaviour choices
//! - Heartbeats: every [`HEARTBEAT_INTERVAL_MS`] per live datanode; datanode number `i` (in
//!   ascending id order, of `n`) beats at `i * 3000 / n` ms past each interval, from
//!   [`SimCluster::start`]. Setup gives every leader a lease until [`REGION_LEASE_MS`].
//! - Workload: every [`WRITE_TICK_MS`] (at 5, 15, 25... ms after `start`), each region of a
//!   physical table gets the writes due at `writes_per_second` (the tick at `10k - 5` ms sends
//!   those due by `10k` ms), as one batch sent to the leader its route names.
//! - Mailbox: a reply produced `d` ms after the send and delayed `delay` ms by a
//!   `message_delay` is a Timeout when `d + delay > timeout_ms` (the datanode still acted); the
//!   sender then waits out `timeout_ms`. A crashed datanode receives nothing (its scripts are
//!   not consumed) and the sender times out; an unknown peer is Unreachable.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use tokio::task::JoinHandle;

use super::datanode::{
    Completion, DataPlane, Received, RegionWal, Replica, ScriptedReply, SimOptions, WriteOutcome,
    WriteRejection, HEARTBEAT_INTERVAL_MS, REGION_LEASE_MS,
};
use super::invariants::{EventTrace, InvariantChecker, TraceEvent, Violation, WriteAvailability};
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::{
    CasConflict, Clock, ClusterHooks, Entropy, LeaseRenewals, Mailbox, MetadataError,
    MetadataErrorKind, MetadataStore, Ports, RegionMove, SeededEntropy, TokioClock,
};
use regmig::domain::{
    DatanodeTable, Instruction, InstructionKind, MailboxOutcome, Peer, PeerId, RegionId,
    RegionRoute, Reply, TableId, TableInfo, TableRoute, VersionedTableRoute, WalKind,
};
use regmig::migration::Hook;

/// How often the workload sends its batch of writes.
pub const WRITE_TICK_MS: u64 = 10;

/// How early each workload tick runs before the end of its window: ticks fall at 5, 15,
/// 25... ms after `start`, never on the round times of heartbeats or test steps, so what a
/// tick sees never depends on the order of tasks woken at the same instant.
pub const WRITE_TICK_OFFSET_MS: u64 = WRITE_TICK_MS / 2;

/// How many mailbox exchanges are kept for inspection; later ones are not recorded.
pub const MAILBOX_RECORDS_MAX: usize = 100_000;

/// The latest virtual time anything sleeps until (about 34 years): a larger timeout waits
/// this long instead of overflowing the timer.
pub const SLEEP_UNTIL_MS_MAX: u64 = 1 << 40;

/// The engine name written in datanode tables.
pub const SIM_ENGINE: &str = "mito";

/// A cluster to build, from plain values (what a scenario file describes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSetup {
    /// Seeds the cluster's random generator.
    pub seed: u64,
    /// The datanodes.
    pub peers: Vec<PeerId>,
    /// The tables and their regions.
    pub tables: Vec<TableSetup>,
    /// Writes per second to each region, in virtual time; `None` for no workload.
    pub writes_per_second: Option<u64>,
    /// How fast datanodes flush, writes per second (`None`: the default, 20000).
    pub flush_writes_per_second: Option<u64>,
    /// The epoch ms the cluster's clock reads at virtual time 0.
    pub epoch_base_ms: u64,
}

/// A table to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSetup {
    /// Its id.
    pub id: TableId,
    /// Its catalog.
    pub catalog: String,
    /// Its schema.
    pub schema: String,
    /// Its WAL kind.
    pub wal: WalKind,
    /// A logical table gets `TableRoute::Logical` and no regions of its own.
    pub logical: bool,
    /// Its regions (ignored for a logical table).
    pub regions: Vec<RegionSetup>,
}

/// A region to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionSetup {
    /// Its number in the table.
    pub number: u32,
    /// The datanode leading it.
    pub leader: PeerId,
    /// Datanodes holding a follower replica.
    pub followers: Vec<PeerId>,
    /// Entries `1..=last_entry_id` are already written (and flushed).
    pub last_entry_id: u64,
}

/// Why a [`ClusterSetup`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// No datanode.
    #[error("the cluster has no datanode: list at least one peer")]
    NoPeers,
    /// A datanode listed twice.
    #[error("datanode {peer} is listed twice in the peers")]
    DuplicatePeer {
        /// The datanode.
        peer: PeerId,
    },
    /// A table listed twice.
    #[error("table {table_id} is listed twice")]
    DuplicateTable {
        /// The table.
        table_id: TableId,
    },
    /// A region listed twice in its table.
    #[error("region {region_id} is listed twice in its table")]
    DuplicateRegion {
        /// The region.
        region_id: RegionId,
    },
    /// A region names a datanode that is not in the peers.
    #[error("region {region_id} names datanode {peer}, which is not in the peers")]
    UnknownPeer {
        /// The region.
        region_id: RegionId,
        /// The datanode.
        peer: PeerId,
    },
    /// A region lists its leader, or a follower twice, among its followers.
    #[error("region {region_id} lists datanode {peer} twice (leader and followers must differ)")]
    RepeatedReplica {
        /// The region.
        region_id: RegionId,
        /// The datanode.
        peer: PeerId,
    },
}

/// One instruction sent through the mailbox, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRecord {
    /// When it was sent, virtual ms.
    pub sent_at_ms: u64,
    /// When the sender got the outcome, virtual ms.
    pub answered_at_ms: u64,
    /// The datanode.
    pub peer: PeerId,
    /// What was sent.
    pub instruction: Instruction,
    /// What came back.
    pub outcome: MailboxOutcome,
}

/// The workload's writes to one region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Writes acknowledged.
    pub acked: u64,
    /// Writes rejected.
    pub rejected: u64,
}

#[derive(Debug, Clone, Copy)]
struct MessageDelay {
    at_ms: u64,
    delay_ms: u64,
}

/// An answer produced later than its receipt (an upgrade replaying): settled once, at its
/// time, by whichever of the sender and the datanode task gets there first.
#[derive(Debug)]
struct PendingAnswer {
    peer: PeerId,
    incarnation: u64,
    reply: Reply,
    completion: Option<Completion>,
    settled: Option<Option<Reply>>,
    /// The sender and the datanode task; removed when both are done.
    holders: u8,
}

/// Everything mutable, behind one mutex.
#[derive(Debug, Default)]
struct Shared {
    plane: DataPlane,
    trace: EventTrace,
    checker: InvariantChecker,
    scripts: BTreeMap<(PeerId, InstructionKind), VecDeque<ScriptedReply>>,
    /// Scripts that answer only one region's part of an instruction (a batch); used before
    /// the peer's scripts for every region.
    region_scripts: BTreeMap<(PeerId, InstructionKind, RegionId), VecDeque<ScriptedReply>>,
    delays: BTreeMap<PeerId, Vec<MessageDelay>>,
    sent: BTreeMap<(PeerId, InstructionKind), u64>,
    mailbox_records: Vec<MailboxRecord>,
    pending: BTreeMap<u64, PendingAnswer>,
    next_pending_id: u64,
    write_stats: BTreeMap<RegionId, WriteStats>,
    /// The last traced workload outcome per region: only changes are traced.
    write_summary: BTreeMap<RegionId, String>,
    hook_calls: Vec<Hook>,
    availability: WriteAvailability,
    /// When the control plane last received each datanode's heartbeat (virtual ms).
    last_heartbeats: BTreeMap<PeerId, u64>,
    /// Partitions per peer: (from, until), virtual ms; `None`: never healed.
    partitions: BTreeMap<PeerId, Vec<(u64, Option<u64>)>>,
}

/// Runs the invariant checks and the write-availability measure on what changed in the data
/// plane since they last ran (and on the leases that ran out).
fn observe_plane(
    plane: &mut DataPlane,
    checker: &mut InvariantChecker,
    availability: &mut WriteAvailability,
    now_ms: u64,
    trace: &mut EventTrace,
) {
    let changed = plane.take_changed();
    checker.observe(plane, &changed, now_ms, trace);
    availability.observe(plane, &changed, now_ms);
}

impl Shared {
    fn observe(&mut self, now_ms: u64) {
        let Shared {
            plane,
            trace,
            checker,
            availability,
            ..
        } = self;
        observe_plane(plane, checker, availability, now_ms, trace);
    }

    /// Whether the control plane is cut off from `peer` at `at_ms`.
    fn partitioned(&self, peer: PeerId, at_ms: u64) -> bool {
        self.partitions.get(&peer).is_some_and(|windows| {
            windows.iter().any(|&(from_ms, until_ms)| {
                from_ms <= at_ms && until_ms.is_none_or(|until| at_ms < until)
            })
        })
    }

    fn trace_all(&mut self, now_ms: u64, notes: Vec<String>) {
        for note in notes {
            self.trace.push(now_ms, note);
        }
    }

    /// The message delay active on `peer` at `at_ms`: the latest injected one that started.
    fn delay_at(&self, peer: PeerId, at_ms: u64) -> u64 {
        self.delays
            .get(&peer)
            .and_then(|delays| delays.iter().rev().find(|delay| delay.at_ms <= at_ms))
            .map(|delay| delay.delay_ms)
            .unwrap_or(0)
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes due in the tick ending `elapsed_ms` after the workload started.
fn writes_due(writes_per_second: u64, elapsed_ms: u64, tick_ms: u64) -> u64 {
    let rate = u128::from(writes_per_second);
    let until = rate * u128::from(elapsed_ms) / 1000;
    let before = rate * u128::from(elapsed_ms.saturating_sub(tick_ms)) / 1000;
    u64::try_from(until - before).unwrap_or(u64::MAX)
}

/// A compact, deterministic description of an instruction for the trace.
pub fn describe_instruction(instruction: &Instruction) -> String {
    let region_id = instruction.region_id();
    match instruction {
        Instruction::OpenRegion { .. } | Instruction::CloseRegion { .. } => {
            format!("{} {region_id}", instruction.kind())
        }
        Instruction::FlushRegion { timeout_ms, .. } => {
            format!("flush_region {region_id} timeout={timeout_ms}ms")
        }
        Instruction::DowngradeRegion {
            flush_timeout_ms,
            reject_write,
            ..
        } => format!(
            "downgrade_region {region_id} flush_timeout={flush_timeout_ms}ms \
             reject_write={reject_write}"
        ),
        Instruction::UpgradeRegion {
            last_entry_id,
            replay_timeout_ms,
            ..
        } => format!(
            "upgrade_region {region_id} last_entry_id={last_entry_id:?} \
             replay_timeout={replay_timeout_ms}ms"
        ),
    }
}

/// A compact, deterministic description of a mailbox outcome for the trace.
pub fn describe_outcome(outcome: &MailboxOutcome) -> String {
    match outcome {
        MailboxOutcome::Reply(reply) => format!("{reply:?}"),
        MailboxOutcome::Timeout => "timeout".to_string(),
        MailboxOutcome::Unreachable => "unreachable".to_string(),
    }
}

/// What the sender waits for, decided when the datanode receives the instruction.
enum Plan {
    Unreachable,
    NoAnswer,
    Immediate {
        reply: Reply,
        arrival_ms: u64,
    },
    Later {
        id: u64,
        reply_at_ms: u64,
        arrival_ms: u64,
    },
}

/// The simulated cluster. Create it inside the (paused) runtime that will drive it.
pub struct SimCluster {
    clock: TokioClock,
    entropy: Arc<SeededEntropy>,
    shared: Arc<Mutex<Shared>>,
    metadata: Arc<SimMetadataStore>,
    hooks: Arc<SimHooks>,
    peers: Vec<PeerId>,
    /// Regions of physical tables, in order: the workload writes to them.
    regions: Vec<RegionId>,
    /// Every table of the setup, ascending.
    table_ids: Vec<TableId>,
    writes_per_second: Option<u64>,
    /// Set by `start`, cleared by `stop`: heartbeats and workload run once.
    started: AtomicBool,
    // A std Mutex: only pushed to and drained, never held across an await.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("peers", &self.peers)
            .field("regions", &self.regions)
            .field("writes_per_second", &self.writes_per_second)
            .finish_non_exhaustive()
    }
}

fn validate(setup: &ClusterSetup) -> Result<(), SetupError> {
    if setup.peers.is_empty() {
        return Err(SetupError::NoPeers);
    }
    let mut peers = std::collections::BTreeSet::new();
    for &peer in &setup.peers {
        if !peers.insert(peer) {
            return Err(SetupError::DuplicatePeer { peer });
        }
    }
    let mut tables = std::collections::BTreeSet::new();
    for table in &setup.tables {
        if !tables.insert(table.id) {
            return Err(SetupError::DuplicateTable { table_id: table.id });
        }
        if table.logical {
            continue;
        }
        let mut numbers = std::collections::BTreeSet::new();
        for region in &table.regions {
            let region_id = RegionId::new(table.id, region.number);
            if !numbers.insert(region.number) {
                return Err(SetupError::DuplicateRegion { region_id });
            }
            let mut replicas = std::collections::BTreeSet::new();
            for &peer in std::iter::once(&region.leader).chain(&region.followers) {
                if !peers.contains(&peer) {
                    return Err(SetupError::UnknownPeer { region_id, peer });
                }
                if !replicas.insert(peer) {
                    return Err(SetupError::RepeatedReplica { region_id, peer });
                }
            }
        }
    }
    Ok(())
}

fn wal_options(wal: WalKind) -> String {
    match wal {
        WalKind::Local => r#"{"wal.provider":"raft_engine"}"#.to_string(),
        WalKind::Remote => {
            r#"{"wal.provider":"kafka","wal.kafka.topic":"sim_wal_topic"}"#.to_string()
        }
    }
}

impl SimCluster {
    /// Builds the cluster: metadata (table routes at version 0, datanode tables, table
    /// infos) and datanodes (leaders with a valid lease, followers). Nothing runs until
    /// [`SimCluster::start`].
    pub fn new(setup: ClusterSetup, options: SimOptions) -> Result<Arc<SimCluster>, SetupError> {
        validate(&setup)?;
        let clock = TokioClock::new(setup.epoch_base_ms);
        let memory = Arc::new(MemoryMetadataStore::new());
        let mut plane = DataPlane::new(options);
        if let Some(rate) = setup.flush_writes_per_second {
            plane.flush_writes_per_second = rate;
        }
        let mut peers = setup.peers.clone();
        peers.sort_unstable();
        for &peer in &peers {
            plane.add_datanode(peer);
        }
        let physical_table_id = setup
            .tables
            .iter()
            .find(|table| !table.logical)
            .map(|table| table.id);
        let mut regions = Vec::new();
        for table in &setup.tables {
            memory.put_table_info(TableInfo {
                table_id: table.id,
                catalog: table.catalog.clone(),
                schema: table.schema.clone(),
                name: format!("table_{}", table.id),
                wal: table.wal,
            });
            if table.logical {
                memory.put_table_route(
                    table.id,
                    TableRoute::Logical {
                        physical_table_id: physical_table_id.unwrap_or(table.id),
                    },
                );
                continue;
            }
            let mut region_routes = Vec::new();
            let mut datanode_tables: BTreeMap<PeerId, DatanodeTable> = BTreeMap::new();
            for region in &table.regions {
                let region_id = RegionId::new(table.id, region.number);
                region_routes.push(RegionRoute {
                    region_id,
                    leader_peer: Some(Peer::sim(region.leader)),
                    follower_peers: region.followers.iter().map(|&id| Peer::sim(id)).collect(),
                    leader_state: None,
                    leader_down_since_ms: None,
                });
                let datanode_table =
                    datanode_tables
                        .entry(region.leader)
                        .or_insert_with(|| DatanodeTable {
                            datanode_id: region.leader,
                            table_id: table.id,
                            region_numbers: Vec::new(),
                            engine: SIM_ENGINE.to_string(),
                            storage_path: format!("data/{}", table.id),
                            region_options: BTreeMap::new(),
                            region_wal_options: BTreeMap::new(),
                        });
                datanode_table.region_numbers.push(region.number);
                datanode_table
                    .region_wal_options
                    .insert(region.number, wal_options(table.wal));
                plane.add_region(
                    region_id,
                    table.wal,
                    region.last_entry_id,
                    region.leader,
                    &region.followers,
                    REGION_LEASE_MS,
                );
                regions.push(region_id);
            }
            memory.put_table_route(table.id, TableRoute::Physical { region_routes });
            for (_, mut datanode_table) in datanode_tables {
                datanode_table.region_numbers.sort_unstable();
                memory.put_datanode_table(datanode_table);
            }
        }
        regions.sort_unstable();
        let mut table_ids: Vec<TableId> = setup.tables.iter().map(|table| table.id).collect();
        table_ids.sort_unstable();
        let shared = Arc::new(Mutex::new(Shared {
            plane,
            ..Shared::default()
        }));
        {
            let mut state = lock(&shared);
            state.trace.push(
                0,
                format!(
                    "setup: peers {peers:?}, regions {}",
                    format_regions(&regions)
                ),
            );
            // Setup hands out leases as a heartbeat at time 0 would.
            for &peer in &peers {
                state.last_heartbeats.insert(peer, 0);
            }
            state.observe(0);
        }
        let metadata = Arc::new(SimMetadataStore {
            inner: memory,
            faults: Mutex::new(MetadataFaults::default()),
            shared: Arc::clone(&shared),
            clock: clock.clone(),
        });
        let hooks = Arc::new(SimHooks {
            shared: Arc::clone(&shared),
            clock: clock.clone(),
        });
        Ok(Arc::new(SimCluster {
            clock,
            entropy: Arc::new(SeededEntropy::new(setup.seed)),
            shared,
            metadata,
            hooks,
            peers,
            regions,
            table_ids,
            writes_per_second: setup.writes_per_second,
            started: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
        }))
    }

    fn state(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Virtual ms since the cluster was created.
    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed_ms()
    }

    /// The cluster's clock (epoch ms = `epoch_base_ms` + virtual ms).
    pub fn clock(&self) -> TokioClock {
        self.clock.clone()
    }

    /// The seeded generator, for the engine's jitter and procedure ids.
    pub fn entropy(&self) -> Arc<dyn Entropy> {
        self.entropy.clone()
    }

    /// A mailbox to the simulated datanodes.
    pub fn mailbox(self: &Arc<Self>) -> Arc<SimMailbox> {
        Arc::new(SimMailbox {
            cluster: Arc::clone(self),
        })
    }

    /// The metadata store, with fault injection.
    pub fn metadata(&self) -> Arc<SimMetadataStore> {
        Arc::clone(&self.metadata)
    }

    /// The same metadata without fault injection: for the engine's submit validation.
    pub fn validation_view(&self) -> Arc<dyn MetadataStore> {
        self.metadata.inner.clone()
    }

    /// The hooks, which record every call.
    pub fn hooks(&self) -> Arc<SimHooks> {
        Arc::clone(&self.hooks)
    }

    /// Every port the engine needs, wired to this cluster.
    pub fn ports(self: &Arc<Self>) -> Ports {
        Ports {
            mailbox: self.mailbox(),
            metadata: self.metadata(),
            submit_metadata: self.validation_view(),
            hooks: self.hooks(),
            clock: Arc::new(self.clock()),
            entropy: self.entropy(),
            lease_renewals: Arc::new(SimLeaseRenewals {
                shared: Arc::clone(&self.shared),
                epoch_base_ms: self.clock.epoch_base_ms(),
            }),
        }
    }

    /// The datanodes, ascending.
    pub fn peers(&self) -> &[PeerId] {
        &self.peers
    }

    /// When `peer` heartbeats within each interval (ms past the interval's start).
    pub fn heartbeat_phase_ms(&self, peer: PeerId) -> Option<u64> {
        let count = self.peers.len() as u64;
        self.peers
            .iter()
            .position(|&id| id == peer)
            .map(|index| index as u64 * HEARTBEAT_INTERVAL_MS / count.max(1))
    }

    fn spawn<F>(&self, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            lock(&self.shared)
                .trace
                .push(self.now_ms(), "ignored: no tokio runtime to run a task on");
            return;
        };
        let task = handle.spawn(future);
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    async fn sleep_until(clock: &TokioClock, at_ms: u64) {
        let at_ms = at_ms.min(SLEEP_UNTIL_MS_MAX);
        clock
            .sleep_until_ms(clock.epoch_base_ms().saturating_add(at_ms))
            .await;
    }

    /// Starts the heartbeats and the workload (once: a second call does nothing).
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let start_ms = self.now_ms();
        {
            let mut state = self.state();
            state.trace.push(start_ms, "start");
        }
        let weak = Arc::downgrade(self);
        let clock = self.clock.clone();
        let mut next: Vec<(u64, PeerId)> = self
            .peers
            .iter()
            .filter_map(|&peer| {
                self.heartbeat_phase_ms(peer)
                    .map(|phase_ms| (start_ms + phase_ms, peer))
            })
            .collect();
        self.spawn(async move {
            loop {
                let Some(slot) = next.iter_mut().min() else {
                    return;
                };
                let (at_ms, peer) = *slot;
                slot.0 = at_ms.saturating_add(HEARTBEAT_INTERVAL_MS);
                SimCluster::sleep_until(&clock, at_ms).await;
                let Some(cluster) = weak.upgrade() else {
                    return;
                };
                cluster.heartbeat(peer);
            }
        });
        let Some(writes_per_second) = self.writes_per_second.filter(|&rate| rate > 0) else {
            return;
        };
        let weak = Arc::downgrade(self);
        let clock = self.clock.clone();
        self.spawn(async move {
            let mut elapsed_ms = 0u64;
            loop {
                elapsed_ms = elapsed_ms.saturating_add(WRITE_TICK_MS);
                let tick_at_ms = start_ms
                    .saturating_add(elapsed_ms)
                    .saturating_sub(WRITE_TICK_OFFSET_MS);
                SimCluster::sleep_until(&clock, tick_at_ms).await;
                let Some(cluster) = weak.upgrade() else {
                    return;
                };
                let due = writes_due(writes_per_second, elapsed_ms, WRITE_TICK_MS);
                cluster.write_tick(due);
            }
        });
    }

    /// Stops every task the cluster started (heartbeats, workload, scheduled faults,
    /// replays in flight).
    pub fn stop(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.drain(..).collect()
        };
        for task in tasks {
            task.abort();
        }
        self.started.store(false, Ordering::SeqCst);
        let now_ms = self.now_ms();
        self.state().trace.push(now_ms, "stop");
    }

    /// The route of every region of every physical table, read without faults.
    pub fn region_routes_now(&self) -> BTreeMap<RegionId, RegionRoute> {
        let mut routes = BTreeMap::new();
        for &table_id in &self.table_ids {
            let Some(versioned) = self.metadata.inner.table_route_now(table_id) else {
                continue;
            };
            if let TableRoute::Physical { region_routes } = &versioned.route {
                for route in region_routes {
                    routes.insert(route.region_id, route.clone());
                }
            }
        }
        routes
    }

    /// A heartbeat of `peer`, now.
    pub fn heartbeat(&self, peer: PeerId) {
        let routes = self.region_routes_now();
        let now_ms = self.now_ms();
        let mut state = self.state();
        let alive = state
            .plane
            .datanodes
            .get(&peer)
            .is_some_and(|datanode| datanode.alive);
        if !alive {
            return;
        }
        if state.partitioned(peer, now_ms) {
            state.trace.push(
                now_ms,
                format!("heartbeat {peer}: lost (partitioned from the control plane)"),
            );
            return;
        }
        state.last_heartbeats.insert(peer, now_ms);
        let (renewed, notes) = state.plane.heartbeat(peer, &routes, now_ms);
        let line = if renewed.is_empty() {
            format!("heartbeat {peer}: no lease renewed")
        } else {
            format!(
                "heartbeat {peer}: leases of {} until {} ms",
                format_regions(&renewed),
                now_ms.saturating_add(REGION_LEASE_MS)
            )
        };
        state.trace.push(now_ms, line);
        state.trace_all(now_ms, notes);
        state.observe(now_ms);
    }

    fn write_tick(&self, due: u64) {
        if due == 0 {
            return;
        }
        let routes = self.region_routes_now();
        let now_ms = self.now_ms();
        let mut state = self.state();
        for &region_id in &self.regions {
            let leader = routes.get(&region_id).and_then(RegionRoute::leader_id);
            let outcome = state.plane.write_batch(region_id, leader, due, now_ms);
            let stats = state.write_stats.entry(region_id).or_default();
            let summary = match outcome {
                WriteOutcome::Acked { peer, .. } => {
                    stats.acked = stats.acked.saturating_add(due);
                    format!("writes {region_id}: acknowledged by {peer}")
                }
                WriteOutcome::Rejected(rejection) => {
                    stats.rejected = stats.rejected.saturating_add(due);
                    match leader {
                        Some(peer) => {
                            format!("writes {region_id}: rejected by {peer}: {rejection}")
                        }
                        None => format!("writes {region_id}: rejected: {rejection}"),
                    }
                }
            };
            if state.write_summary.get(&region_id) != Some(&summary) {
                state.trace.push(now_ms, summary.clone());
                state.write_summary.insert(region_id, summary);
            }
        }
        state.observe(now_ms);
    }

    /// One write to `region_id`, sent now to the leader its route names (not counted in the
    /// workload's stats).
    pub fn write_now(&self, region_id: RegionId) -> WriteOutcome {
        let leader = self
            .metadata
            .region_route_now(region_id)
            .and_then(|route| route.leader_id());
        let now_ms = self.now_ms();
        let mut state = self.state();
        let outcome = state.plane.write_batch(region_id, leader, 1, now_ms);
        state.observe(now_ms);
        outcome
    }

    /// Forces `replies` on `peer` for its next instructions of `kind`, after any already
    /// scripted.
    pub fn script_replies(
        &self,
        peer: PeerId,
        kind: InstructionKind,
        replies: impl IntoIterator<Item = ScriptedReply>,
    ) {
        self.state()
            .scripts
            .entry((peer, kind))
            .or_default()
            .extend(replies);
    }

    /// Forces `replies` on `peer` for its next instructions of `kind` about `region` only
    /// (its part of a batch); the other regions' parts behave normally.
    pub fn script_region_replies(
        &self,
        peer: PeerId,
        kind: InstructionKind,
        region: RegionId,
        replies: impl IntoIterator<Item = ScriptedReply>,
    ) {
        self.state()
            .region_scripts
            .entry((peer, kind, region))
            .or_default()
            .extend(replies);
    }

    /// The scripted replies not consumed yet, per (peer, kind).
    pub fn scripts_left(&self) -> BTreeMap<(PeerId, InstructionKind), usize> {
        self.state()
            .scripts
            .iter()
            .filter(|(_, replies)| !replies.is_empty())
            .map(|(&key, replies)| (key, replies.len()))
            .collect()
    }

    /// From `at_ms` on, the next `count` table-route CAS writes fail with a conflict.
    pub fn inject_cas_conflicts(&self, count: u64, at_ms: u64) {
        self.metadata.inject_cas_conflicts(count, at_ms);
    }

    /// From `at_ms` on, the next `count` metadata reads or writes fail with a store error.
    pub fn inject_metadata_unavailable(&self, count: u64, at_ms: u64) {
        self.metadata.inject_unavailable(count, at_ms);
    }

    /// Every table-route CAS between `at_ms` and `until_ms` fails with a conflict.
    pub fn inject_cas_conflicts_until(&self, at_ms: u64, until_ms: u64) {
        self.metadata.inject_cas_conflicts_until(at_ms, until_ms);
    }

    /// Every metadata read or write between `at_ms` and `until_ms` fails with a store error.
    pub fn inject_metadata_unavailable_until(&self, at_ms: u64, until_ms: u64) {
        self.metadata.inject_unavailable_until(at_ms, until_ms);
    }

    /// From `at_ms` (until `at_ms + heal_after_ms`, if given) the control plane cannot reach
    /// `peer` and receives no heartbeat from it; the datanode keeps running.
    pub fn partition(&self, peer: PeerId, at_ms: u64, heal_after_ms: Option<u64>) {
        let until_ms = heal_after_ms.map(|after_ms| at_ms.saturating_add(after_ms));
        let mut state = self.state();
        state
            .partitions
            .entry(peer)
            .or_default()
            .push((at_ms, until_ms));
        let line = match until_ms {
            Some(until_ms) => format!("partition {peer}: from {at_ms} ms until {until_ms} ms"),
            None => format!("partition {peer}: from {at_ms} ms, never healed"),
        };
        state.trace.push(self.now_ms(), line);
    }

    /// When the control plane last received `peer`'s heartbeat (virtual ms), if ever.
    pub fn last_heartbeat_ms(&self, peer: PeerId) -> Option<u64> {
        self.state().last_heartbeats.get(&peer).copied()
    }

    /// The longest stretch within `[from_ms, to_ms]` (virtual ms) during which no datanode
    /// would have accepted a write for `region_id`.
    pub fn unwritable_ms(&self, region_id: RegionId, from_ms: u64, to_ms: u64) -> u64 {
        let now_ms = self.now_ms();
        let mut state = self.state();
        state.observe(now_ms);
        state
            .availability
            .longest_unwritable_ms(region_id, from_ms, to_ms)
    }

    /// From `at_ms` on, every reply of `peer` is late by `delay_ms` (replaces an earlier
    /// delay from then on).
    pub fn inject_message_delay(&self, peer: PeerId, delay_ms: u64, at_ms: u64) {
        let mut state = self.state();
        let delays = state.delays.entry(peer).or_default();
        delays.push(MessageDelay { at_ms, delay_ms });
        delays.sort_by_key(|delay| delay.at_ms);
    }

    /// Crashes `peer` at `at_ms` (now if already past) and restarts it `restart_after_ms`
    /// later when given. Unknown peers are ignored.
    pub fn crash_datanode(
        self: &Arc<Self>,
        peer: PeerId,
        at_ms: u64,
        restart_after_ms: Option<u64>,
    ) {
        let weak = Arc::downgrade(self);
        let clock = self.clock.clone();
        let immediate = at_ms <= self.now_ms();
        if immediate {
            self.crash_now(peer);
            if restart_after_ms.is_none() {
                return;
            }
        }
        self.spawn(async move {
            if !immediate {
                SimCluster::sleep_until(&clock, at_ms).await;
                let Some(cluster) = weak.upgrade() else {
                    return;
                };
                cluster.crash_now(peer);
            }
            let Some(restart_after_ms) = restart_after_ms else {
                return;
            };
            SimCluster::sleep_until(&clock, at_ms.saturating_add(restart_after_ms)).await;
            if let Some(cluster) = weak.upgrade() {
                cluster.restart_now(peer);
            }
        });
    }

    /// Crashes `peer` now.
    pub fn crash_now(&self, peer: PeerId) {
        let now_ms = self.now_ms();
        let mut state = self.state();
        let notes = state.plane.crash(peer);
        state.trace_all(now_ms, notes);
        state.observe(now_ms);
    }

    /// Restarts a crashed `peer` now.
    pub fn restart_now(&self, peer: PeerId) {
        let now_ms = self.now_ms();
        let mut state = self.state();
        let notes = state.plane.restart(peer);
        state.trace_all(now_ms, notes);
        state.observe(now_ms);
    }

    /// Has `peer` apply `instruction` now, as if the mailbox had delivered it, and drops the
    /// answer: how a new simulated cluster is brought back to what the datanodes of a
    /// previous run had done (a candidate opened, a region upgraded) before the control
    /// plane stopped. Not counted as sent.
    pub fn apply_instruction_now(&self, peer: PeerId, instruction: &Instruction) {
        let now_ms = self.now_ms();
        let mut state = self.state();
        let (_, notes) = state.plane.receive(peer, instruction, None, now_ms);
        state.trace_all(now_ms, notes);
        state.observe(now_ms);
    }

    /// Instructions sent so far, by "PEER.instruction_name", counts above zero only.
    pub fn sent_counts(&self) -> BTreeMap<String, u64> {
        self.state()
            .sent
            .iter()
            .filter(|(_, &count)| count > 0)
            .map(|(&(peer, kind), &count)| (format!("{peer}.{}", kind.name()), count))
            .collect()
    }

    /// Every finished mailbox exchange, in the order they finished.
    pub fn mailbox_records(&self) -> Vec<MailboxRecord> {
        self.state().mailbox_records.clone()
    }

    /// The hook calls, in order.
    pub fn hook_calls(&self) -> Vec<Hook> {
        self.state().hook_calls.clone()
    }

    /// The event trace, one line per event.
    pub fn trace(&self) -> Vec<String> {
        self.state()
            .trace
            .events()
            .map(ToString::to_string)
            .collect()
    }

    /// The event trace, structured.
    pub fn trace_events(&self) -> Vec<TraceEvent> {
        self.state().trace.events().cloned().collect()
    }

    /// A copy of the replica of `region_id` on `peer`.
    pub fn replica(&self, peer: PeerId, region_id: RegionId) -> Option<Replica> {
        self.state().plane.replica(peer, region_id).cloned()
    }

    /// A copy of a region's WAL.
    pub fn region_wal(&self, region_id: RegionId) -> Option<RegionWal> {
        self.state().plane.regions.get(&region_id).cloned()
    }

    /// Whether `peer` is up.
    pub fn is_alive(&self, peer: PeerId) -> bool {
        self.state()
            .plane
            .datanodes
            .get(&peer)
            .is_some_and(|datanode| datanode.alive)
    }

    /// The datanodes that would accept a write to `region_id` now.
    pub fn writers(&self, region_id: RegionId) -> Vec<PeerId> {
        let now_ms = self.now_ms();
        self.state().plane.writers(region_id, now_ms)
    }

    /// Why `peer` would reject a write to `region_id` now; `None` when it would accept it.
    pub fn write_rejection(&self, peer: PeerId, region_id: RegionId) -> Option<WriteRejection> {
        let now_ms = self.now_ms();
        self.state().plane.write_rejection(peer, region_id, now_ms)
    }

    /// The workload's writes per region.
    pub fn write_stats(&self) -> BTreeMap<RegionId, WriteStats> {
        self.state().write_stats.clone()
    }

    /// The violations seen so far (and those of the last [`SimCluster::final_check`]).
    pub fn violations(&self) -> Vec<Violation> {
        self.state().checker.violations()
    }

    /// Checks, now, that no acknowledged write is lost (against the current routes) and
    /// returns every violation of the run.
    pub fn final_check(&self) -> Vec<Violation> {
        let routes = self.region_routes_now();
        let now_ms = self.now_ms();
        let mut state = self.state();
        state.observe(now_ms);
        let Shared {
            plane,
            trace,
            checker,
            ..
        } = &mut *state;
        checker.check_lost_writes(plane, &routes, now_ms, trace);
        checker.violations()
    }

    /// Regions whose route is still Downgrading.
    pub fn downgrading_regions(&self) -> Vec<RegionId> {
        self.region_routes_now()
            .into_values()
            .filter(RegionRoute::is_leader_downgrading)
            .map(|route| route.region_id)
            .collect()
    }

    /// Counts one instruction sent to `peer` (a multi-region one counts once).
    fn count_sent(&self, peer: PeerId, kind: InstructionKind) {
        let mut state = self.state();
        let count = state.sent.entry((peer, kind)).or_default();
        *count = count.saturating_add(1);
    }

    /// The datanode side of one region's instruction: lets the datanode act, plans the
    /// answer.
    fn receive(self: &Arc<Self>, peer: PeerId, instruction: &Instruction, timeout_ms: u64) -> Plan {
        let now_ms = self.now_ms();
        let kind = instruction.kind();
        let mut state = self.state();
        let (alive, incarnation) = match state.plane.datanodes.get(&peer) {
            None => {
                state.trace.push(
                    now_ms,
                    format!(
                        "send {peer}.{}: unknown datanode",
                        describe_instruction(instruction)
                    ),
                );
                return Plan::Unreachable;
            }
            Some(datanode) => (datanode.alive, datanode.incarnation),
        };
        if state.partitioned(peer, now_ms) {
            state.trace.push(
                now_ms,
                format!(
                    "send {peer}.{}: unreachable (partitioned)",
                    describe_instruction(instruction)
                ),
            );
            return Plan::Unreachable;
        }
        if !alive {
            state.trace.push(
                now_ms,
                format!(
                    "send {peer}.{} (timeout {timeout_ms} ms): datanode down",
                    describe_instruction(instruction)
                ),
            );
            return Plan::NoAnswer;
        }
        let region_script = state
            .region_scripts
            .get_mut(&(peer, kind, instruction.region_id()))
            .and_then(VecDeque::pop_front);
        let script = match region_script {
            Some(reply) => Some(reply),
            None => state
                .scripts
                .get_mut(&(peer, kind))
                .and_then(VecDeque::pop_front),
        };
        let scripted = match &script {
            Some(reply) => format!(" [scripted {reply:?}]"),
            None => String::new(),
        };
        state.trace.push(
            now_ms,
            format!(
                "send {peer}.{} (timeout {timeout_ms} ms){scripted}",
                describe_instruction(instruction)
            ),
        );
        let (received, notes) = state.plane.receive(peer, instruction, script, now_ms);
        state.trace_all(now_ms, notes);
        state.observe(now_ms);
        match received {
            Received::Unreachable => Plan::Unreachable,
            Received::NoAnswer => Plan::NoAnswer,
            Received::Answer {
                after_ms: 0, reply, ..
            } => Plan::Immediate {
                arrival_ms: now_ms.saturating_add(state.delay_at(peer, now_ms)),
                reply,
            },
            Received::Answer {
                after_ms,
                reply,
                completion,
            } => {
                let reply_at_ms = now_ms.saturating_add(after_ms);
                let arrival_ms = reply_at_ms.saturating_add(state.delay_at(peer, reply_at_ms));
                let id = state.next_pending_id;
                state.next_pending_id = id.wrapping_add(1);
                state.pending.insert(
                    id,
                    PendingAnswer {
                        peer,
                        incarnation,
                        reply,
                        completion,
                        settled: None,
                        holders: 2,
                    },
                );
                drop(state);
                let weak = Arc::downgrade(self);
                let clock = self.clock.clone();
                self.spawn(async move {
                    SimCluster::sleep_until(&clock, reply_at_ms).await;
                    if let Some(cluster) = weak.upgrade() {
                        cluster.settle(id);
                        release_pending(&cluster.shared, id);
                    }
                });
                Plan::Later {
                    id,
                    reply_at_ms,
                    arrival_ms,
                }
            }
        }
    }

    /// The answer of a pending exchange at its time: the datanode's work is done (once), and
    /// the reply holds if the datanode is still the one that received it.
    fn settle(&self, id: u64) -> Option<Reply> {
        let now_ms = self.now_ms();
        let mut state = self.state();
        let Shared {
            plane,
            trace,
            checker,
            availability,
            pending,
            ..
        } = &mut *state;
        let answer = pending.get_mut(&id)?;
        if let Some(settled) = &answer.settled {
            return settled.clone();
        }
        let up = plane
            .datanodes
            .get(&answer.peer)
            .is_some_and(|datanode| datanode.alive && datanode.incarnation == answer.incarnation);
        let result = match (up, answer.completion) {
            (false, _) => None,
            (true, None) => Some(answer.reply.clone()),
            (true, Some(completion)) => {
                let mut notes = Vec::new();
                let reply = plane.complete_upgrade(answer.peer, completion, now_ms, &mut notes);
                for note in notes {
                    trace.push(now_ms, note);
                }
                observe_plane(plane, checker, availability, now_ms, trace);
                Some(reply)
            }
        };
        answer.settled = Some(result.clone());
        result
    }

    fn record(
        &self,
        sent_at_ms: u64,
        peer: PeerId,
        instruction: Instruction,
        outcome: &MailboxOutcome,
    ) {
        let now_ms = self.now_ms();
        let mut state = self.state();
        state.trace.push(
            now_ms,
            format!(
                "reply {peer}.{} {}: {}",
                instruction.kind(),
                instruction.region_id(),
                describe_outcome(outcome)
            ),
        );
        if state.mailbox_records.len() < MAILBOX_RECORDS_MAX {
            state.mailbox_records.push(MailboxRecord {
                sent_at_ms,
                answered_at_ms: now_ms,
                peer,
                instruction,
                outcome: outcome.clone(),
            });
        }
    }
}

fn format_regions(regions: &[RegionId]) -> String {
    let names: Vec<String> = regions.iter().map(ToString::to_string).collect();
    format!("[{}]", names.join(", "))
}

fn release_pending(shared: &Mutex<Shared>, id: u64) {
    let mut state = lock(shared);
    let done = match state.pending.get_mut(&id) {
        Some(answer) => {
            answer.holders = answer.holders.saturating_sub(1);
            answer.holders == 0
        }
        None => false,
    };
    if done {
        state.pending.remove(&id);
    }
}

/// Releases the sender's hold on a pending answer, even if the send is dropped midway.
struct PendingGuard {
    shared: Weak<Mutex<Shared>>,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            release_pending(&shared, self.id);
        }
    }
}

/// The mailbox to the simulated datanodes (see the module doc for timing).
#[derive(Debug)]
pub struct SimMailbox {
    cluster: Arc<SimCluster>,
}

impl SimMailbox {
    /// Waits for what `plan` promises, until `deadline_ms` at most.
    async fn outcome(&self, plan: Plan, deadline_ms: u64) -> MailboxOutcome {
        let cluster = &self.cluster;
        let clock = cluster.clock.clone();
        match plan {
            Plan::Unreachable => MailboxOutcome::Unreachable,
            Plan::NoAnswer => {
                SimCluster::sleep_until(&clock, deadline_ms).await;
                MailboxOutcome::Timeout
            }
            Plan::Immediate { reply, arrival_ms } => {
                if arrival_ms > deadline_ms {
                    SimCluster::sleep_until(&clock, deadline_ms).await;
                    MailboxOutcome::Timeout
                } else {
                    SimCluster::sleep_until(&clock, arrival_ms).await;
                    MailboxOutcome::Reply(reply)
                }
            }
            Plan::Later {
                id,
                reply_at_ms,
                arrival_ms,
            } => {
                if reply_at_ms > deadline_ms {
                    SimCluster::sleep_until(&clock, deadline_ms).await;
                    MailboxOutcome::Timeout
                } else {
                    SimCluster::sleep_until(&clock, reply_at_ms).await;
                    match cluster.settle(id) {
                        Some(reply) if arrival_ms <= deadline_ms => {
                            SimCluster::sleep_until(&clock, arrival_ms).await;
                            MailboxOutcome::Reply(reply)
                        }
                        _ => {
                            SimCluster::sleep_until(&clock, deadline_ms).await;
                            MailboxOutcome::Timeout
                        }
                    }
                }
            }
        }
    }

    /// The sender's hold on a later answer, released when the sender is done with it.
    fn guard(&self, plan: &Plan) -> Option<PendingGuard> {
        match plan {
            Plan::Later { id, .. } => Some(PendingGuard {
                shared: Arc::downgrade(&self.cluster.shared),
                id: *id,
            }),
            _ => None,
        }
    }
}

/// A multi-region instruction (`send_batch`, a batch's step) counts once in `sent`; the
/// datanode takes each region's part as it would a single instruction (scripts with a
/// `region` answer that part only), and the answer comes back when every part is answered
/// or timed out.
#[async_trait]
impl Mailbox for SimMailbox {
    async fn send(&self, peer: &Peer, instruction: Instruction, timeout_ms: u64) -> MailboxOutcome {
        let cluster = &self.cluster;
        let sent_at_ms = cluster.now_ms();
        let deadline_ms = sent_at_ms.saturating_add(timeout_ms);
        cluster.count_sent(peer.id, instruction.kind());
        let plan = cluster.receive(peer.id, &instruction, timeout_ms);
        let _guard = self.guard(&plan);
        let outcome = self.outcome(plan, deadline_ms).await;
        cluster.record(sent_at_ms, peer.id, instruction, &outcome);
        outcome
    }

    async fn send_batch(
        &self,
        peer: &Peer,
        instructions: Vec<Instruction>,
        timeout_ms: u64,
    ) -> Vec<MailboxOutcome> {
        let cluster = &self.cluster;
        let sent_at_ms = cluster.now_ms();
        let deadline_ms = sent_at_ms.saturating_add(timeout_ms);
        let Some(kind) = instructions.first().map(Instruction::kind) else {
            return Vec::new();
        };
        cluster.count_sent(peer.id, kind);
        let plans: Vec<Plan> = instructions
            .iter()
            .map(|instruction| cluster.receive(peer.id, instruction, timeout_ms))
            .collect();
        let _guards: Vec<_> = plans.iter().filter_map(|plan| self.guard(plan)).collect();
        // Each part's times are absolute: waiting for them one after another ends when the
        // last part is answered (a later answer is settled at its time by the datanode).
        let mut outcomes = Vec::with_capacity(plans.len());
        for plan in plans {
            outcomes.push(self.outcome(plan, deadline_ms).await);
        }
        for (instruction, outcome) in instructions.into_iter().zip(&outcomes) {
            cluster.record(sent_at_ms, peer.id, instruction, outcome);
        }
        outcomes
    }
}

#[derive(Debug, Clone, Copy)]
struct FaultBudget {
    at_ms: u64,
    remaining: u64,
}

#[derive(Debug, Default)]
struct MetadataFaults {
    cas_conflicts: Vec<FaultBudget>,
    unavailable: Vec<FaultBudget>,
    /// Every CAS in one of these `[from, until)` windows fails.
    cas_conflict_windows: Vec<(u64, u64)>,
    /// Every operation in one of these `[from, until)` windows fails.
    unavailable_windows: Vec<(u64, u64)>,
}

fn in_window(windows: &[(u64, u64)], now_ms: u64) -> bool {
    windows
        .iter()
        .any(|&(from_ms, until_ms)| from_ms <= now_ms && now_ms < until_ms)
}

/// Takes one fault from the first budget that has started and is not used up.
fn take_fault(budgets: &mut [FaultBudget], now_ms: u64) -> bool {
    match budgets
        .iter_mut()
        .find(|budget| budget.at_ms <= now_ms && budget.remaining > 0)
    {
        Some(budget) => {
            budget.remaining -= 1;
            true
        }
        None => false,
    }
}

/// The metadata store the engine's procedures use: a [`MemoryMetadataStore`] with injected
/// faults. Setup and inspection methods bypass the faults.
pub struct SimMetadataStore {
    inner: Arc<MemoryMetadataStore>,
    // A std Mutex: short critical sections, never held across an await.
    faults: Mutex<MetadataFaults>,
    shared: Arc<Mutex<Shared>>,
    clock: TokioClock,
}

impl std::fmt::Debug for SimMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimMetadataStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl SimMetadataStore {
    fn faults(&self) -> MutexGuard<'_, MetadataFaults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn trace(&self, text: String) {
        let now_ms = self.clock.elapsed_ms();
        lock(&self.shared).trace.push(now_ms, text);
    }

    /// The store without faults.
    pub fn inner(&self) -> Arc<MemoryMetadataStore> {
        Arc::clone(&self.inner)
    }

    /// From `at_ms` on, the next `count` table-route CAS writes fail with a conflict.
    pub fn inject_cas_conflicts(&self, count: u64, at_ms: u64) {
        self.faults().cas_conflicts.push(FaultBudget {
            at_ms,
            remaining: count,
        });
    }

    /// From `at_ms` on, the next `count` reads or writes fail with a store error.
    pub fn inject_unavailable(&self, count: u64, at_ms: u64) {
        self.faults().unavailable.push(FaultBudget {
            at_ms,
            remaining: count,
        });
    }

    /// Every table-route CAS between `at_ms` and `until_ms` fails with a conflict.
    pub fn inject_cas_conflicts_until(&self, at_ms: u64, until_ms: u64) {
        self.faults().cas_conflict_windows.push((at_ms, until_ms));
    }

    /// Every read or write between `at_ms` and `until_ms` fails with a store error.
    pub fn inject_unavailable_until(&self, at_ms: u64, until_ms: u64) {
        self.faults().unavailable_windows.push((at_ms, until_ms));
    }

    /// Injected faults not used yet: (CAS conflicts, unavailable operations).
    pub fn faults_left(&self) -> (u64, u64) {
        let faults = self.faults();
        let sum = |budgets: &[FaultBudget]| {
            budgets
                .iter()
                .map(|budget| budget.remaining)
                .fold(0u64, u64::saturating_add)
        };
        (sum(&faults.cas_conflicts), sum(&faults.unavailable))
    }

    /// Sets a table's route, bumping its version (no fault).
    pub fn put_table_route(&self, table_id: TableId, route: TableRoute) -> u64 {
        self.inner.put_table_route(table_id, route)
    }

    /// Sets a datanode table (no fault).
    pub fn put_datanode_table(&self, table: DatanodeTable) {
        self.inner.put_datanode_table(table)
    }

    /// Sets a table info (no fault).
    pub fn put_table_info(&self, info: TableInfo) {
        self.inner.put_table_info(info)
    }

    /// A table's current route (no fault).
    pub fn route_now(&self, table_id: TableId) -> Option<VersionedTableRoute> {
        self.inner.table_route_now(table_id)
    }

    /// A region's current route (no fault).
    pub fn region_route_now(&self, region_id: RegionId) -> Option<RegionRoute> {
        self.route_now(region_id.table_id())
            .and_then(|versioned| versioned.route.region_route(region_id).cloned())
    }

    fn check_available(&self, operation: &str) -> Result<(), MetadataError> {
        let now_ms = self.clock.elapsed_ms();
        let failed = {
            let mut faults = self.faults();
            in_window(&faults.unavailable_windows, now_ms)
                || take_fault(&mut faults.unavailable, now_ms)
        };
        if failed {
            self.trace(format!("metadata {operation}: injected store error"));
            return Err(MetadataError::new(
                MetadataErrorKind::Unavailable,
                format!("injected fault: metadata store unavailable ({operation})"),
            ));
        }
        Ok(())
    }
}

fn describe_version(version: Option<u64>) -> String {
    version.map_or_else(|| "no route".to_string(), |version| format!("v{version}"))
}

fn describe_route(route: &TableRoute) -> String {
    match route {
        TableRoute::Logical { physical_table_id } => format!("logical of {physical_table_id}"),
        TableRoute::Physical { region_routes } => {
            let parts: Vec<String> = region_routes
                .iter()
                .map(|route| {
                    let followers: Vec<PeerId> =
                        route.follower_peers.iter().map(|peer| peer.id).collect();
                    format!(
                        "{} leader={}{} followers={followers:?}",
                        route.region_id,
                        route
                            .leader_id()
                            .map_or_else(|| "none".to_string(), |id| id.to_string()),
                        if route.is_leader_downgrading() {
                            " Downgrading"
                        } else {
                            ""
                        }
                    )
                })
                .collect();
            parts.join("; ")
        }
    }
}

#[async_trait]
impl MetadataStore for SimMetadataStore {
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError> {
        self.check_available("table_route")?;
        Ok(self.inner.table_route_now(table_id))
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        self.check_available("cas_table_route")?;
        let now_ms = self.clock.elapsed_ms();
        let conflict = {
            let mut faults = self.faults();
            in_window(&faults.cas_conflict_windows, now_ms)
                || take_fault(&mut faults.cas_conflicts, now_ms)
        };
        if conflict {
            // A concurrent writer won: same content, newer version.
            let actual_version = self
                .inner
                .table_route_now(table_id)
                .map(|current| self.inner.put_table_route(table_id, current.route));
            self.trace(format!(
                "metadata cas table {table_id} v{expected_version}: injected conflict (now {})",
                describe_version(actual_version)
            ));
            return Ok(Err(CasConflict {
                table_id,
                expected_version,
                actual_version,
            }));
        }
        let description = describe_route(&route);
        let result = self
            .inner
            .cas_table_route(table_id, expected_version, route, region_moves)
            .await?;
        match &result {
            Ok(version) => self.trace(format!(
                "metadata cas table {table_id} v{expected_version} -> v{version}: {description}"
            )),
            Err(conflict) => self.trace(format!(
                "metadata cas table {table_id} v{expected_version}: conflict (now {})",
                describe_version(conflict.actual_version)
            )),
        }
        Ok(result)
    }

    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, MetadataError> {
        self.check_available("datanode_table")?;
        self.inner.datanode_table(datanode_id, table_id).await
    }

    async fn table_info(&self, table_id: TableId) -> Result<Option<TableInfo>, MetadataError> {
        self.check_available("table_info")?;
        self.inner.table_info(table_id).await
    }
}

/// When datanodes last heartbeated, as the simulated control plane saw it (epoch ms).
pub struct SimLeaseRenewals {
    shared: Arc<Mutex<Shared>>,
    epoch_base_ms: u64,
}

impl std::fmt::Debug for SimLeaseRenewals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimLeaseRenewals").finish_non_exhaustive()
    }
}

#[async_trait]
impl LeaseRenewals for SimLeaseRenewals {
    async fn last_heartbeat_ms(&self, peer: PeerId) -> Option<u64> {
        lock(&self.shared)
            .last_heartbeats
            .get(&peer)
            .map(|at_ms| self.epoch_base_ms.saturating_add(*at_ms))
    }
}

/// Hooks that record every call (and trace it).
pub struct SimHooks {
    shared: Arc<Mutex<Shared>>,
    clock: TokioClock,
}

impl std::fmt::Debug for SimHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHooks").finish_non_exhaustive()
    }
}

impl SimHooks {
    fn record(&self, call: Hook) {
        let now_ms = self.clock.elapsed_ms();
        let mut state = lock(&self.shared);
        state.trace.push(now_ms, format!("hook {call:?}"));
        state.hook_calls.push(call);
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Hook> {
        lock(&self.shared).hook_calls.clone()
    }
}

#[async_trait]
impl ClusterHooks for SimHooks {
    async fn register_failure_detector(&self, peer: PeerId, region_id: RegionId) {
        self.record(Hook::RegisterFailureDetector { peer, region_id });
    }

    async fn deregister_failure_detector(&self, peer: PeerId, region_id: RegionId) {
        self.record(Hook::DeregisterFailureDetector { peer, region_id });
    }

    async fn invalidate_table_cache(&self, table_id: TableId) {
        self.record(Hook::InvalidateTableCache { table_id });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_writes_due_spread_exactly_over_ticks() {
        let total: u64 = (1..=100)
            .map(|tick| writes_due(333, tick * WRITE_TICK_MS, WRITE_TICK_MS))
            .sum();
        assert_eq!(total, 333);
        assert_eq!(writes_due(200, 10, 10), 2);
        assert_eq!(writes_due(50, 10, 10), 0);
        assert_eq!(writes_due(50, 20, 10), 1);
        assert_eq!(writes_due(u64::MAX, 10, 10), u64::MAX / 100);
    }

    #[test]
    fn sim_setup_rejects_inconsistent_clusters() {
        let region = |leader, followers: Vec<PeerId>| RegionSetup {
            number: 1,
            leader,
            followers,
            last_entry_id: 0,
        };
        let setup = |peers: Vec<PeerId>, regions| ClusterSetup {
            peers,
            tables: vec![TableSetup {
                id: 5,
                regions,
                ..TableSetup::default()
            }],
            ..ClusterSetup::default()
        };
        assert_eq!(validate(&setup(vec![], vec![])), Err(SetupError::NoPeers));
        assert_eq!(
            validate(&setup(vec![1, 1], vec![])),
            Err(SetupError::DuplicatePeer { peer: 1 })
        );
        assert_eq!(
            validate(&setup(vec![1], vec![region(2, vec![])])),
            Err(SetupError::UnknownPeer {
                region_id: RegionId::new(5, 1),
                peer: 2
            })
        );
        assert_eq!(
            validate(&setup(vec![1, 2], vec![region(1, vec![1])])),
            Err(SetupError::RepeatedReplica {
                region_id: RegionId::new(5, 1),
                peer: 1
            })
        );
        assert_eq!(
            validate(&setup(vec![1], vec![region(1, vec![]), region(1, vec![])])),
            Err(SetupError::DuplicateRegion {
                region_id: RegionId::new(5, 1)
            })
        );
        assert_eq!(
            validate(&setup(vec![1, 2], vec![region(1, vec![2])])),
            Ok(())
        );
    }
}
