//! Cancels in the engine that the scenario files cannot stage exactly:
//! - issue 15: a cancel while the route write that marks the leader Downgrading is in
//!   flight is answered at once; once the store answers the write, the migration rolls back
//!   whether the write landed (Downgrading cleared again) or failed (nothing to undo), and
//!   ends aborted;
//! - issue 18 (behaviour revision 4): a cancel while the downgrade found the old leader
//!   unreachable and the procedure waits out its lease is refused, with a reason naming the
//!   peer and the lease deadline, recorded, and the migration completes; with a reachable
//!   leader in the same wait, or an unreachable one that still heartbeats, the cancel is
//!   taken as before.

mod engine_support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine_support::*;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::{
    CasConflict, Clock, LeaseRenewals, MetadataError, MetadataErrorKind, MetadataStore,
    MetadataStoreLayer, Ports, RegionMove, SeededEntropy, TokioClock,
};
use regmig::domain::*;
use regmig::engine::{
    load_procedure, AppendMode, BatchRegionStart, BatchRequest, Engine, EngineConfig, EngineError,
    MigrationRequest, SubmitOutcome,
};
use regmig::migration::{MigrationEvent, Outcome, RouteChange, StateName, WaitReason};
use uuid::Uuid;

const REGION: RegionId = RegionId(4398046511105); // 1024:1

fn config() -> EngineConfig {
    EngineConfig {
        append_mode: AppendMode::Inline,
        ..EngineConfig::default()
    }
}

async fn submit(engine: &Engine) -> Uuid {
    let request = MigrationRequest::new(REGION, Peer::sim(1), Peer::sim(2));
    match engine.submit(request).await {
        Ok(SubmitOutcome::Started(id)) => id,
        other => panic!("not started: {other:?}"),
    }
}

fn events(engine: &Engine, id: Uuid) -> Vec<MigrationEvent> {
    load_procedure(engine.log(), id)
        .expect("load the history")
        .into_iter()
        .map(|timed| timed.event)
        .collect()
}

/// What the held route write does once released.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Release {
    /// The write lands.
    Land,
    /// The store fails it.
    Fail,
}

/// Metadata whose first route compare-and-swap (the migration's UpdateMetadata::Downgrade)
/// does not answer until `released`, then lands or fails as `release` says.
struct HeldCas {
    inner: Arc<MemoryMetadataStore>,
    release: Release,
    released: AtomicBool,
    cas_calls: AtomicU32,
}

#[async_trait]
impl MetadataStoreLayer for HeldCas {
    fn inner(&self) -> &dyn MetadataStore {
        &*self.inner
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let first = self.cas_calls.fetch_add(1, Ordering::SeqCst) == 0;
        if first {
            while !self.released.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if self.release == Release::Fail {
                return Err(MetadataError::new(
                    MetadataErrorKind::Unavailable,
                    "the store lost its connection mid-write",
                ));
            }
        }
        self.inner
            .cas_table_route(table_id, expected_version, route, region_moves)
            .await
    }
}

async fn cancel_while_the_downgrade_write_is_held(release: Release) {
    let dir = tempfile::tempdir().unwrap();
    let memory = Arc::new(MemoryMetadataStore::new());
    add_table(&memory, 1024, 1, 1, &[]);
    let held = Arc::new(HeldCas {
        inner: memory.clone(),
        release,
        released: AtomicBool::new(false),
        cas_calls: AtomicU32::new(0),
    });
    let ports = Ports::builder(ScriptedMailbox::new(), held.clone())
        .submit_metadata(memory.clone())
        .clock(Arc::new(TokioClock::new(EPOCH_BASE_MS)))
        .entropy(Arc::new(SeededEntropy::new(7)))
        .build();
    let engine = Engine::open(dir.path(), config(), ports).await.unwrap();
    let id = submit(&engine).await;
    while held.cas_calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The downgrade write is in flight and does not answer: the cancel is answered anyway.
    let started = tokio::time::Instant::now();
    tokio::time::timeout(
        Duration::from_secs(1),
        engine.cancel(id, "oncall", "store is slow"),
    )
    .await
    .expect("the cancel is answered while the downgrade write is in flight")
    .expect("a cancel before the new route is taken");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Recorded at once, before the write answers; nothing rolls back yet.
    let recorded = events(&engine, id);
    assert!(matches!(
        recorded.last(),
        Some(MigrationEvent::RollbackStarted { .. })
    ));
    assert!(recorded.iter().any(|event| matches!(
        event,
        MigrationEvent::OperatorCancelled { actor, reason } if actor == "oncall" && reason == "store is slow"
    )));
    assert_eq!(held.cas_calls.load(Ordering::SeqCst), 1);
    held.released.store(true, Ordering::SeqCst);
    let summary = tokio::time::timeout(Duration::from_secs(60), engine.wait(id))
        .await
        .expect("the migration ends once the write answered")
        .unwrap();
    assert_eq!(summary.outcome, Some(Outcome::Aborted));
    assert_eq!(
        summary.cancelled_by,
        Some(("oncall".to_string(), "store is slow".to_string()))
    );
    // The route is as before the migration: peer 1 leads, not Downgrading.
    let route = region_route(&memory, REGION);
    assert_eq!(route.leader_id(), Some(1));
    assert!(!route.is_leader_downgrading());
    let history = events(&engine, id);
    // The held write's own result is never recorded: the rollback read the route instead.
    assert!(!history.iter().any(|event| matches!(
        event,
        MigrationEvent::RouteCasApplied {
            change: RouteChange::Downgrade,
            ..
        }
    )));
    let cleared = history.iter().any(|event| {
        matches!(
            event,
            MigrationEvent::RouteCasApplied {
                change: RouteChange::ClearDowngrading,
                ..
            }
        )
    });
    match release {
        // It landed: the rollback found the leader Downgrading and cleared it.
        Release::Land => assert!(cleared, "the landed downgrade was rolled back"),
        // It failed: nothing to undo.
        Release::Fail => assert!(!cleared, "nothing to clear after a failed write"),
    }
    // No downgrade instruction was sent: the cancel came before it.
    assert!(!history.iter().any(|event| matches!(
        event,
        MigrationEvent::InstructionSent { instruction, .. }
            if instruction.kind() == InstructionKind::DowngradeRegion
    )));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_the_downgrade_write_is_answered_at_once_and_rolls_back_the_landed_write() {
    cancel_while_the_downgrade_write_is_held(Release::Land).await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_the_downgrade_write_is_answered_at_once_and_aborts_when_the_write_fails() {
    cancel_while_the_downgrade_write_is_held(Release::Fail).await;
}

/// What the control plane knows of the old leader's heartbeats.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Heartbeats {
    /// Nothing (the default port): no evidence either way.
    Unknown,
    /// It heartbeats: its last heartbeat is always one second old.
    Fresh,
    /// It stopped: its last heartbeat was 5 s before the migration began.
    Lost,
}

/// The last heartbeat of the old leader, as `Heartbeats` says.
struct HeartbeatsPort(TokioClock, Heartbeats);

/// When the lost leader last heartbeated.
const LOST_HEARTBEAT_MS: u64 = EPOCH_BASE_MS - 5_000;

#[async_trait]
impl LeaseRenewals for HeartbeatsPort {
    async fn last_heartbeat_ms(&self, _peer: PeerId) -> Option<u64> {
        match self.1 {
            Heartbeats::Unknown => None,
            Heartbeats::Fresh => Some(self.0.now_ms() - 1_000),
            Heartbeats::Lost => Some(LOST_HEARTBEAT_MS),
        }
    }
}

/// Runs a migration whose old leader's downgrade is answered by `downgrade` (three times),
/// cancels it in the middle of its lease wait, and returns the engine, the id, the answer
/// to the cancel and the metadata.
async fn cancel_in_the_lease_wait(
    downgrade: MailboxOutcome,
    heartbeats: Heartbeats,
) -> (
    Engine,
    Uuid,
    Result<(), EngineError>,
    Arc<MemoryMetadataStore>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let metadata = Arc::new(MemoryMetadataStore::new());
    add_table(&metadata, 1024, 1, 1, &[]);
    let mailbox = ScriptedMailbox::new();
    mailbox.script(
        1,
        InstructionKind::DowngradeRegion,
        vec![downgrade.clone(), downgrade.clone(), downgrade],
    );
    let clock = TokioClock::new(EPOCH_BASE_MS);
    let mut ports = ports(mailbox, metadata.clone(), clock.clone());
    ports.lease_renewals = Arc::new(HeartbeatsPort(clock, heartbeats));
    let engine = Engine::open(dir.path(), config(), ports).await.unwrap();
    let id = submit(&engine).await;
    // Until the lease wait begins.
    loop {
        let waiting = events(&engine, id).iter().any(|event| {
            matches!(
                event,
                MigrationEvent::WaitStarted {
                    reason: WaitReason::LeaseExpiry,
                    ..
                }
            )
        });
        if waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answer = engine
        .cancel(id, "alice", "maintenance window closed")
        .await;
    (engine, id, answer, metadata, dir)
}

#[tokio::test(start_paused = true)]
async fn a_cancel_while_the_old_leader_is_unreachable_and_its_lease_runs_out_is_refused() {
    let (engine, id, answer, metadata, _dir) =
        cancel_in_the_lease_wait(MailboxOutcome::Unreachable, Heartbeats::Lost).await;
    let history = events(&engine, id);
    let read_at_ms = load_procedure(engine.log(), id)
        .unwrap()
        .iter()
        .find_map(|timed| match timed.event {
            MigrationEvent::LastHeartbeatRead { .. } => Some(timed.at_ms),
            _ => None,
        })
        .expect("the heartbeat is read for the lease wait");
    let age_ms = read_at_ms - LOST_HEARTBEAT_MS;
    assert!(age_ms > 3_000);
    let deadline_ms = history
        .iter()
        .rev()
        .find_map(|event| match event {
            MigrationEvent::LeaseDeadlineSet { deadline_ms } => Some(*deadline_ms),
            _ => None,
        })
        .expect("the lease deadline is recorded");
    let expected = format!(
        "the old leader of region 1024:1, datanode 1, is unreachable (its last heartbeat was {age_ms} ms old when read) and its lease runs out at {deadline_ms} ms since the Unix epoch: a rollback would hand the region back to a leader nobody can reach, so the migration goes on to upgrade the candidate, datanode 2"
    );
    match answer {
        Err(EngineError::CancelRefused {
            procedure_id,
            reason,
        }) => {
            assert_eq!(procedure_id, id);
            assert_eq!(reason, expected);
        }
        other => panic!("expected CancelRefused, got {other:?}"),
    }
    // Recorded, with who asked and why.
    assert!(history.iter().any(|event| matches!(
        event,
        MigrationEvent::CancelRefused { actor, reason, refusal }
            if actor == "alice" && reason == "maintenance window closed" && *refusal == expected
    )));
    // The migration goes on and completes: peer 2 leads.
    let summary = tokio::time::timeout(Duration::from_secs(120), engine.wait(id))
        .await
        .expect("the migration ends")
        .unwrap();
    assert_eq!(summary.outcome, Some(Outcome::Completed));
    assert_eq!(summary.cancelled_by, None);
    assert_eq!(region_route(&metadata, REGION).leader_id(), Some(2));
    // Replaying the log decides the same (the refusal is folded from the events).
    let timed = load_procedure(engine.log(), id).unwrap();
    assert!(regmig::migration::replay::check(&timed).is_ok());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_in_the_lease_wait_of_a_reachable_old_leader_aborts() {
    let error = MailboxOutcome::Reply(Reply::DowngradeRegion {
        last_entry_id: None,
        exists: true,
        error: Some("flush failed".to_string()),
    });
    let (engine, id, answer, metadata, _dir) =
        cancel_in_the_lease_wait(error, Heartbeats::Lost).await;
    answer.expect("the cancel is taken");
    let summary = tokio::time::timeout(Duration::from_secs(120), engine.wait(id))
        .await
        .expect("the migration ends")
        .unwrap();
    assert_eq!(summary.outcome, Some(Outcome::Aborted));
    assert_eq!(
        summary.cancelled_by,
        Some(("alice".to_string(), "maintenance window closed".to_string()))
    );
    assert_eq!(summary.state, StateName::DowngradeLeaderRegion);
    let route = region_route(&metadata, REGION);
    assert_eq!(route.leader_id(), Some(1));
    assert!(!route.is_leader_downgrading());
    engine.shutdown().await;
}

/// Narrow on purpose: a downgrade answered "unreachable" by a leader the control plane still
/// hears heartbeats from, or whose heartbeats it does not track, is no evidence that it is
/// gone, so the cancel is taken.
async fn unreachable_but_not_known_gone_aborts(heartbeats: Heartbeats) {
    let (engine, id, answer, metadata, _dir) =
        cancel_in_the_lease_wait(MailboxOutcome::Unreachable, heartbeats).await;
    answer.expect("the cancel is taken");
    let summary = tokio::time::timeout(Duration::from_secs(120), engine.wait(id))
        .await
        .expect("the migration ends")
        .unwrap();
    assert_eq!(summary.outcome, Some(Outcome::Aborted));
    let route = region_route(&metadata, REGION);
    assert_eq!(route.leader_id(), Some(1));
    assert!(!route.is_leader_downgrading());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_is_taken_when_the_unreachable_old_leader_still_heartbeats() {
    unreachable_but_not_known_gone_aborts(Heartbeats::Fresh).await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_is_taken_when_the_old_leaders_heartbeats_are_not_tracked() {
    unreachable_but_not_known_gone_aborts(Heartbeats::Unknown).await;
}

/// The batch driver too (spec R2.5): during the grouped write that marks both regions'
/// leader Downgrading, a cancel of one region is answered at once; once the write has
/// landed, that region rolls back (Downgrading cleared) and ends aborted while the other
/// region completes.
#[tokio::test(start_paused = true)]
async fn a_cancel_of_one_batch_region_during_the_grouped_downgrade_write_is_answered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Arc::new(MemoryMetadataStore::new());
    add_table(&memory, 1024, 2, 1, &[]);
    let held = Arc::new(HeldCas {
        inner: memory.clone(),
        release: Release::Land,
        released: AtomicBool::new(false),
        cas_calls: AtomicU32::new(0),
    });
    let ports = Ports::builder(ScriptedMailbox::new(), held.clone())
        .submit_metadata(memory.clone())
        .clock(Arc::new(TokioClock::new(EPOCH_BASE_MS)))
        .entropy(Arc::new(SeededEntropy::new(7)))
        .build();
    let engine = Engine::open(dir.path(), config(), ports).await.unwrap();
    let second = RegionId::new(1024, 2);
    let submitted = engine
        .submit_batch(BatchRequest::new(
            vec![REGION, second],
            Peer::sim(1),
            Peer::sim(2),
        ))
        .await
        .expect("the batch starts");
    let ids: Vec<Uuid> = submitted
        .regions
        .iter()
        .map(|(_, start)| match start {
            BatchRegionStart::Started(id) => *id,
            other => panic!("not started: {other:?}"),
        })
        .collect();
    while held.cas_calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(
        Duration::from_secs(1),
        engine.cancel(ids[1], "oncall", "keep 1024:2 on peer 1"),
    )
    .await
    .expect("answered while the grouped write is in flight")
    .expect("taken");
    assert_eq!(held.cas_calls.load(Ordering::SeqCst), 1);
    held.released.store(true, Ordering::SeqCst);
    let kept = tokio::time::timeout(Duration::from_secs(60), engine.wait(ids[0]))
        .await
        .expect("ends")
        .unwrap();
    let cancelled = tokio::time::timeout(Duration::from_secs(60), engine.wait(ids[1]))
        .await
        .expect("ends")
        .unwrap();
    assert_eq!(kept.outcome, Some(Outcome::Completed));
    assert_eq!(cancelled.outcome, Some(Outcome::Aborted));
    assert_eq!(
        cancelled.cancelled_by,
        Some(("oncall".to_string(), "keep 1024:2 on peer 1".to_string()))
    );
    assert_eq!(region_route(&memory, REGION).leader_id(), Some(2));
    let route = region_route(&memory, second);
    assert_eq!(route.leader_id(), Some(1));
    assert!(!route.is_leader_downgrading());
    // The landed write was rolled back by the cancelled region's own route write.
    assert!(events(&engine, ids[1]).iter().any(|event| matches!(
        event,
        MigrationEvent::RouteCasApplied {
            change: RouteChange::ClearDowngrading,
            ..
        }
    )));
    engine.shutdown().await;
}
