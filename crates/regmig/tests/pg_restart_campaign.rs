//! A PostgreSQL server restart (`pg_ctl restart -m fast`) in the middle of a campaign run by
//! two engines elected on the database: every connection is cut, the log, the metadata store
//! and the lease reconnect (with their bounded retries), nothing acknowledged is lost, and
//! every migration ends exactly once. If the leader's lease lapses during the restart, the
//! standby (or the same engine, again) takes over and resumes; that is allowed, as long as
//! each migration is resumed at most once per takeover. A binary of its own: the restart
//! cuts every connection to the binary's server.

mod engine_support;
mod pg_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine_support::ScriptedMailbox;
use pg_support::server;
use regmig::cluster::pg_store::PgMetadataStore;
use regmig::cluster::{MetadataStore, Ports};
use regmig::domain::*;
use regmig::engine::leadership::{
    Candidate, LeadershipConfig, LeaseGrant, OpenAsLeader, OpenError, Role,
};
use regmig::engine::{load_procedure, Engine, EngineConfig, MigrationRequest, SubmitOutcome};
use regmig::log::{EventLog, LogOptions, PgStore};
use regmig::migration::{MigrationEvent, Outcome};
use regmig::pg::lease::PgLeaderLease;
use regmig::pg::PgConfig;
use uuid::Uuid;

const TABLE: TableId = 1024;
const REGIONS: u32 = 8;
const LEASE: Duration = Duration::from_millis(1_500);

/// Every event an engine's observer saw, by (procedure, seq): each was acknowledged durable.
/// All are kept: two engines (a leader deposed by the restart, the next one) that both
/// acknowledged a (procedure, seq) must have acknowledged the one event the log holds there.
type Acknowledged = Arc<Mutex<BTreeMap<(Uuid, u64), Vec<MigrationEvent>>>>;

struct Opener {
    config: PgConfig,
    datanodes: Arc<ScriptedMailbox>,
    acknowledged: Acknowledged,
    appended: Arc<AtomicU64>,
}

#[async_trait]
impl OpenAsLeader for Opener {
    async fn open(&self, grant: &LeaseGrant) -> Result<Engine, OpenError> {
        let store = PgStore::open_async(
            self.config.clone(),
            LogOptions::default(),
            Some(grant.epoch),
        )
        .await?;
        let log = EventLog::with_store(Arc::new(store));
        let metadata = Arc::new(PgMetadataStore::open(&log).await?);
        let ports = Ports::builder(self.datanodes.clone(), metadata).build();
        let engine = Engine::with_log(log, EngineConfig::default(), ports).await?;
        let acknowledged = self.acknowledged.clone();
        let appended = self.appended.clone();
        engine.set_observer(Box::new(move |event| {
            appended.fetch_add(1, Ordering::SeqCst);
            acknowledged
                .lock()
                .unwrap()
                .entry((event.procedure_id, event.seq))
                .or_default()
                .push(event.event.clone());
        }));
        Ok(engine)
    }
}

async fn seed(config: &PgConfig) {
    let log = EventLog::with_store(Arc::new(
        PgStore::open_async(config.clone(), LogOptions::default(), None)
            .await
            .expect("open the log for setup"),
    ));
    let metadata = PgMetadataStore::open(&log)
        .await
        .expect("open the metadata");
    let region_routes = (1..=REGIONS)
        .map(|number| RegionRoute {
            region_id: RegionId::new(TABLE, number),
            leader_peer: Some(Peer::sim(1)),
            follower_peers: vec![],
            leader_state: None,
            leader_down_since_ms: None,
        })
        .collect();
    metadata
        .put_table_route(TABLE, TableRoute::Physical { region_routes })
        .await
        .unwrap();
    metadata
        .put_datanode_table(DatanodeTable {
            datanode_id: 1,
            table_id: TABLE,
            region_numbers: (1..=REGIONS).collect(),
            engine: "mito".to_string(),
            storage_path: format!("data/{TABLE}"),
            region_options: Default::default(),
            region_wal_options: Default::default(),
        })
        .await
        .unwrap();
    metadata
        .put_table_info(TableInfo {
            table_id: TABLE,
            catalog: "greptime".to_string(),
            schema: "public".to_string(),
            name: format!("t{TABLE}"),
            wal: WalKind::Local,
        })
        .await
        .unwrap();
}

/// The engine leading now, if any.
fn leader(candidates: &[Candidate]) -> Option<(u64, Engine)> {
    candidates
        .iter()
        .find_map(|candidate| match candidate.role() {
            Role::Leader { grant, engine } => Some((grant.epoch, engine)),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_mid_campaign_loses_nothing_and_every_migration_ends_once() {
    let url = server()
        .create_database(&format!("restart_campaign_{}", std::process::id()))
        .expect("create a database");
    let config = |engine: &str| {
        PgConfig::from_url(&format!("{url}?application_name={engine}")).expect("valid URL")
    };
    seed(&config("seed")).await;
    // Each datanode answer takes 40 ms: migrations are in flight when the server goes.
    let datanodes = Arc::new(ScriptedMailbox::with_delay(40));
    let acknowledged: Acknowledged = Arc::default();
    let appended = Arc::new(AtomicU64::new(0));
    let mut candidates = Vec::new();
    // engine_a first, so that it leads; engine_b stands by.
    for name in ["engine_a", "engine_b"] {
        if let Some(first) = candidates.first() {
            let first: &Candidate = first;
            tokio::time::timeout(Duration::from_secs(30), first.wait_leader())
                .await
                .expect("engine_a leads within 30 s")
                .expect("engine_a leads");
        }
        let config = config(name);
        let lease = Arc::new(PgLeaderLease::new(config.clone()).expect("a lease"));
        let opener = Arc::new(Opener {
            config,
            datanodes: datanodes.clone(),
            acknowledged: acknowledged.clone(),
            appended: appended.clone(),
        });
        let mut leadership = LeadershipConfig::new(name, LEASE);
        leadership.retry_every = Duration::from_millis(50);
        candidates.push(Candidate::start(lease, leadership, opener).expect("a valid config"));
    }
    let (first_grant, engine) = candidates[0].wait_leader().await.expect("a leads");
    let mut procedures = Vec::new();
    for number in 1..=REGIONS {
        let request =
            MigrationRequest::new(RegionId::new(TABLE, number), Peer::sim(1), Peer::sim(2));
        match engine.submit(request).await {
            Ok(SubmitOutcome::Started(id)) => procedures.push(id),
            other => panic!("not started: {other:?}"),
        }
    }
    drop(engine);
    // Mid-campaign: 8 migrations of about 15 events each.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while appended.load(Ordering::SeqCst) < 40 {
        assert!(
            tokio::time::Instant::now() < until,
            "the campaign does not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before_restart = appended.load(Ordering::SeqCst);
    tokio::task::spawn_blocking(|| server().restart().expect("restart the server"))
        .await
        .expect("the restart task");
    eprintln!("restarted the server after {before_restart} events");
    // Every migration finishes, on whichever engine leads; a deposed leader's waits end
    // with an error, and the next leader is asked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut finished: BTreeMap<Uuid, Outcome> = BTreeMap::new();
    while finished.len() < procedures.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} migrations finished",
            finished.len(),
            procedures.len()
        );
        let Some((_, engine)) = leader(&candidates) else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        for id in &procedures {
            if finished.contains_key(id) {
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(20), engine.wait(*id)).await {
                Ok(Ok(summary)) => {
                    finished.insert(*id, summary.outcome.expect("finished"));
                }
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    assert!(
        finished
            .values()
            .all(|outcome| *outcome == Outcome::Completed),
        "{finished:?}"
    );
    let epochs: Vec<u64> = candidates
        .iter()
        .flat_map(|candidate| candidate.deposals())
        .map(|(epoch, _)| epoch)
        .collect();
    let (last_epoch, _) = leader(&candidates).expect("a leader at the end");
    let takeovers = (last_epoch - first_grant.epoch) as usize;
    eprintln!(
        "leaders' epochs {} -> {last_epoch}; deposed at {epochs:?}",
        first_grant.epoch
    );
    for candidate in candidates {
        candidate.stop().await;
    }

    let reader = EventLog::with_store(Arc::new(
        PgStore::open_read_only_async(config("reader"))
            .await
            .expect("open the log for reading"),
    ));
    assert_eq!(reader.open_procedures().unwrap(), vec![]);
    // Nothing acknowledged is lost: every event an observer saw is in the log, as seen.
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() as u64 >= before_restart);
    let mut histories = BTreeMap::new();
    for id in &procedures {
        histories.insert(*id, load_procedure(&reader, *id).expect("history"));
    }
    for ((id, seq), events) in &acknowledged {
        let history = &histories[id];
        let stored = history
            .get(*seq as usize - 1)
            .unwrap_or_else(|| panic!("{id} seq {seq} acknowledged but not in the log"));
        for event in events {
            assert_eq!(&stored.event, event, "{id} seq {seq}");
        }
    }
    // Every migration ended exactly once, last, and was resumed at most once per takeover.
    for (id, history) in &histories {
        let terminal = history.iter().filter(|t| t.event.is_terminal()).count();
        assert_eq!(terminal, 1, "{id} ended {terminal} times");
        assert!(history.last().unwrap().event.is_terminal(), "{id}");
        let resumes = history
            .iter()
            .filter(|t| matches!(t.event, MigrationEvent::Resumed))
            .count();
        assert!(
            resumes <= takeovers,
            "{id} resumed {resumes} times in {takeovers} takeovers"
        );
    }
    // The routes moved: the metadata store's writes went through after the restart too.
    let metadata = PgMetadataStore::open(&reader).await.expect("metadata");
    let route = metadata.table_route(TABLE).await.unwrap().expect("a route");
    for number in 1..=REGIONS {
        let leader = route
            .route
            .region_route(RegionId::new(TABLE, number))
            .and_then(|region| region.leader_peer.as_ref())
            .map(|peer| peer.id);
        assert_eq!(leader, Some(2), "region {number}");
    }
    assert!(reader.verify().expect("verify").is_clean());
}
