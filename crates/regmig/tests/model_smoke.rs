//! A smoke run of the pure model against a tiny in-test world.

use regmig::domain::*;
use regmig::migration::*;

fn submitted(route_followers: Vec<Peer>) -> (Vec<TimedEvent>, VersionedTableRoute) {
    let task = MigrationTask {
        region_id: RegionId::new(1024, 1),
        from_peer: Peer::sim(1),
        to_peer: Peer::sim(2),
        timeout_ms: 10_000,
    };
    let events = vec![TimedEvent {
        at_ms: 1_000,
        event: MigrationEvent::Submitted {
            task,
            catalog: "greptime".into(),
            schema: "public".into(),
            wal: WalKind::Local,
            policy: RetryPolicy::default(),
            trigger: "test".into(),
            reason: None,
            actor: None,
        },
    }];
    let route = VersionedTableRoute {
        table_id: 1024,
        version: 0,
        route: TableRoute::Physical {
            region_routes: vec![RegionRoute {
                region_id: RegionId::new(1024, 1),
                leader_peer: Some(Peer::sim(1)),
                follower_peers: route_followers,
                leader_state: None,
                leader_down_since_ms: None,
            }],
        },
    };
    (events, route)
}

#[test]
fn happy_path_from_start_reaches_end() {
    let (mut log, mut route) = submitted(vec![]);
    let mut now_ms = 1_000;
    let mut input = Input::new(Observation::Begin);
    for _ in 0..100 {
        let state = fold(&log);
        let decision = decide(&state, now_ms, input.clone()).expect("decide");
        for event in decision.events {
            log.push(TimedEvent {
                at_ms: now_ms,
                event,
            });
        }
        now_ms += 1;
        input = Input::new(match decision.action {
            Action::AcquireLocks { lock_keys } => Observation::LocksAcquired {
                lock_keys,
                waited_ms: 0,
            },
            Action::ReadLastHeartbeat { peer } => Observation::LastHeartbeatRead {
                peer,
                last_heartbeat_ms: None,
            },
            Action::ReadRoute { table_id } => Observation::RouteRead {
                table_id,
                route: Some(route.clone()),
            },
            Action::ReadDatanodeTable {
                datanode_id,
                table_id,
            } => Observation::DatanodeTableRead {
                datanode_id,
                table_id,
                datanode_table: Some(DatanodeTable {
                    datanode_id,
                    table_id,
                    region_numbers: vec![1],
                    engine: "mito".into(),
                    storage_path: "data/1024".into(),
                    region_options: Default::default(),
                    region_wal_options: Default::default(),
                }),
            },
            Action::Send { instruction, .. } => {
                Observation::Mailbox(MailboxOutcome::Reply(match instruction {
                    Instruction::OpenRegion { .. } => Reply::OpenRegion {
                        result: true,
                        error: None,
                    },
                    Instruction::DowngradeRegion { .. } => Reply::DowngradeRegion {
                        last_entry_id: Some(7),
                        exists: true,
                        error: None,
                    },
                    Instruction::UpgradeRegion { .. } => Reply::UpgradeRegion {
                        ready: true,
                        exists: true,
                        error: None,
                    },
                    Instruction::CloseRegion { .. } => Reply::CloseRegion {
                        result: true,
                        error: None,
                    },
                    Instruction::FlushRegion { .. } => Reply::FlushRegion {
                        result: true,
                        error: None,
                    },
                }))
            }
            Action::CasRoute {
                table_id,
                expected_version,
                route: new_route,
                change,
                ..
            } => {
                assert_eq!(expected_version, route.version);
                route.version += 1;
                route.route = new_route;
                Observation::CasApplied {
                    table_id,
                    change,
                    from_version: expected_version,
                    to_version: route.version,
                }
            }
            Action::WaitUntil { until_ms, .. } => {
                now_ms = until_ms;
                Observation::WaitElapsed
            }
            Action::Finish { outcome } => {
                assert_eq!(outcome, Outcome::Completed);
                break;
            }
        });
    }
    let state = fold(&log);
    assert_eq!(state.outcome, Some(Outcome::Completed));
    assert_eq!(
        state
            .report
            .collapsed_path()
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>(),
        vec![
            "Start",
            "OpenCandidateRegion",
            "FlushLeaderRegion",
            "UpdateMetadata::Downgrade",
            "DowngradeLeaderRegion",
            "UpgradeCandidateRegion",
            "UpdateMetadata::Upgrade",
            "CloseDowngradedRegion",
            "End"
        ]
    );
    assert_eq!(state.last_entry_id, Some(7));
    let region = route.route.region_route(RegionId::new(1024, 1)).unwrap();
    assert_eq!(region.leader_id(), Some(2));
    assert!(!region.is_leader_downgrading());
    assert_eq!(
        regmig::migration::replay::check(&log),
        Ok(log
            .iter()
            .filter(|e| e.event.role() == EventRole::Input)
            .count())
    );
}
