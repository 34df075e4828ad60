//! The default [`MetadataStore`]: table metadata in its own sled trees of the log's database,
//! each write made durable through the log's group commit before it is acknowledged.
//!
//! Trees: `meta_table_routes` (table id, 4 bytes big-endian → route), `meta_datanode_tables`
//! (datanode id 8 BE ‖ table id 4 BE → datanode table), `meta_table_infos` (table id → info).
//! Values are rmp-serde (named) encodings of the domain types.

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::memory::apply_region_move;
use super::{CasConflict, MetadataError, MetadataErrorKind, MetadataStore, RegionMove};
use crate::domain::{DatanodeTable, PeerId, TableId, TableInfo, TableRoute, VersionedTableRoute};
use crate::log::{EventLog, SledStore};

const ROUTES_TREE: &str = "meta_table_routes";
const DATANODE_TABLES_TREE: &str = "meta_datanode_tables";
const TABLE_INFOS_TREE: &str = "meta_table_infos";

/// Table metadata in sled, durable on every write.
#[derive(Clone)]
pub struct SledMetadataStore {
    routes: sled::Tree,
    datanode_tables: sled::Tree,
    table_infos: sled::Tree,
    /// Last: fields drop in order, and when this is the log's last handle, closing it waits
    /// for sled to let go of the database, which these trees would still hold.
    log: EventLog,
}

fn store_error(what: &str, error: impl std::fmt::Display) -> MetadataError {
    MetadataError::new(MetadataErrorKind::Other, format!("{what}: {error}"))
}

/// The value encoding of every metadata store: rmp-serde, named.
pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data into a Vec: cannot fail.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

/// Decodes a value of [`encode`]; `what` names it in the error.
pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, MetadataError> {
    rmp_serde::from_slice(bytes)
        .map_err(|error| store_error(&format!("cannot decode {what}"), error))
}

fn datanode_table_key(datanode_id: PeerId, table_id: TableId) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&datanode_id.to_be_bytes());
    key[8..].copy_from_slice(&table_id.to_be_bytes());
    key
}

/// Moves a region between two datanode tables inside a transaction.
fn move_region(
    datanode_tables: &sled::transaction::TransactionalTree,
    table_id: TableId,
    region_move: &RegionMove,
) -> Result<(), ConflictableTransactionError<String>> {
    let mut tables = std::collections::BTreeMap::new();
    for peer in [region_move.from_peer, region_move.to_peer] {
        if let Some(bytes) = datanode_tables.get(datanode_table_key(peer, table_id))? {
            let table: DatanodeTable = rmp_serde::from_slice(&bytes)
                .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
            tables.insert((peer, table_id), table);
        }
    }
    apply_region_move(&mut tables, table_id, region_move);
    for ((peer, table), value) in tables {
        datanode_tables.insert(&datanode_table_key(peer, table), encode(&value))?;
    }
    Ok(())
}

impl SledMetadataStore {
    /// Opens (creating if needed) the metadata trees in the database of a sled-backed
    /// log; a log on another store has no sled database to share.
    pub fn open(log: &EventLog) -> Result<Self, MetadataError> {
        let Some(sled) = SledStore::of(log) else {
            return Err(MetadataError::new(
                MetadataErrorKind::Other,
                format!(
                    "the sled metadata store needs a sled-backed log; the log is at {}",
                    log.store().location()
                ),
            ));
        };
        let db = sled.db();
        let open = |name: &str| {
            db.open_tree(name)
                .map_err(|error| store_error(&format!("cannot open tree {name}"), error))
        };
        Ok(SledMetadataStore {
            routes: open(ROUTES_TREE)?,
            datanode_tables: open(DATANODE_TABLES_TREE)?,
            table_infos: open(TABLE_INFOS_TREE)?,
            log: log.clone(),
        })
    }

    async fn durable(&self) -> Result<(), MetadataError> {
        self.log
            .sync()
            .await
            .map_err(|error| store_error("cannot make the metadata write durable", error))
    }

    /// Sets a table's route, bumping its version (setup).
    pub async fn put_table_route(
        &self,
        table_id: TableId,
        route: TableRoute,
    ) -> Result<u64, MetadataError> {
        let key = table_id.to_be_bytes();
        let version = match self
            .routes
            .get(key)
            .map_err(|e| store_error("cannot read a route", e))?
        {
            Some(bytes) => decode::<VersionedTableRoute>("a table route", &bytes)?.version + 1,
            None => 0,
        };
        let value = VersionedTableRoute {
            table_id,
            version,
            route,
        };
        self.routes
            .insert(key, encode(&value))
            .map_err(|e| store_error("cannot write a route", e))?;
        self.durable().await?;
        Ok(version)
    }

    /// Sets a datanode table (setup).
    pub async fn put_datanode_table(&self, table: DatanodeTable) -> Result<(), MetadataError> {
        self.datanode_tables
            .insert(
                datanode_table_key(table.datanode_id, table.table_id),
                encode(&table),
            )
            .map_err(|e| store_error("cannot write a datanode table", e))?;
        self.durable().await
    }

    /// Sets a table info (setup).
    pub async fn put_table_info(&self, info: TableInfo) -> Result<(), MetadataError> {
        self.table_infos
            .insert(info.table_id.to_be_bytes(), encode(&info))
            .map_err(|e| store_error("cannot write a table info", e))?;
        self.durable().await
    }

    /// Writes a route at exactly `version`, with its region moves in the same atomic write, and
    /// makes it durable: for a store that mirrors another one's accepted writes.
    pub async fn put_versioned(
        &self,
        route: VersionedTableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<(), MetadataError> {
        let table_id = route.table_id;
        let key = table_id.to_be_bytes();
        let outcome =
            (&self.routes, &self.datanode_tables).transaction(|(routes, datanode_tables)| {
                routes.insert(&key, encode(&route))?;
                for region_move in &region_moves {
                    move_region(datanode_tables, table_id, region_move)?;
                }
                Ok(())
            });
        match outcome {
            Ok(()) => self.durable().await,
            Err(TransactionError::Abort(reason)) => Err(store_error(
                &format!("cannot decode a datanode table of table {table_id}"),
                reason,
            )),
            Err(TransactionError::Storage(error)) => Err(store_error(
                &format!("cannot write the route of table {table_id}"),
                error,
            )),
        }
    }

    /// Every table id with a route.
    pub fn table_ids(&self) -> Result<Vec<TableId>, MetadataError> {
        let mut ids = Vec::new();
        for entry in self.routes.iter() {
            let (key, _) = entry.map_err(|e| store_error("cannot scan routes", e))?;
            let bytes: [u8; 4] = key
                .as_ref()
                .try_into()
                .map_err(|_| store_error("bad route key", format!("{key:?}")))?;
            ids.push(TableId::from_be_bytes(bytes));
        }
        Ok(ids)
    }
}

#[async_trait]
impl MetadataStore for SledMetadataStore {
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError> {
        match self
            .routes
            .get(table_id.to_be_bytes())
            .map_err(|e| store_error(&format!("cannot read the route of table {table_id}"), e))?
        {
            Some(bytes) => Ok(Some(decode("a table route", &bytes)?)),
            None => Ok(None),
        }
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let key = table_id.to_be_bytes();
        let outcome =
            (&self.routes, &self.datanode_tables).transaction(|(routes, datanode_tables)| {
                let current = match routes.get(key)? {
                    Some(bytes) => Some(
                        rmp_serde::from_slice::<VersionedTableRoute>(&bytes)
                            .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?,
                    ),
                    None => None,
                };
                let actual_version = current.as_ref().map(|c| c.version);
                if actual_version != Some(expected_version) {
                    return Ok(Err(CasConflict {
                        table_id,
                        expected_version,
                        actual_version,
                    }));
                }
                let version = expected_version + 1;
                routes.insert(
                    &key,
                    encode(&VersionedTableRoute {
                        table_id,
                        version,
                        route: route.clone(),
                    }),
                )?;
                for region_move in &region_moves {
                    move_region(datanode_tables, table_id, region_move)?;
                }
                Ok(Ok(version))
            });
        let result = match outcome {
            Ok(result) => result,
            Err(TransactionError::Abort(reason)) => {
                return Err(store_error(
                    &format!("cannot decode the route of table {table_id}"),
                    reason,
                ))
            }
            Err(TransactionError::Storage(error)) => {
                return Err(store_error(
                    &format!("cannot write the route of table {table_id}"),
                    error,
                ))
            }
        };
        if result.is_ok() {
            self.durable().await?;
        }
        Ok(result)
    }

    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, MetadataError> {
        match self
            .datanode_tables
            .get(datanode_table_key(datanode_id, table_id))
            .map_err(|e| store_error("cannot read a datanode table", e))?
        {
            Some(bytes) => Ok(Some(decode("a datanode table", &bytes)?)),
            None => Ok(None),
        }
    }

    async fn table_info(&self, table_id: TableId) -> Result<Option<TableInfo>, MetadataError> {
        match self
            .table_infos
            .get(table_id.to_be_bytes())
            .map_err(|e| store_error("cannot read a table info", e))?
        {
            Some(bytes) => Ok(Some(decode("a table info", &bytes)?)),
            None => Ok(None),
        }
    }
}
