//! Batch migrations (spec R2.5) in the model: a batch's outcome from its regions' outcomes,
//! and a region's procedure knows its batch from its events.

use regmig::domain::{Peer, RegionId, WalKind};
use regmig::migration::{
    fold, BatchMembership, BatchOutcome, EventRole, MigrationEvent, MigrationTask, Outcome,
    RetryPolicy, TimedEvent,
};
use uuid::Uuid;

const BATCH_ID: Uuid = Uuid::from_u128(0x0190_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5b);

fn submitted(region: RegionId) -> MigrationEvent {
    MigrationEvent::Submitted {
        task: MigrationTask {
            region_id: region,
            from_peer: Peer::sim(1),
            to_peer: Peer::sim(2),
            timeout_ms: 10_000,
        },
        catalog: "greptime".to_string(),
        schema: "public".to_string(),
        wal: WalKind::Local,
        policy: RetryPolicy::default(),
        trigger: "evacuate peer 1".to_string(),
        reason: None,
        actor: None,
    }
}

#[test]
fn every_region_completed_is_completed() {
    assert_eq!(
        BatchOutcome::of(&[Some(Outcome::Completed), Some(Outcome::Completed)]),
        Some(BatchOutcome::Completed)
    );
}

#[test]
fn some_regions_completed_is_partial_whatever_the_others_did() {
    assert_eq!(
        BatchOutcome::of(&[Some(Outcome::Completed), Some(Outcome::Failed)]),
        Some(BatchOutcome::Partial)
    );
    assert_eq!(
        BatchOutcome::of(&[Some(Outcome::Aborted), Some(Outcome::Completed)]),
        Some(BatchOutcome::Partial)
    );
    assert_eq!(BatchOutcome::Partial.name(), "partial");
}

#[test]
fn no_region_completed_is_failed_when_one_failed_else_aborted() {
    assert_eq!(
        BatchOutcome::of(&[Some(Outcome::Aborted), Some(Outcome::Failed)]),
        Some(BatchOutcome::Failed)
    );
    assert_eq!(
        BatchOutcome::of(&[Some(Outcome::Aborted), Some(Outcome::Aborted)]),
        Some(BatchOutcome::Aborted)
    );
}

#[test]
fn a_batch_with_an_open_region_or_no_region_has_no_outcome_yet() {
    assert_eq!(BatchOutcome::of(&[Some(Outcome::Completed), None]), None);
    assert_eq!(BatchOutcome::of(&[]), None);
}

#[test]
fn a_region_procedure_folds_its_batch_from_the_batch_joined_event() {
    let regions = vec![RegionId::new(1024, 1), RegionId::new(1024, 2)];
    let events = [
        TimedEvent {
            at_ms: 1_000,
            event: submitted(regions[1]),
        },
        TimedEvent {
            at_ms: 1_000,
            event: MigrationEvent::BatchJoined {
                batch_id: BATCH_ID,
                regions: regions.clone(),
            },
        },
    ];
    let state = fold(&events);
    assert_eq!(
        state.report.batch,
        Some(BatchMembership {
            batch_id: BATCH_ID,
            regions,
        })
    );
    assert_eq!(
        state.task.as_ref().map(|task| task.region_id),
        Some(RegionId::new(1024, 2))
    );
    assert_eq!(state.report.counters.events, 2);
}

#[test]
fn a_single_migration_has_no_batch() {
    let events = [TimedEvent {
        at_ms: 1_000,
        event: submitted(RegionId::new(1024, 1)),
    }];
    assert_eq!(fold(&events).report.batch, None);
}

#[test]
fn batch_joined_is_a_note_with_kind_code_28_so_replay_skips_it() {
    let event = MigrationEvent::BatchJoined {
        batch_id: BATCH_ID,
        regions: vec![RegionId::new(1024, 1)],
    };
    assert_eq!(event.kind_code(), 28);
    assert_eq!(event.name(), "BatchJoined");
    assert_eq!(event.role(), EventRole::Note);
    assert!(!event.is_terminal());
}
