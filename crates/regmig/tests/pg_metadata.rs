//! The PostgreSQL metadata store and leader lease against a real server (one per test
//! binary, one database per test): the metadata store passes the same conformance suite as
//! the sled store; the lease grants one holder at a time by the database's clock, raising
//! the epoch; and a deposed writer's route write is fenced in its transaction.

mod metadata_support;
mod pg_support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metadata_support::*;
use pg_support::new_database;
use regmig::cluster::pg_store::PgMetadataStore;
use regmig::cluster::{MetadataErrorKind, MetadataStore};
use regmig::domain::*;
use regmig::engine::leadership::LeaderLease;
use regmig::log::{AppendRequest, EventLog, LogError, LogOptions, OpenProcedure, PgStore};
use regmig::pg::lease::PgLeaderLease;
use regmig::pg::PgConfig;

#[async_trait]
impl Seed for PgMetadataStore {
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

async fn writer(config: &PgConfig, epoch: Option<u64>) -> EventLog {
    EventLog::with_store(Arc::new(
        PgStore::open_async(config.clone(), LogOptions::default(), epoch)
            .await
            .expect("open the log"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_metadata_store_conforms() {
    let config = new_database("meta_conform");
    let log = writer(&config, None).await;
    let store = Arc::new(PgMetadataStore::open(&log).await.expect("open"));
    conformance(store.clone()).await;
    racing_swaps(store.clone()).await;
    assert_eq!(store.table_ids().await.unwrap(), vec![7, 8, 9]);
    // A second open finds the tables and their data.
    let again = PgMetadataStore::open(&log).await.expect("reopen");
    assert_eq!(
        again.table_route(9).await.unwrap(),
        store.table_route(9).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_store_refuses_a_log_that_is_not_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    let error = PgMetadataStore::open(&log).await.err().expect("refused");
    assert_eq!(error.kind, MetadataErrorKind::Other);
    assert_eq!(
        error.reason,
        format!(
            "the PostgreSQL metadata store needs a PostgreSQL-backed log; the log is at {}",
            log.store().location()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_grants_one_holder_at_a_time_by_the_database_clock() {
    let config = new_database("lease");
    let lease = PgLeaderLease::new(config.clone()).unwrap();
    let state = lease.state().await.unwrap();
    assert_eq!(
        (state.epoch, state.holder.as_str(), state.live),
        (0, "", false)
    );
    let a = lease
        .try_acquire("a", Duration::from_millis(400))
        .await
        .unwrap()
        .expect("free: granted");
    assert_eq!((a.epoch, a.holder.as_str()), (1, "a"));
    assert_eq!(
        lease
            .try_acquire("b", Duration::from_secs(5))
            .await
            .unwrap(),
        None,
        "a's lease runs"
    );
    let renewed = lease
        .renew(&a, Duration::from_millis(400))
        .await
        .unwrap()
        .expect("a still holds it");
    assert_eq!(renewed.epoch, 1);
    assert!(renewed.lease_until_ms >= a.lease_until_ms);
    // Another epoch, or another holder, renews nothing.
    let stale = regmig::engine::leadership::LeaseGrant {
        epoch: 0,
        ..a.clone()
    };
    assert_eq!(
        lease.renew(&stale, Duration::from_secs(5)).await.unwrap(),
        None
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Lapsed: a cannot renew it, b takes it with the next epoch.
    assert_eq!(lease.renew(&a, Duration::from_secs(5)).await.unwrap(), None);
    let b = lease
        .try_acquire("b", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("lapsed: granted");
    assert_eq!((b.epoch, b.holder.as_str()), (2, "b"));
    // a's release does not end b's lease; b's does, and c takes over at once.
    lease.release(&a).await.unwrap();
    assert!(lease.state().await.unwrap().live);
    lease.release(&b).await.unwrap();
    let state = lease.state().await.unwrap();
    assert_eq!(
        (state.epoch, state.holder.as_str(), state.live),
        (2, "b", false)
    );
    let c = lease
        .try_acquire("c", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("released: granted");
    assert_eq!(c.epoch, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_standbys_get_one_grant() {
    let config = new_database("lease_race");
    let lease = Arc::new(PgLeaderLease::new(config).unwrap());
    lease.state().await.unwrap();
    let mut tasks = Vec::new();
    for holder in 0..8 {
        let lease = lease.clone();
        tasks.push(tokio::spawn(async move {
            lease
                .try_acquire(&format!("engine-{holder}"), Duration::from_secs(30))
                .await
                .unwrap()
        }));
    }
    let mut grants = Vec::new();
    for task in tasks {
        grants.extend(task.await.unwrap());
    }
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].epoch, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_writers_route_write_and_append_are_fenced_and_change_nothing() {
    let config = new_database("meta_fence");
    let lease = PgLeaderLease::new(config.clone()).unwrap();
    let a = lease
        .try_acquire("a", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let log_a = writer(&config, Some(a.epoch)).await;
    let metadata_a = PgMetadataStore::open(&log_a).await.unwrap();
    assert_eq!(
        metadata_a
            .put_table_route(7, route(7, &[(1, 1)]))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        metadata_a
            .cas_table_route(7, 0, route(7, &[(1, 2)]), Vec::new())
            .await
            .unwrap(),
        Ok(1)
    );
    // b takes over.
    lease.release(&a).await.unwrap();
    let b = lease
        .try_acquire("b", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.epoch, 2);
    let error = metadata_a
        .cas_table_route(7, 1, route(7, &[(1, 3)]), Vec::new())
        .await
        .expect_err("fenced");
    assert_eq!(error.kind, MetadataErrorKind::Fenced);
    assert_eq!(
        error.reason,
        format!(
            "write the route of table 7: the store at {} refused a write with epoch 1: it is at epoch 2, another engine leads",
            config.redacted()
        )
    );
    let error = metadata_a
        .put_table_route(7, route(7, &[(1, 3)]))
        .await
        .expect_err("fenced");
    assert_eq!(error.kind, MetadataErrorKind::Fenced);
    let request = AppendRequest {
        procedure_id: regmig::cluster::new_procedure_id(
            1_767_225_600_000,
            &regmig::cluster::SeededEntropy::new(1),
        ),
        expected_next_seq: 1,
        events: regmig::engine::encode_events(
            1_767_225_600_000,
            &[regmig::migration::MigrationEvent::Resumed],
        )
        .unwrap(),
        opens: Some(OpenProcedure {
            region_id: RegionId::new(7, 1).as_u64(),
            peers: vec![1, 2],
        }),
        closes: false,
    };
    match log_a.append(request).await {
        Err(LogError::Fenced {
            epoch,
            current_epoch,
            ..
        }) => assert_eq!((epoch, current_epoch), (1, 2)),
        other => panic!("not fenced: {other:?}"),
    }
    // Nothing changed; b writes.
    let log_b = writer(&config, Some(b.epoch)).await;
    let metadata_b = PgMetadataStore::open(&log_b).await.unwrap();
    let now = metadata_b.table_route(7).await.unwrap().unwrap();
    assert_eq!((now.version, now.route), (1, route(7, &[(1, 2)])));
    assert_eq!(
        metadata_b
            .cas_table_route(7, 1, route(7, &[(1, 3)]), Vec::new())
            .await
            .unwrap(),
        Ok(2)
    );
    assert_eq!(log_b.open_procedures().unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_without_election_is_fenced_once_an_engine_holds_the_lease() {
    let config = new_database("meta_no_election");
    let log = writer(&config, None).await;
    let metadata = PgMetadataStore::open(&log).await.unwrap();
    assert_eq!(
        metadata
            .put_table_route(7, route(7, &[(1, 1)]))
            .await
            .unwrap(),
        0
    );
    let lease = PgLeaderLease::new(config.clone()).unwrap();
    lease
        .try_acquire("elected", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let error = metadata
        .cas_table_route(7, 0, route(7, &[(1, 2)]), Vec::new())
        .await
        .expect_err("fenced");
    assert_eq!(error.kind, MetadataErrorKind::Fenced);
    assert!(
        error
            .reason
            .ends_with("refused a write with epoch 0: it is at epoch 1, another engine leads"),
        "{}",
        error.reason
    );
}
