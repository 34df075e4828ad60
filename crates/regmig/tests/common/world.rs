//! A small deterministic fake world to drive the pure migration model.
//!
//! The world holds what the engine would talk to: a versioned table-route store, a
//! datanode-table store, a mailbox whose answers are scripted per instruction kind, scripted
//! compare-and-swap refusals and metadata-store failures, and a virtual clock. [`World::run`]
//! loops decide → append the events → perform the action → next input, until the procedure
//! finishes, a stop condition holds, or a step bound is reached.
//!
//! Time: `now_ms` only moves when the world acts. A send that is answered takes
//! `reply_delay_ms` (a reply slower than the send's timeout becomes a timeout), a timeout takes
//! the send's mailbox timeout (at most one mailbox round trip for a downgrade or an upgrade, not
//! their whole flush or replay timeout; `timeout_elapsed_ms` overrides it, like the original's
//! mocked timeouts that fail at once), an unreachable peer takes `unreachable_delay_ms`, reads,
//! writes and locks take `io_delay_ms`, and a wait jumps to its `until_ms`.
//!
//! Datanodes: by default each send is answered afresh after `reply_delay_ms`. With
//! [`World::datanode_keeps_working`], a downgrade or an upgrade whose mailbox timed out keeps
//! running on its datanode (it was told a flush or replay timeout longer than the mailbox's),
//! so the next send of it is answered once `reply_delay_ms` has passed since the first
//! unanswered send: the next attempt finds the datanode further.
//!
//! Crashes: stop after event k ([`Stop::AfterEvents`]) or when a predicate holds
//! ([`Stop::When`]), optionally after the world performed
//! the pending action (a CAS applied before the crash stays applied though its event is
//! lost), then fold the prefix and feed `Observation::Resumed` with [`World::resume`], on the
//! same world.

use std::collections::{BTreeMap, VecDeque};

use regmig::cluster::memory::apply_region_move;
use regmig::domain::{
    DatanodeTable, Instruction, InstructionKind, MailboxOutcome, Peer, PeerId, RegionId,
    RegionRoute, Reply, TableId, TableRoute, VersionedTableRoute, WalKind,
};
use regmig::migration::{
    decide, fold, Action, Decision, Hook, Input, MigrationEvent, MigrationState, MigrationTask,
    Observation, Outcome, RetryPolicy, RouteChange, TimedEvent, DEFAULT_TIMEOUT_MS,
};

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
/// The `operation` of a failed route read.
pub const READ_ROUTE_OPERATION: &str = "read table route";
/// The `operation` of a failed datanode-table read.
pub const READ_DATANODE_TABLE_OPERATION: &str = "read datanode table";
/// The `operation` of a failed route compare-and-swap.
pub const CAS_ROUTE_OPERATION: &str = "compare-and-swap table route";

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
/// Each method returns `None` to fall back to the world's queues and defaults.
pub trait Oracle {
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
pub type StopPredicate = Box<dyn Fn(&MigrationState, &Action) -> bool>;

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
    pub fn before(predicate: impl Fn(&MigrationState, &Action) -> bool + 'static) -> Self {
        Stop::When {
            predicate: Box::new(predicate),
            perform: false,
        }
    }

    /// Stops right after performing the action for which `predicate` holds, its observation
    /// lost.
    pub fn after_performing(
        predicate: impl Fn(&MigrationState, &Action) -> bool + 'static,
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
    /// Every action decided in this run, in order (the pending one included).
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
    /// Jitter values of the next inputs; an empty queue gives `default_jitter`.
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
    /// How long a read, a write or a lock takes.
    pub io_delay_ms: u64,
    /// The old leader's last entry id in default downgrade replies.
    pub last_entry_id: Option<u64>,
    /// State-keyed outcomes, consulted before the queues.
    pub oracle: Option<Box<dyn Oracle>>,
    /// A bound on the decisions of one run.
    pub steps_max: usize,
    /// Every instruction received, in order.
    pub sent: Vec<Sent>,
    /// Every hook the decisions asked for, in order.
    pub hooks: Vec<Hook>,
    /// What a read of a datanode's last heartbeat answers (R2.3); `None`: unknown.
    pub last_heartbeat_ms: Option<u64>,
}

impl Default for World {
    fn default() -> Self {
        World::new(region_route(Some(FROM), &[]))
    }
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

    /// Performs `action` (decided on `log`) and runs on from its observation, to the end.
    pub fn continue_run(&mut self, log: Vec<TimedEvent>, action: &Action) -> Run {
        let state = fold(&log);
        let observation = self
            .perform(&state, action)
            .expect("continue_run needs an action other than Finish");
        self.run(log, observation, Stop::Never)
    }

    /// An input with the next jitter value.
    pub fn input(&mut self, state: &MigrationState, observation: Observation) -> Input {
        let oracle_jitter = self.oracle.as_mut().and_then(|oracle| oracle.jitter(state));
        let jitter_random = oracle_jitter
            .or_else(|| self.jitter.pop_front())
            .unwrap_or(self.default_jitter);
        Input {
            observation,
            jitter_random,
        }
    }

    /// Decides at the world's time and appends the events to `log` and `state`.
    pub fn step(
        &mut self,
        log: &mut Vec<TimedEvent>,
        state: &mut MigrationState,
        input: Input,
    ) -> Decision {
        let decision = decide(state, self.now_ms, input.clone()).unwrap_or_else(|error| {
            panic!(
                "decide refused {input:?} at {} in state {}: {error}; log tail: {:#?}",
                self.now_ms,
                state.state,
                &log[log.len().saturating_sub(6)..]
            )
        });
        for event in &decision.events {
            state.apply(self.now_ms, event);
            log.push(TimedEvent {
                at_ms: self.now_ms,
                event: event.clone(),
            });
        }
        self.hooks.extend(decision.hooks.iter().cloned());
        decision
    }

    /// Runs from `log`, feeding `first` and then what the world answers to each action.
    pub fn run(&mut self, mut log: Vec<TimedEvent>, first: Observation, stop: Stop) -> Run {
        let mut state = fold(&log);
        let mut input = self.input(&state, first);
        let mut actions = Vec::new();
        for _ in 0..self.steps_max {
            let decision = self.step(&mut log, &mut state, input);
            let action = decision.action;
            actions.push(action.clone());
            if let Action::Finish { outcome } = action {
                return self.finish(log, actions, Some(outcome), false);
            }
            let (stopped, perform) = match &stop {
                Stop::Never => (false, false),
                Stop::AfterEvents { count, perform } => (log.len() >= *count, *perform),
                Stop::When { predicate, perform } => (predicate(&state, &action), *perform),
            };
            if stopped {
                if perform {
                    self.perform(&state, &action);
                }
                return self.finish(log, actions, None, true);
            }
            let observation = self
                .perform(&state, &action)
                .expect("only Finish has no observation");
            input = self.input(&state, observation);
        }
        panic!(
            "no end after {} decisions; log tail: {:#?}",
            self.steps_max,
            &log[log.len().saturating_sub(10)..]
        );
    }

    fn finish(
        &self,
        log: Vec<TimedEvent>,
        actions: Vec<Action>,
        outcome: Option<Outcome>,
        stopped: bool,
    ) -> Run {
        Run {
            log,
            last_action: actions.last().cloned(),
            actions,
            outcome,
            route: self.route(),
            stopped,
        }
    }

    /// Performs an action against the world; returns what the procedure observes.
    pub fn perform(&mut self, state: &MigrationState, action: &Action) -> Option<Observation> {
        Some(match action.clone() {
            Action::AcquireLocks { lock_keys } => {
                self.now_ms += self.io_delay_ms;
                Observation::LocksAcquired {
                    lock_keys,
                    waited_ms: 0,
                }
            }
            Action::ReadLastHeartbeat { peer } => {
                self.now_ms += self.io_delay_ms;
                Observation::LastHeartbeatRead {
                    peer,
                    last_heartbeat_ms: self.last_heartbeat_ms,
                }
            }
            Action::ReadRoute { table_id } => {
                self.now_ms += self.io_delay_ms;
                let script = self
                    .oracle
                    .as_mut()
                    .and_then(|oracle| oracle.route_read(state))
                    .or_else(|| self.route_reads.pop_front())
                    .unwrap_or(ReadScript::Ok);
                match script {
                    ReadScript::StoreError => store_failure(READ_ROUTE_OPERATION),
                    ReadScript::Ok => Observation::RouteRead {
                        table_id,
                        route: self.routes.get(&table_id).cloned(),
                    },
                }
            }
            Action::ReadDatanodeTable {
                datanode_id,
                table_id,
            } => {
                self.now_ms += self.io_delay_ms;
                let script = self
                    .oracle
                    .as_mut()
                    .and_then(|oracle| oracle.datanode_table_read(state))
                    .or_else(|| self.datanode_table_reads.pop_front())
                    .unwrap_or(ReadScript::Ok);
                match script {
                    ReadScript::StoreError => store_failure(READ_DATANODE_TABLE_OPERATION),
                    ReadScript::Ok => Observation::DatanodeTableRead {
                        datanode_id,
                        table_id,
                        datanode_table: self.datanode_tables.get(&(datanode_id, table_id)).cloned(),
                    },
                }
            }
            Action::Send {
                peer,
                instruction,
                timeout_ms,
            } => {
                let kind = instruction.kind();
                let scripted = self
                    .oracle
                    .as_mut()
                    .and_then(|oracle| oracle.mailbox(state, &instruction));
                let (outcome, delay_ms) = match scripted {
                    Some((outcome, delay_ms)) => (outcome, delay_ms),
                    None => (
                        self.mailbox
                            .get_mut(&kind)
                            .and_then(VecDeque::pop_front)
                            .unwrap_or_else(|| {
                                MailboxOutcome::Reply(ok_reply(kind, self.last_entry_id))
                            }),
                        None,
                    ),
                };
                let mut reply_delay_ms = delay_ms.unwrap_or(self.reply_delay_ms);
                let keeps_working = self.datanode_keeps_working
                    && matches!(
                        kind,
                        InstructionKind::DowngradeRegion | InstructionKind::UpgradeRegion
                    )
                    && matches!(outcome, MailboxOutcome::Reply(_));
                if keeps_working {
                    let since_ms = *self
                        .working_since
                        .entry((peer.id, kind))
                        .or_insert(self.now_ms);
                    reply_delay_ms = (since_ms + reply_delay_ms).saturating_sub(self.now_ms);
                    if reply_delay_ms <= timeout_ms {
                        self.working_since.remove(&(peer.id, kind));
                    }
                }
                let (outcome, elapsed_ms) = match outcome {
                    MailboxOutcome::Reply(_) if reply_delay_ms > timeout_ms => {
                        (MailboxOutcome::Timeout, timeout_ms)
                    }
                    MailboxOutcome::Reply(reply) => (MailboxOutcome::Reply(reply), reply_delay_ms),
                    MailboxOutcome::Timeout => (
                        MailboxOutcome::Timeout,
                        self.timeout_elapsed_ms.unwrap_or(timeout_ms),
                    ),
                    MailboxOutcome::Unreachable => {
                        (MailboxOutcome::Unreachable, self.unreachable_delay_ms)
                    }
                };
                self.sent.push(Sent {
                    at_ms: self.now_ms,
                    peer: peer.id,
                    instruction,
                    timeout_ms,
                    outcome: outcome.clone(),
                });
                self.now_ms += elapsed_ms;
                Observation::Mailbox(outcome)
            }
            Action::CasRoute {
                table_id,
                expected_version,
                route,
                change,
                region_move,
            } => {
                self.now_ms += self.io_delay_ms;
                let script = self
                    .oracle
                    .as_mut()
                    .and_then(|oracle| oracle.cas(state, change))
                    .or_else(|| self.cas.pop_front())
                    .unwrap_or(CasScript::Apply);
                if script == CasScript::StoreError {
                    return Some(store_failure(CAS_ROUTE_OPERATION));
                }
                if script == CasScript::Refuse {
                    if let Some(current) = self.routes.get_mut(&table_id) {
                        current.version += 1;
                    }
                }
                let actual_version = self.routes.get(&table_id).map(|r| r.version);
                if actual_version != Some(expected_version) {
                    return Some(Observation::CasRefused {
                        table_id,
                        change,
                        expected_version,
                        actual_version,
                    });
                }
                let to_version = expected_version + 1;
                self.routes.insert(
                    table_id,
                    VersionedTableRoute {
                        table_id,
                        version: to_version,
                        route,
                    },
                );
                if let Some(region_move) = region_move {
                    apply_region_move(&mut self.datanode_tables, table_id, &region_move);
                }
                Observation::CasApplied {
                    table_id,
                    change,
                    from_version: expected_version,
                    to_version,
                }
            }
            Action::WaitUntil { until_ms, .. } => {
                self.now_ms = self.now_ms.max(until_ms);
                Observation::WaitElapsed
            }
            Action::Finish { .. } => return None,
        })
    }
}

fn store_failure(operation: &str) -> Observation {
    Observation::MetadataFailed {
        operation: operation.to_string(),
        error: STORE_ERROR.to_string(),
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
