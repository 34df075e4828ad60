//! The metadata stores' conformance suite: one script of reads, setup writes and
//! compare-and-swaps, run on a store and on the in-memory reference side by side; every
//! answer and every datanode table after each step must be the same.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::{CasConflict, MetadataStore, RegionMove};
use regmig::domain::*;

/// The setup writes of a store (each store has its own, outside the port).
#[async_trait]
pub trait Seed: MetadataStore {
    async fn seed_route(&self, table_id: TableId, route: TableRoute) -> u64;
    async fn seed_datanode_table(&self, table: DatanodeTable);
    async fn seed_table_info(&self, info: TableInfo);
}

#[async_trait]
impl Seed for MemoryMetadataStore {
    async fn seed_route(&self, table_id: TableId, route: TableRoute) -> u64 {
        self.put_table_route(table_id, route)
    }
    async fn seed_datanode_table(&self, table: DatanodeTable) {
        self.put_datanode_table(table)
    }
    async fn seed_table_info(&self, info: TableInfo) {
        self.put_table_info(info)
    }
}

#[async_trait]
impl Seed for regmig::cluster::sled_store::SledMetadataStore {
    async fn seed_route(&self, table_id: TableId, route: TableRoute) -> u64 {
        self.put_table_route(table_id, route)
            .await
            .expect("seed a route")
    }
    async fn seed_datanode_table(&self, table: DatanodeTable) {
        self.put_datanode_table(table)
            .await
            .expect("seed a datanode table")
    }
    async fn seed_table_info(&self, info: TableInfo) {
        self.put_table_info(info).await.expect("seed a table info")
    }
}

pub fn route(table_id: TableId, leaders: &[(u32, PeerId)]) -> TableRoute {
    TableRoute::Physical {
        region_routes: leaders
            .iter()
            .map(|&(number, leader)| RegionRoute {
                region_id: RegionId::new(table_id, number),
                leader_peer: Some(Peer::sim(leader)),
                follower_peers: vec![],
                leader_state: None,
                leader_down_since_ms: None,
            })
            .collect(),
    }
}

pub fn datanode_table(datanode_id: PeerId, table_id: TableId, numbers: &[u32]) -> DatanodeTable {
    DatanodeTable {
        datanode_id,
        table_id,
        region_numbers: numbers.to_vec(),
        engine: "mito".to_string(),
        storage_path: format!("data/{table_id}"),
        region_options: BTreeMap::from([("ttl".to_string(), "7d".to_string())]),
        region_wal_options: numbers
            .iter()
            .map(|number| (*number, format!("{{\"topic\":\"t{number}\"}}")))
            .collect(),
    }
}

/// Both stores' datanode tables of `table_id` on peers 1..=3.
async fn datanode_tables(
    store: &dyn MetadataStore,
    table_id: TableId,
) -> Vec<Option<DatanodeTable>> {
    let mut tables = Vec::new();
    for peer in 1..=3 {
        tables.push(store.datanode_table(peer, table_id).await.expect("read"));
    }
    tables
}

/// Runs the script on `store` and the reference, comparing every answer.
pub async fn conformance<S: Seed + 'static>(store: Arc<S>) {
    let reference = Arc::new(MemoryMetadataStore::new());
    let stores: [Arc<dyn Seed>; 2] = [reference.clone(), store.clone()];
    let both = |_: ()| stores.clone();
    // Empty.
    for store in both(()) {
        assert_eq!(store.table_route(7).await.unwrap(), None);
        assert_eq!(store.datanode_table(1, 7).await.unwrap(), None);
        assert_eq!(store.table_info(7).await.unwrap(), None);
        // A compare-and-swap of a missing route is a conflict naming no version.
        assert_eq!(
            store
                .cas_table_route(7, 0, route(7, &[(1, 1)]), Vec::new())
                .await
                .unwrap(),
            Err(CasConflict {
                table_id: 7,
                expected_version: 0,
                actual_version: None
            })
        );
    }
    // Seeding starts at version 0 and bumps it.
    for store in both(()) {
        assert_eq!(store.seed_route(7, route(7, &[(1, 1), (2, 1)])).await, 0);
        assert_eq!(
            store
                .seed_route(7, route(7, &[(1, 1), (2, 1), (3, 1)]))
                .await,
            1
        );
        store
            .seed_datanode_table(datanode_table(1, 7, &[1, 2, 3]))
            .await;
        store
            .seed_table_info(TableInfo {
                table_id: 7,
                catalog: "greptime".to_string(),
                schema: "public".to_string(),
                name: "t7".to_string(),
                wal: WalKind::Local,
            })
            .await;
        // Another table, untouched by what follows.
        assert_eq!(store.seed_route(8, route(8, &[(1, 2)])).await, 0);
        store.seed_datanode_table(datanode_table(2, 8, &[1])).await;
    }
    assert_eq!(
        reference.table_route(7).await.unwrap(),
        store.table_route(7).await.unwrap()
    );
    assert_eq!(
        reference.table_info(7).await.unwrap(),
        store.table_info(7).await.unwrap()
    );
    assert_eq!(
        store
            .table_route(7)
            .await
            .unwrap()
            .map(|route| route.version),
        Some(1)
    );
    // A swap that moves region 2 to peer 2 (which has no entry yet), then region 3 to peer
    // 3 and back to peer 1, then a stale swap that must change nothing.
    let steps: Vec<(u64, TableRoute, Option<RegionMove>)> = vec![
        (
            1,
            route(7, &[(1, 1), (2, 2), (3, 1)]),
            Some(RegionMove {
                region_id: RegionId::new(7, 2),
                from_peer: 1,
                to_peer: 2,
            }),
        ),
        (2, route(7, &[(1, 1), (2, 2), (3, 1)]), None),
        (
            3,
            route(7, &[(1, 1), (2, 2), (3, 3)]),
            Some(RegionMove {
                region_id: RegionId::new(7, 3),
                from_peer: 1,
                to_peer: 3,
            }),
        ),
        (
            4,
            route(7, &[(1, 1), (2, 2), (3, 1)]),
            Some(RegionMove {
                region_id: RegionId::new(7, 3),
                from_peer: 3,
                to_peer: 1,
            }),
        ),
        (
            2,
            route(7, &[(1, 3), (2, 3), (3, 3)]),
            Some(RegionMove {
                region_id: RegionId::new(7, 1),
                from_peer: 1,
                to_peer: 3,
            }),
        ),
    ];
    for (expected_version, new_route, region_move) in steps {
        let mut answers = Vec::new();
        for store in both(()) {
            answers.push(
                store
                    .cas_table_route(
                        7,
                        expected_version,
                        new_route.clone(),
                        region_move.clone().into_iter().collect(),
                    )
                    .await
                    .expect("no fault"),
            );
        }
        assert_eq!(
            answers[0], answers[1],
            "cas from version {expected_version}"
        );
        assert_eq!(
            reference.table_route(7).await.unwrap(),
            store.table_route(7).await.unwrap(),
            "route after the cas from version {expected_version}"
        );
        assert_eq!(
            datanode_tables(reference.as_ref(), 7).await,
            datanode_tables(store.as_ref(), 7).await,
            "datanode tables after the cas from version {expected_version}"
        );
    }
    assert_eq!(
        store
            .cas_table_route(7, 2, route(7, &[]), Vec::new())
            .await
            .unwrap(),
        Err(CasConflict {
            table_id: 7,
            expected_version: 2,
            actual_version: Some(5)
        })
    );
    assert_eq!(
        datanode_tables(reference.as_ref(), 8).await,
        datanode_tables(store.as_ref(), 8).await
    );
    assert_eq!(
        reference.table_route(8).await.unwrap(),
        store.table_route(8).await.unwrap()
    );
}

/// Many writers swap from the same version at once: exactly one wins, the others get the
/// winner's version as the conflict's actual version.
pub async fn racing_swaps<S: Seed + 'static>(store: Arc<S>) {
    assert_eq!(store.seed_route(9, route(9, &[(1, 1)])).await, 0);
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .cas_table_route(9, 0, route(9, &[(1, writer + 10)]), Vec::new())
                .await
                .expect("no fault")
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(version) => {
                assert_eq!(version, 1);
                won += 1;
            }
            Err(conflict) => assert_eq!(
                conflict,
                CasConflict {
                    table_id: 9,
                    expected_version: 0,
                    actual_version: Some(1)
                }
            ),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.table_route(9).await.unwrap().unwrap().version, 1);
}
