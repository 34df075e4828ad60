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
