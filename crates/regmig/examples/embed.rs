//! Embedding regmig in a control plane: your own datanode transport (a `Mailbox`), your own
//! routing metadata (a `MetadataStore` with versioned compare-and-swap), the engine's
//! lifecycle (open, submit, wait, shut down, reopen) and its history read back through the
//! API.
//!
//! Run it with `cargo run -p regmig --example embed`; `cargo test` runs it too
//! (`crates/regmig/tests/example_embed.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use regmig::cluster::memory::apply_region_move;
use regmig::cluster::{CasConflict, Mailbox, MetadataError, MetadataStore, Ports, RegionMove};
use regmig::domain::*;
use regmig::engine::{load_procedure, Engine, EngineConfig, MigrationRequest, SubmitOutcome};
use regmig::migration::Outcome;

/// The table every region of this example belongs to.
pub const TABLE_ID: TableId = 1024;
/// How many regions table 1024 has; all start on datanode 1.
pub const REGION_COUNT: u32 = 3;

/// Your datanode transport. This one answers at once, except that datanode 2 times out the
/// first upgrade it is sent (the engine retries it, and the log records both attempts).
#[derive(Default)]
pub struct MyDatanodes {
    upgrades_timed_out: Mutex<u32>,
    /// Every (datanode, instruction) sent, in order.
    pub sent: Mutex<Vec<(PeerId, InstructionKind)>>,
}

#[async_trait]
impl Mailbox for MyDatanodes {
    async fn send(
        &self,
        peer: &Peer,
        instruction: Instruction,
        _timeout_ms: u64,
    ) -> MailboxOutcome {
        self.sent
            .lock()
            .unwrap()
            .push((peer.id, instruction.kind()));
        MailboxOutcome::Reply(match instruction {
            Instruction::OpenRegion { .. } => Reply::OpenRegion {
                result: true,
                error: None,
            },
            Instruction::FlushRegion { .. } => Reply::FlushRegion {
                result: true,
                error: None,
            },
            Instruction::DowngradeRegion { .. } => Reply::DowngradeRegion {
                last_entry_id: Some(42),
                exists: true,
                error: None,
            },
            Instruction::UpgradeRegion { .. } => {
                let mut timed_out = self.upgrades_timed_out.lock().unwrap();
                if peer.id == 2 && *timed_out == 0 {
                    *timed_out += 1;
                    return MailboxOutcome::Timeout;
                }
                Reply::UpgradeRegion {
                    ready: true,
                    exists: true,
                    error: None,
                }
            }
            Instruction::CloseRegion { .. } => Reply::CloseRegion {
                result: true,
                error: None,
            },
        })
    }
}

/// Your routing metadata: here a map behind a mutex; in a control plane, your own store.
/// Every route write is a compare-and-swap on the route's version.
#[derive(Default)]
pub struct MyCatalog {
    routes: Mutex<BTreeMap<TableId, VersionedTableRoute>>,
    datanode_tables: Mutex<BTreeMap<(PeerId, TableId), DatanodeTable>>,
    table_infos: Mutex<BTreeMap<TableId, TableInfo>>,
}

impl MyCatalog {
    /// Table 1024 with `REGION_COUNT` regions, all led by datanode 1.
    pub fn with_one_table() -> MyCatalog {
        let catalog = MyCatalog::default();
        let region_routes = (1..=REGION_COUNT)
            .map(|number| RegionRoute {
                region_id: RegionId::new(TABLE_ID, number),
                leader_peer: Some(Peer::sim(1)),
                follower_peers: vec![],
                leader_state: None,
                leader_down_since_ms: None,
            })
            .collect();
        catalog.routes.lock().unwrap().insert(
            TABLE_ID,
            VersionedTableRoute {
                table_id: TABLE_ID,
                version: 1,
                route: TableRoute::Physical { region_routes },
            },
        );
        catalog.datanode_tables.lock().unwrap().insert(
            (1, TABLE_ID),
            DatanodeTable {
                datanode_id: 1,
                table_id: TABLE_ID,
                region_numbers: (1..=REGION_COUNT).collect(),
                engine: "mito".into(),
                storage_path: "data/1024".into(),
                region_options: Default::default(),
                region_wal_options: Default::default(),
            },
        );
        catalog.table_infos.lock().unwrap().insert(
            TABLE_ID,
            TableInfo {
                table_id: TABLE_ID,
                catalog: "greptime".into(),
                schema: "public".into(),
                name: "metrics".into(),
                wal: WalKind::Local,
            },
        );
        catalog
    }

    /// The datanode that leads `region` now.
    pub fn leader_of(&self, region: RegionId) -> Option<PeerId> {
        let routes = self.routes.lock().unwrap();
        routes
            .get(&region.table_id())
            .and_then(|route| route.route.region_route(region))
            .and_then(|route| route.leader_id())
    }
}

#[async_trait]
impl MetadataStore for MyCatalog {
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError> {
        Ok(self.routes.lock().unwrap().get(&table_id).cloned())
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let mut routes = self.routes.lock().unwrap();
        let actual_version = routes.get(&table_id).map(|stored| stored.version);
        if actual_version != Some(expected_version) {
            return Ok(Err(CasConflict {
                table_id,
                expected_version,
                actual_version,
            }));
        }
        let version = expected_version + 1;
        routes.insert(
            table_id,
            VersionedTableRoute {
                table_id,
                version,
                route,
            },
        );
        let mut tables = self.datanode_tables.lock().unwrap();
        for region_move in &region_moves {
            apply_region_move(&mut tables, table_id, region_move);
        }
        Ok(Ok(version))
    }

    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, MetadataError> {
        let tables = self.datanode_tables.lock().unwrap();
        Ok(tables.get(&(datanode_id, table_id)).cloned())
    }

    async fn table_info(&self, table_id: TableId) -> Result<Option<TableInfo>, MetadataError> {
        Ok(self.table_infos.lock().unwrap().get(&table_id).cloned())
    }
}

/// What a run of the example saw, for its test.
#[derive(Debug)]
pub struct EmbedRun {
    /// Each migration's outcome, in submission order.
    pub outcomes: Vec<Option<Outcome>>,
    /// Each region's leader at the end.
    pub leaders: Vec<Option<PeerId>>,
    /// How many events each migration's history holds, read after reopening.
    pub history_lengths: Vec<usize>,
    /// How many upgrades datanode 2 was sent (one timed out, so one more than regions).
    pub upgrades_sent: usize,
}

/// Moves every region of table 1024 from datanode 1 to datanode 2, shuts the engine down,
/// reopens the same data directory and reads each migration's history back.
pub async fn run(data_dir: &std::path::Path) -> anyhow::Result<EmbedRun> {
    let catalog = Arc::new(MyCatalog::with_one_table());
    let datanodes = Arc::new(MyDatanodes::default());
    let ports = || {
        // The defaults: no hooks, the system clock, the OS's randomness.
        Ports::builder(datanodes.clone(), catalog.clone()).build()
    };
    // Opening resumes every unfinished migration found in the log (none, the first time).
    let engine = Engine::open(data_dir, EngineConfig::default(), ports()).await?;
    let mut ids = Vec::new();
    for number in 1..=REGION_COUNT {
        let region = RegionId::new(TABLE_ID, number);
        let request = MigrationRequest::new(region, Peer::sim(1), Peer::sim(2));
        match engine.submit(request).await? {
            SubmitOutcome::Started(id) => ids.push(id),
            other => anyhow::bail!("region {region}: not started: {other:?}"),
        }
    }
    let mut outcomes = Vec::new();
    for id in &ids {
        outcomes.push(engine.wait(*id).await?.outcome);
    }
    engine.shutdown().await;
    drop(engine);

    // A new engine on the same directory: the history is all there.
    let engine = Engine::open(data_dir, EngineConfig::default(), ports()).await?;
    let mut history_lengths = Vec::new();
    for id in &ids {
        let history = load_procedure(engine.log(), *id)?;
        println!("migration {id}: {} events", history.len());
        let start_ms = history.first().map_or(0, |event| event.at_ms);
        for event in &history {
            let since_start_ms = event.at_ms - start_ms;
            println!("  +{since_start_ms:>5} ms  {}", event.event.name());
        }
        history_lengths.push(history.len());
    }
    engine.shutdown().await;

    let leaders = (1..=REGION_COUNT)
        .map(|number| catalog.leader_of(RegionId::new(TABLE_ID, number)))
        .collect();
    let upgrades_sent = datanodes
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(peer, kind)| *peer == 2 && *kind == InstructionKind::UpgradeRegion)
        .count();
    Ok(EmbedRun {
        outcomes,
        leaders,
        history_lengths,
        upgrades_sent,
    })
}

#[allow(dead_code)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("regmig-embed-{}", std::process::id()));
    let result = run(&data_dir).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let run = result?;
    println!("outcomes: {:?}", run.outcomes);
    println!("leaders now: {:?}", run.leaders);
    Ok(())
}
