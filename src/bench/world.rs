//! A zero-latency cluster: a mailbox whose datanodes answer every instruction at once with
//! success, and tables of one region each in a metadata store, so that no two migrations
//! share a table lock and concurrency is only limited by what is measured.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::error::BenchError;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::sled_store::SledMetadataStore;
use regmig::cluster::{Mailbox, Ports};
use regmig::domain::{
    DatanodeTable, Instruction, MailboxOutcome, Peer, PeerId, RegionId, RegionRoute, Reply,
    TableId, TableInfo, TableRoute, WalKind,
};

/// The first table id of the bench's tables.
pub const FIRST_TABLE_ID: TableId = 1024;
/// The datanode that leads every region at setup.
pub const FIRST_LEADER: PeerId = 1;
/// The other datanode; migrations go back and forth between the two.
pub const OTHER_PEER: PeerId = 2;
/// What a downgrade reply reports as the old leader's last entry.
pub const LAST_ENTRY_ID: u64 = 100;
/// How many setup writes are in flight at once (they share group commits).
const SETUP_WRITES_IN_FLIGHT: usize = 256;

/// A mailbox that answers every instruction at once, with success.
#[derive(Debug, Default)]
pub struct InstantMailbox {
    sent: AtomicU64,
}

impl InstantMailbox {
    /// A new mailbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Instructions answered so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// The successful reply to an instruction.
pub fn success_reply(instruction: &Instruction) -> Reply {
    match instruction {
        Instruction::OpenRegion { .. } => Reply::OpenRegion {
            result: true,
            error: None,
        },
        Instruction::DowngradeRegion { .. } => Reply::DowngradeRegion {
            last_entry_id: Some(LAST_ENTRY_ID),
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
    }
}

#[async_trait]
impl Mailbox for InstantMailbox {
    async fn send(
        &self,
        _peer: &Peer,
        instruction: Instruction,
        _timeout_ms: u64,
    ) -> MailboxOutcome {
        self.sent.fetch_add(1, Ordering::Relaxed);
        MailboxOutcome::Reply(success_reply(&instruction))
    }
}

/// The table of bench region number `index` (0-based): one region per table.
pub fn table_of(index: u32) -> TableId {
    FIRST_TABLE_ID + index
}

/// Bench region number `index` (0-based): region 1 of its own table.
pub fn region_of(index: u32) -> RegionId {
    RegionId::new(table_of(index), 1)
}

/// The route of a one-region table led by `leader`.
pub fn table_route(table_id: TableId, leader: PeerId) -> TableRoute {
    TableRoute::Physical {
        region_routes: vec![RegionRoute {
            region_id: RegionId::new(table_id, 1),
            leader_peer: Some(Peer::sim(leader)),
            follower_peers: Vec::new(),
            leader_state: None,
            leader_down_since_ms: None,
        }],
    }
}

/// The datanode table of a one-region table on `datanode_id`.
pub fn datanode_table(datanode_id: PeerId, table_id: TableId) -> DatanodeTable {
    DatanodeTable {
        datanode_id,
        table_id,
        region_numbers: vec![1],
        engine: "mito".to_string(),
        storage_path: format!("data/{table_id}"),
        region_options: BTreeMap::new(),
        region_wal_options: BTreeMap::new(),
    }
}

/// The table info of a bench table.
pub fn table_info(table_id: TableId) -> TableInfo {
    TableInfo {
        table_id,
        catalog: "greptime".to_string(),
        schema: "public".to_string(),
        name: format!("t{table_id}"),
        wal: WalKind::Local,
    }
}

/// Creates tables `0..count` (one region each, led by [`FIRST_LEADER`]) in a memory store.
pub fn create_tables_in_memory(store: &MemoryMetadataStore, count: u32) {
    for index in 0..count {
        let table_id = table_of(index);
        store.put_table_route(table_id, table_route(table_id, FIRST_LEADER));
        store.put_datanode_table(datanode_table(FIRST_LEADER, table_id));
        store.put_table_info(table_info(table_id));
    }
}

/// Creates tables `0..count` (one region each, led by [`FIRST_LEADER`]) in a sled store,
/// many writes at a time so that they share the log's group commits.
pub async fn create_tables(store: &SledMetadataStore, count: u32) -> Result<(), BenchError> {
    let mut writes = tokio::task::JoinSet::new();
    for index in 0..count {
        while writes.len() >= SETUP_WRITES_IN_FLIGHT {
            joined(writes.join_next().await)?;
        }
        let store = store.clone();
        writes.spawn(async move {
            let table_id = table_of(index);
            store
                .put_table_route(table_id, table_route(table_id, FIRST_LEADER))
                .await?;
            store
                .put_datanode_table(datanode_table(FIRST_LEADER, table_id))
                .await?;
            store.put_table_info(table_info(table_id)).await
        });
    }
    while let Some(done) = writes.join_next().await {
        joined(Some(done))?;
    }
    Ok(())
}

fn joined(
    done: Option<Result<Result<(), regmig::cluster::MetadataError>, tokio::task::JoinError>>,
) -> Result<(), BenchError> {
    match done {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(error))) => Err(BenchError::Metadata(error)),
        Some(Err(error)) => Err(BenchError::Task(format!("setup write: {error}"))),
    }
}

/// The engine's ports on the zero-latency cluster: the given mailbox and metadata store, no
/// hooks, the system clock, OS entropy.
pub fn ports(
    mailbox: Arc<dyn Mailbox>,
    metadata: Arc<dyn regmig::cluster::MetadataStore>,
) -> Ports {
    Ports::builder(mailbox, metadata).build()
}
