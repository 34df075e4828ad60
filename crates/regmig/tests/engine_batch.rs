//! `Engine::submit_batch` (spec R2.5) against a scripted mailbox: what refuses a whole batch,
//! what refuses one region alone, and that each region runs, resumes and ends as its own
//! procedure of the batch.

mod engine_support;

use std::sync::Arc;

use engine_support::*;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::TokioClock;
use regmig::domain::*;
use regmig::engine::{
    AppendMode, BatchRegionStart, BatchRequest, Engine, EngineConfig, MigrationRequest,
    SubmitError, SubmitOutcome,
};
use regmig::migration::{BatchOutcome, MigrationEvent, Outcome};
use uuid::Uuid;

fn config() -> EngineConfig {
    EngineConfig {
        append_mode: AppendMode::Inline,
        ..EngineConfig::default()
    }
}

struct Setup {
    dir: tempfile::TempDir,
    metadata: Arc<MemoryMetadataStore>,
    mailbox: Arc<ScriptedMailbox>,
    clock: TokioClock,
}

fn setup() -> Setup {
    let metadata = Arc::new(MemoryMetadataStore::new());
    add_table(&metadata, 1024, 4, 1, &[]);
    Setup {
        dir: tempfile::tempdir().expect("tempdir"),
        metadata,
        mailbox: ScriptedMailbox::new(),
        clock: TokioClock::new(EPOCH_BASE_MS),
    }
}

impl Setup {
    async fn engine(&self) -> Engine {
        Engine::open(
            self.dir.path(),
            config(),
            ports(
                self.mailbox.clone(),
                self.metadata.clone(),
                self.clock.clone(),
            ),
        )
        .await
        .expect("engine opens")
    }
}

fn region(number: u32) -> RegionId {
    RegionId::new(1024, number)
}

fn batch(numbers: &[u32], from: PeerId, to: PeerId) -> BatchRequest {
    BatchRequest::new(
        numbers.iter().map(|n| region(*n)).collect(),
        Peer::sim(from),
        Peer::sim(to),
    )
}

fn started(start: &BatchRegionStart) -> Uuid {
    match start {
        BatchRegionStart::Started(id) => *id,
        other => panic!("expected a started region, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn every_region_of_a_batch_moves_as_its_own_procedure_of_the_batch() {
    let setup = setup();
    let engine = setup.engine().await;
    let submitted = engine
        .submit_batch(batch(&[1, 2, 3], 1, 2))
        .await
        .expect("accepted");
    assert_eq!(submitted.regions.len(), 3);
    let mut outcomes = Vec::new();
    for (number, (region_id, start)) in (1..).zip(&submitted.regions) {
        assert_eq!(*region_id, region(number));
        let id = started(start);
        let state = engine.wait(id).await.expect("finishes");
        assert_eq!(state.outcome, Some(Outcome::Completed));
        assert_eq!(state.batch_id, Some(submitted.batch_id));
        let events = regmig::engine::load_procedure(engine.log(), id).expect("loads");
        assert!(matches!(events[0].event, MigrationEvent::Submitted { .. }));
        let batch = regmig::migration::fold(&events)
            .report
            .batch
            .expect("a region of a batch");
        assert_eq!(batch.batch_id, submitted.batch_id);
        assert_eq!(batch.regions, vec![region(1), region(2), region(3)]);
        assert!(matches!(
            events[1].event,
            MigrationEvent::BatchJoined { .. }
        ));
        assert_eq!(
            region_route(&setup.metadata, *region_id).leader_id(),
            Some(2)
        );
        outcomes.push(state.outcome);
    }
    assert_eq!(BatchOutcome::of(&outcomes), Some(BatchOutcome::Completed));
    // Region 4 was not in the batch.
    assert_eq!(
        region_route(&setup.metadata, region(4)).leader_id(),
        Some(1)
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_region_listed_twice_no_region_or_one_peer_at_both_ends_refuses_the_whole_batch() {
    let setup = setup();
    let engine = setup.engine().await;
    let twice = engine
        .submit_batch(batch(&[1, 2, 1], 1, 2))
        .await
        .expect_err("listed twice");
    assert_eq!(
        twice.to_string(),
        "invalid argument: region 1024:1 is listed twice in the batch"
    );
    let empty = engine
        .submit_batch(batch(&[], 1, 2))
        .await
        .expect_err("no region");
    assert_eq!(
        empty.to_string(),
        "invalid argument: a batch needs at least one region"
    );
    let same = engine
        .submit_batch(batch(&[1, 2], 1, 1))
        .await
        .expect_err("one peer");
    assert_eq!(
        same.to_string(),
        "invalid argument: from_peer and to_peer are both datanode 1 (batch of 2 regions)"
    );
    assert_eq!(engine.running_count(), 0);
    assert!(engine.list_open().expect("lists").is_empty());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_region_open_alone_or_in_another_batch_refuses_the_whole_batch() {
    let setup = setup();
    // Region 1's candidate never answers its open: its migration stays open a while.
    for peer in [2, 3] {
        setup.mailbox.script(
            peer,
            InstructionKind::OpenRegion,
            vec![MailboxOutcome::Timeout; 8],
        );
    }
    let engine = setup.engine().await;
    let alone = match engine
        .submit(MigrationRequest::new(region(1), Peer::sim(1), Peer::sim(2)))
        .await
    {
        Ok(SubmitOutcome::Started(id)) => id,
        other => panic!("not started: {other:?}"),
    };
    let refused = engine
        .submit_batch(batch(&[2, 1], 1, 3))
        .await
        .expect_err("region 1 is open");
    match refused {
        SubmitError::MigrationRunning {
            region_id,
            procedure_id,
        } => {
            assert_eq!(region_id, region(1));
            assert_eq!(procedure_id, alone);
        }
        other => panic!("expected migration_running, got {other}"),
    }
    // Nothing of the refused batch started: region 2 has no open migration.
    let open: Vec<RegionId> = engine
        .list_open()
        .expect("lists")
        .into_iter()
        .map(|(_, region_id)| region_id)
        .collect();
    assert_eq!(open, vec![region(1)]);

    // A batch holding region 3 (its candidate on peer 3 does not answer either); then
    // region 3 alone and in another batch are refused, naming the batch's procedure.
    let first = engine
        .submit_batch(batch(&[3], 1, 3))
        .await
        .expect("accepted");
    let member = started(&first.regions[0].1);
    let alone = engine
        .submit(MigrationRequest::new(region(3), Peer::sim(1), Peer::sim(2)))
        .await
        .expect_err("region 3 is open in a batch");
    assert!(
        matches!(alone, SubmitError::MigrationRunning { region_id, procedure_id } if region_id == region(3) && procedure_id == member),
        "{alone}"
    );
    let other_batch = engine
        .submit_batch(batch(&[4, 3], 1, 2))
        .await
        .expect_err("region 3 is open in a batch");
    assert!(
        matches!(other_batch, SubmitError::MigrationRunning { region_id, procedure_id } if region_id == region(3) && procedure_id == member),
        "{other_batch}"
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn start_ends_a_region_already_on_the_target_and_aborts_one_of_another_leader() {
    let setup = setup();
    let engine = setup.engine().await;
    // Move region 1 to peer 2 and region 2 to peer 3 first.
    for (number, to) in [(1, 2), (2, 3)] {
        match engine
            .submit(MigrationRequest::new(
                region(number),
                Peer::sim(1),
                Peer::sim(to),
            ))
            .await
        {
            Ok(SubmitOutcome::Started(id)) => {
                engine.wait(id).await.expect("finishes");
            }
            other => panic!("not started: {other:?}"),
        }
    }
    let submitted = engine
        .submit_batch(batch(&[1, 2, 3], 1, 2))
        .await
        .expect("accepted");
    let mut outcomes = Vec::new();
    let mut paths = Vec::new();
    for (_, start) in &submitted.regions {
        let state = engine.wait(started(start)).await.expect("finishes");
        outcomes.push(state.outcome);
        paths.push(
            state
                .path
                .iter()
                .map(|state| state.name())
                .collect::<Vec<_>>(),
        );
        if state.outcome == Some(Outcome::Aborted) {
            assert_eq!(
                state.final_error.as_deref(),
                Some("migration aborted: invalid region leader peer: expected 1, found 3")
            );
        }
    }
    assert_eq!(
        outcomes,
        vec![
            Some(Outcome::Completed),
            Some(Outcome::Aborted),
            Some(Outcome::Completed)
        ]
    );
    assert_eq!(paths[0], vec!["Start", "End"]);
    assert_eq!(paths[1], vec!["Start", "Abort"]);
    assert_eq!(BatchOutcome::of(&outcomes), Some(BatchOutcome::Partial));
    assert_eq!(
        region_route(&setup.metadata, region(2)).leader_id(),
        Some(3)
    );
    assert_eq!(
        region_route(&setup.metadata, region(3)).leader_id(),
        Some(2)
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_region_without_a_route_is_refused_alone_and_the_others_move() {
    let setup = setup();
    let engine = setup.engine().await;
    let submitted = engine
        .submit_batch(batch(&[1, 9], 1, 2))
        .await
        .expect("accepted");
    match &submitted.regions[1] {
        (r, BatchRegionStart::Refused(error)) => {
            assert_eq!(*r, region(9));
            assert_eq!(error.kind(), "region_route_not_found");
        }
        other => panic!("expected region 9 refused, got {other:?}"),
    }
    let state = engine
        .wait(started(&submitted.regions[0].1))
        .await
        .expect("finishes");
    assert_eq!(state.outcome, Some(Outcome::Completed));
    engine.shutdown().await;
}

/// A metadata store that counts the route writes per table (and the regions they move).
struct CountingMetadata {
    inner: Arc<MemoryMetadataStore>,
    writes: std::sync::Mutex<Vec<(TableId, usize)>>,
}

#[async_trait::async_trait]
impl regmig::cluster::MetadataStore for CountingMetadata {
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, regmig::cluster::MetadataError> {
        self.inner.table_route(table_id).await
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, regmig::cluster::CasConflict>, regmig::cluster::MetadataError> {
        self.writes
            .lock()
            .unwrap()
            .push((table_id, region_moves.len()));
        self.inner
            .cas_table_route(table_id, expected_version, route, region_moves)
            .await
    }

    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, regmig::cluster::MetadataError> {
        self.inner.datanode_table(datanode_id, table_id).await
    }

    async fn table_info(
        &self,
        table_id: TableId,
    ) -> Result<Option<TableInfo>, regmig::cluster::MetadataError> {
        self.inner.table_info(table_id).await
    }
}

impl Setup {
    /// An engine whose route writes are counted.
    async fn counted_engine(&self) -> (Engine, Arc<CountingMetadata>) {
        let counting = Arc::new(CountingMetadata {
            inner: self.metadata.clone(),
            writes: Default::default(),
        });
        let ports = regmig::cluster::Ports::builder(self.mailbox.clone(), counting.clone())
            .clock(Arc::new(self.clock.clone()))
            .entropy(Arc::new(regmig::cluster::SeededEntropy::new(7)))
            .build();
        let engine = Engine::open(self.dir.path(), config(), ports)
            .await
            .expect("engine opens");
        (engine, counting)
    }
}

async fn wait_all(
    engine: &Engine,
    submitted: &regmig::engine::BatchSubmitted,
) -> Vec<Option<Outcome>> {
    let mut outcomes = Vec::new();
    for (_, start) in &submitted.regions {
        outcomes.push(engine.wait(started(start)).await.expect("finishes").outcome);
    }
    outcomes
}

#[tokio::test(start_paused = true)]
async fn a_batch_step_is_one_instruction_per_datanode_and_one_route_write_per_table() {
    let setup = setup();
    add_table(&setup.metadata, 2048, 2, 1, &[]);
    let (engine, counting) = setup.counted_engine().await;
    let regions = vec![
        region(1),
        region(2),
        region(3),
        RegionId::new(2048, 1),
        RegionId::new(2048, 2),
    ];
    let submitted = engine
        .submit_batch(BatchRequest::new(
            regions.clone(),
            Peer::sim(1),
            Peer::sim(2),
        ))
        .await
        .expect("accepted");
    assert_eq!(
        wait_all(&engine, &submitted).await,
        vec![Some(Outcome::Completed); 5]
    );
    // Each step: one call per datanode carrying all five regions.
    let calls = setup.mailbox.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            (2, InstructionKind::OpenRegion, regions.clone()),
            (1, InstructionKind::FlushRegion, regions.clone()),
            (1, InstructionKind::DowngradeRegion, regions.clone()),
            (2, InstructionKind::UpgradeRegion, regions.clone()),
            (1, InstructionKind::CloseRegion, regions.clone()),
        ]
    );
    // Each table: one write for the downgrade, one for the upgrade moving all its regions.
    let writes = counting.writes.lock().unwrap().clone();
    let mut per_table = writes.clone();
    per_table.sort_unstable();
    assert_eq!(per_table, vec![(1024, 0), (1024, 3), (2048, 0), (2048, 2)]);
    // The upgrade's write moved every region's datanode-table entry.
    let moved = setup
        .metadata
        .snapshot()
        .datanode_tables
        .get(&(2, 1024))
        .map(|table| table.region_numbers.clone());
    assert_eq!(moved, Some(vec![1, 2, 3]));
    // Each region's log records the instruction as carrying all five.
    let id = started(&submitted.regions[4].1);
    let events = regmig::engine::load_procedure(engine.log(), id).expect("loads");
    let carried: Vec<_> = events
        .iter()
        .filter_map(|timed| match &timed.event {
            MigrationEvent::InstructionSent { regions, .. } => Some(regions.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(carried, vec![regions.clone(); 5]);
    // Today's logic decides what the log holds (the carried regions are the engine's).
    assert!(regmig::migration::replay::check(&events).is_ok());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_region_whose_upgrade_is_never_ready_rolls_back_alone() {
    let setup = setup();
    // Region 1's part of the upgrade, and its own retries, are never ready.
    let not_ready = MailboxOutcome::Reply(Reply::UpgradeRegion {
        ready: false,
        exists: true,
        error: None,
    });
    setup.mailbox.script_region(
        2,
        InstructionKind::UpgradeRegion,
        region(1),
        vec![not_ready; 3],
    );
    let (engine, counting) = setup.counted_engine().await;
    let submitted = engine
        .submit_batch(batch(&[1, 2, 3], 1, 2))
        .await
        .expect("accepted");
    let outcomes = wait_all(&engine, &submitted).await;
    assert_eq!(
        outcomes,
        vec![
            Some(Outcome::Aborted),
            Some(Outcome::Completed),
            Some(Outcome::Completed)
        ]
    );
    assert_eq!(BatchOutcome::of(&outcomes), Some(BatchOutcome::Partial));
    let failed = engine
        .get(started(&submitted.regions[0].1))
        .await
        .expect("state");
    assert!(failed.rolled_back);
    assert_eq!(
        failed.final_error.as_deref(),
        Some("migration aborted: failed to upgrade the candidate region")
    );
    // Region 1 is back on peer 1, not downgrading; the others moved.
    let back = region_route(&setup.metadata, region(1));
    assert_eq!((back.leader_id(), back.leader_state), (Some(1), None));
    for number in [2, 3] {
        assert_eq!(
            region_route(&setup.metadata, region(number)).leader_id(),
            Some(2)
        );
    }
    // One upgrade carried all three; region 1's retries went alone.
    let upgrades: Vec<Vec<RegionId>> = setup
        .mailbox
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, kind, _)| *kind == InstructionKind::UpgradeRegion)
        .map(|(_, _, regions)| regions.clone())
        .collect();
    assert_eq!(
        upgrades,
        vec![
            vec![region(1), region(2), region(3)],
            vec![region(1)],
            vec![region(1)]
        ]
    );
    // Route writes of table 1024: the downgrade of all three, the upgrade of regions 2
    // and 3 (moving both), region 1's rollback alone.
    let writes = counting.writes.lock().unwrap().clone();
    assert_eq!(writes, vec![(1024, 0), (1024, 2), (1024, 0)]);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_halted_mid_way_resumes_each_region_where_its_events_end() {
    let setup = setup();
    let engine = setup.engine().await;
    // Halt the engine once the downgrade is recorded (before it is sent).
    let halt = engine.halt_handle();
    engine.set_observer(Box::new(move |event| {
        if let MigrationEvent::InstructionSent { instruction, .. } = &event.event {
            if instruction.kind() == InstructionKind::DowngradeRegion {
                halt.halt();
            }
        }
    }));
    let submitted = engine
        .submit_batch(batch(&[1, 2, 3], 1, 2))
        .await
        .expect("accepted");
    let ids: Vec<Uuid> = submitted
        .regions
        .iter()
        .map(|(_, start)| started(start))
        .collect();
    for id in &ids {
        assert!(engine.wait(*id).await.is_err(), "halted before it finished");
    }
    engine.shutdown().await;
    drop(engine);
    assert!(setup
        .mailbox
        .calls
        .lock()
        .unwrap()
        .iter()
        .all(|(_, kind, _)| *kind != InstructionKind::DowngradeRegion));

    let engine = setup.engine().await;
    for id in &ids {
        let state = engine.wait(*id).await.expect("finishes after the resume");
        assert_eq!(state.outcome, Some(Outcome::Completed));
        let events = regmig::engine::load_procedure(engine.log(), *id).expect("loads");
        // Its own log: the downgrade recorded before the halt, then Resumed, then the
        // downgrade sent again (a re-send), and no second open.
        let resumed = events
            .iter()
            .position(|timed| matches!(timed.event, MigrationEvent::Resumed))
            .expect("resumed");
        let sends: Vec<(InstructionKind, bool)> = events
            .iter()
            .filter_map(|timed| match &timed.event {
                MigrationEvent::InstructionSent {
                    instruction,
                    resend,
                    ..
                } => Some((instruction.kind(), *resend)),
                _ => None,
            })
            .collect();
        assert_eq!(
            sends,
            vec![
                (InstructionKind::OpenRegion, false),
                (InstructionKind::FlushRegion, false),
                (InstructionKind::DowngradeRegion, false),
                (InstructionKind::DowngradeRegion, true),
                (InstructionKind::UpgradeRegion, false),
                (InstructionKind::CloseRegion, false),
            ]
        );
        assert!(events[..resumed].iter().any(|timed| matches!(
            &timed.event,
            MigrationEvent::InstructionSent { instruction, .. } if instruction.kind() == InstructionKind::DowngradeRegion
        )));
    }
    // After the resume the batch still moves together: one downgrade for all three.
    let downgrades: Vec<Vec<RegionId>> = setup
        .mailbox
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, kind, _)| *kind == InstructionKind::DowngradeRegion)
        .map(|(_, _, regions)| regions.clone())
        .collect();
    assert_eq!(downgrades, vec![vec![region(1), region(2), region(3)]]);
    engine.shutdown().await;
}
