//! The engine against a scripted mailbox: the original module's flow tests, restarts at every
//! event, the one-open-migration-per-region rule across restarts, and a thousand migrations.

mod engine_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine_support::*;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::{Ports, SystemClock, TokioClock};
use regmig::domain::*;
use regmig::engine::{
    encode_events, load_procedure, AppendMode, Engine, EngineConfig, MigrationRequest,
    MigrationSummary, SubmitError, SubmitOutcome,
};
use regmig::log::{AppendRequest, EventLog, LogOptions, NewEvent, OpenProcedure};
use regmig::migration::{MigrationEvent, Outcome, SentKey, StateName, TimedEvent};
use uuid::Uuid;

const REGION: RegionId = RegionId(4398046511105); // 1024:1

fn config() -> EngineConfig {
    EngineConfig {
        append_mode: AppendMode::Inline,
        ..EngineConfig::default()
    }
}

fn request(timeout_ms: u64) -> MigrationRequest {
    MigrationRequest::new(REGION, Peer::sim(1), Peer::sim(2)).with_timeout_ms(timeout_ms)
}

async fn submit(engine: &Engine, request: MigrationRequest) -> Uuid {
    match engine.submit(request).await {
        Ok(SubmitOutcome::Started(id)) => id,
        other => panic!("submit did not start a migration: {other:?}"),
    }
}

fn path(summary: &MigrationSummary) -> Vec<&'static str> {
    summary.path.iter().copied().map(StateName::name).collect()
}

const FULL_PATH: [&str; 9] = [
    "Start",
    "OpenCandidateRegion",
    "FlushLeaderRegion",
    "UpdateMetadata::Downgrade",
    "DowngradeLeaderRegion",
    "UpgradeCandidateRegion",
    "UpdateMetadata::Upgrade",
    "CloseDowngradedRegion",
    "End",
];

struct Setup {
    dir: tempfile::TempDir,
    metadata: Arc<MemoryMetadataStore>,
    mailbox: Arc<ScriptedMailbox>,
    clock: TokioClock,
}

fn setup(followers: &[PeerId]) -> Setup {
    let metadata = Arc::new(MemoryMetadataStore::new());
    add_table(&metadata, 1024, 1, 1, followers);
    Setup {
        dir: tempfile::tempdir().expect("tempdir"),
        metadata,
        mailbox: ScriptedMailbox::new(),
        clock: TokioClock::new(EPOCH_BASE_MS),
    }
}

impl Setup {
    fn ports(&self) -> Ports {
        ports(
            self.mailbox.clone(),
            self.metadata.clone(),
            self.clock.clone(),
        )
    }

    async fn engine(&self) -> Engine {
        Engine::open(self.dir.path(), config(), self.ports())
            .await
            .expect("engine opens")
    }
}

#[tokio::test(start_paused = true)]
async fn whole_flow_from_start_opens_the_candidate_and_completes() {
    let setup = setup(&[]);
    let engine = setup.engine().await;
    let id = submit(&engine, request(10_000)).await;
    let state = engine.wait(id).await.expect("wait");
    assert_eq!(state.outcome, Some(Outcome::Completed));
    assert_eq!(path(&state), FULL_PATH.to_vec());
    assert_eq!(
        setup.mailbox.received_kinds(),
        vec![
            (2, InstructionKind::OpenRegion),
            (1, InstructionKind::FlushRegion),
            (1, InstructionKind::DowngradeRegion),
            (2, InstructionKind::UpgradeRegion),
            (1, InstructionKind::CloseRegion),
        ]
    );
    let route = region_route(&setup.metadata, REGION);
    assert_eq!(route.leader_id(), Some(2));
    assert!(!route.is_leader_downgrading());
    assert!(route.follower_peers.is_empty());
    // Fast path: no lease wait.
    assert!(
        setup.clock.elapsed_ms() < 5_000,
        "took {} ms",
        setup.clock.elapsed_ms()
    );
    assert_eq!(engine.running_count(), 0);
    assert!(engine.list_open().expect("list").is_empty());
}

/// Copies a procedure's events up to and including the first one matching `until`.
async fn copy_prefix(
    events: &[TimedEvent],
    id: Uuid,
    until: impl Fn(&MigrationEvent) -> bool,
    dir: &std::path::Path,
) {
    let end = events
        .iter()
        .position(|t| until(&t.event))
        .expect("event present")
        + 1;
    let log = EventLog::open(dir, LogOptions::default()).expect("log");
    let new_events: Vec<NewEvent> = events[..end]
        .iter()
        .flat_map(|timed| {
            encode_events(timed.at_ms, std::slice::from_ref(&timed.event)).expect("encode")
        })
        .collect();
    let appended = log
        .append(AppendRequest {
            procedure_id: id,
            expected_next_seq: 1,
            events: new_events,
            opens: Some(OpenProcedure {
                region_id: REGION.as_u64(),
                peers: vec![1, 2],
            }),
            closes: false,
        })
        .await
        .expect("append");
    assert!(appended.is_ok());
}

#[tokio::test(start_paused = true)]
async fn idempotent_flow_reruns_twice_from_update_metadata_downgrade() {
    let setup = setup(&[2]);
    let engine = setup.engine().await;
    let id = submit(&engine, request(10_000)).await;
    let first = engine.wait(id).await.expect("wait");
    assert_eq!(first.outcome, Some(Outcome::Completed));
    let events = load_procedure(engine.log(), id).expect("load");
    engine.shutdown().await;
    drop(engine);
    let version_after_first = setup.metadata.table_route_now(1024).expect("route").version;
    for _round in 0..2 {
        // Volatile state dropped: a log that ends as UpdateMetadata::Downgrade is entered.
        let rerun_dir = tempfile::tempdir().expect("tempdir");
        copy_prefix(
            &events,
            id,
            |event| {
                matches!(
                    event,
                    MigrationEvent::StateEntered {
                        state: StateName::UpdateMetadataDowngrade,
                        ..
                    }
                )
            },
            rerun_dir.path(),
        )
        .await;
        let engine = Engine::open(rerun_dir.path(), config(), setup.ports())
            .await
            .expect("reopen");
        let state = engine.wait(id).await.expect("wait");
        assert_eq!(state.outcome, Some(Outcome::Completed));
        assert_eq!(
            path(&state),
            vec![
                "Start",
                "FlushLeaderRegion",
                "UpdateMetadata::Downgrade",
                "DowngradeLeaderRegion",
                "UpgradeCandidateRegion",
                "UpdateMetadata::Upgrade",
                "CloseDowngradedRegion",
                "End"
            ]
        );
        let route = region_route(&setup.metadata, REGION);
        assert_eq!(route.leader_id(), Some(2));
        assert!(!route.is_leader_downgrading());
        // Nothing to write: the route is already migrated.
        assert_eq!(
            setup.metadata.table_route_now(1024).expect("route").version,
            version_after_first
        );
        engine.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn open_candidate_retryable_errors_leave_the_route_version_unchanged() {
    let setup = setup(&[]);
    setup.mailbox.script(
        2,
        InstructionKind::OpenRegion,
        vec![
            MailboxOutcome::Timeout,
            MailboxOutcome::Reply(Reply::OpenRegion {
                result: false,
                error: Some("disk full".into()),
            }),
            MailboxOutcome::Timeout,
            MailboxOutcome::Timeout,
        ],
    );
    let engine = setup.engine().await;
    let id = submit(&engine, request(10_000)).await;
    let state = engine.wait(id).await.expect("wait");
    assert_eq!(state.outcome, Some(Outcome::Failed));
    assert_eq!(path(&state), vec!["Start", "OpenCandidateRegion"]);
    assert_eq!(state.retries_used, 3);
    let error = state.final_error.clone().unwrap_or_default();
    assert!(error.starts_with("retry budget exhausted after 3 retries: mailbox timeout for open candidate region 1024:1 on datanode 2"), "{error}");
    assert_eq!(
        state
            .counters
            .sent
            .get(&SentKey::new(2, InstructionKind::OpenRegion)),
        Some(&4)
    );
    let route = setup.metadata.table_route_now(1024).expect("route");
    assert_eq!(route.version, 0);
    let region = route.route.region_route(REGION).expect("region");
    assert_eq!(region.leader_id(), Some(1));
    assert!(!region.is_leader_downgrading());
}

#[tokio::test(start_paused = true)]
async fn upgrade_failing_after_its_retries_rolls_back_and_aborts() {
    let setup = setup(&[2]);
    let not_ready = MailboxOutcome::Reply(Reply::UpgradeRegion {
        ready: false,
        exists: true,
        error: None,
    });
    setup.mailbox.script(
        2,
        InstructionKind::UpgradeRegion,
        vec![not_ready.clone(), not_ready.clone(), not_ready],
    );
    let engine = setup.engine().await;
    let id = submit(&engine, request(10_000)).await;
    let state = engine.wait(id).await.expect("wait");
    assert_eq!(state.outcome, Some(Outcome::Aborted));
    assert_eq!(
        path(&state),
        vec![
            "Start",
            "FlushLeaderRegion",
            "UpdateMetadata::Downgrade",
            "DowngradeLeaderRegion",
            "UpgradeCandidateRegion",
            "UpdateMetadata::Rollback",
            "Abort"
        ]
    );
    assert_eq!(
        state.final_error.as_deref(),
        Some("migration aborted: failed to upgrade the candidate region")
    );
    assert!(state.rolled_back);
    assert_eq!(
        state
            .counters
            .sent
            .get(&SentKey::new(2, InstructionKind::UpgradeRegion)),
        Some(&3)
    );
    let route = region_route(&setup.metadata, REGION);
    assert_eq!(route.leader_id(), Some(1));
    assert!(!route.is_leader_downgrading());
    assert_eq!(route.follower_peers, vec![Peer::sim(2)]);
}

#[tokio::test(start_paused = true)]
async fn a_downgrade_timeout_uses_the_whole_budget_and_rolls_back() {
    // R2.1: the mailbox waits for a downgrade as long as the budget, so one timeout uses it
    // up and the migration rolls back instead of trying again.
    let setup = setup(&[2]);
    setup.mailbox.script(
        1,
        InstructionKind::DowngradeRegion,
        vec![MailboxOutcome::Timeout],
    );
    let engine = setup.engine().await;
    let id = submit(&engine, request(10_000)).await;
    let state = engine.wait(id).await.expect("wait");
    assert_eq!(
        state.outcome,
        Some(Outcome::Aborted),
        "{:?}",
        state.final_error
    );
    assert_eq!(state.operations_elapsed_ms, 10_000);
    assert_eq!(
        state
            .counters
            .sent
            .get(&SentKey::new(1, InstructionKind::DowngradeRegion)),
        Some(&1)
    );
    assert_eq!(
        state
            .counters
            .sent
            .get(&SentKey::new(2, InstructionKind::UpgradeRegion)),
        None
    );
    let route = region_route(&setup.metadata, REGION);
    assert_eq!(route.leader_id(), Some(1));
    assert!(!route.is_leader_downgrading());
}

/// The first-sends (not re-sends) of a procedure, as (peer, instruction).
fn first_sends(events: &[TimedEvent]) -> Vec<(PeerId, InstructionKind)> {
    events
        .iter()
        .filter_map(|timed| match &timed.event {
            MigrationEvent::InstructionSent {
                peer,
                instruction,
                resend: false,
                ..
            } => Some((peer.id, instruction.kind())),
            _ => None,
        })
        .collect()
}

fn lease_deadlines_set(events: &[TimedEvent]) -> usize {
    events
        .iter()
        .filter(|timed| matches!(timed.event, MigrationEvent::LeaseDeadlineSet { .. }))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_any_event_reaches_the_same_route_without_resetting_budgets() {
    // Uninterrupted run, with a slow downgrade that fails once (so time and retries matter).
    let script = |mailbox: &ScriptedMailbox| {
        mailbox.script(
            1,
            InstructionKind::DowngradeRegion,
            vec![MailboxOutcome::Reply(Reply::DowngradeRegion {
                last_entry_id: None,
                exists: true,
                error: Some("flush failed".into()),
            })],
        );
    };
    let baseline = {
        let setup = setup(&[]);
        let mailbox = ScriptedMailbox::with_delay(200);
        script(&mailbox);
        let setup = Setup {
            mailbox: Arc::new(mailbox),
            ..setup
        };
        let engine = setup.engine().await;
        let id = submit(&engine, request(10_000)).await;
        let state = engine.wait(id).await.expect("wait");
        assert_eq!(state.outcome, Some(Outcome::Completed));
        let events = load_procedure(engine.log(), id).expect("load");
        (state, events, region_route(&setup.metadata, REGION))
    };
    let (base_state, base_events, base_route) = baseline;
    let total = base_events.len() as u64;
    assert!(
        total > 15,
        "a migration records more than 15 events, got {total}"
    );
    for crash_after in 1..total {
        let setup = setup(&[]);
        let mailbox = ScriptedMailbox::with_delay(200);
        script(&mailbox);
        let setup = Setup {
            mailbox: Arc::new(mailbox),
            ..setup
        };
        let engine = setup.engine().await;
        let halt = engine.halt_handle();
        let seen = Arc::new(AtomicU64::new(0));
        let seen_in_observer = seen.clone();
        engine.set_observer(Box::new(move |event| {
            seen_in_observer.store(event.seq, Ordering::SeqCst);
            if event.seq >= crash_after {
                halt.halt();
            }
        }));
        let id = submit(&engine, request(10_000)).await;
        let _ = engine.wait(id).await;
        let finished_before_restart = engine.get(id).await.expect("get").is_finished();
        engine.shutdown().await;
        drop(engine);
        assert!(seen.load(Ordering::SeqCst) >= crash_after);
        // Downtime before the restart, shorter than a mailbox round trip, so an outstanding
        // instruction is re-sent rather than timed out (the model tests cover the latter).
        tokio::time::advance(Duration::from_millis(500)).await;
        let engine = setup.engine().await;
        let state = engine.wait(id).await.expect("wait after restart");
        let events = load_procedure(engine.log(), id).expect("load");
        assert_eq!(
            state.outcome,
            Some(Outcome::Completed),
            "crash after event {crash_after}: {:?}",
            state.final_error
        );
        assert_eq!(
            region_route(&setup.metadata, REGION),
            base_route_with_times(&base_route),
            "crash after event {crash_after}"
        );
        assert_eq!(
            first_sends(&events),
            first_sends(&base_events),
            "crash after event {crash_after}"
        );
        let resends = events
            .iter()
            .filter(|t| {
                matches!(
                    t.event,
                    MigrationEvent::InstructionSent { resend: true, .. }
                )
            })
            .count() as u64;
        // Every recorded send reached the datanode, except at most the one the crash cut off
        // between its event and its delivery (it was re-sent, and recorded as a re-send).
        let logged = first_sends(&events).len() as u64 + resends;
        let received = setup.mailbox.received_kinds().len() as u64;
        assert!(
            received == logged || received + 1 == logged,
            "crash after event {crash_after}: {received} received, {logged} logged"
        );
        assert!(
            resends <= 1,
            "crash after event {crash_after}: {resends} re-sends"
        );
        assert_eq!(
            lease_deadlines_set(&events),
            lease_deadlines_set(&base_events),
            "crash after event {crash_after}"
        );
        assert_eq!(state.retries_used, base_state.retries_used);
        assert!(
            state.operations_elapsed_ms >= base_state.operations_elapsed_ms,
            "crash after event {crash_after}: budget grew back"
        );
        assert_eq!(
            state.counters.resumes,
            u32::from(!finished_before_restart),
            "crash after event {crash_after}"
        );
        engine.shutdown().await;
    }
}

/// The final route does not depend on times (leader_down_since is cleared by the upgrade).
fn base_route_with_times(route: &RegionRoute) -> RegionRoute {
    route.clone()
}

#[tokio::test(start_paused = true)]
async fn a_second_submit_for_a_migrating_region_is_refused_before_and_after_a_restart() {
    let setup = setup(&[]);
    let mailbox = ScriptedMailbox::with_delay(5_000);
    let setup = Setup {
        mailbox: Arc::new(mailbox),
        ..setup
    };
    let engine = setup.engine().await;
    let id = submit(&engine, request(10_000)).await;
    let refused = engine.submit(request(10_000)).await;
    assert!(
        matches!(refused, Err(SubmitError::MigrationRunning { region_id, procedure_id }) if region_id == REGION && procedure_id == id),
        "{refused:?}"
    );
    engine.shutdown().await;
    drop(engine);
    let engine = setup.engine().await;
    let refused = engine.submit(request(10_000)).await;
    assert!(
        matches!(refused, Err(SubmitError::MigrationRunning { region_id, procedure_id }) if region_id == REGION && procedure_id == id),
        "{refused:?}"
    );
    let state = engine.wait(id).await.expect("wait");
    assert_eq!(state.outcome, Some(Outcome::Completed), "{state:?}");
    assert_eq!(region_route(&setup.metadata, REGION).leader_id(), Some(2));
    // Once finished, the region is free again: moving it back is accepted.
    let back = MigrationRequest::new(REGION, Peer::sim(2), Peer::sim(1));
    assert!(matches!(
        engine.submit(back).await,
        Ok(SubmitOutcome::Started(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_migrations_across_a_hundred_tables_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metadata = Arc::new(MemoryMetadataStore::new());
    for table in 1..=100 {
        add_table(&metadata, table, 10, 1, &[]);
    }
    let mailbox = ScriptedMailbox::new();
    let mut ports = ports(
        mailbox.clone(),
        metadata.clone(),
        TokioClock::new(EPOCH_BASE_MS),
    );
    ports.clock = Arc::new(SystemClock);
    let config = EngineConfig::default();
    let engine = Engine::open(dir.path(), config, ports).await.expect("open");
    let mut ids = Vec::new();
    for table in 1..=100 {
        for number in 1..=10 {
            let region = RegionId::new(table, number);
            let to = 2 + u64::from(number % 3);
            match engine
                .submit(MigrationRequest::new(region, Peer::sim(1), Peer::sim(to)))
                .await
            {
                Ok(SubmitOutcome::Started(id)) => ids.push(id),
                other => panic!("submit {region}: {other:?}"),
            }
        }
    }
    assert_eq!(ids.len(), 1_000);
    for id in &ids {
        let state = engine.wait(*id).await.expect("wait");
        assert_eq!(
            state.outcome,
            Some(Outcome::Completed),
            "{id}: {:?}",
            state.final_error
        );
    }
    // No per-procedure state is kept for finished work.
    assert_eq!(engine.running_count(), 0);
    assert!(engine.list_open().expect("list").is_empty());
    for table in 1..=100u32 {
        for number in 1..=10 {
            let route = region_route(&metadata, RegionId::new(table, number));
            assert_eq!(route.leader_id(), Some(2 + u64::from(number % 3)));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_procedure_this_version_cannot_read_is_left_open_and_the_others_run() {
    let setup = setup(&[]);
    let unreadable = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    {
        let log = EventLog::open(setup.dir.path(), LogOptions::default()).expect("log");
        let appended = log
            .append(AppendRequest {
                procedure_id: unreadable,
                expected_next_seq: 1,
                events: vec![NewEvent {
                    kind: 999,
                    recorded_at_ms: EPOCH_BASE_MS,
                    payload: vec![0x81, 0xa3, b'n', b'e', b'w', 0xc0],
                }],
                opens: Some(OpenProcedure {
                    region_id: RegionId::new(7, 7).as_u64(),
                    peers: vec![1, 2],
                }),
                closes: false,
            })
            .await
            .expect("append");
        assert!(appended.is_ok());
    }
    let engine = setup.engine().await;
    assert_eq!(engine.running_count(), 0);
    assert_eq!(
        engine.list_open().expect("list"),
        vec![(unreadable, RegionId::new(7, 7))]
    );
    let id = submit(&engine, request(10_000)).await;
    let state = engine.wait(id).await.expect("wait");
    assert_eq!(state.outcome, Some(Outcome::Completed));
}

/// Waits until the procedure enters `state`.
async fn until_state(events: &mut regmig::engine::ProcedureEvents, state: StateName) {
    loop {
        let event = events
            .next()
            .await
            .expect("the procedure reaches the state")
            .expect("event stream");
        if matches!(event.event, MigrationEvent::StateEntered { state: entered, .. } if entered == state)
        {
            return;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_operator_cancel_during_the_downgrade_rolls_the_route_back() {
    let setup = setup(&[]);
    let setup = Setup {
        mailbox: Arc::new(ScriptedMailbox::with_delay(900)),
        ..setup
    };
    let engine = setup.engine().await;
    let id = submit(&engine, request(10_000)).await;
    let mut events = engine.subscribe(id, 1).await.expect("subscribe");
    until_state(&mut events, StateName::DowngradeLeaderRegion).await;
    assert!(region_route(&setup.metadata, REGION).is_leader_downgrading());
    engine
        .cancel(id, "alice", "maintenance window closed")
        .await
        .expect("cancel taken");
    let state = engine.wait(id).await.expect("wait");
    assert_eq!(state.outcome, Some(Outcome::Aborted));
    assert_eq!(
        state.final_error.as_deref(),
        Some("cancelled by alice: maintenance window closed")
    );
    assert!(state.rolled_back);
    let route = region_route(&setup.metadata, REGION);
    assert_eq!(route.leader_id(), Some(1));
    assert!(!route.is_leader_downgrading());
    let events = load_procedure(engine.log(), id).expect("load");
    assert!(events.iter().any(|t| t.event
        == MigrationEvent::OperatorCancelled {
            actor: "alice".into(),
            reason: "maintenance window closed".into()
        }));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_after_the_new_route_is_written_is_refused_and_the_migration_completes() {
    let setup = setup(&[]);
    let setup = Setup {
        mailbox: Arc::new(ScriptedMailbox::with_delay(900)),
        ..setup
    };
    let engine = setup.engine().await;
    let id = submit(&engine, request(10_000)).await;
    let mut events = engine.subscribe(id, 1).await.expect("subscribe");
    until_state(&mut events, StateName::CloseDowngradedRegion).await;
    let refused = engine.cancel(id, "bob", "changed my mind").await;
    let reason = match refused {
        Err(regmig::engine::EngineError::CancelRefused {
            procedure_id,
            reason,
        }) if procedure_id == id => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(reason, "the new route is already written (state CloseDowngradedRegion): the migration can only go forward");
    let state = engine.wait(id).await.expect("wait");
    assert_eq!(state.outcome, Some(Outcome::Completed));
    let events = load_procedure(engine.log(), id).expect("load");
    assert!(events.iter().any(
        |t| matches!(&t.event, MigrationEvent::CancelRefused { actor, .. } if actor == "bob")
    ));
    assert_eq!(region_route(&setup.metadata, REGION).leader_id(), Some(2));
    // An unknown id is named.
    let unknown = Uuid::from_u128(42);
    let error = engine
        .cancel(unknown, "bob", "typo")
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(error, Some(format!("no migration with id {unknown}")));
}

#[tokio::test(start_paused = true)]
async fn a_procedure_whose_log_breaks_the_model_is_left_open_not_resumed() {
    let setup = setup(&[]);
    let engine = setup.engine().await;
    let id = submit(&engine, request(10_000)).await;
    engine.wait(id).await.expect("wait");
    let submitted = load_procedure(engine.log(), id).expect("load")[0].clone();
    engine.shutdown().await;
    drop(engine);
    // A reply right after the submission: nothing was asked, so nothing says what it answers.
    let broken = [
        submitted,
        TimedEvent {
            at_ms: EPOCH_BASE_MS + 1,
            event: MigrationEvent::ReplyReceived {
                peer: 2,
                reply: Reply::OpenRegion {
                    result: true,
                    error: None,
                },
            },
        },
    ];
    let broken_dir = tempfile::tempdir().expect("tempdir");
    // The same (uuid v7) id, in a log of its own.
    let broken_id = id;
    copy_prefix(
        &broken,
        broken_id,
        |event| matches!(event, MigrationEvent::ReplyReceived { .. }),
        broken_dir.path(),
    )
    .await;
    let sent_before = setup.mailbox.received_kinds().len();
    let engine = Engine::open(broken_dir.path(), config(), setup.ports())
        .await
        .expect("reopen");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(engine.running_count(), 0, "a broken log is not resumed");
    assert_eq!(
        engine.list_open().expect("list"),
        vec![(broken_id, REGION)],
        "it stays open for an operator"
    );
    assert_eq!(
        setup.mailbox.received_kinds().len(),
        sent_before,
        "nothing was sent on a guess"
    );
}
