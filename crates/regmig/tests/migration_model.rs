//! One test per branch of the region-migration spec (`shared/spec/region-migration.md`),
//! driving the pure model against the fake world of `common::world`. Each test checks the
//! exact events and the exact next action of the decision under test.

mod common;

use common::world::*;
use regmig::domain::{
    Instruction, InstructionKind, LeaderState, MailboxOutcome, Peer, PeerId, RegionMove,
    RegionRoute, Reply, TableRoute, VersionedTableRoute, WalKind,
};
use regmig::migration::decide::{
    CLOSE_REGION_TIMEOUT_MS, FLUSH_LEADER_TIMEOUT_MS, MAILBOX_RTT_MS, OPEN_CANDIDATE_TIMEOUT_MS,
    REGION_LEASE_MS, ROLLBACK_BACKOFF_MAX_MS,
};
use regmig::migration::{
    check_cancel, decide, fold, replay, table_lock_key, Action, DecideError, Decision, ErrorKind,
    Hook, Input, LockMode, MigrationEvent, MigrationState, Observation, Outcome, RetryPolicy,
    RouteChange, StateName, Status, StepError, TimedEvent, WaitReason, BEHAVIOUR_REVISION,
};

// ---- Driving ---------------------------------------------------------------------------

/// A procedure stopped at a decision whose action is not performed yet.
struct Point {
    log: Vec<TimedEvent>,
    state: MigrationState,
    action: Action,
}

/// Submits `setup` and runs until `predicate` holds on the state and the pending action.
fn drive(
    world: &mut World,
    setup: &Setup,
    predicate: impl Fn(&MigrationState, &Action) -> bool + Send + 'static,
) -> Point {
    let log = world.submit(setup);
    let run = world.run(log, Observation::Begin, Stop::before(predicate));
    assert!(
        run.stopped,
        "the run ended ({:?}) before the point; log: {:#?}",
        run.outcome, run.log
    );
    Point {
        state: run.state(),
        action: run.last_action.expect("a stopped run has a pending action"),
        log: run.log,
    }
}

impl Point {
    /// Decides `observation` at the world's time, with no jitter.
    fn decide(&mut self, world: &mut World, observation: Observation) -> Decision {
        self.decide_with_jitter(world, observation, 0)
    }

    fn decide_with_jitter(
        &mut self,
        world: &mut World,
        observation: Observation,
        jitter_random: u32,
    ) -> Decision {
        let input = Input {
            observation,
            jitter_random,
        };
        let hooks_before = world.hooks.len();
        let run = world.run(self.log.clone(), input, Stop::before(|_, _| true));
        self.took(world, run, hooks_before)
    }

    /// Decides on a successful read of the world's route now.
    fn read_route(&mut self, world: &mut World) -> Decision {
        let observation = read_route_observation(world);
        self.decide(world, observation)
    }

    /// Performs the pending action on the world and decides on what it observed.
    fn perform(&mut self, world: &mut World) -> Decision {
        let hooks_before = world.hooks.len();
        let run = world.perform_and_run(self.log.clone(), &self.action, Stop::before(|_, _| true));
        self.took(world, run, hooks_before)
    }

    /// Moves the point to where `run` (one decision) stopped; returns that decision.
    fn took(&mut self, world: &World, run: Run, hooks_before: usize) -> Decision {
        let decision = Decision {
            events: run.log[self.log.len()..]
                .iter()
                .map(|timed| timed.event.clone())
                .collect(),
            hooks: world.hooks[hooks_before..].to_vec(),
            action: run.last_action.clone().expect("one decision was taken"),
        };
        self.state = run.state();
        self.action = decision.action.clone();
        self.log = run.log;
        decision
    }

    /// Runs on to the end.
    fn finish(self, world: &mut World) -> Run {
        world.continue_run(self.log, &self.action)
    }
}

fn reading_route_in(name: StateName) -> impl Fn(&MigrationState, &Action) -> bool {
    move |state, action| {
        state.state == name
            && state.rollback.is_none()
            && matches!(action, Action::ReadRoute { .. })
    }
}

fn rollback_reading_route(state: &MigrationState, action: &Action) -> bool {
    state.rollback.is_some() && matches!(action, Action::ReadRoute { .. })
}

fn sending(kind: InstructionKind) -> impl Fn(&MigrationState, &Action) -> bool {
    move |_, action| matches!(action, Action::Send { instruction, .. } if instruction.kind() == kind)
}

fn sending_attempt(
    kind: InstructionKind,
    attempt: u32,
) -> impl Fn(&MigrationState, &Action) -> bool {
    move |state, action| {
        matches!(action, Action::Send { instruction, .. } if instruction.kind() == kind)
            && state.outstanding.as_ref().map(|o| o.attempt) == Some(attempt)
    }
}

fn cas_of(change: RouteChange) -> impl Fn(&MigrationState, &Action) -> bool {
    move |_, action| matches!(action, Action::CasRoute { change: c, .. } if *c == change)
}

fn waiting_for(reason: WaitReason) -> impl Fn(&MigrationState, &Action) -> bool {
    move |_, action| matches!(action, Action::WaitUntil { reason: r, .. } if *r == reason)
}

// ---- Expected values -------------------------------------------------------------------

fn entered(state: StateName) -> MigrationEvent {
    MigrationEvent::StateEntered {
        state,
        reason: None,
    }
}

fn entered_abort(reason: &str) -> MigrationEvent {
    MigrationEvent::StateEntered {
        state: StateName::Abort,
        reason: Some(reason.to_string()),
    }
}

fn route_read(route: Option<VersionedTableRoute>) -> MigrationEvent {
    MigrationEvent::RouteRead {
        table_id: TABLE_ID,
        version: route.as_ref().map(|r| r.version),
        route: route.map(|r| r.route),
    }
}

fn read_route_observation(world: &World) -> Observation {
    Observation::RouteRead {
        table_id: TABLE_ID,
        route: world.route(),
    }
}

fn step_error(kind: ErrorKind, message: &str, retryable: bool) -> StepError {
    StepError {
        kind,
        message: message.to_string(),
        retryable,
    }
}

fn rollback_started(kind: ErrorKind, message: &str) -> MigrationEvent {
    MigrationEvent::RollbackStarted {
        error: step_error(kind, message, false),
    }
}

fn retry_scheduled(
    attempt: u32,
    delay_ms: u64,
    now_ms: u64,
    jitter_random: u32,
    error: StepError,
) -> MigrationEvent {
    MigrationEvent::RetryScheduled {
        attempt,
        delay_ms,
        due_at_ms: now_ms + delay_ms,
        jitter_random,
        rollback: false,
        error,
    }
}

fn rollback_retry_scheduled(
    attempt: u32,
    delay_ms: u64,
    now_ms: u64,
    error: StepError,
) -> MigrationEvent {
    MigrationEvent::RetryScheduled {
        attempt,
        delay_ms,
        due_at_ms: now_ms + delay_ms,
        jitter_random: 0,
        rollback: true,
        error,
    }
}

fn sent(
    peer: PeerId,
    instruction: Instruction,
    timeout_ms: u64,
    now_ms: u64,
    attempt: u32,
) -> MigrationEvent {
    MigrationEvent::InstructionSent {
        peer: Peer::sim(peer),
        instruction,
        timeout_ms,
        deadline_ms: now_ms + timeout_ms,
        attempt,
        resend: false,
        regions: Vec::new(),
    }
}

fn send_action(peer: PeerId, instruction: Instruction, timeout_ms: u64) -> Action {
    Action::Send {
        peer: Peer::sim(peer),
        instruction,
        timeout_ms,
    }
}

fn open_instruction() -> Instruction {
    let table = from_datanode_table();
    Instruction::OpenRegion {
        region_id: region_id(),
        engine: table.engine,
        storage_path: table.storage_path,
        region_options: table.region_options,
        region_wal_options: [(REGION_NUMBER, "wal-of-region-1".to_string())].into(),
        skip_wal_replay: true,
    }
}

fn downgrade_instruction(flush_timeout_ms: u64) -> Instruction {
    Instruction::DowngradeRegion {
        region_id: region_id(),
        flush_timeout_ms,
        reject_write: true,
    }
}

fn upgrade_instruction(last_entry_id: Option<u64>, replay_timeout_ms: u64) -> Instruction {
    Instruction::UpgradeRegion {
        region_id: region_id(),
        last_entry_id,
        replay_timeout_ms,
        location_id: Some(FROM),
    }
}

fn flush_instruction() -> Instruction {
    Instruction::FlushRegion {
        region_id: region_id(),
        timeout_ms: FLUSH_LEADER_TIMEOUT_MS,
    }
}

fn close_instruction() -> Instruction {
    Instruction::CloseRegion {
        region_id: region_id(),
    }
}

fn reply(reply: Reply) -> Observation {
    Observation::Mailbox(MailboxOutcome::Reply(reply))
}

fn downgrade_reply(last_entry_id: Option<u64>, exists: bool, error: Option<&str>) -> Reply {
    Reply::DowngradeRegion {
        last_entry_id,
        exists,
        error: error.map(str::to_string),
    }
}

fn upgrade_reply(ready: bool, exists: bool, error: Option<&str>) -> Reply {
    Reply::UpgradeRegion {
        ready,
        exists,
        error: error.map(str::to_string),
    }
}

fn reply_received(peer: PeerId, reply: Reply) -> MigrationEvent {
    MigrationEvent::ReplyReceived { peer, reply }
}

fn timed(operation: InstructionKind, elapsed_ms: u64) -> MigrationEvent {
    MigrationEvent::OperationTimed {
        operation,
        elapsed_ms,
    }
}

fn wait_started(until_ms: u64, reason: WaitReason) -> MigrationEvent {
    MigrationEvent::WaitStarted { until_ms, reason }
}

fn wait_action(until_ms: u64, reason: WaitReason) -> Action {
    Action::WaitUntil { until_ms, reason }
}

fn finished(outcome: Outcome, error: Option<&str>) -> MigrationEvent {
    MigrationEvent::Finished {
        outcome,
        error: error.map(str::to_string),
    }
}

fn cas_applied(change: RouteChange, from_version: u64) -> MigrationEvent {
    MigrationEvent::RouteCasApplied {
        table_id: TABLE_ID,
        change,
        from_version,
        to_version: from_version + 1,
    }
}

fn cas_applied_observation(change: RouteChange, from_version: u64) -> Observation {
    Observation::CasApplied {
        table_id: TABLE_ID,
        change,
        from_version,
        to_version: from_version + 1,
    }
}

fn cas_refused_observation(change: RouteChange, expected_version: u64) -> Observation {
    Observation::CasRefused {
        table_id: TABLE_ID,
        change,
        expected_version,
        actual_version: Some(expected_version + 1),
    }
}

fn cas_refused(change: RouteChange, expected_version: u64) -> MigrationEvent {
    MigrationEvent::RouteCasRefused {
        table_id: TABLE_ID,
        change,
        expected_version,
        actual_version: Some(expected_version + 1),
    }
}

fn store_failed(operation: &str) -> Observation {
    Observation::MetadataFailed {
        operation: operation.to_string(),
        error: STORE_ERROR.to_string(),
    }
}

fn metadata_failed(operation: &str) -> MigrationEvent {
    MigrationEvent::MetadataFailed {
        operation: operation.to_string(),
        error: STORE_ERROR.to_string(),
    }
}

fn read_route_action() -> Action {
    Action::ReadRoute { table_id: TABLE_ID }
}

fn finish_action(outcome: Outcome) -> Action {
    Action::Finish { outcome }
}

/// The table route with the migrated region replaced.
fn with_region(route: &VersionedTableRoute, edit: impl FnOnce(&mut RegionRoute)) -> TableRoute {
    let mut route = route.route.clone();
    edit(
        route
            .region_route_mut(region_id())
            .expect("the route holds the region"),
    );
    route
}

fn lock_keys_of_default_setup() -> Vec<String> {
    vec![
        "catalog/greptime:shared".to_string(),
        "schema/greptime.public:shared".to_string(),
        "region/1024:1:exclusive".to_string(),
    ]
}

#[test]
fn lock_keys_name_their_mode_and_the_mode_reads_back() {
    assert_eq!(
        LockMode::Shared.key("catalog/greptime"),
        "catalog/greptime:shared"
    );
    assert_eq!(table_lock_key(1024), "table/1024:exclusive");
    let modes: Vec<LockMode> = lock_keys_of_default_setup()
        .iter()
        .map(|key| LockMode::of_key(key))
        .collect();
    assert_eq!(
        modes,
        [LockMode::Shared, LockMode::Shared, LockMode::Exclusive]
    );
    // A region key holds a colon of its own; only the last part names the mode.
    assert_eq!(
        LockMode::of_key("region/1024:1:exclusive"),
        LockMode::Exclusive
    );
    // A key that names no mode is read as exclusive, the safe reading.
    assert_eq!(LockMode::of_key("table/1024"), LockMode::Exclusive);
}

fn downgrade_cas_message() -> &'static str {
    "failed to update the table route while downgrading the leader of region 1024:1: table 1024 was changed concurrently"
}

fn upgrade_cas_message() -> &'static str {
    "failed to update the table route while upgrading the candidate of region 1024:1: table 1024 was changed concurrently"
}

fn rollback_cas_message() -> &'static str {
    "failed to update the table route while rolling back region 1024:1: table 1024 was changed concurrently"
}

const FAILED_UPGRADE: &str = "failed to upgrade the candidate region";
const ABORTED_FAILED_UPGRADE: &str = "migration aborted: failed to upgrade the candidate region";

fn assert_replays(log: &[TimedEvent]) {
    let inputs = log
        .iter()
        .filter(|timed| timed.event.role() == regmig::migration::EventRole::Input)
        .count();
    assert_eq!(replay::check(log), Ok(inputs));
}

fn region_is(world: &World, leader: PeerId, downgrading: bool) {
    let region = world.region().expect("the region has a route");
    assert_eq!(region.leader_id(), Some(leader), "leader of {region:?}");
    assert_eq!(
        region.is_leader_downgrading(),
        downgrading,
        "Downgrading of {region:?}"
    );
}

// ---- Locks and Start -------------------------------------------------------------------

#[test]
fn a_new_procedure_takes_its_locks_then_enters_start_and_reads_the_route() {
    let world = World::default();
    let mut log = world.submit(&Setup::default());
    let decision = decide(&fold(&log), world.now_ms, Input::new(Observation::Begin))
        .expect("Begin is accepted");
    assert_eq!(decision.events, vec![]);
    assert_eq!(
        decision.action,
        Action::AcquireLocks {
            lock_keys: lock_keys_of_default_setup()
        }
    );

    log.extend(decision.events.into_iter().map(|event| TimedEvent {
        at_ms: world.now_ms,
        event,
    }));
    let observation = Observation::LocksAcquired {
        lock_keys: lock_keys_of_default_setup(),
        waited_ms: 7,
    };
    let decision = decide(&fold(&log), world.now_ms, Input::new(observation)).expect("locks");
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::LocksAcquired {
                lock_keys: lock_keys_of_default_setup(),
                waited_ms: 7
            },
            entered(StateName::Start)
        ]
    );
    assert_eq!(decision.action, read_route_action());
}

#[test]
fn start_enters_open_candidate_region_when_the_candidate_is_not_a_follower() {
    let mut world = World::default();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::Start),
    );
    let decision = point.read_route(&mut world);
    assert_eq!(
        decision.events,
        vec![
            route_read(world.route()),
            entered(StateName::OpenCandidateRegion)
        ]
    );
    assert_eq!(
        decision.action,
        Action::ReadDatanodeTable {
            datanode_id: FROM,
            table_id: TABLE_ID
        }
    );
    assert_eq!(point.state.status(), Status::Running);
}

#[test]
fn start_enters_flush_leader_region_when_the_candidate_is_already_a_follower() {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::Start),
    );
    let route = world.route().expect("route");
    let now_ms = world.now_ms;
    let decision = point.read_route(&mut world);
    assert_eq!(
        decision.events,
        vec![
            route_read(Some(route)),
            entered(StateName::FlushLeaderRegion),
            sent(
                FROM,
                flush_instruction(),
                FLUSH_LEADER_TIMEOUT_MS,
                now_ms,
                1
            ),
        ]
    );
    assert_eq!(FLUSH_LEADER_TIMEOUT_MS, REGION_LEASE_MS);
    assert_eq!(
        decision.action,
        send_action(FROM, flush_instruction(), FLUSH_LEADER_TIMEOUT_MS)
    );
}

#[test]
fn start_ends_at_once_when_the_candidate_already_leads() {
    let mut world = World::new(region_route(Some(TO), &[]));
    let mut point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::Start),
    );
    let decision = point.read_route(&mut world);
    assert_eq!(
        decision.events,
        vec![
            route_read(world.route()),
            entered(StateName::End),
            finished(Outcome::Completed, None)
        ]
    );
    assert_eq!(decision.action, finish_action(Outcome::Completed));
    assert_eq!(point.state.status(), Status::Completed);
    assert!(world.sent.is_empty());
}

#[test]
fn start_aborts_with_invalid_region_leader_peer_when_the_leader_is_a_third_peer() {
    let mut world = World::new(region_route(Some(OTHER), &[]));
    let mut point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::Start),
    );
    let decision = point.read_route(&mut world);
    let reason = "invalid region leader peer: expected 1, found 3";
    assert_eq!(
        decision.events,
        vec![
            route_read(world.route()),
            entered_abort(reason),
            rollback_started(
                ErrorKind::MigrationAborted,
                "migration aborted: invalid region leader peer: expected 1, found 3"
            ),
        ]
    );
    assert_eq!(decision.action, read_route_action());

    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Aborted));
    assert_eq!(
        run.state().report.final_error.as_deref(),
        Some("migration aborted: invalid region leader peer: expected 1, found 3")
    );
    assert_eq!(world.route().map(|r| r.version), Some(0));
    assert!(world.sent.is_empty());
}

#[test]
fn start_store_error_on_the_route_read_schedules_a_framework_retry() {
    let mut world = World::default();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::Start),
    );
    let now_ms = world.now_ms;
    let decision = point.decide_with_jitter(&mut world, store_failed(READ_ROUTE_OPERATION), 5_000);
    // 500 ms backoff plus 25% × 5000/10000 of it: 62 ms of jitter.
    let error = step_error(
        ErrorKind::MetadataStore,
        "metadata store error: read the route of table 1024: injected store error",
        true,
    );
    assert_eq!(
        decision.events,
        vec![
            metadata_failed(READ_ROUTE_OPERATION),
            retry_scheduled(1, 562, now_ms, 5_000, error),
        ]
    );
    assert_eq!(
        decision.action,
        wait_action(now_ms + 562, WaitReason::Backoff)
    );
    assert_eq!(
        point.state.status(),
        Status::Retrying {
            until_ms: now_ms + 562
        }
    );
    assert_eq!(point.state.retries_used, 1);

    world.now_ms = now_ms + 562;
    let decision = point.decide(&mut world, Observation::WaitElapsed);
    assert_eq!(decision.events, vec![MigrationEvent::WaitElapsed]);
    assert_eq!(decision.action, read_route_action());
}

/// Start with a route the migration cannot use: the exact rollback, then Finished{Failed}.
/// When the route is gone the rollback cannot apply (R2.4): it fails at once, saying what it
/// found; otherwise it re-registers the detector and succeeds.
fn start_fails_without_retry(world: &mut World, kind: ErrorKind, message: &str) {
    let mut point = drive(world, &Setup::default(), reading_route_in(StateName::Start));
    let decision = point.read_route(world);
    assert_eq!(
        decision.events,
        vec![route_read(world.route()), rollback_started(kind, message)]
    );
    assert_eq!(decision.action, read_route_action());
    assert_eq!(point.state.status(), Status::RollingBack);

    let decision = point.perform(world);
    let cannot_apply = match kind {
        ErrorKind::TableRouteNotFound => {
            Some("the rollback cannot apply: table route not found: table 1024")
        }
        ErrorKind::LogicalTable | ErrorKind::RegionRouteNotFound => {
            Some("the rollback cannot apply: region route not found: region 1024:1")
        }
        _ => None,
    };
    let expected = match cannot_apply {
        Some(rollback_error) => vec![
            route_read(world.route()),
            MigrationEvent::RollbackFinished {
                succeeded: false,
                error: Some(rollback_error.to_string()),
            },
            finished(
                Outcome::Failed,
                Some(&format!(
                    "rollback failed: {rollback_error}; it was rolling back after: {message}"
                )),
            ),
        ],
        None => vec![
            route_read(world.route()),
            MigrationEvent::HooksCalled {
                hooks: vec![Hook::RegisterFailureDetector {
                    peer: FROM,
                    region_id: region_id(),
                }],
            },
            MigrationEvent::RollbackFinished {
                succeeded: true,
                error: None,
            },
            finished(Outcome::Failed, Some(message)),
        ],
    };
    assert_eq!(decision.events, expected);
    assert_eq!(decision.action, finish_action(Outcome::Failed));
    assert_eq!(point.state.retries_used, 0);
    assert_replays(&point.log);
}

#[test]
fn start_without_a_table_route_rolls_back_as_failed() {
    let mut world = World::default();
    world.routes.clear();
    start_fails_without_retry(
        &mut world,
        ErrorKind::TableRouteNotFound,
        "table route not found: table 1024",
    );
}

#[test]
fn start_on_a_logical_table_rolls_back_as_failed() {
    let mut world = World::default();
    world.routes.insert(
        TABLE_ID,
        VersionedTableRoute {
            table_id: TABLE_ID,
            version: 4,
            route: TableRoute::Logical {
                physical_table_id: 1000,
            },
        },
    );
    start_fails_without_retry(
        &mut world,
        ErrorKind::LogicalTable,
        "table 1024 is a logical table (its regions belong to table 1000)",
    );
}

#[test]
fn start_without_a_region_route_rolls_back_as_failed() {
    let mut world = World::default();
    let route = world.routes.get_mut(&TABLE_ID).expect("route");
    if let TableRoute::Physical { region_routes } = &mut route.route {
        region_routes.retain(|region| region.region_id != region_id());
    }
    start_fails_without_retry(
        &mut world,
        ErrorKind::RegionRouteNotFound,
        "region route not found: region 1024:1",
    );
}

#[test]
fn start_without_a_leader_rolls_back_as_failed() {
    let mut world = World::new(region_route(None, &[TO]));
    start_fails_without_retry(
        &mut world,
        ErrorKind::NoLeader,
        "region 1024:1 has no leader in its route",
    );
}

// ---- OpenCandidateRegion ---------------------------------------------------------------

#[test]
fn open_candidate_region_sends_open_region_built_from_the_old_leaders_datanode_table() {
    let mut world = World::default();
    let mut point = drive(&mut world, &Setup::default(), |_, action| {
        matches!(action, Action::ReadDatanodeTable { .. })
    });
    let now_ms = world.now_ms;
    let decision = point.decide(
        &mut world,
        Observation::DatanodeTableRead {
            datanode_id: FROM,
            table_id: TABLE_ID,
            datanode_table: Some(from_datanode_table()),
        },
    );
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::DatanodeTableRead {
                datanode_id: FROM,
                table_id: TABLE_ID,
                datanode_table: Some(from_datanode_table()),
            },
            sent(TO, open_instruction(), OPEN_CANDIDATE_TIMEOUT_MS, now_ms, 1),
        ]
    );
    assert_eq!(OPEN_CANDIDATE_TIMEOUT_MS, REGION_LEASE_MS);
    assert_eq!(
        decision.action,
        send_action(TO, open_instruction(), OPEN_CANDIDATE_TIMEOUT_MS)
    );
}

#[test]
fn open_candidate_region_ok_reply_enters_flush_leader_region() {
    let mut world = World::default();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::OpenRegion),
    );
    world.now_ms += 100;
    let ok = Reply::OpenRegion {
        result: true,
        error: None,
    };
    let now_ms = world.now_ms;
    let decision = point.decide(&mut world, reply(ok.clone()));
    // The open is not a timed operation: no OperationTimed.
    assert_eq!(
        decision.events,
        vec![
            reply_received(TO, ok),
            entered(StateName::FlushLeaderRegion),
            sent(
                FROM,
                flush_instruction(),
                FLUSH_LEADER_TIMEOUT_MS,
                now_ms,
                1
            ),
        ]
    );
    assert_eq!(
        decision.action,
        send_action(FROM, flush_instruction(), FLUSH_LEADER_TIMEOUT_MS)
    );
    assert_eq!(point.state.operations_elapsed_ms, 0);
}

// ---- FlushLeaderRegion -----------------------------------------------------------------

/// Whatever answers the pre-flush (R2.2), the migration goes on to UpdateMetadata::Downgrade,
/// which reads the route afresh; nothing is charged to the budget.
fn flush_answer_goes_on_to_the_downgrade(answer: MailboxOutcome, event: MigrationEvent) {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::FlushRegion),
    );
    world.now_ms += 1_500;
    let decision = point.decide(&mut world, Observation::Mailbox(answer));
    assert_eq!(
        decision.events,
        vec![event, entered(StateName::UpdateMetadataDowngrade)]
    );
    assert_eq!(decision.action, read_route_action());
    assert_eq!(point.state.operations_elapsed_ms, 0);
    assert_eq!(point.state.retries_used, 0);
    assert_eq!(point.state.status(), Status::Running);

    let route = world.route().expect("route");
    let now_ms = world.now_ms;
    let decision = point.read_route(&mut world);
    assert_eq!(decision.events, vec![route_read(Some(route.clone()))]);
    assert_eq!(
        decision.action,
        Action::CasRoute {
            table_id: TABLE_ID,
            expected_version: 0,
            route: with_region(&route, |region| {
                region.leader_state = Some(LeaderState::Downgrading);
                region.leader_down_since_ms = Some(now_ms);
            }),
            change: RouteChange::Downgrade,
            region_move: None,
        }
    );
}

#[test]
fn flush_leader_region_ok_reply_goes_on_to_the_downgrade() {
    let ok = Reply::FlushRegion {
        result: true,
        error: None,
    };
    flush_answer_goes_on_to_the_downgrade(
        MailboxOutcome::Reply(ok.clone()),
        reply_received(FROM, ok),
    );
}

#[test]
fn flush_leader_region_error_reply_is_best_effort() {
    let failed = Reply::FlushRegion {
        result: false,
        error: Some("memtable busy".to_string()),
    };
    flush_answer_goes_on_to_the_downgrade(
        MailboxOutcome::Reply(failed.clone()),
        reply_received(FROM, failed),
    );
}

#[test]
fn flush_leader_region_timeout_is_best_effort() {
    flush_answer_goes_on_to_the_downgrade(
        MailboxOutcome::Timeout,
        MigrationEvent::MailboxTimedOut {
            peer: FROM,
            instruction: InstructionKind::FlushRegion,
        },
    );
}

#[test]
fn flush_leader_region_unreachable_is_best_effort() {
    flush_answer_goes_on_to_the_downgrade(
        MailboxOutcome::Unreachable,
        MigrationEvent::PeerUnreachable {
            peer: FROM,
            instruction: InstructionKind::FlushRegion,
        },
    );
}

#[test]
fn flush_leader_region_wrong_reply_is_best_effort() {
    let wrong = Reply::OpenRegion {
        result: true,
        error: None,
    };
    flush_answer_goes_on_to_the_downgrade(
        MailboxOutcome::Reply(wrong.clone()),
        reply_received(FROM, wrong),
    );
}

#[test]
fn resume_after_a_flush_sent_resends_it_with_a_fresh_lease_wait() {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::FlushRegion),
    );
    world.now_ms += 4_000;
    let decision = point.decide(&mut world, Observation::Resumed);
    assert_eq!(decision.events, vec![MigrationEvent::Resumed]);
    let decision = point.decide(
        &mut world,
        Observation::LocksAcquired {
            lock_keys: lock_keys_of_default_setup(),
            waited_ms: 0,
        },
    );
    let state = point.state.clone();
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::LocksAcquired {
                lock_keys: lock_keys_of_default_setup(),
                waited_ms: 0,
            },
            MigrationEvent::InstructionSent {
                peer: Peer::sim(FROM),
                instruction: flush_instruction(),
                // R2.7: a fresh wait, not what was left of the old one.
                timeout_ms: FLUSH_LEADER_TIMEOUT_MS,
                deadline_ms: world.now_ms + FLUSH_LEADER_TIMEOUT_MS,
                attempt: 1,
                resend: true,
                regions: Vec::new(),
            },
        ]
    );
    assert_eq!(state.operations_elapsed_ms, 0);
}

/// An answer to the open that the framework retries: the exact retry, then a fresh send.
fn open_answer_is_retried(answer: MailboxOutcome, event: MigrationEvent, error: StepError) {
    let mut world = World::default();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::OpenRegion),
    );
    world.now_ms += 100;
    let now_ms = world.now_ms;
    let decision = point.decide(&mut world, Observation::Mailbox(answer));
    assert_eq!(
        decision.events,
        vec![event, retry_scheduled(1, 500, now_ms, 0, error)]
    );
    assert_eq!(
        decision.action,
        wait_action(now_ms + 500, WaitReason::Backoff)
    );

    world.now_ms += 500;
    let decision = point.decide(&mut world, Observation::WaitElapsed);
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::WaitElapsed,
            sent(
                TO,
                open_instruction(),
                OPEN_CANDIDATE_TIMEOUT_MS,
                world.now_ms,
                1
            )
        ]
    );
    assert_eq!(world.route().map(|r| r.version), Some(0));
}

#[test]
fn open_candidate_region_not_ok_reply_is_retryable() {
    let not_ok = Reply::OpenRegion {
        result: false,
        error: Some("disk full".to_string()),
    };
    open_answer_is_retried(
        MailboxOutcome::Reply(not_ok.clone()),
        reply_received(TO, not_ok),
        step_error(
            ErrorKind::OpenRegionFailed,
            "region 1024:1 is not opened by datanode 2: disk full",
            true,
        ),
    );
}

#[test]
fn open_candidate_region_mailbox_timeout_is_retryable() {
    open_answer_is_retried(
        MailboxOutcome::Timeout,
        MigrationEvent::MailboxTimedOut {
            peer: TO,
            instruction: InstructionKind::OpenRegion,
        },
        step_error(
            ErrorKind::MailboxTimeout,
            "mailbox timeout for open candidate region 1024:1 on datanode 2",
            true,
        ),
    );
}

/// An answer to the open that stops the migration: the exact rollback, then Failed.
fn open_answer_rolls_back(
    answer: MailboxOutcome,
    event: MigrationEvent,
    kind: ErrorKind,
    message: &str,
) {
    let mut world = World::default();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::OpenRegion),
    );
    let decision = point.decide(&mut world, Observation::Mailbox(answer));
    assert_eq!(
        decision.events,
        vec![event, rollback_started(kind, message)]
    );
    assert_eq!(decision.action, read_route_action());
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Failed));
    assert_eq!(run.state().report.final_error.as_deref(), Some(message));
    assert_eq!(run.state().retries_used, 0);
    assert_eq!(world.route().map(|r| r.version), Some(0));
}

#[test]
fn open_candidate_region_unreachable_candidate_is_not_retried() {
    open_answer_rolls_back(
        MailboxOutcome::Unreachable,
        MigrationEvent::PeerUnreachable {
            peer: TO,
            instruction: InstructionKind::OpenRegion,
        },
        ErrorKind::Unreachable,
        "datanode 2 is unreachable (open candidate region 1024:1)",
    );
}

#[test]
fn open_candidate_region_wrong_reply_kind_is_not_retried() {
    let wrong = Reply::CloseRegion {
        result: true,
        error: None,
    };
    open_answer_rolls_back(
        MailboxOutcome::Reply(wrong.clone()),
        reply_received(TO, wrong),
        ErrorKind::UnexpectedReply,
        "unexpected reply from datanode 2: expected the reply to open_region, got the reply to close_region",
    );
}

#[test]
fn open_candidate_region_without_the_old_leaders_datanode_table_is_not_retried() {
    let mut world = World::default();
    let mut point = drive(&mut world, &Setup::default(), |_, action| {
        matches!(action, Action::ReadDatanodeTable { .. })
    });
    let decision = point.decide(
        &mut world,
        Observation::DatanodeTableRead {
            datanode_id: FROM,
            table_id: TABLE_ID,
            datanode_table: None,
        },
    );
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::DatanodeTableRead {
                datanode_id: FROM,
                table_id: TABLE_ID,
                datanode_table: None,
            },
            rollback_started(
                ErrorKind::DatanodeTableNotFound,
                "datanode table not found: table 1024 on datanode 1"
            ),
        ]
    );
    assert_eq!(decision.action, read_route_action());
}

#[test]
fn open_candidate_region_store_error_on_the_datanode_table_is_retryable() {
    let mut world = World::default();
    let mut point = drive(&mut world, &Setup::default(), |_, action| {
        matches!(action, Action::ReadDatanodeTable { .. })
    });
    let now_ms = world.now_ms;
    let decision = point.decide(&mut world, store_failed(READ_DATANODE_TABLE_OPERATION));
    assert_eq!(
        decision.events,
        vec![
            metadata_failed(READ_DATANODE_TABLE_OPERATION),
            retry_scheduled(
                1,
                500,
                now_ms,
                0,
                step_error(
                    ErrorKind::MetadataStore,
                    "metadata store error: read the datanode table of table 1024 on datanode 1: injected store error",
                    true
                )
            ),
        ]
    );
    world.now_ms += 500;
    let decision = point.decide(&mut world, Observation::WaitElapsed);
    assert_eq!(decision.events, vec![MigrationEvent::WaitElapsed]);
    assert_eq!(
        decision.action,
        Action::ReadDatanodeTable {
            datanode_id: FROM,
            table_id: TABLE_ID
        }
    );
}

// ---- UpdateMetadata::Downgrade ---------------------------------------------------------

#[test]
fn update_metadata_downgrade_cas_applied_enters_downgrade_and_sets_the_lease_deadline() {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        cas_of(RouteChange::Downgrade),
    );
    world.now_ms += 3;
    let now_ms = world.now_ms;
    let decision = point.decide(
        &mut world,
        cas_applied_observation(RouteChange::Downgrade, 0),
    );
    assert_eq!(
        decision.events,
        vec![
            cas_applied(RouteChange::Downgrade, 0),
            entered(StateName::DowngradeLeaderRegion),
            MigrationEvent::LeaseDeadlineSet {
                deadline_ms: now_ms + REGION_LEASE_MS
            },
            sent(FROM, downgrade_instruction(10_000), 10_000, now_ms, 1),
        ]
    );
    assert_eq!(
        decision.action,
        send_action(FROM, downgrade_instruction(10_000), 10_000)
    );
    assert_eq!(point.state.lease_deadline_ms, Some(now_ms + 10_000));
}

#[test]
fn update_metadata_downgrade_cas_refused_is_retryable_and_rereads_the_route() {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        cas_of(RouteChange::Downgrade),
    );
    let now_ms = world.now_ms;
    let decision = point.decide(
        &mut world,
        cas_refused_observation(RouteChange::Downgrade, 0),
    );
    assert_eq!(
        decision.events,
        vec![
            cas_refused(RouteChange::Downgrade, 0),
            retry_scheduled(
                1,
                500,
                now_ms,
                0,
                step_error(ErrorKind::CasConflict, downgrade_cas_message(), true)
            ),
        ]
    );
    world.now_ms += 500;
    let decision = point.decide(&mut world, Observation::WaitElapsed);
    assert_eq!(decision.events, vec![MigrationEvent::WaitElapsed]);
    // The cached route was dropped: the retry reads it again before its CAS.
    assert_eq!(decision.action, read_route_action());
}

#[test]
fn update_metadata_downgrade_store_error_is_retryable_and_rereads_the_route() {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        cas_of(RouteChange::Downgrade),
    );
    let now_ms = world.now_ms;
    let decision = point.decide(&mut world, store_failed(CAS_ROUTE_OPERATION));
    assert_eq!(
        decision.events,
        vec![
            metadata_failed(CAS_ROUTE_OPERATION),
            retry_scheduled(
                1,
                500,
                now_ms,
                0,
                step_error(
                    ErrorKind::MetadataStore,
                    "metadata store error: write the route of table 1024: injected store error",
                    true
                )
            ),
        ]
    );
    world.now_ms += 500;
    let decision = point.decide(&mut world, Observation::WaitElapsed);
    assert_eq!(decision.action, read_route_action());
}

#[test]
fn update_metadata_downgrade_with_the_leader_already_downgrading_writes_nothing() {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        cas_of(RouteChange::Downgrade),
    );
    // Refused: another writer changed the route meanwhile, to exactly what we wanted.
    world.edit_region(|region| {
        region.leader_state = Some(LeaderState::Downgrading);
        region.leader_down_since_ms = Some(START_MS);
    });
    point.decide(
        &mut world,
        cas_refused_observation(RouteChange::Downgrade, 0),
    );
    world.now_ms += 500;
    point.decide(&mut world, Observation::WaitElapsed);
    let now_ms = world.now_ms;
    let decision = point.read_route(&mut world);
    assert_eq!(
        decision.events,
        vec![
            route_read(world.route()),
            entered(StateName::DowngradeLeaderRegion),
            MigrationEvent::LeaseDeadlineSet {
                deadline_ms: now_ms + REGION_LEASE_MS
            },
            sent(FROM, downgrade_instruction(10_000), 10_000, now_ms, 1),
        ]
    );
}

// ---- DowngradeLeaderRegion -------------------------------------------------------------

/// A procedure stopped at its first downgrade send; returns it and the send time.
fn at_first_downgrade(world: &mut World, setup: &Setup) -> (Point, u64) {
    let point = drive(world, setup, sending(InstructionKind::DowngradeRegion));
    let sent_at_ms = world.now_ms;
    assert_eq!(
        point.state.lease_deadline_ms,
        Some(sent_at_ms + REGION_LEASE_MS)
    );
    (point, sent_at_ms)
}

#[test]
fn downgrade_success_remembers_last_entry_id_resets_the_lease_and_upgrades() {
    let mut world = World::with_candidate_follower();
    let (mut point, _) = at_first_downgrade(&mut world, &Setup::default());
    world.now_ms += 100;
    let ok = downgrade_reply(Some(42), true, None);
    let decision = point.decide(&mut world, reply(ok.clone()));
    let now_ms = world.now_ms;
    assert_eq!(
        decision.events,
        vec![
            reply_received(FROM, ok),
            timed(InstructionKind::DowngradeRegion, 100),
            MigrationEvent::LeaseDeadlineReset,
            entered(StateName::UpgradeCandidateRegion),
            sent(TO, upgrade_instruction(Some(42), 9_900), 9_900, now_ms, 1),
        ]
    );
    assert_eq!(
        decision.action,
        send_action(TO, upgrade_instruction(Some(42), 9_900), 9_900)
    );
    assert_eq!(point.state.last_entry_id, Some(42));
    assert_eq!(point.state.lease_deadline_ms, None);
    assert_eq!(point.state.operations_elapsed_ms, 100);
}

#[test]
fn downgrade_of_a_missing_region_is_accepted_without_a_last_entry_id() {
    let mut world = World::with_candidate_follower();
    let (mut point, _) = at_first_downgrade(&mut world, &Setup::default());
    world.now_ms += 100;
    let missing = downgrade_reply(Some(5), false, None);
    let decision = point.decide(&mut world, reply(missing.clone()));
    let now_ms = world.now_ms;
    assert_eq!(
        decision.events,
        vec![
            reply_received(FROM, missing),
            timed(InstructionKind::DowngradeRegion, 100),
            MigrationEvent::LeaseDeadlineReset,
            entered(StateName::UpgradeCandidateRegion),
            sent(TO, upgrade_instruction(None, 9_900), 9_900, now_ms, 1),
        ]
    );
    assert_eq!(point.state.last_entry_id, None);
}

#[test]
fn downgrade_with_a_remote_wal_does_not_reject_writes() {
    let mut world = World::with_candidate_follower();
    let setup = Setup {
        wal: WalKind::Remote,
        ..Setup::default()
    };
    let point = drive(
        &mut world,
        &setup,
        sending(InstructionKind::DowngradeRegion),
    );
    assert_eq!(
        point.action,
        send_action(
            FROM,
            Instruction::DowngradeRegion {
                region_id: region_id(),
                flush_timeout_ms: 10_000,
                reject_write: false,
            },
            10_000
        )
    );
}

/// A retryable downgrade answer: wait 500 ms, then attempt 2 with what is left of the budget
/// as its flush timeout (still waiting one mailbox round trip at most), and no second lease
/// deadline.
fn downgrade_answer_is_retried_in_state(
    answer: MailboxOutcome,
    event: MigrationEvent,
    takes_ms: u64,
) {
    let mut world = World::with_candidate_follower();
    let (mut point, sent_at_ms) = at_first_downgrade(&mut world, &Setup::default());
    world.now_ms += takes_ms;
    let now_ms = world.now_ms;
    let decision = point.decide(&mut world, Observation::Mailbox(answer));
    assert_eq!(
        decision.events,
        vec![
            event,
            timed(InstructionKind::DowngradeRegion, takes_ms),
            wait_started(now_ms + 500, WaitReason::AttemptInterval),
        ]
    );
    assert_eq!(
        decision.action,
        wait_action(now_ms + 500, WaitReason::AttemptInterval)
    );
    assert_eq!(
        point.state.status(),
        Status::Waiting {
            until_ms: now_ms + 500,
            reason: WaitReason::AttemptInterval
        }
    );

    world.now_ms += 500;
    let left_ms = 10_000 - takes_ms;
    let decision = point.decide(&mut world, Observation::WaitElapsed);
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::WaitElapsed,
            sent(
                FROM,
                downgrade_instruction(left_ms),
                left_ms,
                world.now_ms,
                2
            ),
        ]
    );
    assert_eq!(
        point.state.lease_deadline_ms,
        Some(sent_at_ms + REGION_LEASE_MS)
    );
    assert_eq!(point.state.retries_used, 0);
}

#[test]
fn downgrade_error_reply_is_retried_after_500ms() {
    let failed = downgrade_reply(None, true, Some("flush failed"));
    downgrade_answer_is_retried_in_state(
        MailboxOutcome::Reply(failed.clone()),
        reply_received(FROM, failed),
        100,
    );
}

#[test]
fn downgrade_mailbox_timeout_is_retried_after_500ms() {
    downgrade_answer_is_retried_in_state(
        MailboxOutcome::Timeout,
        MigrationEvent::MailboxTimedOut {
            peer: FROM,
            instruction: InstructionKind::DowngradeRegion,
        },
        1_000,
    );
}

#[test]
fn downgrade_three_failed_attempts_take_the_slow_path_until_the_logged_lease_deadline() {
    let mut world = World::with_candidate_follower();
    let failed = downgrade_reply(None, true, Some("flush failed"));
    world.script(
        InstructionKind::DowngradeRegion,
        vec![MailboxOutcome::Reply(failed.clone()); 3],
    );
    let mut point = drive(&mut world, &Setup::default(), |state, action| {
        matches!(action, Action::Send { .. })
            && state.outstanding.as_ref().map(|o| o.attempt) == Some(3)
    });
    let deadline_ms = point.state.lease_deadline_ms.expect("lease deadline");
    // Attempts 1 and 2 each took 100 ms and waited 500 ms: attempt 3 starts 1200 ms in.
    assert_eq!(world.now_ms, deadline_ms - REGION_LEASE_MS + 1_200);
    let lease_sets = point
        .log
        .iter()
        .filter(|t| matches!(t.event, MigrationEvent::LeaseDeadlineSet { .. }))
        .count();
    assert_eq!(lease_sets, 1);

    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            reply_received(FROM, failed),
            timed(InstructionKind::DowngradeRegion, 100),
        ]
    );
    // R2.3: the old leader's last heartbeat is read first; none known keeps the deadline.
    assert_eq!(decision.action, Action::ReadLastHeartbeat { peer: FROM });
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::LastHeartbeatRead {
                peer: FROM,
                last_heartbeat_ms: None,
            },
            wait_started(deadline_ms, WaitReason::LeaseExpiry),
        ]
    );
    assert_eq!(
        decision.action,
        wait_action(deadline_ms, WaitReason::LeaseExpiry)
    );
    assert_eq!(point.state.report.counters.slow_path_waits, 1);

    let decision = point.perform(&mut world);
    assert_eq!(world.now_ms, deadline_ms);
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::WaitElapsed,
            entered(StateName::UpgradeCandidateRegion),
            sent(TO, upgrade_instruction(None, 9_700), 9_700, deadline_ms, 1),
        ]
    );
}

/// A downgrade answer that stops the attempts at once: straight to the lease wait.
fn downgrade_answer_takes_the_slow_path_at_once(answer: MailboxOutcome, event: MigrationEvent) {
    let mut world = World::with_candidate_follower();
    let (mut point, sent_at_ms) = at_first_downgrade(&mut world, &Setup::default());
    let deadline_ms = sent_at_ms + REGION_LEASE_MS;
    let decision = point.decide(&mut world, Observation::Mailbox(answer));
    assert_eq!(
        decision.events,
        vec![event, timed(InstructionKind::DowngradeRegion, 0)]
    );
    assert_eq!(decision.action, Action::ReadLastHeartbeat { peer: FROM });
    let decision = point.decide(
        &mut world,
        Observation::LastHeartbeatRead {
            peer: FROM,
            last_heartbeat_ms: None,
        },
    );
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::LastHeartbeatRead {
                peer: FROM,
                last_heartbeat_ms: None,
            },
            wait_started(deadline_ms, WaitReason::LeaseExpiry),
        ]
    );
    assert_eq!(
        decision.action,
        wait_action(deadline_ms, WaitReason::LeaseExpiry)
    );
    assert_eq!(point.state.step.attempts, 1);
}

#[test]
fn downgrade_unreachable_leader_stops_at_once_and_takes_the_slow_path() {
    downgrade_answer_takes_the_slow_path_at_once(
        MailboxOutcome::Unreachable,
        MigrationEvent::PeerUnreachable {
            peer: FROM,
            instruction: InstructionKind::DowngradeRegion,
        },
    );
}

#[test]
fn downgrade_wrong_reply_kind_stops_at_once_and_takes_the_slow_path() {
    let wrong = upgrade_reply(true, true, None);
    downgrade_answer_takes_the_slow_path_at_once(
        MailboxOutcome::Reply(wrong.clone()),
        reply_received(FROM, wrong),
    );
}

/// R2.3: an unreachable old leader whose last heartbeat was `heartbeat_age_ms` before the
/// downgrade gave up: the lease deadline moves to that heartbeat + one lease.
fn slow_path_with_a_known_heartbeat(heartbeat_age_ms: u64) -> (Point, World, u64) {
    let mut world = World::with_candidate_follower();
    let (mut point, _) = at_first_downgrade(&mut world, &Setup::default());
    let decision = point.decide(
        &mut world,
        Observation::Mailbox(MailboxOutcome::Unreachable),
    );
    assert_eq!(decision.action, Action::ReadLastHeartbeat { peer: FROM });
    let last_heartbeat_ms = world.now_ms - heartbeat_age_ms;
    let decision = point.decide(
        &mut world,
        Observation::LastHeartbeatRead {
            peer: FROM,
            last_heartbeat_ms: Some(last_heartbeat_ms),
        },
    );
    let events = decision.events;
    assert_eq!(
        events[..2],
        [
            MigrationEvent::LastHeartbeatRead {
                peer: FROM,
                last_heartbeat_ms: Some(last_heartbeat_ms),
            },
            MigrationEvent::LeaseDeadlineSet {
                deadline_ms: last_heartbeat_ms + REGION_LEASE_MS,
            },
        ]
    );
    assert_eq!(
        point.state.lease_deadline_ms,
        Some(last_heartbeat_ms + REGION_LEASE_MS)
    );
    (point, world, last_heartbeat_ms)
}

#[test]
fn slow_path_waits_one_lease_from_the_old_leaders_last_heartbeat() {
    let (point, world, last_heartbeat_ms) = slow_path_with_a_known_heartbeat(4_000);
    let deadline_ms = last_heartbeat_ms + REGION_LEASE_MS;
    assert_eq!(deadline_ms, world.now_ms + 6_000);
    assert_eq!(
        point.log.last().map(|t| &t.event),
        Some(&wait_started(deadline_ms, WaitReason::LeaseExpiry))
    );
    assert_eq!(
        point.action,
        wait_action(deadline_ms, WaitReason::LeaseExpiry)
    );
    assert_eq!(point.state.report.counters.slow_path_waits, 1);
    assert_replays(&point.log);
}

#[test]
fn slow_path_does_not_wait_when_the_last_heartbeat_is_a_lease_old() {
    let (point, world, _) = slow_path_with_a_known_heartbeat(REGION_LEASE_MS);
    let tail: Vec<&MigrationEvent> = point.log.iter().rev().take(2).map(|t| &t.event).collect();
    assert_eq!(
        tail,
        vec![
            &sent(
                TO,
                upgrade_instruction(None, 10_000),
                10_000,
                world.now_ms,
                1
            ),
            &entered(StateName::UpgradeCandidateRegion),
        ]
    );
    assert_eq!(point.state.report.counters.slow_path_waits, 0);
    assert_replays(&point.log);
}

#[test]
fn downgrade_slow_path_does_not_wait_when_the_lease_already_expired() {
    let mut world = World::with_candidate_follower();
    // Each failed answer takes a whole mailbox round trip, the most an attempt can wait; with
    // 8 attempts the lease runs out before the last answer.
    world.reply_delay_ms = 1_000;
    let failed = downgrade_reply(None, true, Some("flush failed"));
    world.script(
        InstructionKind::DowngradeRegion,
        vec![MailboxOutcome::Reply(failed.clone()); 8],
    );
    let setup = Setup {
        policy: RetryPolicy {
            in_state_attempts_max: 8,
            ..RetryPolicy::default()
        },
        ..Setup::default().with_timeout_ms(60_000)
    };
    let mut point = drive(
        &mut world,
        &setup,
        sending_attempt(InstructionKind::DowngradeRegion, 8),
    );
    let lease_deadline_ms = point.state.lease_deadline_ms.expect("lease");
    let decision = point.perform(&mut world);
    // 8 × 1000 ms answers and 7 × 500 ms pauses: the lease ran out 1500 ms ago.
    assert_eq!(world.now_ms, lease_deadline_ms + 1_500);
    let now_ms = world.now_ms;
    assert_eq!(
        decision.events,
        vec![
            reply_received(FROM, failed),
            timed(InstructionKind::DowngradeRegion, 1_000),
        ]
    );
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::LastHeartbeatRead {
                peer: FROM,
                last_heartbeat_ms: None,
            },
            entered(StateName::UpgradeCandidateRegion),
            sent(TO, upgrade_instruction(None, 52_000), 52_000, now_ms, 1),
        ]
    );
    assert_eq!(point.state.report.counters.slow_path_waits, 0);
}

#[test]
fn downgrade_with_the_budget_used_up_goes_to_update_metadata_rollback() {
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::DowngradeRegion,
        [MailboxOutcome::Timeout, MailboxOutcome::Timeout],
    );
    let setup = Setup::default().with_timeout_ms(2_000);
    let mut point = drive(
        &mut world,
        &setup,
        sending(InstructionKind::DowngradeRegion),
    );
    // R2.1: the mailbox waits the whole budget, so one timeout uses it up.
    assert_eq!(
        point.action,
        send_action(FROM, downgrade_instruction(2_000), 2_000)
    );
    let timed_out = MigrationEvent::MailboxTimedOut {
        peer: FROM,
        instruction: InstructionKind::DowngradeRegion,
    };
    let decision = point.perform(&mut world);
    let now_ms = world.now_ms;
    assert_eq!(
        decision.events,
        vec![
            timed_out,
            timed(InstructionKind::DowngradeRegion, 2_000),
            wait_started(now_ms + 500, WaitReason::AttemptInterval),
        ]
    );
    assert_eq!(point.state.remaining_budget_ms(), 0);
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::WaitElapsed,
            entered(StateName::UpdateMetadataRollback)
        ]
    );
    assert_eq!(decision.action, read_route_action());
    assert_eq!(world.sent.len(), 2, "the flush and one downgrade");

    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Aborted));
    assert_eq!(
        run.state().report.final_error.as_deref(),
        Some(ABORTED_FAILED_UPGRADE)
    );
    region_is(&world, FROM, false);
}

#[test]
fn downgrade_and_upgrade_wait_for_their_reply_as_long_as_the_budget_lasts() {
    // An open waits one region lease and a close one round trip, whatever the budget.
    assert_eq!(MAILBOX_RTT_MS, 1_000);
    assert_eq!(CLOSE_REGION_TIMEOUT_MS, 1_000);
    assert_eq!(OPEN_CANDIDATE_TIMEOUT_MS, 10_000);
    // R2.1: the mailbox waits for a downgrade or an upgrade as long as what is left of the
    // budget, the same value as its flush or replay timeout. The downgrade is answered in
    // 100 ms.
    for budget_ms in [600, 1_000, 1_001, 1_100, 10_000, 60_000] {
        let mut world = World::with_candidate_follower();
        let setup = Setup::default().with_timeout_ms(budget_ms);
        let (mut point, sent_at_ms) = at_first_downgrade(&mut world, &setup);
        assert_eq!(
            point.log.last().map(|t| &t.event),
            Some(&sent(
                FROM,
                downgrade_instruction(budget_ms),
                budget_ms,
                sent_at_ms,
                1
            )),
            "budget {budget_ms}"
        );
        assert_eq!(
            point.action,
            send_action(FROM, downgrade_instruction(budget_ms), budget_ms),
            "budget {budget_ms}"
        );
        let outstanding = point.state.outstanding.clone().expect("outstanding");
        assert_eq!(outstanding.timeout_ms, budget_ms);
        assert_eq!(outstanding.deadline_ms, sent_at_ms + budget_ms);

        let decision = point.perform(&mut world);
        let replay_ms = budget_ms - 100;
        let upgrade = upgrade_instruction(Some(LAST_ENTRY_ID), replay_ms);
        assert_eq!(
            decision.events.last(),
            Some(&sent(TO, upgrade.clone(), replay_ms, world.now_ms, 1)),
            "budget {budget_ms}"
        );
        assert_eq!(
            decision.action,
            send_action(TO, upgrade, replay_ms),
            "budget {budget_ms}"
        );
    }
}

#[test]
fn downgrade_with_600ms_of_budget_left_waits_600ms_for_its_answer() {
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::DowngradeRegion,
        [
            MailboxOutcome::Reply(downgrade_reply(None, true, Some("busy"))),
            MailboxOutcome::Timeout,
        ],
    );
    let setup = Setup::default().with_timeout_ms(1_600);
    let (mut point, sent_at_ms) = at_first_downgrade(&mut world, &setup);
    assert_eq!(
        point.action,
        send_action(FROM, downgrade_instruction(1_600), 1_600)
    );
    let timed_out = MigrationEvent::MailboxTimedOut {
        peer: FROM,
        instruction: InstructionKind::DowngradeRegion,
    };
    // The first answer, an error, takes 1 s of the budget.
    world.reply_delay_ms = 1_000;
    let decision = point.perform(&mut world);
    assert_eq!(world.now_ms, sent_at_ms + 1_000);
    assert_eq!(
        decision.events,
        vec![
            reply_received(FROM, downgrade_reply(None, true, Some("busy"))),
            timed(InstructionKind::DowngradeRegion, 1_000),
            wait_started(sent_at_ms + 1_500, WaitReason::AttemptInterval),
        ]
    );
    assert_eq!(point.state.remaining_budget_ms(), 600);

    let decision = point.perform(&mut world);
    let resent_at_ms = sent_at_ms + 1_500;
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::WaitElapsed,
            sent(FROM, downgrade_instruction(600), 600, resent_at_ms, 2),
        ]
    );
    assert_eq!(
        decision.action,
        send_action(FROM, downgrade_instruction(600), 600)
    );

    let decision = point.perform(&mut world);
    assert_eq!(world.now_ms, resent_at_ms + 600);
    assert_eq!(
        decision.events,
        vec![
            timed_out,
            timed(InstructionKind::DowngradeRegion, 600),
            wait_started(resent_at_ms + 1_100, WaitReason::AttemptInterval),
        ]
    );
    assert_eq!(point.state.remaining_budget_ms(), 0);
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::WaitElapsed,
            entered(StateName::UpdateMetadataRollback)
        ]
    );
    assert_eq!(decision.action, read_route_action());
}

// ---- UpgradeCandidateRegion ------------------------------------------------------------

/// A procedure stopped at its first upgrade send (after a 100 ms downgrade).
fn at_first_upgrade(world: &mut World, setup: &Setup) -> Point {
    drive(world, setup, sending(InstructionKind::UpgradeRegion))
}

#[test]
fn upgrade_success_enters_update_metadata_upgrade_and_rereads_the_route() {
    let mut world = World::with_candidate_follower();
    let mut point = at_first_upgrade(&mut world, &Setup::default());
    world.now_ms += 100;
    let ok = upgrade_reply(true, true, None);
    let decision = point.decide(&mut world, reply(ok.clone()));
    assert_eq!(
        decision.events,
        vec![
            reply_received(TO, ok),
            timed(InstructionKind::UpgradeRegion, 100),
            entered(StateName::UpdateMetadataUpgrade),
        ]
    );
    assert_eq!(decision.action, read_route_action());
    assert_eq!(point.state.operations_elapsed_ms, 200);
}

/// A retryable upgrade answer: wait 500 ms, then attempt 2 with what is left of the budget as
/// its replay timeout (still waiting one mailbox round trip at most).
fn upgrade_answer_is_retried_in_state(
    setup: &Setup,
    answer: MailboxOutcome,
    event: MigrationEvent,
    takes_ms: u64,
) {
    let mut world = World::with_candidate_follower();
    let mut point = at_first_upgrade(&mut world, setup);
    world.now_ms += takes_ms;
    let now_ms = world.now_ms;
    let decision = point.decide(&mut world, Observation::Mailbox(answer));
    assert_eq!(
        decision.events,
        vec![
            event,
            timed(InstructionKind::UpgradeRegion, takes_ms),
            wait_started(now_ms + 500, WaitReason::AttemptInterval),
        ]
    );
    world.now_ms += 500;
    let left_ms = setup.task.timeout_ms - 100 - takes_ms;
    let decision = point.decide(&mut world, Observation::WaitElapsed);
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::WaitElapsed,
            sent(
                TO,
                upgrade_instruction(Some(LAST_ENTRY_ID), left_ms),
                left_ms,
                world.now_ms,
                2
            ),
        ]
    );
}

#[test]
fn upgrade_error_reply_is_retried_after_500ms() {
    let failed = upgrade_reply(false, true, Some("replay failed"));
    upgrade_answer_is_retried_in_state(
        &Setup::default(),
        MailboxOutcome::Reply(failed.clone()),
        reply_received(TO, failed),
        100,
    );
}

#[test]
fn upgrade_not_ready_is_retried_when_readiness_is_required() {
    let not_ready = upgrade_reply(false, true, None);
    upgrade_answer_is_retried_in_state(
        &Setup::default(),
        MailboxOutcome::Reply(not_ready.clone()),
        reply_received(TO, not_ready),
        100,
    );
}

#[test]
fn upgrade_mailbox_timeout_is_retried_after_500ms() {
    upgrade_answer_is_retried_in_state(
        &Setup::default().with_timeout_ms(30_000),
        MailboxOutcome::Timeout,
        MigrationEvent::MailboxTimedOut {
            peer: TO,
            instruction: InstructionKind::UpgradeRegion,
        },
        1_000,
    );
}

#[test]
fn upgrade_not_ready_is_accepted_when_readiness_is_not_required() {
    let mut world = World::with_candidate_follower();
    let setup = Setup {
        policy: RetryPolicy {
            require_ready: false,
            ..RetryPolicy::default()
        },
        ..Setup::default()
    };
    let mut point = at_first_upgrade(&mut world, &setup);
    let not_ready = upgrade_reply(false, true, None);
    let decision = point.decide(&mut world, reply(not_ready.clone()));
    assert_eq!(
        decision.events,
        vec![
            reply_received(TO, not_ready),
            timed(InstructionKind::UpgradeRegion, 0),
            entered(StateName::UpdateMetadataUpgrade),
        ]
    );
}

/// An upgrade answer that stops at once: UpdateMetadata::Rollback.
fn upgrade_answer_rolls_back_the_metadata(answer: MailboxOutcome, event: MigrationEvent) {
    let mut world = World::with_candidate_follower();
    let mut point = at_first_upgrade(&mut world, &Setup::default());
    let decision = point.decide(&mut world, Observation::Mailbox(answer));
    assert_eq!(
        decision.events,
        vec![
            event,
            timed(InstructionKind::UpgradeRegion, 0),
            entered(StateName::UpdateMetadataRollback),
        ]
    );
    assert_eq!(decision.action, read_route_action());
    assert_eq!(point.state.step.attempts, 0);
}

#[test]
fn upgrade_of_a_missing_region_is_not_retried() {
    let missing = upgrade_reply(true, false, None);
    upgrade_answer_rolls_back_the_metadata(
        MailboxOutcome::Reply(missing.clone()),
        reply_received(TO, missing),
    );
}

#[test]
fn upgrade_unreachable_candidate_is_not_retried() {
    upgrade_answer_rolls_back_the_metadata(
        MailboxOutcome::Unreachable,
        MigrationEvent::PeerUnreachable {
            peer: TO,
            instruction: InstructionKind::UpgradeRegion,
        },
    );
}

#[test]
fn upgrade_wrong_reply_kind_is_not_retried() {
    let wrong = downgrade_reply(Some(1), true, None);
    upgrade_answer_rolls_back_the_metadata(
        MailboxOutcome::Reply(wrong.clone()),
        reply_received(TO, wrong),
    );
}

#[test]
fn upgrade_three_failed_attempts_roll_back_the_metadata() {
    let mut world = World::with_candidate_follower();
    let failed = upgrade_reply(false, true, Some("replay failed"));
    world.script(
        InstructionKind::UpgradeRegion,
        vec![MailboxOutcome::Reply(failed.clone()); 3],
    );
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending_attempt(InstructionKind::UpgradeRegion, 3),
    );
    let replay_timeouts: Vec<u64> = world
        .sent
        .iter()
        .filter_map(|sent| match sent.instruction {
            Instruction::UpgradeRegion {
                replay_timeout_ms, ..
            } => Some(replay_timeout_ms),
            _ => None,
        })
        .collect();
    assert_eq!(replay_timeouts, vec![9_900, 9_800]);
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            reply_received(TO, failed),
            timed(InstructionKind::UpgradeRegion, 100),
            entered(StateName::UpdateMetadataRollback),
        ]
    );
    assert_eq!(point.state.retries_used, 0);
}

#[test]
fn upgrade_replay_timeout_is_the_timeout_minus_the_time_spent_in_the_downgrade() {
    let mut world = World::with_candidate_follower();
    world.reply_delay_ms = 700;
    let failed = downgrade_reply(None, true, Some("flush failed"));
    world.script(
        InstructionKind::DowngradeRegion,
        [MailboxOutcome::Reply(failed)],
    );
    let point = at_first_upgrade(&mut world, &Setup::default());
    // Two downgrade attempts of 700 ms each; the 500 ms pause between them is not charged.
    assert_eq!(point.state.operations_elapsed_ms, 1_400);
    assert_eq!(
        point.action,
        send_action(TO, upgrade_instruction(Some(LAST_ENTRY_ID), 8_600), 8_600)
    );
}

#[test]
fn upgrade_with_no_budget_left_rolls_back_the_metadata_without_sending() {
    let mut world = World::with_candidate_follower();
    // A 1 s budget, all of it one mailbox round trip: the downgrade's answer comes at the
    // last moment and leaves nothing for the upgrade.
    world.reply_delay_ms = 1_000;
    let setup = Setup::default().with_timeout_ms(1_000);
    let mut point = drive(
        &mut world,
        &setup,
        sending(InstructionKind::DowngradeRegion),
    );
    assert_eq!(
        point.action,
        send_action(FROM, downgrade_instruction(1_000), 1_000)
    );
    let ok = ok_reply(InstructionKind::DowngradeRegion, Some(LAST_ENTRY_ID));
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            reply_received(FROM, ok),
            timed(InstructionKind::DowngradeRegion, 1_000),
            MigrationEvent::LeaseDeadlineReset,
            entered(StateName::UpgradeCandidateRegion),
            entered(StateName::UpdateMetadataRollback),
        ]
    );
    assert_eq!(decision.action, read_route_action());
    assert_eq!(point.state.remaining_budget_ms(), 0);
    assert_eq!(world.sent.len(), 2, "the flush and the downgrade");
}

#[test]
fn upgrade_with_600ms_of_budget_left_waits_600ms_for_its_answer() {
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::UpgradeRegion,
        [
            MailboxOutcome::Reply(upgrade_reply(false, true, None)),
            MailboxOutcome::Timeout,
        ],
    );
    // 100 ms of the 1.7 s budget go to the downgrade, 1 s to the first upgrade (not ready).
    let setup = Setup::default().with_timeout_ms(1_700);
    let mut point = at_first_upgrade(&mut world, &setup);
    let sent_at_ms = world.now_ms;
    assert_eq!(
        point.action,
        send_action(TO, upgrade_instruction(Some(LAST_ENTRY_ID), 1_600), 1_600)
    );
    let timed_out = MigrationEvent::MailboxTimedOut {
        peer: TO,
        instruction: InstructionKind::UpgradeRegion,
    };
    world.reply_delay_ms = 1_000;
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            reply_received(TO, upgrade_reply(false, true, None)),
            timed(InstructionKind::UpgradeRegion, 1_000),
            wait_started(sent_at_ms + 1_500, WaitReason::AttemptInterval),
        ]
    );
    assert_eq!(point.state.remaining_budget_ms(), 600);

    let decision = point.perform(&mut world);
    let resent_at_ms = sent_at_ms + 1_500;
    let upgrade = upgrade_instruction(Some(LAST_ENTRY_ID), 600);
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::WaitElapsed,
            sent(TO, upgrade.clone(), 600, resent_at_ms, 2),
        ]
    );
    assert_eq!(decision.action, send_action(TO, upgrade, 600));

    let decision = point.perform(&mut world);
    assert_eq!(world.now_ms, resent_at_ms + 600);
    assert_eq!(
        decision.events,
        vec![
            timed_out,
            timed(InstructionKind::UpgradeRegion, 600),
            wait_started(resent_at_ms + 1_100, WaitReason::AttemptInterval),
        ]
    );
    assert_eq!(point.state.remaining_budget_ms(), 0);
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            MigrationEvent::WaitElapsed,
            entered(StateName::UpdateMetadataRollback)
        ]
    );
    assert_eq!(decision.action, read_route_action());
}

// ---- UpdateMetadata::Upgrade -----------------------------------------------------------

#[test]
fn update_metadata_upgrade_writes_the_new_route_with_the_datanode_table_move_and_calls_hooks() {
    let mut world = World::default();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::UpdateMetadataUpgrade),
    );
    let route = world.route().expect("route");
    assert_eq!(route.version, 1);
    let decision = point.read_route(&mut world);
    assert_eq!(decision.events, vec![route_read(Some(route.clone()))]);
    assert_eq!(
        decision.action,
        Action::CasRoute {
            table_id: TABLE_ID,
            expected_version: 1,
            route: with_region(&route, |region| {
                region.leader_peer = Some(Peer::sim(TO));
                region.leader_state = None;
                region.leader_down_since_ms = None;
            }),
            change: RouteChange::Upgrade,
            region_move: Some(RegionMove {
                region_id: region_id(),
                from_peer: FROM,
                to_peer: TO,
            }),
        }
    );

    let decision = point.perform(&mut world);
    let hooks = vec![
        Hook::DeregisterFailureDetector {
            peer: FROM,
            region_id: region_id(),
        },
        Hook::InvalidateTableCache { table_id: TABLE_ID },
    ];
    assert_eq!(
        decision.events,
        vec![
            cas_applied(RouteChange::Upgrade, 1),
            MigrationEvent::HooksCalled {
                hooks: hooks.clone()
            },
            entered(StateName::CloseDowngradedRegion),
            sent(
                FROM,
                close_instruction(),
                CLOSE_REGION_TIMEOUT_MS,
                world.now_ms,
                1
            ),
        ]
    );
    assert_eq!(decision.hooks, hooks);
    assert_eq!(CLOSE_REGION_TIMEOUT_MS, 1_000);
    assert!(point.state.new_route_written);
    region_is(&world, TO, false);
    assert_eq!(
        world.datanode_tables[&(FROM, TABLE_ID)].region_numbers,
        Vec::<u32>::new()
    );
    assert_eq!(
        world.datanode_tables[&(TO, TABLE_ID)].region_numbers,
        vec![REGION_NUMBER]
    );
}

#[test]
fn update_metadata_upgrade_removes_the_candidate_from_the_followers() {
    let mut world = World::new(region_route(Some(FROM), &[TO, OTHER]));
    let mut point = drive(&mut world, &Setup::default(), cas_of(RouteChange::Upgrade));
    point.perform(&mut world);
    let region = world.region().expect("region");
    assert_eq!(region.leader_peer, Some(Peer::sim(TO)));
    assert_eq!(region.follower_peers, vec![Peer::sim(OTHER)]);
}

#[test]
fn update_metadata_upgrade_with_the_route_already_written_carries_on() {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::UpdateMetadataUpgrade),
    );
    world.edit_region(|region| {
        region.leader_peer = Some(Peer::sim(TO));
        region.follower_peers.clear();
        region.leader_state = None;
        region.leader_down_since_ms = None;
    });
    let decision = point.read_route(&mut world);
    assert_eq!(
        decision.events,
        vec![
            route_read(world.route()),
            MigrationEvent::HooksCalled {
                hooks: vec![
                    Hook::DeregisterFailureDetector {
                        peer: FROM,
                        region_id: region_id()
                    },
                    Hook::InvalidateTableCache { table_id: TABLE_ID },
                ]
            },
            entered(StateName::CloseDowngradedRegion),
            sent(
                FROM,
                close_instruction(),
                CLOSE_REGION_TIMEOUT_MS,
                world.now_ms,
                1
            ),
        ]
    );
}

fn update_metadata_upgrade_rolls_back_on(edit: impl FnOnce(&mut RegionRoute), message: &str) {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::UpdateMetadataUpgrade),
    );
    world.edit_region(edit);
    let decision = point.read_route(&mut world);
    assert_eq!(
        decision.events,
        vec![
            route_read(world.route()),
            rollback_started(ErrorKind::UnexpectedRoute, message),
        ]
    );
    assert_eq!(decision.action, read_route_action());
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Failed));
    assert_eq!(run.state().report.final_error.as_deref(), Some(message));
}

#[test]
fn update_metadata_upgrade_with_the_candidate_leading_but_still_downgrading_is_not_retried() {
    update_metadata_upgrade_rolls_back_on(
        |region| region.leader_peer = Some(Peer::sim(TO)),
        "unexpected intermediate state: region 1024:1 names the candidate 2 as leader but is still Downgrading",
    );
}

#[test]
fn update_metadata_upgrade_with_another_leader_is_not_retried() {
    update_metadata_upgrade_rolls_back_on(
        |region| region.leader_peer = Some(Peer::sim(OTHER)),
        "unexpected region leader of region 1024:1: expected 1, found 3",
    );
}

#[test]
fn update_metadata_upgrade_cas_refused_is_retryable() {
    let mut world = World::with_candidate_follower();
    let mut point = drive(&mut world, &Setup::default(), cas_of(RouteChange::Upgrade));
    let now_ms = world.now_ms;
    let decision = point.decide(&mut world, cas_refused_observation(RouteChange::Upgrade, 1));
    assert_eq!(
        decision.events,
        vec![
            cas_refused(RouteChange::Upgrade, 1),
            retry_scheduled(
                1,
                500,
                now_ms,
                0,
                step_error(ErrorKind::CasConflict, upgrade_cas_message(), true)
            ),
        ]
    );
    assert!(!point.state.new_route_written);
}

// ---- UpdateMetadata::Rollback ----------------------------------------------------------

#[test]
fn update_metadata_rollback_clears_downgrading_then_aborts_and_rolls_back() {
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::UpgradeRegion,
        [MailboxOutcome::Reply(upgrade_reply(true, false, None))],
    );
    let mut point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::UpdateMetadataRollback),
    );
    let route = world.route().expect("route");
    let decision = point.perform(&mut world);
    assert_eq!(decision.events, vec![route_read(Some(route.clone()))]);
    assert_eq!(
        decision.action,
        Action::CasRoute {
            table_id: TABLE_ID,
            expected_version: 1,
            route: with_region(&route, |region| {
                region.leader_state = None;
                region.leader_down_since_ms = None;
            }),
            change: RouteChange::ClearDowngrading,
            region_move: None,
        }
    );

    let decision = point.perform(&mut world);
    let hooks = vec![
        Hook::RegisterFailureDetector {
            peer: FROM,
            region_id: region_id(),
        },
        Hook::InvalidateTableCache { table_id: TABLE_ID },
    ];
    assert_eq!(
        decision.events,
        vec![
            cas_applied(RouteChange::ClearDowngrading, 1),
            MigrationEvent::HooksCalled {
                hooks: hooks.clone()
            },
            entered_abort(FAILED_UPGRADE),
            rollback_started(ErrorKind::MigrationAborted, ABORTED_FAILED_UPGRADE),
        ]
    );
    assert_eq!(decision.hooks, hooks);
    assert_eq!(decision.action, read_route_action());

    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            route_read(world.route()),
            MigrationEvent::HooksCalled {
                hooks: vec![Hook::RegisterFailureDetector {
                    peer: FROM,
                    region_id: region_id()
                }]
            },
            MigrationEvent::RollbackFinished {
                succeeded: true,
                error: None
            },
            finished(Outcome::Aborted, Some(ABORTED_FAILED_UPGRADE)),
        ]
    );
    assert_eq!(decision.action, finish_action(Outcome::Aborted));
    assert_eq!(point.state.status(), Status::Aborted);
    region_is(&world, FROM, false);
}

#[test]
fn update_metadata_rollback_cas_refused_is_retryable() {
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::UpgradeRegion,
        [MailboxOutcome::Reply(upgrade_reply(true, false, None))],
    );
    let mut point = drive(
        &mut world,
        &Setup::default(),
        cas_of(RouteChange::ClearDowngrading),
    );
    let now_ms = world.now_ms;
    let decision = point.decide(
        &mut world,
        cas_refused_observation(RouteChange::ClearDowngrading, 1),
    );
    assert_eq!(
        decision.events,
        vec![
            cas_refused(RouteChange::ClearDowngrading, 1),
            retry_scheduled(
                1,
                500,
                now_ms,
                0,
                step_error(
                    ErrorKind::CasConflict,
                    "failed to update the table route while rolling back the downgrade of region 1024:1: table 1024 was changed concurrently",
                    true
                )
            ),
        ]
    );
    assert_eq!(point.state.state, StateName::UpdateMetadataRollback);
}

// ---- CloseDowngradedRegion and End -----------------------------------------------------

#[test]
fn close_downgraded_region_ends_whatever_the_old_leader_answers() {
    let answers = [
        (
            MailboxOutcome::Reply(ok_reply(InstructionKind::CloseRegion, None)),
            reply_received(FROM, ok_reply(InstructionKind::CloseRegion, None)),
        ),
        (
            MailboxOutcome::Reply(Reply::CloseRegion {
                result: false,
                error: Some("busy".to_string()),
            }),
            reply_received(
                FROM,
                Reply::CloseRegion {
                    result: false,
                    error: Some("busy".to_string()),
                },
            ),
        ),
        (
            MailboxOutcome::Reply(upgrade_reply(true, true, None)),
            reply_received(FROM, upgrade_reply(true, true, None)),
        ),
        (
            MailboxOutcome::Timeout,
            MigrationEvent::MailboxTimedOut {
                peer: FROM,
                instruction: InstructionKind::CloseRegion,
            },
        ),
        (
            MailboxOutcome::Unreachable,
            MigrationEvent::PeerUnreachable {
                peer: FROM,
                instruction: InstructionKind::CloseRegion,
            },
        ),
    ];
    for (answer, event) in answers {
        let mut world = World::with_candidate_follower();
        let mut point = drive(
            &mut world,
            &Setup::default(),
            sending(InstructionKind::CloseRegion),
        );
        let decision = point.decide(&mut world, Observation::Mailbox(answer));
        assert_eq!(
            decision.events,
            vec![
                event,
                entered(StateName::End),
                finished(Outcome::Completed, None)
            ]
        );
        assert_eq!(decision.action, finish_action(Outcome::Completed));
        region_is(&world, TO, false);
    }
}

#[test]
fn end_is_terminal_and_refuses_any_further_input() {
    let mut world = World::default();
    let run = world.run_submitted(&Setup::default());
    assert_eq!(run.outcome, Some(Outcome::Completed));
    let state = run.state();
    for observation in [
        Observation::Begin,
        Observation::Resumed,
        Observation::WaitElapsed,
        read_route_observation(&world),
    ] {
        assert_eq!(
            decide(&state, world.now_ms, Input::new(observation.clone())),
            Err(DecideError::Finished {
                outcome: "completed",
                input: format!("{observation:?}"),
            })
        );
    }
}

// ---- Framework retry -------------------------------------------------------------------

#[test]
fn framework_retry_backs_off_exponentially_with_jitter_up_to_a_quarter_then_rolls_back() {
    let mut world = World::default();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::Start),
    );
    let error = step_error(
        ErrorKind::MetadataStore,
        "metadata store error: read the route of table 1024: injected store error",
        true,
    );
    // (jitter value, expected delay): 500 ms, 1000 ms + 25%, 2000 ms + 10%.
    for (attempt, (jitter_random, delay_ms)) in [(0, 500), (10_000, 1_250), (4_000, 2_200)]
        .into_iter()
        .enumerate()
    {
        let now_ms = world.now_ms;
        let decision = point.decide_with_jitter(
            &mut world,
            store_failed(READ_ROUTE_OPERATION),
            jitter_random,
        );
        assert_eq!(
            decision.events,
            vec![
                metadata_failed(READ_ROUTE_OPERATION),
                retry_scheduled(
                    attempt as u32 + 1,
                    delay_ms,
                    now_ms,
                    jitter_random,
                    error.clone()
                ),
            ]
        );
        world.now_ms = now_ms + delay_ms;
        let decision = point.decide(&mut world, Observation::WaitElapsed);
        assert_eq!(decision.action, read_route_action());
    }
    assert_eq!(point.state.retries_left(), 0);
    let decision = point.decide(&mut world, store_failed(READ_ROUTE_OPERATION));
    let exhausted = "retry budget exhausted after 3 retries: metadata store error: read the route of table 1024: injected store error";
    assert_eq!(
        decision.events,
        vec![
            metadata_failed(READ_ROUTE_OPERATION),
            rollback_started(ErrorKind::RetryBudgetExhausted, exhausted),
        ]
    );
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Failed));
    assert_eq!(run.state().report.final_error.as_deref(), Some(exhausted));
    assert_eq!(run.state().retries_used, 3);
}

#[test]
fn framework_retry_jitter_never_exceeds_a_quarter_of_the_backoff() {
    let world = World::default();
    let mut log = world.submit(&Setup::default());
    log.push(TimedEvent {
        at_ms: world.now_ms,
        event: MigrationEvent::LocksAcquired {
            lock_keys: lock_keys_of_default_setup(),
            waited_ms: 0,
        },
    });
    log.push(TimedEvent {
        at_ms: world.now_ms,
        event: entered(StateName::Start),
    });
    let state = fold(&log);
    for jitter_random in [0, 1, 9_999, 10_000, 10_001, 123_456_789, u32::MAX] {
        let input = Input {
            observation: store_failed(READ_ROUTE_OPERATION),
            jitter_random,
        };
        let decision = decide(&state, world.now_ms, input).expect("decide");
        let delay_ms = decision
            .events
            .iter()
            .find_map(|event| match event {
                MigrationEvent::RetryScheduled { delay_ms, .. } => Some(*delay_ms),
                _ => None,
            })
            .expect("a retry");
        assert!(
            (500..=625).contains(&delay_ms),
            "jitter {jitter_random} gave {delay_ms} ms"
        );
    }
}

#[test]
fn framework_retry_budget_is_shared_by_all_the_states_of_a_procedure() {
    let mut world = World::default();
    world.script(
        InstructionKind::OpenRegion,
        [MailboxOutcome::Timeout, MailboxOutcome::Timeout],
    );
    world.cas.extend([CasScript::Refuse, CasScript::Refuse]);
    let run = world.run_submitted(&Setup::default());
    let retries: Vec<(u32, u64, ErrorKind)> = run
        .events()
        .iter()
        .filter_map(|event| match event {
            MigrationEvent::RetryScheduled {
                attempt,
                delay_ms,
                error,
                ..
            } => Some((*attempt, *delay_ms, error.kind)),
            _ => None,
        })
        .collect();
    assert_eq!(
        retries,
        vec![
            (1, 500, ErrorKind::MailboxTimeout),
            (2, 1_000, ErrorKind::MailboxTimeout),
            (3, 2_000, ErrorKind::CasConflict),
        ]
    );
    assert_eq!(run.outcome, Some(Outcome::Failed));
    assert_eq!(
        run.state().report.final_error.as_deref(),
        Some(
            format!(
                "retry budget exhausted after 3 retries: {}",
                downgrade_cas_message()
            )
            .as_str()
        )
    );
    // Two refusals bumped the version; nothing of ours was written.
    assert_eq!(world.route().map(|r| r.version), Some(2));
    region_is(&world, FROM, false);
}

// ---- The framework rollback ------------------------------------------------------------

/// A world where the upgrade CAS is refused until the retry budget is used up, so the
/// framework rolls back with the region still Downgrading; then `rollback_cas` scripts.
fn world_rolling_back_while_downgrading(rollback_cas: &[CasScript]) -> World {
    let mut world = World::with_candidate_follower();
    world.cas.push_back(CasScript::Apply);
    world.cas.extend([CasScript::Refuse; 4]);
    world.cas.extend(rollback_cas.iter().copied());
    world
}

fn upgrade_exhausted_message() -> String {
    format!(
        "retry budget exhausted after 3 retries: {}",
        upgrade_cas_message()
    )
}

#[test]
fn rollback_clears_downgrading_with_a_cas_and_finishes_failed() {
    let mut world = world_rolling_back_while_downgrading(&[]);
    let mut point = drive(&mut world, &Setup::default(), rollback_reading_route);
    assert_eq!(
        point.state.rollback,
        Some(step_error(
            ErrorKind::RetryBudgetExhausted,
            &upgrade_exhausted_message(),
            false
        ))
    );
    let route = world.route().expect("route");
    assert_eq!(route.version, 5);
    let decision = point.perform(&mut world);
    assert_eq!(decision.events, vec![route_read(Some(route.clone()))]);
    assert_eq!(
        decision.action,
        Action::CasRoute {
            table_id: TABLE_ID,
            expected_version: 5,
            route: with_region(&route, |region| {
                region.leader_state = None;
                region.leader_down_since_ms = None;
            }),
            change: RouteChange::ClearDowngrading,
            region_move: None,
        }
    );
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            cas_applied(RouteChange::ClearDowngrading, 5),
            MigrationEvent::HooksCalled {
                hooks: vec![Hook::RegisterFailureDetector {
                    peer: FROM,
                    region_id: region_id()
                }]
            },
            MigrationEvent::RollbackFinished {
                succeeded: true,
                error: None
            },
            finished(Outcome::Failed, Some(&upgrade_exhausted_message())),
        ]
    );
    assert_eq!(decision.action, finish_action(Outcome::Failed));
    assert!(point.state.report.rolled_back);
    region_is(&world, FROM, false);
}

#[test]
fn rollback_cas_refused_retries_the_rollback_with_its_own_backoff() {
    let mut world = world_rolling_back_while_downgrading(&[CasScript::Refuse]);
    let mut point = drive(&mut world, &Setup::default(), |state, action| {
        state.rollback.is_some() && matches!(action, Action::CasRoute { .. })
    });
    let now_ms = world.now_ms;
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events,
        vec![
            cas_refused(RouteChange::ClearDowngrading, 5),
            rollback_retry_scheduled(
                1,
                500,
                now_ms,
                step_error(ErrorKind::CasConflict, rollback_cas_message(), true)
            ),
        ]
    );
    assert_eq!(
        decision.action,
        wait_action(now_ms + 500, WaitReason::RollbackBackoff)
    );
    assert_eq!(point.state.status(), Status::RollingBack);
    assert_eq!(point.state.rollback_retries_used, 1);
    assert_eq!(point.state.retries_used, 3);

    let decision = point.perform(&mut world);
    assert_eq!(decision.events, vec![MigrationEvent::WaitElapsed]);
    assert_eq!(decision.action, read_route_action());
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Failed));
    region_is(&world, FROM, false);
}

#[test]
fn rollback_keeps_retrying_with_a_capped_backoff_until_the_route_is_clear() {
    // R2.4: the CAS clearing Downgrading loses 10 times; the rollback never gives up while
    // the region is Downgrading, its backoff doubling up to 30 s.
    let mut world = world_rolling_back_while_downgrading(&[CasScript::Refuse; 10]);
    let mut point = drive(&mut world, &Setup::default(), |state, action| {
        state.rollback_retries_used == 9 && matches!(action, Action::WaitUntil { .. })
    });
    assert_eq!(point.state.status(), Status::RollingBack);
    assert_eq!(
        point.state.report.rollback_last_error.as_deref(),
        Some(rollback_cas_message())
    );
    region_is(&world, FROM, true);
    let decision = point.perform(&mut world);
    assert_eq!(decision.events, vec![MigrationEvent::WaitElapsed]);
    let run = point.finish(&mut world);
    let rollback_retries: Vec<(u32, u64)> = run
        .events()
        .iter()
        .filter_map(|event| match event {
            MigrationEvent::RetryScheduled {
                attempt,
                delay_ms,
                rollback: true,
                ..
            } => Some((*attempt, *delay_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        rollback_retries,
        vec![
            (1, 500),
            (2, 1_000),
            (3, 2_000),
            (4, 4_000),
            (5, 8_000),
            (6, 16_000),
            (7, ROLLBACK_BACKOFF_MAX_MS),
            (8, ROLLBACK_BACKOFF_MAX_MS),
            (9, ROLLBACK_BACKOFF_MAX_MS),
            (10, ROLLBACK_BACKOFF_MAX_MS),
        ]
    );
    assert_eq!(ROLLBACK_BACKOFF_MAX_MS, 30_000);
    let events = run.events();
    assert!(matches!(
        &events[events.len() - 5],
        MigrationEvent::RouteRead { version: Some(15), route: Some(route), .. }
            if route.region_route(region_id()).is_some_and(RegionRoute::is_leader_downgrading)
    ));
    assert_eq!(
        events[events.len() - 4..].to_vec(),
        vec![
            cas_applied(RouteChange::ClearDowngrading, 15),
            MigrationEvent::HooksCalled {
                hooks: vec![Hook::RegisterFailureDetector {
                    peer: FROM,
                    region_id: region_id(),
                }],
            },
            MigrationEvent::RollbackFinished {
                succeeded: true,
                error: None,
            },
            finished(Outcome::Failed, Some(&upgrade_exhausted_message())),
        ]
    );
    let state = run.state();
    assert_eq!(state.rollback_retries_used, 10);
    assert!(state.report.rolled_back);
    region_is(&world, FROM, false);
    assert_replays(&run.log);
}

// ---- Cancel ----------------------------------------------------------------------------

fn cancel() -> Observation {
    Observation::Cancel {
        actor: "alice".to_string(),
        reason: "maintenance".to_string(),
    }
}

const CANCELLED: &str = "cancelled by alice: maintenance";

#[test]
fn cancel_rolls_back_from_every_state_before_update_metadata_upgrade() {
    type Predicate = Box<dyn Fn(&MigrationState, &Action) -> bool + Send>;
    let points: Vec<(StateName, World, Predicate)> = vec![
        (
            StateName::Start,
            World::default(),
            Box::new(reading_route_in(StateName::Start)),
        ),
        (
            StateName::OpenCandidateRegion,
            World::default(),
            Box::new(sending(InstructionKind::OpenRegion)),
        ),
        (
            StateName::UpdateMetadataDowngrade,
            World::default(),
            Box::new(cas_of(RouteChange::Downgrade)),
        ),
        (
            StateName::DowngradeLeaderRegion,
            World::default(),
            Box::new(sending(InstructionKind::DowngradeRegion)),
        ),
        (
            StateName::UpgradeCandidateRegion,
            World::default(),
            Box::new(sending(InstructionKind::UpgradeRegion)),
        ),
        (
            StateName::UpdateMetadataRollback,
            {
                let mut world = World::default();
                world.script(
                    InstructionKind::UpgradeRegion,
                    [MailboxOutcome::Reply(upgrade_reply(true, false, None))],
                );
                world
            },
            Box::new(reading_route_in(StateName::UpdateMetadataRollback)),
        ),
    ];
    for (name, mut world, predicate) in points {
        let mut point = drive(&mut world, &Setup::default(), predicate);
        assert_eq!(point.state.state, name);
        assert_eq!(check_cancel(&point.state), Ok(()));
        let decision = point.decide(&mut world, cancel());
        assert_eq!(
            decision.events,
            vec![
                MigrationEvent::OperatorCancelled {
                    actor: "alice".to_string(),
                    reason: "maintenance".to_string()
                },
                rollback_started(ErrorKind::Cancelled, CANCELLED),
            ],
            "cancel in {name}"
        );
        assert_eq!(decision.action, read_route_action(), "cancel in {name}");
        assert_eq!(point.state.outstanding, None);
        let run = point.finish(&mut world);
        assert_eq!(run.outcome, Some(Outcome::Aborted), "cancel in {name}");
        assert_eq!(run.state().report.final_error.as_deref(), Some(CANCELLED));
        region_is(&world, FROM, false);
        assert_replays(&run.log);
    }
}

#[test]
fn cancel_during_the_lease_wait_clears_downgrading() {
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::DowngradeRegion,
        [MailboxOutcome::Unreachable],
    );
    let mut point = drive(
        &mut world,
        &Setup::default(),
        waiting_for(WaitReason::LeaseExpiry),
    );
    let decision = point.decide(&mut world, cancel());
    assert_eq!(decision.action, read_route_action());
    assert_eq!(point.state.waiting, None);
    let route = world.route().expect("route");
    let decision = point.perform(&mut world);
    assert_eq!(decision.events, vec![route_read(Some(route.clone()))]);
    assert!(matches!(
        decision.action,
        Action::CasRoute {
            change: RouteChange::ClearDowngrading,
            expected_version: 1,
            ..
        }
    ));
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Aborted));
    region_is(&world, FROM, false);
}

#[test]
fn cancel_during_a_framework_retry_backoff_rolls_back() {
    let mut world = World::default();
    world.script(InstructionKind::OpenRegion, [MailboxOutcome::Timeout]);
    let mut point = drive(
        &mut world,
        &Setup::default(),
        waiting_for(WaitReason::Backoff),
    );
    assert!(matches!(point.state.status(), Status::Retrying { .. }));
    let decision = point.decide(&mut world, cancel());
    assert_eq!(
        decision.events[1],
        rollback_started(ErrorKind::Cancelled, CANCELLED)
    );
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Aborted));
}

fn assert_cancel_refused(state: &MigrationState, now_ms: u64, refusal: &str) {
    assert_eq!(check_cancel(state), Err(refusal.to_string()));
    assert_eq!(
        decide(state, now_ms, Input::new(cancel())),
        Err(DecideError::CancelRefused(refusal.to_string()))
    );
}

#[test]
fn cancel_is_refused_in_update_metadata_upgrade() {
    let mut world = World::default();
    let point = drive(
        &mut world,
        &Setup::default(),
        reading_route_in(StateName::UpdateMetadataUpgrade),
    );
    assert_cancel_refused(
        &point.state,
        world.now_ms,
        "the new route is already written (state UpdateMetadata::Upgrade): the migration can only go forward",
    );
}

#[test]
fn cancel_is_refused_in_close_downgraded_region() {
    let mut world = World::default();
    let point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::CloseRegion),
    );
    assert_cancel_refused(
        &point.state,
        world.now_ms,
        "the new route is already written (state CloseDowngradedRegion): the migration can only go forward",
    );
}

#[test]
fn cancel_is_refused_in_end() {
    let mut world = World::default();
    let run = world.run_submitted(&Setup::default());
    // The log as if it ended between StateEntered(End) and Finished.
    let state = fold(&run.log[..run.log.len() - 1]);
    assert_eq!(state.state, StateName::End);
    assert_eq!(state.outcome, None);
    assert_cancel_refused(
        &state,
        world.now_ms,
        "the new route is already written (state End): the migration can only go forward",
    );
}

#[test]
fn cancel_is_refused_after_the_procedure_finished() {
    let mut world = World::default();
    let run = world.run_submitted(&Setup::default());
    let state = run.state();
    assert_eq!(
        check_cancel(&state),
        Err("the migration already finished (completed)".to_string())
    );
    assert_eq!(
        decide(&state, world.now_ms, Input::new(cancel())),
        Err(DecideError::Finished {
            outcome: "completed",
            input: format!("{:?}", cancel()),
        })
    );

    let mut world = World::new(region_route(Some(OTHER), &[]));
    let run = world.run_submitted(&Setup::default());
    assert_eq!(
        check_cancel(&run.state()),
        Err("the migration already finished (aborted)".to_string())
    );
}

#[test]
fn cancel_is_refused_while_rolling_back() {
    let mut world = world_rolling_back_while_downgrading(&[CasScript::Refuse]);
    let point = drive(
        &mut world,
        &Setup::default(),
        waiting_for(WaitReason::RollbackBackoff),
    );
    assert_cancel_refused(
        &point.state,
        world.now_ms,
        "the migration is already rolling back",
    );

    let mut world = World::default();
    world.routes.clear();
    let point = drive(&mut world, &Setup::default(), rollback_reading_route);
    assert_cancel_refused(
        &point.state,
        world.now_ms,
        "the migration is already rolling back",
    );
}

#[test]
fn cancel_twice_is_refused_the_second_time() {
    let mut world = World::default();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::OpenRegion),
    );
    point.decide(&mut world, cancel());
    assert_cancel_refused(
        &point.state,
        world.now_ms,
        "the migration is already rolling back",
    );
}

// ---- Idempotent resumption -------------------------------------------------------------

/// Feeds Resumed then LocksAcquired; returns the decision after the locks.
fn resume_and_lock(point: &mut Point, world: &mut World) -> Decision {
    let decision = point.decide(world, Observation::Resumed);
    assert_eq!(decision.events, vec![MigrationEvent::Resumed]);
    assert_eq!(
        decision.action,
        Action::AcquireLocks {
            lock_keys: lock_keys_of_default_setup()
        }
    );
    assert!(!point.state.locks_held);
    point.perform(world)
}

fn locks_acquired() -> MigrationEvent {
    MigrationEvent::LocksAcquired {
        lock_keys: lock_keys_of_default_setup(),
        waited_ms: 0,
    }
}

#[test]
fn resume_after_instruction_sent_resends_it_with_the_same_attempt_and_a_fresh_wait() {
    let mut world = World::with_candidate_follower();
    let failed = downgrade_reply(None, true, Some("flush failed"));
    world.script(
        InstructionKind::DowngradeRegion,
        [MailboxOutcome::Reply(failed)],
    );
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending_attempt(InstructionKind::DowngradeRegion, 2),
    );
    let sent_at_ms = world.now_ms;
    assert_eq!(
        point.log.last().map(|t| &t.event),
        Some(&sent(
            FROM,
            downgrade_instruction(9_900),
            9_900,
            sent_at_ms,
            2
        ))
    );
    let before = point.state.clone();

    // The engine restarts 300 ms later. R2.7: the re-send waits afresh, as long as what is
    // left of the budget (the downtime is not charged), never until its old deadline.
    world.now_ms += 300;
    let decision = resume_and_lock(&mut point, &mut world);
    let resent_at_ms = world.now_ms;
    assert_eq!(
        decision.events,
        vec![
            locks_acquired(),
            MigrationEvent::InstructionSent {
                peer: Peer::sim(FROM),
                instruction: downgrade_instruction(9_900),
                timeout_ms: 9_900,
                deadline_ms: resent_at_ms + 9_900,
                attempt: 2,
                resend: true,
                regions: Vec::new(),
            },
        ]
    );
    assert_eq!(
        decision.action,
        send_action(FROM, downgrade_instruction(9_900), 9_900)
    );
    assert_eq!(point.state.step.attempts, before.step.attempts);
    assert_eq!(point.state.report.counters.resends, 1);
    assert_eq!(point.state.lease_deadline_ms, before.lease_deadline_ms);
    assert_eq!(point.state.operations_elapsed_ms, 100);

    // The time charged runs from the re-send: the 300 ms outage is free.
    let decision = point.perform(&mut world);
    assert_eq!(
        decision.events[1],
        timed(InstructionKind::DowngradeRegion, 100)
    );
    assert_eq!(point.state.operations_elapsed_ms, 100 + 100);
}

/// Drives a downgrade with a 1 s budget to its send, then records a note 1 s after the send
/// while it is outstanding, so the resume charges the whole budget (R2.7 charges up to the
/// last event before the crash) and the re-send has no time left.
fn downgrade_outstanding_with_its_budget_used_up(world: &mut World, revision: u32) -> Point {
    let setup = Setup {
        policy: RetryPolicy {
            revision,
            ..RetryPolicy::default()
        },
        ..Setup::default().with_timeout_ms(1_000)
    };
    let mut point = drive(world, &setup, sending(InstructionKind::DowngradeRegion));
    let sent_at_ms = point.log.last().expect("the send is logged").at_ms;
    let note = TimedEvent {
        at_ms: sent_at_ms + 1_000,
        event: MigrationEvent::CancelRefused {
            actor: "test".to_string(),
            reason: "charge the budget".to_string(),
            refusal: "a note recorded while the downgrade is outstanding".to_string(),
        },
    };
    point.state.apply(note.at_ms, &note.event);
    point.log.push(note);
    world.now_ms = sent_at_ms + 1_500;
    point
}

/// Issue 15: a re-send with no time left is not recorded as sent (the mailbox would never be
/// called): since behaviour revision 3 the send made before the crash is recorded as timed
/// out, and the procedure decides on that timeout at once.
#[test]
fn resume_with_no_budget_left_records_the_timeout_and_sends_nothing() {
    let mut world = World::with_candidate_follower();
    let mut point = downgrade_outstanding_with_its_budget_used_up(&mut world, BEHAVIOUR_REVISION);
    let sends_before = sent_instructions(&world).len();
    let decision = resume_and_lock(&mut point, &mut world);
    assert_eq!(
        decision.events[..2].to_vec(),
        vec![
            locks_acquired(),
            MigrationEvent::InstructionExpired {
                peer: FROM,
                instruction: InstructionKind::DowngradeRegion,
            },
        ]
    );
    // Nothing more is charged: the resume charged the budget up to the note.
    assert!(
        !decision
            .events
            .iter()
            .any(|event| matches!(event, MigrationEvent::OperationTimed { .. })),
        "{:#?}",
        decision.events
    );
    assert!(
        !decision
            .events
            .iter()
            .any(|event| matches!(event, MigrationEvent::InstructionSent { .. })),
        "nothing is recorded as sent: {:#?}",
        decision.events
    );
    assert!(!matches!(decision.action, Action::Send { .. }));
    assert_eq!(point.state.remaining_budget_ms(), 0);
    let run = point.finish(&mut world);
    assert_eq!(
        sent_instructions(&world)[sends_before..]
            .iter()
            .filter(|(_, instruction, _)| instruction.kind() == InstructionKind::DowngradeRegion)
            .count(),
        0,
        "no downgrade reaches the mailbox after the resume"
    );
    assert!(run.outcome.is_some());
    assert_replays(&run.log);
}

/// A revision 2 procedure keeps recording the zero-timeout re-send it always did, so its log
/// replays as recorded.
#[test]
fn a_revision_two_procedure_still_records_a_zero_timeout_resend() {
    let mut world = World::with_candidate_follower();
    let mut point = downgrade_outstanding_with_its_budget_used_up(&mut world, 2);
    let decision = resume_and_lock(&mut point, &mut world);
    assert!(
        matches!(
            &decision.events[..],
            [
                _,
                MigrationEvent::InstructionSent {
                    timeout_ms: 0,
                    resend: true,
                    ..
                }
            ]
        ),
        "{:#?}",
        decision.events
    );
    assert!(matches!(
        decision.action,
        Action::Send { timeout_ms: 0, .. }
    ));
}

#[test]
fn resume_after_an_open_region_sent_resends_it_with_a_fresh_wait() {
    let mut world = World::default();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::OpenRegion),
    );
    world.now_ms += 1_000;
    let decision = resume_and_lock(&mut point, &mut world);
    assert_eq!(
        decision.events,
        vec![
            locks_acquired(),
            MigrationEvent::InstructionSent {
                peer: Peer::sim(TO),
                instruction: open_instruction(),
                // R2.7: the downtime does not shorten the wait.
                timeout_ms: OPEN_CANDIDATE_TIMEOUT_MS,
                deadline_ms: world.now_ms + OPEN_CANDIDATE_TIMEOUT_MS,
                attempt: 1,
                resend: true,
                regions: Vec::new(),
            },
        ]
    );
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Completed));
    assert_replays(&run.log);
}

#[test]
fn resume_after_the_deadline_passed_resends_with_a_fresh_mailbox_timeout() {
    let mut world = World::default();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::CloseRegion),
    );
    world.now_ms += 5_000;
    let decision = resume_and_lock(&mut point, &mut world);
    assert_eq!(
        decision.events,
        vec![
            locks_acquired(),
            MigrationEvent::InstructionSent {
                peer: Peer::sim(FROM),
                instruction: close_instruction(),
                timeout_ms: CLOSE_REGION_TIMEOUT_MS,
                deadline_ms: world.now_ms + CLOSE_REGION_TIMEOUT_MS,
                attempt: 1,
                resend: true,
                regions: Vec::new(),
            },
        ]
    );
}

#[test]
fn resume_during_the_lease_wait_keeps_the_same_until() {
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::DowngradeRegion,
        [MailboxOutcome::Unreachable],
    );
    let mut point = drive(
        &mut world,
        &Setup::default(),
        waiting_for(WaitReason::LeaseExpiry),
    );
    let deadline_ms = point.state.lease_deadline_ms.expect("lease");
    world.now_ms += 2_000;
    let decision = resume_and_lock(&mut point, &mut world);
    assert_eq!(decision.events, vec![locks_acquired()]);
    assert_eq!(
        decision.action,
        wait_action(deadline_ms, WaitReason::LeaseExpiry)
    );
    assert_eq!(point.state.lease_deadline_ms, Some(deadline_ms));
    let decision = point.perform(&mut world);
    assert_eq!(world.now_ms, deadline_ms);
    assert_eq!(
        decision.events[..2].to_vec(),
        vec![
            MigrationEvent::WaitElapsed,
            entered(StateName::UpgradeCandidateRegion)
        ]
    );
}

#[test]
fn resume_during_a_retry_backoff_keeps_the_due_time_and_the_retries_used() {
    let mut world = World::default();
    world.script(InstructionKind::OpenRegion, [MailboxOutcome::Timeout]);
    let mut point = drive(
        &mut world,
        &Setup::default(),
        waiting_for(WaitReason::Backoff),
    );
    let Action::WaitUntil { until_ms, .. } = point.action.clone() else {
        panic!("the procedure waits: {:?}", point.action);
    };
    let decision = resume_and_lock(&mut point, &mut world);
    assert_eq!(decision.events, vec![locks_acquired()]);
    assert_eq!(decision.action, wait_action(until_ms, WaitReason::Backoff));
    assert_eq!(point.state.retries_used, 1);
}

/// Stops right after the CAS of `change` was applied in the world (its event lost), resumes,
/// and returns the decision that follows the re-read of the route.
fn resume_after_an_unlogged_cas(world: &mut World, change: RouteChange) -> (Point, Decision) {
    let log = world.submit(&Setup::default());
    let run = world.run(
        log,
        Observation::Begin,
        Stop::after_performing(cas_of(change)),
    );
    assert!(run.stopped);
    let mut point = Point {
        state: run.state(),
        action: run.last_action.clone().expect("action"),
        log: run.log,
    };
    let decision = resume_and_lock(&mut point, world);
    assert_eq!(decision.events, vec![locks_acquired()]);
    assert_eq!(decision.action, read_route_action());
    let decision = point.perform(world);
    (point, decision)
}

#[test]
fn resume_after_an_unlogged_downgrade_cas_rereads_the_route_and_carries_on() {
    let mut world = World::with_candidate_follower();
    let (point, decision) = resume_after_an_unlogged_cas(&mut world, RouteChange::Downgrade);
    let now_ms = world.now_ms;
    assert_eq!(
        decision.events,
        vec![
            route_read(world.route()),
            entered(StateName::DowngradeLeaderRegion),
            MigrationEvent::LeaseDeadlineSet {
                deadline_ms: now_ms + REGION_LEASE_MS
            },
            sent(FROM, downgrade_instruction(10_000), 10_000, now_ms, 1),
        ]
    );
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Completed));
    assert_eq!(world.route().map(|r| r.version), Some(2));
    region_is(&world, TO, false);
    assert_replays(&run.log);
}

#[test]
fn resume_after_an_unlogged_upgrade_cas_rereads_the_route_and_carries_on() {
    let mut world = World::with_candidate_follower();
    let (point, decision) = resume_after_an_unlogged_cas(&mut world, RouteChange::Upgrade);
    assert_eq!(
        decision.events,
        vec![
            route_read(world.route()),
            MigrationEvent::HooksCalled {
                hooks: vec![
                    Hook::DeregisterFailureDetector {
                        peer: FROM,
                        region_id: region_id()
                    },
                    Hook::InvalidateTableCache { table_id: TABLE_ID },
                ]
            },
            entered(StateName::CloseDowngradedRegion),
            sent(
                FROM,
                close_instruction(),
                CLOSE_REGION_TIMEOUT_MS,
                world.now_ms,
                1
            ),
        ]
    );
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Completed));
    assert_eq!(world.route().map(|r| r.version), Some(2));
    assert_eq!(
        world.datanode_tables[&(TO, TABLE_ID)].region_numbers,
        vec![REGION_NUMBER]
    );
    assert_replays(&run.log);
}

#[test]
fn resume_after_an_unlogged_rollback_metadata_cas_rereads_the_route_and_aborts() {
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::UpgradeRegion,
        [MailboxOutcome::Reply(upgrade_reply(true, false, None))],
    );
    let (point, decision) = resume_after_an_unlogged_cas(&mut world, RouteChange::ClearDowngrading);
    assert_eq!(
        decision.events,
        vec![
            route_read(world.route()),
            MigrationEvent::HooksCalled {
                hooks: vec![
                    Hook::RegisterFailureDetector {
                        peer: FROM,
                        region_id: region_id()
                    },
                    Hook::InvalidateTableCache { table_id: TABLE_ID },
                ]
            },
            entered_abort(FAILED_UPGRADE),
            rollback_started(ErrorKind::MigrationAborted, ABORTED_FAILED_UPGRADE),
        ]
    );
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Aborted));
    assert_eq!(world.route().map(|r| r.version), Some(2));
    region_is(&world, FROM, false);
}

#[test]
fn resume_after_an_unlogged_framework_rollback_cas_rereads_the_route_and_finishes() {
    let mut world = world_rolling_back_while_downgrading(&[]);
    let log = world.submit(&Setup::default());
    let run = world.run(
        log,
        Observation::Begin,
        Stop::after_performing(|state, action| {
            state.rollback.is_some() && matches!(action, Action::CasRoute { .. })
        }),
    );
    region_is(&world, FROM, false);
    let resumed = world.resume(run.log.clone());
    let events = resumed.events();
    assert_eq!(
        events[run.log.len()..].to_vec(),
        vec![
            MigrationEvent::Resumed,
            locks_acquired(),
            route_read(world.route()),
            MigrationEvent::HooksCalled {
                hooks: vec![Hook::RegisterFailureDetector {
                    peer: FROM,
                    region_id: region_id()
                }]
            },
            MigrationEvent::RollbackFinished {
                succeeded: true,
                error: None
            },
            finished(Outcome::Failed, Some(&upgrade_exhausted_message())),
        ]
    );
    assert_eq!(world.route().map(|r| r.version), Some(6));
}

#[test]
fn restart_never_lengthens_the_budget_refills_retries_or_moves_the_lease() {
    // A bumpy run: an open timeout, a failed downgrade, the slow path, a not-ready upgrade
    // and a refused upgrade CAS.
    let script = |world: &mut World| {
        world.script(InstructionKind::OpenRegion, [MailboxOutcome::Timeout]);
        world.script(
            InstructionKind::DowngradeRegion,
            [
                MailboxOutcome::Reply(downgrade_reply(None, true, Some("flush"))),
                MailboxOutcome::Unreachable,
            ],
        );
        world.script(
            InstructionKind::UpgradeRegion,
            [MailboxOutcome::Reply(upgrade_reply(false, true, None))],
        );
        world.cas.extend([CasScript::Apply, CasScript::Refuse]);
        world.timeout_elapsed_ms = Some(1_000);
    };
    let mut world = World::default();
    script(&mut world);
    let whole = world.run_submitted(&Setup::default().with_timeout_ms(20_000));
    assert_eq!(whole.outcome, Some(Outcome::Completed));
    let whole_state = whole.state();

    for k in batch_ends(&whole.log) {
        if k == whole.log.len() {
            continue;
        }
        let mut world = World::default();
        script(&mut world);
        let log = world.submit(&Setup::default().with_timeout_ms(20_000));
        let crashed = world.run(
            log,
            Observation::Begin,
            Stop::AfterEvents {
                count: k,
                perform: false,
            },
        );
        assert_eq!(crashed.log, whole.log[..k].to_vec(), "prefix {k}");
        let at_crash = crashed.state();
        let resumed = world.resume(crashed.log);
        assert_eq!(resumed.outcome, Some(Outcome::Completed), "crash after {k}");
        assert_eq!(resumed.route, whole.route, "crash after {k}");
        for j in k + 1..=resumed.log.len() {
            let later = fold(&resumed.log[..j]);
            assert!(later.remaining_budget_ms() <= at_crash.remaining_budget_ms());
            assert!(later.retries_used >= at_crash.retries_used);
            if at_crash.lease_deadline_ms.is_some() {
                assert!(
                    later.lease_deadline_ms == at_crash.lease_deadline_ms
                        || later.lease_deadline_ms.is_none(),
                    "crash after {k}: lease moved to {:?}",
                    later.lease_deadline_ms
                );
            }
        }
        let final_state = resumed.state();
        assert_eq!(final_state.retries_used, whole_state.retries_used);
        assert_eq!(
            final_state.operations_elapsed_ms, whole_state.operations_elapsed_ms,
            "crash after {k}"
        );
        assert_replays(&resumed.log);
    }
}

#[test]
fn resume_after_a_long_outage_resends_the_downgrade_with_the_whole_remaining_budget() {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::DowngradeRegion),
    );
    let lease_deadline_ms = point.state.lease_deadline_ms;
    // The engine comes back 15 s later, past the downgrade's old deadline: the outage is not
    // charged (R2.7), so the re-send gets the whole 10 s budget.
    world.now_ms += 15_000;
    let decision = resume_and_lock(&mut point, &mut world);
    assert_eq!(
        decision.events,
        vec![
            locks_acquired(),
            MigrationEvent::InstructionSent {
                peer: Peer::sim(FROM),
                instruction: downgrade_instruction(10_000),
                timeout_ms: 10_000,
                deadline_ms: world.now_ms + 10_000,
                attempt: 1,
                resend: true,
                regions: Vec::new(),
            },
        ]
    );
    // The lease deadline is a wall-clock fact about the old leader: it stays as recorded.
    assert_eq!(point.state.lease_deadline_ms, lease_deadline_ms);
    let run = point.finish(&mut world);
    assert_eq!(run.outcome, Some(Outcome::Completed));
    assert_eq!(run.state().report.counters.slow_path_waits, 0);
    region_is(&world, TO, false);
    assert_replays(&run.log);
}

#[test]
fn resume_charges_an_outstanding_downgrade_up_to_the_last_event_before_the_crash() {
    let mut world = World::with_candidate_follower();
    let (point, sent_at_ms) = at_first_downgrade(&mut world, &Setup::default());
    let mut log = point.log;
    // A note written 400 ms after the send (a refused cancel), then the crash; the engine
    // resumes 5 s later.
    log.push(TimedEvent {
        at_ms: sent_at_ms + 400,
        event: MigrationEvent::CancelRefused {
            actor: "alice".to_string(),
            reason: "maintenance".to_string(),
            refusal: "test".to_string(),
        },
    });
    log.push(TimedEvent {
        at_ms: sent_at_ms + 5_400,
        event: MigrationEvent::Resumed,
    });
    let state = fold(&log);
    assert_eq!(state.operations_elapsed_ms, 400);
    assert_eq!(state.remaining_budget_ms(), 9_600);
    let outstanding = state.outstanding.clone().expect("outstanding");
    assert!(outstanding.interrupted);
    // The re-send counts afresh from its own time.
    log.push(TimedEvent {
        at_ms: sent_at_ms + 5_400,
        event: MigrationEvent::InstructionSent {
            peer: Peer::sim(FROM),
            instruction: downgrade_instruction(10_000),
            timeout_ms: 9_600,
            deadline_ms: sent_at_ms + 15_000,
            attempt: 1,
            resend: true,
            regions: Vec::new(),
        },
    });
    let state = fold(&log);
    let outstanding = state.outstanding.clone().expect("outstanding");
    assert_eq!(outstanding.first_sent_at_ms, sent_at_ms + 5_400);
    assert!(!outstanding.interrupted);
}

#[test]
fn resume_after_a_cancel_finishes_its_rollback() {
    let mut world = World::with_candidate_follower();
    let mut point = drive(
        &mut world,
        &Setup::default(),
        sending(InstructionKind::DowngradeRegion),
    );
    let sent_before_the_cancel = world.sent.len();
    point.decide(&mut world, cancel());
    // The engine crashes right after the cancel was logged, before the rollback read.
    let resumed = world.resume(point.log.clone());
    assert_eq!(resumed.outcome, Some(Outcome::Aborted));
    assert_eq!(
        resumed.state().report.final_error.as_deref(),
        Some(CANCELLED)
    );
    let rerun = resumed.events()[point.log.len()..].to_vec();
    assert_eq!(
        rerun[..2].to_vec(),
        vec![MigrationEvent::Resumed, locks_acquired()]
    );
    // The rollback reads the route, finds the region still Downgrading, and clears it.
    assert!(matches!(
        &rerun[2],
        MigrationEvent::RouteRead { version: Some(1), route: Some(route), .. }
            if route.region_route(region_id()).is_some_and(RegionRoute::is_leader_downgrading)
    ));
    assert_eq!(rerun[3], cas_applied(RouteChange::ClearDowngrading, 1));
    region_is(&world, FROM, false);
    assert_eq!(world.route().map(|r| r.version), Some(2));
    // Nothing was sent after the cancel: the pending downgrade was dropped.
    assert_eq!(world.sent.len(), sent_before_the_cancel);
    assert_replays(&resumed.log);
}

// ---- The original's flow tests ---------------------------------------------------------

fn path(run: &Run) -> Vec<StateName> {
    run.state().report.collapsed_path()
}

#[test]
fn flow_from_start_with_the_candidate_not_open_completes_on_the_fast_path() {
    let mut world = World::default();
    let run = world.run_submitted(&Setup::default());
    assert_eq!(run.outcome, Some(Outcome::Completed));
    assert_eq!(
        path(&run),
        vec![
            StateName::Start,
            StateName::OpenCandidateRegion,
            StateName::FlushLeaderRegion,
            StateName::UpdateMetadataDowngrade,
            StateName::DowngradeLeaderRegion,
            StateName::UpgradeCandidateRegion,
            StateName::UpdateMetadataUpgrade,
            StateName::CloseDowngradedRegion,
            StateName::End,
        ]
    );
    let sent: Vec<(PeerId, Instruction, u64)> = world
        .sent
        .iter()
        .map(|sent| (sent.peer, sent.instruction.clone(), sent.timeout_ms))
        .collect();
    assert_eq!(
        sent,
        vec![
            (TO, open_instruction(), OPEN_CANDIDATE_TIMEOUT_MS),
            (FROM, flush_instruction(), FLUSH_LEADER_TIMEOUT_MS),
            (FROM, downgrade_instruction(10_000), 10_000),
            (TO, upgrade_instruction(Some(LAST_ENTRY_ID), 9_900), 9_900),
            (FROM, close_instruction(), CLOSE_REGION_TIMEOUT_MS),
        ]
    );
    let state = run.state();
    assert_eq!(state.report.counters.slow_path_waits, 0);
    assert_eq!(state.retries_used, 0);
    assert_eq!(world.now_ms, START_MS + 500);
    assert_eq!(world.route().map(|r| r.version), Some(2));
    region_is(&world, TO, false);
    assert_eq!(
        world.hooks,
        vec![
            Hook::DeregisterFailureDetector {
                peer: FROM,
                region_id: region_id()
            },
            Hook::InvalidateTableCache { table_id: TABLE_ID },
        ]
    );
    assert_replays(&run.log);
}

/// The log cut right after the (first) StateEntered(UpdateMetadata::Downgrade): the last
/// persist point, with everything volatile dropped.
fn cut_at_update_metadata_downgrade(log: &[TimedEvent]) -> Vec<TimedEvent> {
    let index = log
        .iter()
        .position(|timed| timed.event == entered(StateName::UpdateMetadataDowngrade))
        .expect("UpdateMetadata::Downgrade was entered");
    log[..=index].to_vec()
}

#[test]
fn flow_rerun_twice_from_update_metadata_downgrade_on_the_migrated_world_reaches_end() {
    let mut world = World::with_candidate_follower();
    let first = world.run_submitted(&Setup::default());
    assert_eq!(first.outcome, Some(Outcome::Completed));
    let migrated = world.route();
    let persisted = cut_at_update_metadata_downgrade(&first.log);

    for _ in 0..2 {
        let again = world.resume(persisted.clone());
        assert_eq!(again.outcome, Some(Outcome::Completed));
        assert_eq!(world.route(), migrated);
        let rerun = again.events()[persisted.len()..].to_vec();
        // The route already names the candidate: no CAS at all.
        assert!(!rerun
            .iter()
            .any(|event| matches!(event, MigrationEvent::RouteCasApplied { .. })));
        assert_eq!(
            again.state().report.collapsed_path(),
            vec![
                StateName::Start,
                StateName::FlushLeaderRegion,
                StateName::UpdateMetadataDowngrade,
                StateName::DowngradeLeaderRegion,
                StateName::UpgradeCandidateRegion,
                StateName::UpdateMetadataUpgrade,
                StateName::CloseDowngradedRegion,
                StateName::End,
            ]
        );
        assert_replays(&again.log);
    }
}

#[test]
fn flow_open_candidate_retryable_errors_leave_the_route_version_unchanged() {
    let mut world = World::default();
    world.script(
        InstructionKind::OpenRegion,
        vec![MailboxOutcome::Timeout; 2],
    );
    let log = world.submit(&Setup::default());
    let run = world.run(
        log,
        Observation::Begin,
        Stop::before(|state, _| state.retries_used == 2),
    );
    // Restart twice from the last persist point, each time timing out twice more.
    let index = run
        .log
        .iter()
        .position(|timed| timed.event == entered(StateName::OpenCandidateRegion))
        .expect("OpenCandidateRegion was entered");
    let persisted = run.log[..=index].to_vec();
    for _ in 0..2 {
        world.script(
            InstructionKind::OpenRegion,
            vec![MailboxOutcome::Timeout; 2],
        );
        let again = world.run(
            persisted.clone(),
            Observation::Resumed,
            Stop::before(|state, _| state.retries_used == 2),
        );
        assert!(again.stopped);
        assert_eq!(world.route().map(|r| r.version), Some(0));
    }
    // And once more to the end: the budget runs out, nothing was written.
    world.script(
        InstructionKind::OpenRegion,
        vec![MailboxOutcome::Timeout; 4],
    );
    let end = world.resume(persisted);
    assert_eq!(end.outcome, Some(Outcome::Failed));
    assert_eq!(world.route().map(|r| r.version), Some(0));
    region_is(&world, FROM, false);
}

#[test]
fn flow_upgrade_failing_after_its_retries_rolls_back_and_aborts() {
    let script = |world: &mut World| {
        world.script(
            InstructionKind::UpgradeRegion,
            vec![MailboxOutcome::Reply(upgrade_reply(false, true, Some("replay"))); 3],
        );
    };
    let mut world = World::with_candidate_follower();
    script(&mut world);
    let first = world.run_submitted(&Setup::default());
    assert_eq!(first.outcome, Some(Outcome::Aborted));
    assert_eq!(
        path(&first),
        vec![
            StateName::Start,
            StateName::FlushLeaderRegion,
            StateName::UpdateMetadataDowngrade,
            StateName::DowngradeLeaderRegion,
            StateName::UpgradeCandidateRegion,
            StateName::UpdateMetadataRollback,
            StateName::Abort,
        ]
    );
    assert_eq!(
        first.state().report.final_error.as_deref(),
        Some(ABORTED_FAILED_UPGRADE)
    );
    region_is(&world, FROM, false);
    assert_eq!(world.route().map(|r| r.version), Some(2));

    // Re-run twice from UpdateMetadata::Downgrade, volatile state dropped: same answer.
    let persisted = cut_at_update_metadata_downgrade(&first.log);
    for round in 0..2 {
        script(&mut world);
        let again = world.resume(persisted.clone());
        assert_eq!(again.outcome, Some(Outcome::Aborted), "round {round}");
        region_is(&world, FROM, false);
        assert_eq!(world.route().map(|r| r.version), Some(4 + 2 * round));
        assert_replays(&again.log);
    }
}

#[test]
fn flow_with_mailbox_timeouts_on_both_downgrade_and_upgrade_still_completes() {
    let mut world = World::with_candidate_follower();
    // Timeouts reported after 1 s, like the original's mocked ones, in a 30 s budget.
    world.timeout_elapsed_ms = Some(1_000);
    world.script(InstructionKind::DowngradeRegion, [MailboxOutcome::Timeout]);
    world.script(InstructionKind::UpgradeRegion, [MailboxOutcome::Timeout]);
    let run = world.run_submitted(&Setup::default().with_timeout_ms(30_000));
    assert_eq!(run.outcome, Some(Outcome::Completed));
    let state = run.state();
    assert_eq!(state.report.counters.slow_path_waits, 0);
    assert_eq!(state.retries_used, 0);
    // 1000 + 100 in the downgrade, 1000 + 100 in the upgrade.
    assert_eq!(state.operations_elapsed_ms, 2_200);
    let replay_timeouts: Vec<u64> = world
        .sent
        .iter()
        .filter_map(|sent| match sent.instruction {
            Instruction::UpgradeRegion {
                replay_timeout_ms, ..
            } => Some(replay_timeout_ms),
            _ => None,
        })
        .collect();
    assert_eq!(replay_timeouts, vec![28_900, 27_900]);
    region_is(&world, TO, false);
    assert_replays(&run.log);
}

/// The instructions the world received: peer, instruction, mailbox timeout.
fn sent_instructions(world: &World) -> Vec<(PeerId, Instruction, u64)> {
    world
        .sent
        .iter()
        .map(|sent| (sent.peer, sent.instruction.clone(), sent.timeout_ms))
        .collect()
}

/// A run with the candidate already a follower, a 10 s budget, and the given numbers of
/// downgrade and upgrade mailbox timeouts before their answers.
fn run_with_timeouts(downgrade_timeouts: usize, upgrade_timeouts: usize) -> (World, Run) {
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::DowngradeRegion,
        vec![MailboxOutcome::Timeout; downgrade_timeouts],
    );
    world.script(
        InstructionKind::UpgradeRegion,
        vec![MailboxOutcome::Timeout; upgrade_timeouts],
    );
    let run = world.run_submitted(&Setup::default());
    (world, run)
}

fn fast_path() -> Vec<StateName> {
    vec![
        StateName::Start,
        StateName::FlushLeaderRegion,
        StateName::UpdateMetadataDowngrade,
        StateName::DowngradeLeaderRegion,
        StateName::UpgradeCandidateRegion,
        StateName::UpdateMetadataUpgrade,
        StateName::CloseDowngradedRegion,
        StateName::End,
    ]
}

/// Checks a completed run took the fast path: the old leader's downgrade was acknowledged,
/// so the lease deadline was reset and never waited out.
fn assert_fast_path_completed(world: &World, run: &Run) {
    assert_eq!(run.outcome, Some(Outcome::Completed));
    assert_eq!(path(run), fast_path());
    let state = run.state();
    assert_eq!(state.report.counters.slow_path_waits, 0);
    assert_eq!(state.retries_used, 0);
    assert!(run.events().contains(&MigrationEvent::LeaseDeadlineReset));
    region_is(world, TO, false);
    assert_replays(&run.log);
}

/// A run's path when a budget-using timeout sends it to UpdateMetadata::Rollback from `at`.
fn rollback_path_from(at: StateName) -> Vec<StateName> {
    let mut path = vec![
        StateName::Start,
        StateName::FlushLeaderRegion,
        StateName::UpdateMetadataDowngrade,
        StateName::DowngradeLeaderRegion,
    ];
    if at == StateName::UpgradeCandidateRegion {
        path.push(at);
    }
    path.extend([StateName::UpdateMetadataRollback, StateName::Abort]);
    path
}

#[test]
fn flow_with_a_downgrade_timeout_uses_the_whole_budget_and_rolls_back() {
    // The original's "timeout then ok" downgrade, under R2.1: the mailbox waits as long as
    // the budget (10 s), so the timeout uses it up and the attempt 500 ms later finds none
    // left: UpdateMetadata::Rollback, without the lease wait of the slow path.
    let (world, run) = run_with_timeouts(1, 0);
    assert_eq!(run.outcome, Some(Outcome::Aborted));
    assert_eq!(
        path(&run),
        rollback_path_from(StateName::DowngradeLeaderRegion)
    );
    assert_eq!(
        sent_instructions(&world),
        vec![
            (FROM, flush_instruction(), FLUSH_LEADER_TIMEOUT_MS),
            (FROM, downgrade_instruction(10_000), 10_000),
        ]
    );
    let state = run.state();
    assert_eq!(state.operations_elapsed_ms, 10_000);
    assert_eq!(state.report.counters.slow_path_waits, 0);
    region_is(&world, FROM, false);
    assert_replays(&run.log);
}

#[test]
fn flow_with_an_upgrade_timeout_uses_the_whole_budget_and_rolls_back() {
    let (world, run) = run_with_timeouts(0, 1);
    assert_eq!(run.outcome, Some(Outcome::Aborted));
    assert_eq!(
        path(&run),
        rollback_path_from(StateName::UpgradeCandidateRegion)
    );
    assert_eq!(
        sent_instructions(&world),
        vec![
            (FROM, flush_instruction(), FLUSH_LEADER_TIMEOUT_MS),
            (FROM, downgrade_instruction(10_000), 10_000),
            (TO, upgrade_instruction(Some(LAST_ENTRY_ID), 9_900), 9_900),
        ]
    );
    // 100 in the downgrade, 9900 (timeout) in the upgrade.
    assert_eq!(run.state().operations_elapsed_ms, 10_000);
    region_is(&world, FROM, false);
    assert_replays(&run.log);
}

#[test]
fn flow_with_three_downgrade_errors_takes_the_slow_path_and_completes() {
    // The original's slow-path downgrade: three failed attempts (100 ms each, 500 ms apart),
    // the lease is waited out (no heartbeat known), and the upgrade gets what is left.
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::DowngradeRegion,
        vec![MailboxOutcome::Reply(downgrade_reply(None, true, Some("busy"))); 3],
    );
    let run = world.run_submitted(&Setup::default());
    assert_eq!(run.outcome, Some(Outcome::Completed));
    assert_eq!(path(&run), fast_path());
    let state = run.state();
    assert_eq!(state.report.counters.slow_path_waits, 1);
    assert_eq!(state.retries_used, 0);
    assert_eq!(
        sent_instructions(&world),
        vec![
            (FROM, flush_instruction(), FLUSH_LEADER_TIMEOUT_MS),
            (FROM, downgrade_instruction(10_000), 10_000),
            (FROM, downgrade_instruction(9_900), 9_900),
            (FROM, downgrade_instruction(9_800), 9_800),
            (TO, upgrade_instruction(None, 9_700), 9_700),
            (FROM, close_instruction(), CLOSE_REGION_TIMEOUT_MS),
        ]
    );
    // The upgrade was sent when the lease, set when the downgrade began (after the 100 ms
    // flush), ran out.
    assert_eq!(world.sent[4].at_ms, START_MS + 100 + REGION_LEASE_MS);
    assert_eq!(state.operations_elapsed_ms, 400);
    region_is(&world, TO, false);
    assert_replays(&run.log);
}

#[test]
fn flow_with_a_downgrade_timeout_using_a_budget_under_one_round_trip_rolls_back() {
    // With less than a round trip of budget, the mailbox waits for all of it: one timeout
    // leaves nothing, and the next attempt is an exceeded deadline.
    let mut world = World::with_candidate_follower();
    world.script(InstructionKind::DowngradeRegion, [MailboxOutcome::Timeout]);
    let run = world.run_submitted(&Setup::default().with_timeout_ms(800));
    assert_eq!(run.outcome, Some(Outcome::Aborted));
    assert_eq!(
        path(&run),
        vec![
            StateName::Start,
            StateName::FlushLeaderRegion,
            StateName::UpdateMetadataDowngrade,
            StateName::DowngradeLeaderRegion,
            StateName::UpdateMetadataRollback,
            StateName::Abort,
        ]
    );
    assert_eq!(
        sent_instructions(&world),
        vec![
            (FROM, flush_instruction(), FLUSH_LEADER_TIMEOUT_MS),
            (FROM, downgrade_instruction(800), 800)
        ]
    );
    let state = run.state();
    assert_eq!(state.operations_elapsed_ms, 800);
    assert_eq!(
        state.report.final_error.as_deref(),
        Some(ABORTED_FAILED_UPGRADE)
    );
    region_is(&world, FROM, false);
    assert_replays(&run.log);
}

#[test]
fn flow_with_a_downgrade_error_then_a_timeout_rolls_back_when_the_budget_runs_out() {
    // A 2.5 s budget: an error answered after 1 s, then a timeout that waits the 1.5 s
    // left; the third attempt finds no budget: rollback, with no lease wait.
    let mut world = World::with_candidate_follower();
    world.reply_delay_ms = 1_000;
    world.script(
        InstructionKind::DowngradeRegion,
        [
            MailboxOutcome::Reply(downgrade_reply(None, true, Some("busy"))),
            MailboxOutcome::Timeout,
        ],
    );
    let run = world.run_submitted(&Setup::default().with_timeout_ms(2_500));
    assert_eq!(run.outcome, Some(Outcome::Aborted));
    assert_eq!(
        path(&run),
        rollback_path_from(StateName::DowngradeLeaderRegion)
    );
    assert_eq!(
        sent_instructions(&world),
        vec![
            (FROM, flush_instruction(), FLUSH_LEADER_TIMEOUT_MS),
            (FROM, downgrade_instruction(2_500), 2_500),
            (FROM, downgrade_instruction(1_500), 1_500),
        ]
    );
    let state = run.state();
    assert_eq!(state.operations_elapsed_ms, 2_500);
    assert_eq!(state.remaining_budget_ms(), 0);
    assert_eq!(state.report.counters.slow_path_waits, 0);
    assert_eq!(
        state.report.final_error.as_deref(),
        Some(ABORTED_FAILED_UPGRADE)
    );
    region_is(&world, FROM, false);
    assert_replays(&run.log);
}

#[test]
fn flow_with_a_slow_flush_and_replay_completes_on_the_fast_path() {
    // Flush and replay take 1.2 s, more than the revision 1 round trip: since R2.1 each
    // answer is waited for within the budget and taken at once.
    let mut world = World::with_candidate_follower();
    world.reply_delay_ms = 1_200;
    let run = world.run_submitted(&Setup::default());
    assert_fast_path_completed(&world, &run);
    let ok = |kind| MailboxOutcome::Reply(ok_reply(kind, Some(LAST_ENTRY_ID)));
    let sent: Vec<(u64, PeerId, Instruction, u64, MailboxOutcome)> = world
        .sent
        .iter()
        .map(|sent| {
            (
                sent.at_ms - START_MS,
                sent.peer,
                sent.instruction.clone(),
                sent.timeout_ms,
                sent.outcome.clone(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            (
                0,
                FROM,
                flush_instruction(),
                FLUSH_LEADER_TIMEOUT_MS,
                ok(InstructionKind::FlushRegion)
            ),
            (
                1_200,
                FROM,
                downgrade_instruction(10_000),
                10_000,
                ok(InstructionKind::DowngradeRegion)
            ),
            (
                2_400,
                TO,
                upgrade_instruction(Some(LAST_ENTRY_ID), 8_800),
                8_800,
                ok(InstructionKind::UpgradeRegion)
            ),
            // The close waits one round trip: 1.2 s is past it (best effort anyway).
            (
                3_600,
                FROM,
                close_instruction(),
                CLOSE_REGION_TIMEOUT_MS,
                MailboxOutcome::Timeout
            ),
        ]
    );
    assert_eq!(run.state().operations_elapsed_ms, 2_400);
}

// ---- Behaviour revisions ---------------------------------------------------------------

/// A procedure submitted by revision 1 (its policy says so; an old log has no revision and
/// reads as 1) keeps the revision 1 rules: no pre-flush, the table lock for the whole
/// migration, one mailbox round trip per downgrade or upgrade, the lease wait from the
/// downgrade's start, and a rollback budget.
#[test]
fn a_revision_one_procedure_keeps_the_revision_one_rules() {
    let setup = Setup {
        policy: RetryPolicy {
            revision: 1,
            ..RetryPolicy::default()
        },
        ..Setup::default()
    };
    let mut world = World::with_candidate_follower();
    world.script(
        InstructionKind::DowngradeRegion,
        [MailboxOutcome::Timeout, MailboxOutcome::Unreachable],
    );
    let log = world.submit(&setup);
    let run = world.run(log, Observation::Begin, Stop::Never);
    assert_eq!(run.outcome, Some(Outcome::Completed));
    assert_eq!(
        path(&run),
        vec![
            StateName::Start,
            StateName::UpdateMetadataDowngrade,
            StateName::DowngradeLeaderRegion,
            StateName::UpgradeCandidateRegion,
            StateName::UpdateMetadataUpgrade,
            StateName::CloseDowngradedRegion,
            StateName::End,
        ]
    );
    let state = run.state();
    assert!(state
        .report
        .counters
        .sent
        .keys()
        .all(|key| key.kind != InstructionKind::FlushRegion));
    assert!(run.events().iter().any(|event| matches!(
        event,
        MigrationEvent::LocksAcquired { lock_keys, .. }
            if lock_keys.contains(&"table/1024:exclusive".to_string())
    )));
    // The timeout cost one round trip, not the budget; the unreachable leader was waited
    // out from the downgrade's start, with no heartbeat read.
    assert_eq!(
        sent_instructions(&world)[..2].to_vec(),
        vec![
            (FROM, downgrade_instruction(10_000), MAILBOX_RTT_MS),
            (FROM, downgrade_instruction(9_000), MAILBOX_RTT_MS),
        ]
    );
    assert!(!run
        .events()
        .iter()
        .any(|event| matches!(event, MigrationEvent::LastHeartbeatRead { .. })));
    assert_eq!(state.report.counters.slow_path_waits, 1);
    assert_replays(&run.log);
}

#[test]
fn a_policy_without_a_revision_reads_as_revision_one() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.revision, regmig::migration::BEHAVIOUR_REVISION);
    // An old log's policy: the same map without `revision`.
    #[derive(serde::Serialize)]
    struct OldPolicy {
        retries_max: u32,
        initial_backoff_ms: u64,
        jitter_percent_max: u32,
        in_state_attempts_max: u32,
        in_state_retry_interval_ms: u64,
        rollback_retries_max: u32,
        require_ready: bool,
    }
    let bytes = rmp_serde::to_vec_named(&OldPolicy {
        retries_max: 3,
        initial_backoff_ms: 500,
        jitter_percent_max: 25,
        in_state_attempts_max: 3,
        in_state_retry_interval_ms: 500,
        rollback_retries_max: 3,
        require_ready: true,
    })
    .expect("encodes");
    let read: RetryPolicy = rmp_serde::from_slice(&bytes).expect("decodes");
    assert_eq!(
        read,
        RetryPolicy {
            revision: 1,
            ..RetryPolicy::default()
        }
    );
    assert!(!read.revision_two());
}
