//! An in-memory [`MetadataStore`], for tests and the simulator.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{CasConflict, MetadataError, MetadataStore, RegionMove};
use crate::domain::{DatanodeTable, PeerId, TableId, TableInfo, TableRoute, VersionedTableRoute};

/// Table metadata held in memory. Cheap to clone a snapshot of; all writes are atomic.
#[derive(Debug, Default)]
pub struct MemoryMetadataStore {
    // A std Mutex: every critical section is short and never awaits.
    inner: Mutex<MemoryMetadata>,
}

/// The whole content of a [`MemoryMetadataStore`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryMetadata {
    /// Table routes by table.
    pub table_routes: BTreeMap<TableId, VersionedTableRoute>,
    /// Datanode tables by (datanode, table).
    pub datanode_tables: BTreeMap<(PeerId, TableId), DatanodeTable>,
    /// Table infos by table.
    pub table_infos: BTreeMap<TableId, TableInfo>,
}

impl MemoryMetadataStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryMetadata> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets a table's route, bumping its version (setup and tests).
    pub fn put_table_route(&self, table_id: TableId, route: TableRoute) -> u64 {
        let mut inner = self.lock();
        let version = inner
            .table_routes
            .get(&table_id)
            .map(|current| current.version + 1)
            .unwrap_or(0);
        inner.table_routes.insert(
            table_id,
            VersionedTableRoute {
                table_id,
                version,
                route,
            },
        );
        version
    }

    /// Sets a datanode table (setup and tests).
    pub fn put_datanode_table(&self, table: DatanodeTable) {
        self.lock()
            .datanode_tables
            .insert((table.datanode_id, table.table_id), table);
    }

    /// Sets a table info (setup and tests).
    pub fn put_table_info(&self, info: TableInfo) {
        self.lock().table_infos.insert(info.table_id, info);
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> MemoryMetadata {
        self.lock().clone()
    }

    /// The current route of a table, without going through the async port.
    pub fn table_route_now(&self, table_id: TableId) -> Option<VersionedTableRoute> {
        self.lock().table_routes.get(&table_id).cloned()
    }
}

/// Applies a region move to datanode tables: the region number leaves `from_peer`'s entry
/// and joins `to_peer`'s, created from the old one when missing.
pub fn apply_region_move(
    datanode_tables: &mut BTreeMap<(PeerId, TableId), DatanodeTable>,
    table_id: TableId,
    region_move: &RegionMove,
) {
    let number = region_move.region_id.region_number();
    let template = datanode_tables
        .get(&(region_move.from_peer, table_id))
        .cloned();
    if let Some(from) = datanode_tables.get_mut(&(region_move.from_peer, table_id)) {
        from.region_numbers.retain(|n| *n != number);
    }
    let wal_option = template
        .as_ref()
        .and_then(|t| t.region_wal_options.get(&number).cloned());
    let to = datanode_tables
        .entry((region_move.to_peer, table_id))
        .or_insert_with(|| DatanodeTable {
            datanode_id: region_move.to_peer,
            table_id,
            region_numbers: Vec::new(),
            engine: template
                .as_ref()
                .map(|t| t.engine.clone())
                .unwrap_or_default(),
            storage_path: template
                .as_ref()
                .map(|t| t.storage_path.clone())
                .unwrap_or_default(),
            region_options: template
                .as_ref()
                .map(|t| t.region_options.clone())
                .unwrap_or_default(),
            region_wal_options: BTreeMap::new(),
        });
    if !to.region_numbers.contains(&number) {
        to.region_numbers.push(number);
        to.region_numbers.sort_unstable();
    }
    if let Some(option) = wal_option {
        to.region_wal_options.insert(number, option);
    }
}

#[async_trait]
impl MetadataStore for MemoryMetadataStore {
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError> {
        Ok(self.table_route_now(table_id))
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let mut inner = self.lock();
        let actual_version = inner.table_routes.get(&table_id).map(|r| r.version);
        if actual_version != Some(expected_version) {
            return Ok(Err(CasConflict {
                table_id,
                expected_version,
                actual_version,
            }));
        }
        let version = expected_version + 1;
        inner.table_routes.insert(
            table_id,
            VersionedTableRoute {
                table_id,
                version,
                route,
            },
        );
        for region_move in &region_moves {
            apply_region_move(&mut inner.datanode_tables, table_id, region_move);
        }
        Ok(Ok(version))
    }

    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, MetadataError> {
        Ok(self
            .lock()
            .datanode_tables
            .get(&(datanode_id, table_id))
            .cloned())
    }

    async fn table_info(&self, table_id: TableId) -> Result<Option<TableInfo>, MetadataError> {
        Ok(self.lock().table_infos.get(&table_id).cloned())
    }
}
