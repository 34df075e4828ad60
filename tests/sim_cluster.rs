//! The simulated cluster, driven by hand through its ports (no engine): datanode behaviour,
//! leases, replay timing, scripted replies, faults, invariants and determinism.
//!
//! Every test runs on a current-thread runtime with paused time, so virtual times are exact.

mod sim {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use regmig::cluster::CasConflict;
    use regmig::cluster::{
        Clock, ClusterHooks, Mailbox, MetadataError, MetadataErrorKind, MetadataStore, RegionMove,
    };
    use regmig::domain::{
        DatanodeTable, Instruction, InstructionKind, LeaderState, MailboxOutcome, Peer, PeerId,
        RegionId, RegionRoute, Reply, TableId, TableInfo, TableRoute, WalKind,
    };
    use regmig::migration::Hook;
    use regmig_tools::sim::cluster::{
        ClusterSetup, RegionSetup, SetupError, SimCluster, TableSetup, WriteStats,
    };
    use regmig_tools::sim::datanode::{
        ReplaySession, Role, ScriptedReply, SimOptions, WriteOutcome, WriteRejection,
    };

    const TABLE: TableId = 1024;
    const EPOCH_BASE_MS: u64 = 1_700_000_000_000;

    fn region(number: u32) -> RegionId {
        RegionId::new(TABLE, number)
    }

    fn region_on(number: u32, leader: PeerId, last_entry_id: u64) -> RegionSetup {
        RegionSetup {
            number,
            leader,
            followers: Vec::new(),
            last_entry_id,
        }
    }

    fn setup(
        wal: WalKind,
        writes_per_second: Option<u64>,
        regions: Vec<RegionSetup>,
    ) -> ClusterSetup {
        ClusterSetup {
            seed: 7,
            peers: vec![1, 2, 3],
            tables: vec![TableSetup {
                id: TABLE,
                catalog: "greptime".to_string(),
                schema: "public".to_string(),
                wal,
                logical: false,
                regions,
            }],
            writes_per_second,
            // Instant flushes: these tests time leases, replays and writes; the flush's own
            // timing has its tests (`flush_*`).
            flush_writes_per_second: Some(u64::MAX),
            epoch_base_ms: EPOCH_BASE_MS,
        }
    }

    fn cluster(setup: ClusterSetup) -> Arc<SimCluster> {
        SimCluster::new(setup, SimOptions::default()).expect("valid setup")
    }

    fn open(region_id: RegionId) -> Instruction {
        Instruction::OpenRegion {
            region_id,
            engine: "mito".to_string(),
            storage_path: format!("data/{}", region_id.table_id()),
            region_options: BTreeMap::new(),
            region_wal_options: BTreeMap::new(),
            skip_wal_replay: true,
        }
    }

    fn downgrade(region_id: RegionId, reject_write: bool) -> Instruction {
        Instruction::DowngradeRegion {
            region_id,
            flush_timeout_ms: 1_000,
            reject_write,
        }
    }

    fn upgrade(
        region_id: RegionId,
        last_entry_id: Option<u64>,
        replay_timeout_ms: u64,
    ) -> Instruction {
        Instruction::UpgradeRegion {
            region_id,
            last_entry_id,
            replay_timeout_ms,
            location_id: Some(1),
        }
    }

    fn close(region_id: RegionId) -> Instruction {
        Instruction::CloseRegion { region_id }
    }

    fn open_reply(result: bool, error: Option<&str>) -> MailboxOutcome {
        MailboxOutcome::Reply(Reply::OpenRegion {
            result,
            error: error.map(str::to_string),
        })
    }

    fn close_reply(result: bool, error: Option<&str>) -> MailboxOutcome {
        MailboxOutcome::Reply(Reply::CloseRegion {
            result,
            error: error.map(str::to_string),
        })
    }

    fn downgrade_reply(
        last_entry_id: Option<u64>,
        exists: bool,
        error: Option<&str>,
    ) -> MailboxOutcome {
        MailboxOutcome::Reply(Reply::DowngradeRegion {
            last_entry_id,
            exists,
            error: error.map(str::to_string),
        })
    }

    fn upgrade_reply(ready: bool, exists: bool, error: Option<&str>) -> MailboxOutcome {
        MailboxOutcome::Reply(Reply::UpgradeRegion {
            ready,
            exists,
            error: error.map(str::to_string),
        })
    }

    async fn sleep_to(cluster: &SimCluster, at_ms: u64) {
        let clock = cluster.clock();
        clock.sleep_until_ms(clock.epoch_base_ms() + at_ms).await;
    }

    async fn send(
        cluster: &Arc<SimCluster>,
        peer: PeerId,
        instruction: Instruction,
        timeout_ms: u64,
    ) -> MailboxOutcome {
        cluster
            .mailbox()
            .send(&Peer::sim(peer), instruction, timeout_ms)
            .await
    }

    /// Reads the table route through the port, changes one region's route, writes it back.
    async fn change_route(
        cluster: &SimCluster,
        region_id: RegionId,
        region_moves: Vec<RegionMove>,
        change: impl FnOnce(&mut RegionRoute),
    ) -> u64 {
        let metadata = cluster.metadata();
        let current = metadata
            .table_route(TABLE)
            .await
            .expect("store up")
            .expect("route exists");
        let mut route = current.route.clone();
        change(route.region_route_mut(region_id).expect("region route"));
        metadata
            .cas_table_route(TABLE, current.version, route, region_moves)
            .await
            .expect("store up")
            .expect("no conflict")
    }

    async fn mark_downgrading(cluster: &SimCluster, region_id: RegionId) -> u64 {
        let now_ms = cluster.clock().now_ms();
        change_route(cluster, region_id, Vec::new(), |route| {
            route.leader_state = Some(LeaderState::Downgrading);
            route.leader_down_since_ms = Some(now_ms);
        })
        .await
    }

    async fn clear_downgrading(cluster: &SimCluster, region_id: RegionId) -> u64 {
        change_route(cluster, region_id, Vec::new(), |route| {
            route.leader_state = None;
            route.leader_down_since_ms = None;
        })
        .await
    }

    async fn move_leader(cluster: &SimCluster, region_id: RegionId, from: PeerId, to: PeerId) {
        let region_move = RegionMove {
            region_id,
            from_peer: from,
            to_peer: to,
        };
        change_route(cluster, region_id, vec![region_move], |route| {
            route.leader_peer = Some(Peer::sim(to));
            route.leader_state = None;
            route.leader_down_since_ms = None;
            route.follower_peers.retain(|peer| peer.id != to);
        })
        .await;
    }

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs
            .iter()
            .map(|(name, count)| (name.to_string(), *count))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn setup_fills_routes_datanode_tables_infos_and_replicas() {
        let mut setup = setup(
            WalKind::Remote,
            None,
            vec![
                RegionSetup {
                    number: 1,
                    leader: 1,
                    followers: vec![3],
                    last_entry_id: 100,
                },
                region_on(2, 2, 0),
            ],
        );
        setup.tables.push(TableSetup {
            id: 2048,
            catalog: "greptime".to_string(),
            schema: "logs".to_string(),
            wal: WalKind::Local,
            logical: true,
            regions: Vec::new(),
        });
        let cluster = cluster(setup);
        let metadata = cluster.validation_view();
        let route = metadata
            .table_route(TABLE)
            .await
            .expect("no fault")
            .expect("route");
        assert_eq!(route.version, 0);
        assert_eq!(
            route.route.region_route(region(1)),
            Some(&RegionRoute {
                region_id: region(1),
                leader_peer: Some(Peer::sim(1)),
                follower_peers: vec![Peer::sim(3)],
                leader_state: None,
                leader_down_since_ms: None,
            })
        );
        assert_eq!(
            metadata.datanode_table(1, TABLE).await,
            Ok(Some(DatanodeTable {
                datanode_id: 1,
                table_id: TABLE,
                region_numbers: vec![1],
                engine: "mito".to_string(),
                storage_path: "data/1024".to_string(),
                region_options: BTreeMap::new(),
                region_wal_options: BTreeMap::from([(
                    1,
                    r#"{"wal.provider":"kafka","wal.kafka.topic":"sim_wal_topic"}"#.to_string()
                )]),
            }))
        );
        assert_eq!(metadata.datanode_table(3, TABLE).await, Ok(None));
        assert_eq!(
            metadata.table_info(2048).await,
            Ok(Some(TableInfo {
                table_id: 2048,
                catalog: "greptime".to_string(),
                schema: "logs".to_string(),
                name: "table_2048".to_string(),
                wal: WalKind::Local,
            }))
        );
        let logical = metadata.table_route(2048).await.expect("no fault");
        assert_eq!(
            logical.map(|route| route.route),
            Some(TableRoute::Logical {
                physical_table_id: TABLE
            })
        );

        let leader = cluster.replica(1, region(1)).expect("leader");
        assert_eq!(
            (leader.role, leader.lease_deadline_ms, leader.history.len()),
            (Role::Leader, Some(10_000), 100)
        );
        let follower = cluster.replica(3, region(1)).expect("follower");
        assert_eq!(
            (
                follower.role,
                follower.lease_deadline_ms,
                follower.history.len()
            ),
            (Role::Follower, None, 100)
        );
        assert_eq!(
            cluster.replica(2, region(2)).map(|r| r.history.len()),
            Some(0)
        );
        assert_eq!(cluster.writers(region(1)), vec![1]);

        // A follower is upgraded without an open; the remote WAL fences the old leader. The
        // upgraded replica gets no lease from the upgrade: nobody takes writes until a
        // heartbeat finds the route naming it leader.
        assert_eq!(
            send(&cluster, 3, upgrade(region(1), Some(100), 1_000), 1_000).await,
            upgrade_reply(true, true, None)
        );
        assert_eq!(cluster.writers(region(1)), Vec::<PeerId>::new());
        assert_eq!(
            cluster
                .replica(3, region(1))
                .map(|r| (r.role, r.lease_deadline_ms)),
            Some((Role::Leader, None))
        );
        assert_eq!(
            cluster.write_rejection(3, region(1)),
            Some(WriteRejection::LeaseExpired)
        );
        assert_eq!(
            cluster.write_rejection(1, region(1)),
            Some(WriteRejection::Fenced)
        );
        move_leader(&cluster, region(1), 1, 3).await;
        cluster.heartbeat(3);
        assert_eq!(cluster.writers(region(1)), vec![3]);
        assert_eq!(
            cluster
                .replica(3, region(1))
                .and_then(|r| r.lease_deadline_ms),
            Some(10_000)
        );
        assert_eq!(cluster.violations(), Vec::new());

        let bad = ClusterSetup {
            peers: vec![1],
            ..ClusterSetup::default()
        };
        let mut bad_region = bad.clone();
        bad_region.tables.push(TableSetup {
            id: TABLE,
            regions: vec![region_on(1, 4, 0)],
            ..TableSetup::default()
        });
        assert_eq!(
            SimCluster::new(bad_region, SimOptions::default()).map(|_| ()),
            Err(SetupError::UnknownPeer {
                region_id: region(1),
                peer: 4
            })
        );
    }

    /// The new leader takes writes only from its first heartbeat after the route names it
    /// (7000 ms for peer 2): the 400 writes of 5000..7000 ms are rejected, none is lost.
    #[tokio::test(start_paused = true)]
    async fn manual_migration_with_local_wal_keeps_every_acknowledged_write_and_writes_resume_at_the_new_leaders_heartbeat(
    ) {
        let region_id = region(1);
        let cluster = cluster(setup(WalKind::Local, Some(200), vec![region_on(1, 1, 100)]));
        cluster.start();
        sleep_to(&cluster, 5_000).await;

        assert_eq!(
            send(&cluster, 2, open(region_id), 1_000).await,
            open_reply(true, None)
        );
        assert_eq!(mark_downgrading(&cluster, region_id).await, 1);
        // 500 ticks of 2 writes acknowledged by the old leader: entries 101..=1100.
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, true), 1_000).await,
            downgrade_reply(Some(1_100), true, None)
        );
        assert_eq!(
            cluster.write_now(region_id),
            WriteOutcome::Rejected(WriteRejection::RejectingWrites)
        );
        // Flushed up to 1100: nothing to replay.
        assert_eq!(
            send(&cluster, 2, upgrade(region_id, Some(1_100), 1_000), 2_000).await,
            upgrade_reply(true, true, None)
        );
        assert_eq!(cluster.now_ms(), 5_000);
        move_leader(&cluster, region_id, 1, 2).await;
        assert_eq!(
            send(&cluster, 1, close(region_id), 1_000).await,
            close_reply(true, None)
        );
        cluster
            .hooks()
            .deregister_failure_detector(1, region_id)
            .await;
        cluster.hooks().invalidate_table_cache(TABLE).await;

        sleep_to(&cluster, 20_000).await;
        cluster.stop();

        assert_eq!(cluster.final_check(), Vec::new());
        assert_eq!(cluster.downgrading_regions(), Vec::<RegionId>::new());
        assert_eq!(
            cluster.write_stats(),
            BTreeMap::from([(
                region_id,
                WriteStats {
                    acked: 3_600,
                    rejected: 400
                }
            )])
        );
        let trace = cluster.trace();
        for line in [
            "[5005 ms] writes 1024:1: rejected by 2: lease expired",
            "[7000 ms] heartbeat 2: leases of [1024:1] until 17000 ms",
            "[7005 ms] writes 1024:1: acknowledged by 2",
        ] {
            assert!(
                trace.contains(&line.to_string()),
                "missing {line:?} in {trace:#?}"
            );
        }
        let wal = cluster.region_wal(region_id).expect("region");
        assert_eq!((wal.acked.len(), wal.last_entry_id), (3_700, 3_700));
        let leader = cluster.replica(2, region_id).expect("new leader");
        assert_eq!(leader.role, Role::Leader);
        assert_eq!(leader.history, wal.acked);
        assert_eq!(cluster.replica(1, region_id), None);
        assert_eq!(cluster.writers(region_id), vec![2]);
        assert_eq!(
            cluster.sent_counts(),
            counts(&[
                ("1.close_region", 1),
                ("1.downgrade_region", 1),
                ("2.open_region", 1),
                ("2.upgrade_region", 1),
            ])
        );
        assert_eq!(
            cluster.hook_calls(),
            vec![
                Hook::DeregisterFailureDetector { peer: 1, region_id },
                Hook::InvalidateTableCache { table_id: TABLE },
            ]
        );
        let metadata = cluster.metadata();
        let moved = metadata.datanode_table(2, TABLE).await.expect("store up");
        assert_eq!(moved.map(|table| table.region_numbers), Some(vec![1]));
        let left = metadata.datanode_table(1, TABLE).await.expect("store up");
        assert_eq!(left.map(|table| table.region_numbers), Some(vec![]));
    }

    #[tokio::test(start_paused = true)]
    async fn remote_wal_old_leader_writes_until_the_upgrade_fences_it() {
        let region_id = region(1);
        let cluster = cluster(setup(
            WalKind::Remote,
            Some(200),
            vec![region_on(1, 1, 100)],
        ));
        cluster.start();
        sleep_to(&cluster, 5_000).await;
        assert_eq!(
            send(&cluster, 2, open(region_id), 1_000).await,
            open_reply(true, None)
        );
        mark_downgrading(&cluster, region_id).await;
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, false), 1_000).await,
            downgrade_reply(Some(1_100), true, None)
        );
        // Not rejecting writes, lease from the 3000 ms heartbeat: it still acknowledges.
        assert_eq!(cluster.write_rejection(1, region_id), None);
        sleep_to(&cluster, 5_500).await;
        assert_eq!(
            cluster.region_wal(region_id).map(|wal| wal.last_entry_id),
            Some(1_200)
        );
        // Replays 1100 -> 1200 at 1 entry/ms; the old leader acks 20 more meanwhile.
        assert_eq!(
            send(&cluster, 2, upgrade(region_id, None, 1_000), 2_000).await,
            upgrade_reply(true, true, None)
        );
        assert_eq!(cluster.now_ms(), 5_600);
        assert_eq!(
            cluster.write_rejection(1, region_id),
            Some(WriteRejection::Fenced)
        );
        // No lease at upgrade: peer 2 writes from its 7000 ms heartbeat on.
        assert_eq!(cluster.writers(region_id), Vec::<PeerId>::new());
        let leader = cluster.replica(2, region_id).expect("new leader");
        assert_eq!(leader.history.len(), 1_220);
        move_leader(&cluster, region_id, 1, 2).await;
        assert_eq!(
            send(&cluster, 1, close(region_id), 1_000).await,
            close_reply(true, None)
        );

        sleep_to(&cluster, 10_000).await;
        cluster.stop();
        assert_eq!(cluster.final_check(), Vec::new());
        // Ticks 5605..=6995 ms (140 of 2 writes) find peer 2 without a lease.
        assert_eq!(
            cluster.write_stats()[&region_id],
            WriteStats {
                acked: 1_720,
                rejected: 280
            }
        );
        let wal = cluster.region_wal(region_id).expect("region");
        assert_eq!(wal.epoch, 2);
        assert_eq!(
            cluster.replica(2, region_id).map(|replica| replica.history),
            Some(wal.acked)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn downgrading_route_lets_the_lease_expire_ten_seconds_after_the_last_heartbeat() {
        let region_id = region(1);
        let cluster = cluster(setup(WalKind::Local, None, vec![region_on(1, 1, 100)]));
        assert_eq!(cluster.heartbeat_phase_ms(1), Some(0));
        cluster.start();
        sleep_to(&cluster, 4_000).await;
        mark_downgrading(&cluster, region_id).await;
        // reject_write=false: only the lease stops the writes.
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, false), 1_000).await,
            downgrade_reply(Some(100), true, None)
        );
        let replica = cluster.replica(1, region_id).expect("leader replica");
        assert_eq!(
            (replica.role, replica.lease_deadline_ms),
            (Role::DowngradingLeader, Some(13_000))
        );

        sleep_to(&cluster, 12_999).await;
        assert_eq!(
            cluster.write_now(region_id),
            WriteOutcome::Acked {
                peer: 1,
                first_entry_id: 101,
                last_entry_id: 101
            }
        );
        assert_eq!(
            cluster
                .replica(1, region_id)
                .and_then(|r| r.lease_deadline_ms),
            Some(13_000)
        );
        sleep_to(&cluster, 13_000).await;
        assert_eq!(
            cluster.write_now(region_id),
            WriteOutcome::Rejected(WriteRejection::LeaseExpired)
        );
        let trace = cluster.trace();
        assert!(trace.contains(&"[12000 ms] heartbeat 1: no lease renewed".to_string()));
        assert!(
            trace.contains(&"[3000 ms] heartbeat 1: leases of [1024:1] until 13000 ms".to_string())
        );

        // A rollback clears Downgrading: the next heartbeat (15000 ms) makes it leader again.
        sleep_to(&cluster, 14_000).await;
        clear_downgrading(&cluster, region_id).await;
        assert_eq!(
            cluster.write_now(region_id),
            WriteOutcome::Rejected(WriteRejection::LeaseExpired)
        );
        sleep_to(&cluster, 15_001).await;
        assert_eq!(
            cluster.write_now(region_id),
            WriteOutcome::Acked {
                peer: 1,
                first_entry_id: 102,
                last_entry_id: 102
            }
        );
        let replica = cluster.replica(1, region_id).expect("leader replica");
        assert_eq!(
            (
                replica.role,
                replica.lease_deadline_ms,
                replica.reject_writes
            ),
            (Role::Leader, Some(25_000), false)
        );
        assert!(cluster.trace().contains(
            &"[15000 ms] role 1 1024:1: DowngradingLeader -> Leader (heartbeat)".to_string()
        ));
        cluster.stop();
        assert_eq!(cluster.final_check(), Vec::new());
    }

    #[tokio::test(start_paused = true)]
    async fn upgrade_replay_takes_time_proportional_to_the_lag() {
        let cluster = cluster(setup(
            WalKind::Local,
            None,
            vec![
                region_on(1, 1, 100),
                region_on(2, 1, 100),
                region_on(3, 1, 100),
            ],
        ));

        // 500 entries behind at 1 entry/ms: ready after 500 ms.
        assert_eq!(
            send(&cluster, 2, open(region(1)), 1_000).await,
            open_reply(true, None)
        );
        assert_eq!(
            send(&cluster, 2, upgrade(region(1), Some(600), 1_000), 2_000).await,
            upgrade_reply(true, true, None)
        );
        assert_eq!(cluster.now_ms(), 500);
        assert_eq!(
            cluster.replica(2, region(1)).map(|r| r.role),
            Some(Role::Leader)
        );

        // Not caught up within the replay timeout: ready=false at the timeout; replay goes on.
        assert_eq!(
            send(&cluster, 3, open(region(2)), 1_000).await,
            open_reply(true, None)
        );
        assert_eq!(
            send(&cluster, 3, upgrade(region(2), Some(600), 200), 5_000).await,
            upgrade_reply(false, true, None)
        );
        assert_eq!(cluster.now_ms(), 700);
        let candidate = cluster.replica(3, region(2)).expect("candidate");
        assert_eq!(candidate.role, Role::Candidate);
        assert_eq!(
            candidate.replay,
            Some(ReplaySession {
                started_ms: 500,
                from_entry_id: 100,
                target_entry_id: 600
            })
        );
        sleep_to(&cluster, 800).await;
        // Reached 400 by now: 200 entries left.
        assert_eq!(
            send(&cluster, 3, upgrade(region(2), Some(600), 1_000), 5_000).await,
            upgrade_reply(true, true, None)
        );
        assert_eq!(cluster.now_ms(), 1_000);
        assert_eq!(
            cluster.replica(3, region(2)).map(|r| r.role),
            Some(Role::Leader)
        );

        // The sender gives up before the replay ends; the datanode still finishes it.
        assert_eq!(
            send(&cluster, 2, open(region(3)), 1_000).await,
            open_reply(true, None)
        );
        assert_eq!(
            send(&cluster, 2, upgrade(region(3), Some(600), 1_000), 300).await,
            MailboxOutcome::Timeout
        );
        assert_eq!(cluster.now_ms(), 1_300);
        assert_eq!(
            cluster.replica(2, region(3)).map(|r| r.role),
            Some(Role::Candidate)
        );
        sleep_to(&cluster, 1_501).await;
        let upgraded = cluster.replica(2, region(3)).expect("upgraded");
        // Leader, but no lease: leases come from heartbeats only.
        assert_eq!(
            (upgraded.role, upgraded.lease_deadline_ms),
            (Role::Leader, None)
        );
        let last = cluster.mailbox_records().pop().expect("a record");
        assert_eq!(
            (last.sent_at_ms, last.answered_at_ms, last.outcome),
            (1_000, 1_300, MailboxOutcome::Timeout)
        );
        // Upgrading a leader answers ready at once.
        assert_eq!(
            send(&cluster, 2, upgrade(region(3), Some(10_000), 0), 0).await,
            upgrade_reply(true, true, None)
        );
        assert_eq!(cluster.now_ms(), 1_501);
    }

    #[tokio::test(start_paused = true)]
    async fn every_scripted_reply_token_produces_its_exact_reply() {
        let region_id = region(1);
        let cluster = cluster(setup(WalKind::Local, None, vec![region_on(1, 1, 100)]));
        let role = |peer| cluster.replica(peer, region_id).map(|replica| replica.role);

        cluster.script_replies(
            2,
            InstructionKind::OpenRegion,
            [
                ScriptedReply::Error("disk full".to_string()),
                ScriptedReply::NotExists,
                ScriptedReply::NotReady,
                ScriptedReply::WrongReply,
                ScriptedReply::Unreachable,
                ScriptedReply::Timeout,
                ScriptedReply::Ok,
            ],
        );
        let expected = [
            (open_reply(false, Some("disk full")), 0),
            (open_reply(false, Some("region not found")), 0),
            (open_reply(false, Some("region not ready")), 0),
            (downgrade_reply(None, true, None), 0),
            (MailboxOutcome::Unreachable, 0),
            (MailboxOutcome::Timeout, 1_000),
        ];
        for (outcome, elapsed_ms) in expected {
            let before_ms = cluster.now_ms();
            assert_eq!(send(&cluster, 2, open(region_id), 1_000).await, outcome);
            assert_eq!(cluster.now_ms() - before_ms, elapsed_ms);
            assert_eq!(role(2), None);
        }
        assert_eq!(
            send(&cluster, 2, open(region_id), 1_000).await,
            open_reply(true, None)
        );
        assert_eq!(role(2), Some(Role::Candidate));

        cluster.script_replies(
            1,
            InstructionKind::DowngradeRegion,
            [
                ScriptedReply::Error("flush failed".to_string()),
                ScriptedReply::WrongReply,
                ScriptedReply::Timeout,
            ],
        );
        let expected = [
            downgrade_reply(None, true, Some("flush failed")),
            upgrade_reply(true, true, None),
            MailboxOutcome::Timeout,
        ];
        for outcome in expected {
            assert_eq!(
                send(&cluster, 1, downgrade(region_id, true), 1_000).await,
                outcome
            );
            assert_eq!(role(1), Some(Role::Leader));
        }
        cluster.script_replies(
            1,
            InstructionKind::DowngradeRegion,
            [ScriptedReply::OkWithLastEntryId(42), ScriptedReply::Ok],
        );
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, true), 1_000).await,
            downgrade_reply(Some(42), true, None)
        );
        assert_eq!(role(1), Some(Role::DowngradingLeader));
        for _ in 0..2 {
            assert_eq!(
                send(&cluster, 1, downgrade(region_id, true), 1_000).await,
                downgrade_reply(Some(100), true, None)
            );
        }
        // `not_exists` is taken at its word: the old leader really stops leading.
        cluster.script_replies(
            1,
            InstructionKind::DowngradeRegion,
            [ScriptedReply::NotExists],
        );
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, true), 1_000).await,
            downgrade_reply(None, false, None)
        );
        assert_eq!(role(1), Some(Role::Follower));

        cluster.script_replies(
            2,
            InstructionKind::UpgradeRegion,
            [
                ScriptedReply::NotReady,
                ScriptedReply::NotExists,
                ScriptedReply::Error("replay failed".to_string()),
                ScriptedReply::WrongReply,
                ScriptedReply::Unreachable,
            ],
        );
        let expected = [
            upgrade_reply(false, true, None),
            upgrade_reply(false, false, None),
            upgrade_reply(false, true, Some("replay failed")),
            close_reply(true, None),
            MailboxOutcome::Unreachable,
        ];
        for outcome in expected {
            assert_eq!(
                send(&cluster, 2, upgrade(region_id, Some(5_000), 1_000), 1_000).await,
                outcome
            );
            assert_eq!(role(2), Some(Role::Candidate));
        }
        // `ok` catches up at once, however far behind.
        cluster.script_replies(2, InstructionKind::UpgradeRegion, [ScriptedReply::Ok]);
        let before_ms = cluster.now_ms();
        assert_eq!(
            send(&cluster, 2, upgrade(region_id, Some(5_000), 1_000), 1_000).await,
            upgrade_reply(true, true, None)
        );
        assert_eq!(cluster.now_ms(), before_ms);
        assert_eq!(role(2), Some(Role::Leader));

        cluster.script_replies(
            1,
            InstructionKind::CloseRegion,
            [
                ScriptedReply::Error("busy".to_string()),
                ScriptedReply::NotExists,
                ScriptedReply::WrongReply,
            ],
        );
        let expected = [
            close_reply(false, Some("busy")),
            close_reply(false, Some("region not found")),
            open_reply(true, None),
        ];
        for outcome in expected {
            assert_eq!(send(&cluster, 1, close(region_id), 1_000).await, outcome);
            assert_eq!(role(1), Some(Role::Follower));
        }
        cluster.script_replies(1, InstructionKind::CloseRegion, [ScriptedReply::Ok]);
        assert_eq!(
            send(&cluster, 1, close(region_id), 1_000).await,
            close_reply(true, None)
        );
        assert_eq!(role(1), None);
        assert_eq!(
            send(&cluster, 1, close(region_id), 1_000).await,
            close_reply(true, None)
        );
        // Normal behaviour once scripts run out: a closed region does not exist.
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, true), 1_000).await,
            downgrade_reply(None, false, None)
        );
        assert_eq!(
            send(&cluster, 3, upgrade(region_id, None, 1_000), 1_000).await,
            upgrade_reply(false, false, None)
        );

        assert_eq!(cluster.now_ms(), 2_000);
        assert_eq!(cluster.scripts_left(), BTreeMap::new());
        assert_eq!(
            cluster.sent_counts(),
            counts(&[
                ("1.close_region", 5),
                ("1.downgrade_region", 8),
                ("2.open_region", 7),
                ("2.upgrade_region", 6),
                ("3.upgrade_region", 1),
            ])
        );
        assert_eq!(
            send(&cluster, 9, open(region_id), 1_000).await,
            MailboxOutcome::Unreachable
        );
    }

    #[tokio::test(start_paused = true)]
    async fn message_delay_later_than_the_timeout_is_a_timeout_but_the_datanode_acted() {
        let cluster = cluster(setup(
            WalKind::Local,
            None,
            vec![region_on(1, 1, 100), region_on(2, 1, 100)],
        ));
        cluster.inject_message_delay(2, 700, 0);
        cluster.inject_message_delay(1, 300, 5_000);

        assert_eq!(
            send(&cluster, 2, open(region(1)), 1_000).await,
            open_reply(true, None)
        );
        assert_eq!(cluster.now_ms(), 700);
        assert_eq!(
            send(&cluster, 2, open(region(2)), 500).await,
            MailboxOutcome::Timeout
        );
        assert_eq!(cluster.now_ms(), 1_200);
        assert_eq!(
            cluster.replica(2, region(2)).map(|r| r.role),
            Some(Role::Candidate)
        );
        // A reply exactly at the timeout is still a reply.
        assert_eq!(
            send(&cluster, 2, open(region(2)), 700).await,
            open_reply(true, None)
        );
        assert_eq!(cluster.now_ms(), 1_900);

        // Peer 1's delay starts at 5000 ms.
        assert_eq!(
            send(&cluster, 1, downgrade(region(1), true), 1_000).await,
            downgrade_reply(Some(100), true, None)
        );
        assert_eq!(cluster.now_ms(), 1_900);
        sleep_to(&cluster, 5_000).await;
        assert_eq!(
            send(&cluster, 1, downgrade(region(1), true), 1_000).await,
            downgrade_reply(Some(100), true, None)
        );
        assert_eq!(cluster.now_ms(), 5_300);

        // Replay of 200 entries ends at 5500, the reply arrives at 6200: past the 6100 deadline.
        assert_eq!(
            send(&cluster, 2, upgrade(region(1), Some(300), 1_000), 800).await,
            MailboxOutcome::Timeout
        );
        assert_eq!(cluster.now_ms(), 6_100);
        let upgraded = cluster.replica(2, region(1)).expect("upgraded");
        assert_eq!(
            (upgraded.role, upgraded.lease_deadline_ms),
            (Role::Leader, None)
        );
        assert!(cluster.trace().contains(
            &"[5500 ms] role 2 1024:1: Candidate -> Leader (upgraded, replayed to 300)".to_string()
        ));
    }

    /// A migration rolled back (Downgrading cleared) while its upgrade was still replaying:
    /// the upgrade completes later, but the upgraded replica gets no lease from it, so the old
    /// leader stays the only writer and the next heartbeat of peer 2 demotes the replica.
    #[tokio::test(start_paused = true)]
    async fn late_upgrade_after_a_rollback_never_makes_a_second_writer() {
        let region_id = region(1);
        let cluster = cluster(setup(WalKind::Local, Some(100), vec![region_on(1, 1, 100)]));
        cluster.start();
        sleep_to(&cluster, 2_500).await;
        send(&cluster, 2, open(region_id), 1_000).await;
        mark_downgrading(&cluster, region_id).await;
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, true), 1_000).await,
            downgrade_reply(Some(350), true, None)
        );
        // Asks for 2350 entries: the replay ends at 4500 ms, long after the sender gave up.
        assert_eq!(
            send(&cluster, 2, upgrade(region_id, Some(2_350), 5_000), 500).await,
            MailboxOutcome::Timeout
        );
        clear_downgrading(&cluster, region_id).await;
        // Peer 1's 3000 ms heartbeat makes it leader again.
        sleep_to(&cluster, 3_001).await;
        assert_eq!(cluster.writers(region_id), vec![1]);
        sleep_to(&cluster, 4_501).await;
        assert_eq!(
            cluster
                .replica(2, region_id)
                .map(|r| (r.role, r.lease_deadline_ms)),
            Some((Role::Leader, None))
        );
        assert_eq!(cluster.writers(region_id), vec![1]);
        sleep_to(&cluster, 7_001).await;
        let trace = cluster.trace();
        for line in [
            "[4500 ms] role 2 1024:1: Candidate -> Leader (upgraded, replayed to 2350)",
            "[7000 ms] heartbeat 2: no lease renewed",
            "[7000 ms] role 2 1024:1: Leader -> Follower (not leader in the route)",
        ] {
            assert!(
                trace.contains(&line.to_string()),
                "missing {line:?} in {trace:#?}"
            );
        }
        assert_eq!(cluster.writers(region_id), vec![1]);
        cluster.stop();
        assert_eq!(cluster.final_check(), Vec::new());
    }

    /// The model takes a downgrade's `not_exists` at its word (the fast path, no lease wait),
    /// so the simulator makes it true: the old leader stops leading and flushes.
    #[tokio::test(start_paused = true)]
    async fn downgrade_answered_not_exists_stops_the_old_leader_and_flushes_its_entries() {
        let region_id = region(1);
        let cluster = cluster(setup(WalKind::Local, None, vec![region_on(1, 1, 100)]));
        for _ in 0..3 {
            cluster.write_now(region_id);
        }
        assert_eq!(
            cluster.region_wal(region_id).map(|w| w.flushed_entry_id),
            Some(100)
        );
        cluster.script_replies(
            1,
            InstructionKind::DowngradeRegion,
            [ScriptedReply::NotExists],
        );
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, true), 1_000).await,
            downgrade_reply(None, false, None)
        );
        assert_eq!(
            cluster
                .replica(1, region_id)
                .map(|r| (r.role, r.lease_deadline_ms, r.history.last())),
            Some((Role::Follower, None, Some(103)))
        );
        assert_eq!(cluster.writers(region_id), Vec::<PeerId>::new());
        assert_eq!(
            cluster.region_wal(region_id).map(|w| w.flushed_entry_id),
            Some(103)
        );
        assert!(cluster.trace().contains(
            &"[0 ms] role 1 1024:1: Leader -> Follower (answered not_exists)".to_string()
        ));
        // A candidate opened now holds the flushed entries: nothing acknowledged is lost.
        send(&cluster, 2, open(region_id), 1_000).await;
        assert_eq!(
            cluster.replica(2, region_id).map(|r| r.history.last()),
            Some(Some(103))
        );
    }

    /// A leader that restarted is a follower without a lease until its next heartbeat; a
    /// downgrade reaching it then still flushes what its WAL holds (and changes no role).
    #[tokio::test(start_paused = true)]
    async fn downgrade_of_a_restarted_leader_without_lease_still_flushes() {
        let region_id = region(1);
        let cluster = cluster(setup(WalKind::Local, None, vec![region_on(1, 1, 100)]));
        for _ in 0..5 {
            cluster.write_now(region_id);
        }
        cluster.start();
        cluster.crash_datanode(1, 1_000, Some(500));
        sleep_to(&cluster, 2_000).await;
        assert_eq!(
            cluster
                .replica(1, region_id)
                .map(|r| (r.role, r.lease_deadline_ms)),
            Some((Role::Follower, None))
        );
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, true), 1_000).await,
            downgrade_reply(Some(105), true, None)
        );
        assert_eq!(
            cluster.replica(1, region_id).map(|r| r.role),
            Some(Role::Follower)
        );
        assert_eq!(
            cluster.region_wal(region_id).map(|w| w.flushed_entry_id),
            Some(105)
        );
        cluster.stop();
    }

    #[tokio::test(start_paused = true)]
    async fn metadata_faults_hit_exactly_count_operations() {
        let region_id = region(1);
        let cluster = cluster(setup(WalKind::Local, None, vec![region_on(1, 1, 100)]));
        let metadata = cluster.metadata();
        let validation = cluster.validation_view();
        let unavailable = |operation: &str| {
            MetadataError::new(
                MetadataErrorKind::Unavailable,
                format!("injected fault: metadata store unavailable ({operation})"),
            )
        };

        cluster.inject_metadata_unavailable(2, 0);
        assert_eq!(
            metadata.table_route(TABLE).await,
            Err(unavailable("table_route"))
        );
        let route = validation.table_route(TABLE).await.expect("no fault");
        assert_eq!(route.map(|route| route.version), Some(0));
        assert_eq!(
            metadata.datanode_table(1, TABLE).await,
            Err(unavailable("datanode_table"))
        );
        let info = metadata.table_info(TABLE).await.expect("budget used up");
        assert_eq!(
            info.map(|info| (info.catalog, info.schema, info.wal)),
            Some(("greptime".to_string(), "public".to_string(), WalKind::Local))
        );

        cluster.inject_cas_conflicts(2, 1_000);
        cluster.inject_metadata_unavailable(1, 1_000);
        assert_eq!(mark_downgrading(&cluster, region_id).await, 1);
        sleep_to(&cluster, 1_000).await;
        let downgrading = metadata.route_now(TABLE).expect("route").route;
        let cleared = {
            let mut route = downgrading.clone();
            if let Some(region_route) = route.region_route_mut(region_id) {
                region_route.leader_state = None;
                region_route.leader_down_since_ms = None;
            }
            route
        };
        let cas =
            |version: u64| metadata.cas_table_route(TABLE, version, cleared.clone(), Vec::new());
        // Unavailability is checked first and does not use a conflict.
        assert_eq!(cas(1).await, Err(unavailable("cas_table_route")));
        assert_eq!(metadata.faults_left(), (2, 0));
        let conflict = |expected_version, actual_version| {
            Ok(Err(CasConflict {
                table_id: TABLE,
                expected_version,
                actual_version: Some(actual_version),
            }))
        };
        assert_eq!(cas(1).await, conflict(1, 2));
        assert_eq!(cas(2).await, conflict(2, 3));
        // The "concurrent writer" only bumped the version.
        let current = metadata.route_now(TABLE).expect("route");
        assert_eq!((current.version, &current.route), (3, &downgrading));
        assert_eq!(cas(3).await, Ok(Ok(4)));
        assert_eq!(metadata.faults_left(), (0, 0));
        assert_eq!(cas(3).await, conflict(3, 4));
        assert_eq!(cluster.downgrading_regions(), Vec::<RegionId>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn crashed_datanode_times_out_and_keeps_its_entries_after_restart() {
        let cluster = cluster(setup(
            WalKind::Local,
            Some(100),
            vec![region_on(1, 1, 100), region_on(2, 2, 100)],
        ));
        cluster.script_replies(
            1,
            InstructionKind::DowngradeRegion,
            [ScriptedReply::Error("x".to_string())],
        );
        cluster.start();
        cluster.crash_datanode(1, 2_000, Some(3_000));

        sleep_to(&cluster, 3_000).await;
        assert!(!cluster.is_alive(1));
        assert_eq!(
            cluster.write_rejection(1, region(1)),
            Some(WriteRejection::DatanodeDown)
        );
        assert_eq!(
            send(&cluster, 1, downgrade(region(1), true), 1_000).await,
            MailboxOutcome::Timeout
        );
        assert_eq!(cluster.now_ms(), 4_000);
        // A crashed datanode receives nothing: its script is still there.
        assert_eq!(
            cluster.scripts_left(),
            BTreeMap::from([((1, InstructionKind::DowngradeRegion), 1)])
        );

        sleep_to(&cluster, 5_001).await;
        assert!(cluster.is_alive(1));
        let replica = cluster.replica(1, region(1)).expect("durable replica");
        assert_eq!(
            (
                replica.role,
                replica.lease_deadline_ms,
                replica.history.last()
            ),
            (Role::Follower, None, Some(300))
        );
        assert_eq!(
            cluster.write_rejection(1, region(1)),
            Some(WriteRejection::NotLeader(Role::Follower))
        );

        // The 6000 ms heartbeat makes it leader again.
        sleep_to(&cluster, 7_000).await;
        let replica = cluster.replica(1, region(1)).expect("durable replica");
        assert_eq!(
            (
                replica.role,
                replica.lease_deadline_ms,
                replica.history.last()
            ),
            (Role::Leader, Some(16_000), Some(400))
        );
        assert_eq!(
            cluster.write_stats()[&region(1)],
            WriteStats {
                acked: 300,
                rejected: 400
            }
        );

        // A crash during a replay: no answer, and no promotion.
        assert_eq!(
            send(&cluster, 3, open(region(2)), 1_000).await,
            open_reply(true, None)
        );
        cluster.crash_datanode(3, 7_200, None);
        assert_eq!(
            send(&cluster, 3, upgrade(region(2), Some(1_500), 5_000), 2_000).await,
            MailboxOutcome::Timeout
        );
        assert_eq!(cluster.now_ms(), 9_000);
        sleep_to(&cluster, 10_000).await;
        assert_eq!(
            cluster.replica(3, region(2)).map(|r| r.role),
            Some(Role::Follower)
        );
        cluster.stop();

        let trace = cluster.trace();
        assert!(trace.contains(&"[2000 ms] crash 1".to_string()));
        assert!(trace.contains(&"[5000 ms] restart 1".to_string()));
        assert!(
            trace.contains(&"[7200 ms] role 3 1024:2: Candidate -> Follower (crash)".to_string())
        );
        assert_eq!(cluster.final_check(), Vec::new());
    }

    /// A migration of 1024:1 from 1 to 2 at 3500 ms, with 100 writes/s, left running to
    /// 7000. Peer 1's 3000 ms heartbeat renewed its lease to 13000 ms; the upgraded peer 2 gets
    /// its first lease at its 4000 ms heartbeat, before peer 1's 6000 ms heartbeat demotes it.
    async fn migrate_with(options: SimOptions) -> Arc<SimCluster> {
        let region_id = region(1);
        let cluster = SimCluster::new(
            setup(WalKind::Local, Some(100), vec![region_on(1, 1, 100)]),
            options,
        )
        .expect("valid setup");
        cluster.start();
        sleep_to(&cluster, 3_500).await;
        send(&cluster, 2, open(region_id), 1_000).await;
        mark_downgrading(&cluster, region_id).await;
        send(&cluster, 1, downgrade(region_id, true), 1_000).await;
        send(&cluster, 2, upgrade(region_id, Some(450), 1_000), 1_000).await;
        move_leader(&cluster, region_id, 1, 2).await;
        sleep_to(&cluster, 7_000).await;
        cluster.stop();
        cluster
    }

    #[tokio::test(start_paused = true)]
    async fn low_reported_last_entry_id_loses_nothing_once_the_leader_flushed() {
        let region_id = region(1);
        let cluster = cluster(setup(WalKind::Local, Some(100), vec![region_on(1, 1, 100)]));
        cluster.script_replies(
            1,
            InstructionKind::DowngradeRegion,
            [ScriptedReply::OkWithLastEntryId(42)],
        );
        cluster.start();
        sleep_to(&cluster, 2_000).await;
        send(&cluster, 2, open(region_id), 1_000).await;
        mark_downgrading(&cluster, region_id).await;
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, true), 1_000).await,
            downgrade_reply(Some(42), true, None)
        );
        assert_eq!(
            cluster
                .region_wal(region_id)
                .map(|wal| wal.flushed_entry_id),
            Some(300)
        );
        assert_eq!(
            send(&cluster, 2, upgrade(region_id, Some(42), 1_000), 1_000).await,
            upgrade_reply(true, true, None)
        );
        assert_eq!(cluster.now_ms(), 2_000);
        assert_eq!(
            cluster.replica(2, region_id).and_then(|r| r.history.last()),
            Some(300)
        );
        move_leader(&cluster, region_id, 1, 2).await;
        sleep_to(&cluster, 3_000).await;
        cluster.stop();
        assert_eq!(cluster.final_check(), Vec::new());
    }

    #[tokio::test(start_paused = true)]
    async fn broken_model_accepting_writes_while_downgraded_is_caught() {
        let correct = migrate_with(SimOptions::default()).await;
        assert_eq!(correct.final_check(), Vec::new());

        let broken = migrate_with(SimOptions {
            accept_writes_while_downgraded: true,
        })
        .await;
        let violations = broken.final_check();
        assert_eq!(violations.len(), 1);
        let violation = &violations[0];
        assert_eq!(violation.at_ms, 4_000);
        assert_eq!(violation.region, "1024:1");
        assert_eq!(
            violation.message,
            "2 datanodes accept writes at once: peer 1 (DowngradingLeader, lease until \
             13000 ms), peer 2 (Leader, lease until 14000 ms)"
        );
        assert_eq!(violation.context.len(), 10);
        assert_eq!(
            violation.context[8..],
            [
                "[4000 ms] heartbeat 2: leases of [1024:1] until 14000 ms".to_string(),
                "[4000 ms] writers 1024:1: [1] -> [1, 2]".to_string(),
            ]
        );
        assert!(violation
            .to_string()
            .starts_with("invariant violated at 4000 ms, region 1024:1: 2 datanodes accept"));
        // The next heartbeat of peer 1 demotes it: a single violation.
        assert!(broken.trace().contains(
            &"[6000 ms] role 1 1024:1: DowngradingLeader -> Follower (not leader in the route)"
                .to_string()
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn route_naming_an_unreplayed_candidate_loses_acknowledged_writes() {
        let region_id = region(1);
        let cluster = cluster(setup(WalKind::Local, Some(100), vec![region_on(1, 1, 100)]));
        cluster.start();
        sleep_to(&cluster, 2_000).await;
        send(&cluster, 2, open(region_id), 1_000).await;
        // The leader moves without any downgrade, flush or upgrade.
        move_leader(&cluster, region_id, 1, 2).await;
        sleep_to(&cluster, 3_000).await;
        cluster.stop();
        let violations = cluster.final_check();
        let summary: Vec<(u64, &str, &str)> = violations
            .iter()
            .map(|v| (v.at_ms, v.region.as_str(), v.message.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![(
                3_000,
                "1024:1",
                "200 of 300 acknowledged writes are missing from the final leader (peer 2, \
                 Candidate, last entry 100); first missing entry 101"
            )]
        );
    }

    /// A busy run: two migrations at once, a workload, faults, a crash and a restart.
    fn busy_run(seed: u64) -> (Vec<String>, Vec<u32>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mut setup = setup(
                WalKind::Remote,
                Some(150),
                vec![region_on(1, 1, 100), region_on(2, 2, 50)],
            );
            setup.seed = seed;
            let cluster = cluster(setup);
            cluster.inject_message_delay(3, 40, 1_000);
            cluster.inject_cas_conflicts(1, 0);
            cluster.script_replies(3, InstructionKind::UpgradeRegion, [ScriptedReply::NotReady]);
            cluster.start();
            cluster.crash_datanode(2, 6_000, Some(2_000));
            let migrate = |region_id: RegionId, from: PeerId, to: PeerId, at_ms: u64| {
                let cluster = Arc::clone(&cluster);
                async move {
                    sleep_to(&cluster, at_ms).await;
                    send(&cluster, to, open(region_id), 1_000).await;
                    let metadata = cluster.metadata();
                    for _ in 0..3 {
                        let current = metadata.table_route(TABLE).await;
                        let Ok(Some(current)) = current else { continue };
                        let mut route = current.route.clone();
                        if let Some(region_route) = route.region_route_mut(region_id) {
                            region_route.leader_state = Some(LeaderState::Downgrading);
                        }
                        let written = metadata
                            .cas_table_route(TABLE, current.version, route, Vec::new())
                            .await;
                        if matches!(written, Ok(Ok(_))) {
                            break;
                        }
                    }
                    send(&cluster, from, downgrade(region_id, false), 1_000).await;
                    for _ in 0..3 {
                        let outcome =
                            send(&cluster, to, upgrade(region_id, None, 300), 1_000).await;
                        if outcome == upgrade_reply(true, true, None) {
                            break;
                        }
                    }
                    move_leader(&cluster, region_id, from, to).await;
                    send(&cluster, from, close(region_id), 1_000).await;
                }
            };
            tokio::join!(
                migrate(region(1), 1, 3, 1_500),
                migrate(region(2), 2, 3, 1_500)
            );
            sleep_to(&cluster, 12_000).await;
            cluster.stop();
            let mut trace = cluster.trace();
            trace.extend(cluster.final_check().iter().map(ToString::to_string));
            let entropy = cluster.entropy();
            (trace, (0..4).map(|_| entropy.next_u32()).collect())
        })
    }

    #[test]
    fn same_seed_gives_identical_event_traces() {
        let (first_trace, first_entropy) = busy_run(11);
        let (second_trace, second_entropy) = busy_run(11);
        assert_eq!(first_trace, second_trace);
        assert_eq!(first_entropy, second_entropy);
        assert!(first_trace.len() > 40, "trace too short: {first_trace:#?}");
        assert_eq!(
            first_trace[0],
            "[0 ms] setup: peers [1, 2, 3], regions [1024:1, 1024:2]"
        );
        for marker in [
            "[1540 ms] metadata cas table 1024 v0: injected conflict (now v1)",
            "[1580 ms] reply 3.upgrade_region 1024:1: UpgradeRegion { ready: false, exists: true, error: None }",
            "[1595 ms] writes 1024:1: rejected by 1: fenced by a newer epoch",
            "[6000 ms] crash 2",
            "[8000 ms] restart 2",
        ] {
            assert!(
                first_trace.iter().any(|line| line == marker),
                "missing {marker:?} in {first_trace:#?}"
            );
        }
        assert!(!first_trace
            .iter()
            .any(|line| line.starts_with("invariant violated")));
        let (_, other_entropy) = busy_run(12);
        assert_ne!(first_entropy, other_entropy);
    }

    fn flush(region_id: RegionId) -> Instruction {
        Instruction::FlushRegion {
            region_id,
            timeout_ms: 10_000,
        }
    }

    fn flush_reply(result: bool) -> MailboxOutcome {
        MailboxOutcome::Reply(Reply::FlushRegion {
            result,
            error: None,
        })
    }

    /// 1000 writes/s flushed at 10000 writes/s: a flush of N writes takes N / 10 ms.
    fn flushing_cluster() -> Arc<SimCluster> {
        cluster(ClusterSetup {
            flush_writes_per_second: Some(10_000),
            ..setup(WalKind::Local, Some(1_000), vec![region_on(1, 1, 100)])
        })
    }

    #[tokio::test(start_paused = true)]
    async fn flush_takes_unflushed_writes_over_the_flush_rate_and_keeps_accepting_writes() {
        let region_id = region(1);
        let cluster = flushing_cluster();
        cluster.start();
        sleep_to(&cluster, 2_000).await;
        // 2000 writes since the start: 200 ms, during which the leader still takes writes.
        assert_eq!(
            send(&cluster, 1, flush(region_id), 10_000).await,
            flush_reply(true)
        );
        assert_eq!(cluster.now_ms(), 2_200);
        assert_eq!(cluster.writers(region_id), vec![1]);
        assert_eq!(
            cluster
                .region_wal(region_id)
                .map(|wal| wal.flushed_entry_id),
            Some(2_100)
        );
        assert_eq!(cluster.unwritable_ms(region_id, 0, 2_200), 0);
        // The downgrade right after flushes only the 200 writes that came meanwhile (20 ms),
        // rejecting writes from its receipt: the region is unwritable from then on.
        mark_downgrading(&cluster, region_id).await;
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, true), 1_000).await,
            downgrade_reply(Some(2_300), true, None)
        );
        assert_eq!(cluster.now_ms(), 2_220);
        assert_eq!(cluster.writers(region_id), Vec::<PeerId>::new());
        assert_eq!(cluster.unwritable_ms(region_id, 0, 2_220), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_of_a_region_the_datanode_lacks_is_an_error_and_a_downgrade_without_preflush_is_slow(
    ) {
        let region_id = region(1);
        let cluster = flushing_cluster();
        cluster.start();
        sleep_to(&cluster, 2_000).await;
        assert_eq!(
            send(&cluster, 2, flush(region_id), 10_000).await,
            MailboxOutcome::Reply(Reply::FlushRegion {
                result: false,
                error: Some("region 1024:1 not found on datanode 2".to_string()),
            })
        );
        mark_downgrading(&cluster, region_id).await;
        // No pre-flush: all 2000 writes are flushed inside the write pause.
        assert_eq!(
            send(&cluster, 1, downgrade(region_id, true), 1_000).await,
            downgrade_reply(Some(2_100), true, None)
        );
        assert_eq!(cluster.now_ms(), 2_200);
        assert_eq!(cluster.unwritable_ms(region_id, 0, 2_200), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn partition_cuts_heartbeats_and_sends_until_it_heals() {
        let region_id = region(1);
        let cluster = cluster(setup(WalKind::Local, Some(100), vec![region_on(1, 1, 100)]));
        cluster.partition(1, 500, Some(9_000));
        cluster.start();
        sleep_to(&cluster, 4_000).await;
        // Peer 1 beat at 0 ms, then its 3000 ms beat was lost; it still takes writes.
        assert_eq!(cluster.last_heartbeat_ms(1), Some(0));
        assert_eq!(cluster.writers(region_id), vec![1]);
        assert_eq!(
            send(&cluster, 1, flush(region_id), 10_000).await,
            MailboxOutcome::Unreachable
        );
        // Its lease (from the 0 ms beat) ends at 10 s; the 9 s beat is lost too.
        sleep_to(&cluster, 10_001).await;
        assert_eq!(cluster.writers(region_id), Vec::<PeerId>::new());
        // Healed at 9.5 s: the 12 s beat renews it.
        sleep_to(&cluster, 12_001).await;
        assert_eq!(cluster.last_heartbeat_ms(1), Some(12_000));
        assert_eq!(cluster.writers(region_id), vec![1]);
        assert_eq!(cluster.unwritable_ms(region_id, 0, 12_001), 2_000);
        assert_eq!(
            send(&cluster, 1, flush(region_id), 10_000).await,
            flush_reply(true)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timed_metadata_outage_fails_every_operation_in_its_window() {
        let cluster = cluster(setup(WalKind::Local, None, vec![region_on(1, 1, 100)]));
        cluster.inject_metadata_unavailable_until(1_000, 2_000);
        cluster.inject_cas_conflicts_until(3_000, 4_000);
        let metadata = cluster.metadata();
        assert!(metadata.table_route(TABLE).await.is_ok());
        sleep_to(&cluster, 1_000).await;
        assert!(metadata.table_route(TABLE).await.is_err());
        assert!(metadata.table_route(TABLE).await.is_err());
        sleep_to(&cluster, 2_000).await;
        let current = metadata
            .table_route(TABLE)
            .await
            .expect("store up")
            .expect("route");
        sleep_to(&cluster, 3_500).await;
        let refused = metadata
            .cas_table_route(TABLE, current.version, current.route.clone(), Vec::new())
            .await
            .expect("store up");
        assert!(refused.is_err(), "a CAS inside the window loses");
        sleep_to(&cluster, 4_000).await;
        let latest = metadata
            .table_route(TABLE)
            .await
            .expect("store up")
            .expect("route");
        let applied = metadata
            .cas_table_route(TABLE, latest.version, latest.route, Vec::new())
            .await
            .expect("store up");
        assert_eq!(applied, Ok(latest.version + 1));
    }
}
