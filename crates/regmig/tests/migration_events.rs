//! The events of a migration: every variant encodes and decodes under its own kind code.

use std::collections::BTreeSet;

use regmig::domain::{
    DatanodeTable, Instruction, InstructionKind, Peer, RegionId, RegionRoute, Reply, TableRoute,
    WalKind,
};
use regmig::migration::events::{kind_name, DecodeError};
use regmig::migration::{
    ErrorKind, Hook, MigrationEvent, MigrationTask, Outcome, RetryPolicy, RouteChange, StateName,
    StepError, WaitReason,
};

fn region_id() -> RegionId {
    RegionId::new(1024, 1)
}

fn step_error() -> StepError {
    StepError {
        kind: ErrorKind::CasConflict,
        message: "table 1024 was changed concurrently".to_string(),
        retryable: true,
    }
}

/// One event of every variant, each with non-default field values.
fn one_of_each() -> Vec<MigrationEvent> {
    vec![
        MigrationEvent::Submitted {
            task: MigrationTask {
                region_id: region_id(),
                from_peer: Peer::sim(1),
                to_peer: Peer::sim(2),
                timeout_ms: 12_345,
            },
            catalog: "greptime".to_string(),
            schema: "public".to_string(),
            wal: WalKind::Remote,
            policy: RetryPolicy {
                require_ready: false,
                ..RetryPolicy::default()
            },
            trigger: "operator".to_string(),
            reason: Some("rebalance rack 3".to_string()),
            actor: Some("ops/alice".to_string()),
        },
        MigrationEvent::LockWaitStarted {
            lock_key: "table/1024:exclusive".to_string(),
        },
        MigrationEvent::LocksAcquired {
            lock_keys: vec!["catalog/greptime:shared".to_string()],
            waited_ms: 17,
        },
        MigrationEvent::Resumed,
        MigrationEvent::StateEntered {
            state: StateName::Abort,
            reason: Some("invalid region leader peer".to_string()),
        },
        MigrationEvent::RouteRead {
            table_id: 1024,
            version: Some(3),
            route: Some(TableRoute::Physical {
                region_routes: vec![RegionRoute {
                    region_id: region_id(),
                    leader_peer: Some(Peer::sim(1)),
                    follower_peers: vec![Peer::sim(2)],
                    leader_state: Some(regmig::domain::LeaderState::Downgrading),
                    leader_down_since_ms: Some(99),
                }],
            }),
        },
        MigrationEvent::DatanodeTableRead {
            datanode_id: 1,
            table_id: 1024,
            datanode_table: Some(DatanodeTable {
                datanode_id: 1,
                table_id: 1024,
                region_numbers: vec![1, 2],
                engine: "mito".to_string(),
                storage_path: "greptime/public/1024".to_string(),
                region_options: [("ttl".to_string(), "7d".to_string())].into(),
                region_wal_options: [(1, "topic-1".to_string())].into(),
            }),
        },
        MigrationEvent::MetadataFailed {
            operation: "read table route".to_string(),
            error: "connection reset".to_string(),
        },
        MigrationEvent::InstructionSent {
            peer: Peer::sim(2),
            instruction: Instruction::UpgradeRegion {
                region_id: region_id(),
                last_entry_id: Some(42),
                replay_timeout_ms: 9_900,
                location_id: Some(1),
            },
            timeout_ms: 700,
            deadline_ms: 1_700_000_001_000,
            attempt: 2,
            resend: true,
            regions: Vec::new(),
        },
        MigrationEvent::ReplyReceived {
            peer: 1,
            reply: Reply::DowngradeRegion {
                last_entry_id: Some(42),
                exists: true,
                error: None,
            },
        },
        MigrationEvent::MailboxTimedOut {
            peer: 2,
            instruction: InstructionKind::OpenRegion,
        },
        MigrationEvent::PeerUnreachable {
            peer: 1,
            instruction: InstructionKind::CloseRegion,
        },
        MigrationEvent::InstructionExpired {
            peer: 1,
            instruction: InstructionKind::DowngradeRegion,
        },
        MigrationEvent::OperationTimed {
            operation: InstructionKind::DowngradeRegion,
            elapsed_ms: 250,
        },
        MigrationEvent::RouteCasApplied {
            table_id: 1024,
            change: RouteChange::Upgrade,
            from_version: 3,
            to_version: 4,
        },
        MigrationEvent::RouteCasRefused {
            table_id: 1024,
            change: RouteChange::ClearDowngrading,
            expected_version: 3,
            actual_version: Some(5),
        },
        MigrationEvent::LeaseDeadlineSet {
            deadline_ms: 1_700_000_010_000,
        },
        MigrationEvent::LeaseDeadlineReset,
        MigrationEvent::WaitStarted {
            until_ms: 1_700_000_010_000,
            reason: WaitReason::LeaseExpiry,
        },
        MigrationEvent::WaitElapsed,
        MigrationEvent::RetryScheduled {
            attempt: 2,
            delay_ms: 1_250,
            due_at_ms: 1_700_000_001_250,
            jitter_random: 10_000,
            rollback: true,
            error: step_error(),
        },
        MigrationEvent::HooksCalled {
            hooks: vec![
                Hook::DeregisterFailureDetector {
                    peer: 1,
                    region_id: region_id(),
                },
                Hook::RegisterFailureDetector {
                    peer: 1,
                    region_id: region_id(),
                },
                Hook::InvalidateTableCache { table_id: 1024 },
            ],
        },
        MigrationEvent::OperatorCancelled {
            actor: "alice".to_string(),
            reason: "maintenance".to_string(),
        },
        MigrationEvent::CancelRefused {
            actor: "bob".to_string(),
            reason: "oops".to_string(),
            refusal: "the migration is already rolling back".to_string(),
        },
        MigrationEvent::RollbackStarted {
            error: StepError {
                kind: ErrorKind::Cancelled,
                message: "cancelled by alice: maintenance".to_string(),
                retryable: false,
            },
        },
        MigrationEvent::RollbackFinished {
            succeeded: false,
            error: Some("rollback failed".to_string()),
        },
        MigrationEvent::Finished {
            outcome: Outcome::Aborted,
            error: Some("cancelled by alice: maintenance".to_string()),
        },
        MigrationEvent::LastHeartbeatRead {
            peer: 1,
            last_heartbeat_ms: Some(1_767_225_600_000),
        },
        MigrationEvent::BatchJoined {
            batch_id: uuid::Uuid::from_u128(0x0190_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5b),
            regions: vec![RegionId::new(1024, 1), RegionId::new(1024, 2)],
        },
    ]
}

#[test]
fn every_event_round_trips_through_encode_and_decode_with_its_kind_code() {
    for event in one_of_each() {
        let payload = event.encode().expect("encodes");
        assert!(!payload.is_empty(), "{} encodes to nothing", event.name());
        assert_eq!(
            MigrationEvent::decode(event.kind_code(), &payload),
            Ok(event.clone())
        );
    }
}

#[test]
fn kind_codes_are_unique_and_every_known_code_has_a_variant_here() {
    let events = one_of_each();
    let codes: BTreeSet<u16> = events.iter().map(MigrationEvent::kind_code).collect();
    assert_eq!(codes.len(), events.len(), "two variants share a kind code");
    // Every code this version names is one of the variants above: a new variant must be
    // added to `one_of_each` (and so to the round trip) before its code is named.
    let known: BTreeSet<u16> = (0..=u16::MAX)
        .filter(|&code| kind_name(code).is_some())
        .collect();
    assert_eq!(codes, known);
    assert_eq!(kind_name(0), None);
}

#[test]
fn kind_name_matches_the_event_name() {
    let mut names = BTreeSet::new();
    for event in one_of_each() {
        assert_eq!(kind_name(event.kind_code()), Some(event.name()));
        assert_ne!(event.name(), "Unknown");
        assert!(names.insert(event.name()), "{} named twice", event.name());
    }
}

#[test]
fn only_finished_is_terminal() {
    for event in one_of_each() {
        assert_eq!(
            event.is_terminal(),
            matches!(event, MigrationEvent::Finished { .. }),
            "{}",
            event.name()
        );
    }
}

#[test]
fn decoding_a_payload_under_another_kind_is_an_error_naming_both() {
    let payload = MigrationEvent::Resumed.encode().expect("encodes");
    let error = MigrationEvent::decode(5, &payload).expect_err("kind 5 is StateEntered");
    assert_eq!(
        error,
        DecodeError {
            kind: 5,
            kind_name: Some("StateEntered"),
            message: "payload is a Resumed event (kind 4), envelope says kind 5".to_string(),
        }
    );
    assert_eq!(
        error.to_string(),
        "cannot decode event of kind 5 (StateEntered): payload is a Resumed event (kind 4), envelope says kind 5"
    );
}

#[test]
fn decoding_under_an_unknown_kind_or_from_garbage_is_an_error() {
    let payload = MigrationEvent::WaitElapsed.encode().expect("encodes");
    let error = MigrationEvent::decode(999, &payload).expect_err("999 is unknown");
    assert_eq!(error.kind, 999);
    assert_eq!(error.kind_name, None);
    assert!(error.to_string().contains("unknown to this version"));
    assert!(error.to_string().contains("WaitElapsed"));

    for garbage in [
        &[][..],
        &[0xc1][..],
        &[0x92, 0x01][..],
        b"not msgpack at all",
    ] {
        let error = MigrationEvent::decode(6, garbage).expect_err("garbage");
        assert_eq!(error.kind, 6);
        assert_eq!(error.kind_name, Some("RouteRead"));
    }
}

#[test]
fn a_submit_without_an_actor_encodes_as_before_the_field_existed() {
    let mut with_actor = one_of_each().remove(0);
    let MigrationEvent::Submitted { actor, .. } = &mut with_actor else {
        panic!("the first event is Submitted");
    };
    *actor = None;
    let without = with_actor.clone();
    let payload = without.encode().expect("encode");
    // No key at all: a record written before the field existed reads back and re-encodes
    // to the same bytes.
    assert!(!payload.windows(5).any(|window| window == b"actor"));
    assert_eq!(
        MigrationEvent::decode(without.kind_code(), &payload),
        Ok(without.clone())
    );
    let MigrationEvent::Submitted { actor, .. } = &mut with_actor else {
        unreachable!()
    };
    *actor = Some("ops/alice".to_string());
    let payload = with_actor.encode().expect("encode");
    assert!(payload.windows(5).any(|window| window == b"actor"));
    assert_eq!(
        MigrationEvent::decode(with_actor.kind_code(), &payload),
        Ok(with_actor)
    );
}
