//! The PostgreSQL [`MetadataStore`] (feature `postgres`): table metadata in the same
//! database and PostgreSQL schema as a [`PgStore`] log, on its connections, so an embedder
//! has one dependency. Same semantics as [`SledMetadataStore`](super::sled_store::SledMetadataStore)
//! (the conformance tests run both): versions start at 0, a compare-and-swap writes version
//! `expected + 1` and moves the region's datanode-table entry in the same transaction.
//!
//! Tables (component `metadata`, version [`METADATA_SCHEMA_VERSION`] in
//! `<schema>.schema_version`, created on a writer's first open):
//! - `table_routes (table_id bigint PRIMARY KEY, version bigint, route bytea)`
//! - `datanode_tables (datanode_id bigint, table_id bigint, value bytea, PRIMARY KEY (both))`
//! - `table_infos (table_id bigint PRIMARY KEY, value bytea)`
//!
//! Values are the rmp-serde (named) encodings the sled store writes; ids are `bigint`s
//! holding the same 64 bits (`u64 as i64`), as in the log's tables.
//!
//! # Fencing
//! Every write runs in one transaction that first reads the leader row `FOR SHARE` and
//! checks the writer's epoch (the log's [`LogStore::writer_epoch`](crate::log::LogStore::writer_epoch))
//! by the same rule as the log's appends ([`fenced_epoch`]): a deposed leader's write is
//! [`MetadataErrorKind::Fenced`] and changes nothing. An election's takeover updates that
//! row, so it waits for a write in flight, or the write waits for it and then sees the
//! new epoch.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

use super::memory::apply_region_move;
use super::sled_store::{decode, encode};
use super::{CasConflict, MetadataError, MetadataErrorKind, MetadataStore, RegionMove};
use crate::domain::{DatanodeTable, PeerId, TableId, TableInfo, TableRoute, VersionedTableRoute};
use crate::log::{EventLog, LogError, PgStore};
use crate::pg::lease::fenced_epoch;
use crate::pg::schema::{self, advisory_key, LockKind};
use crate::pg::PgConfig;

/// The version of the metadata tables this build writes and reads.
pub const METADATA_SCHEMA_VERSION: i32 = 1;
/// The component name of the metadata tables in `<schema>.schema_version`.
pub const METADATA_COMPONENT: &str = "metadata";

/// Table metadata in PostgreSQL, beside a [`PgStore`] log.
#[derive(Clone)]
pub struct PgMetadataStore {
    store: PgStore,
    writer_epoch: Option<u64>,
    sql: std::sync::Arc<Sql>,
}

struct Sql {
    leader: String,
    route: String,
    route_for_update: String,
    upsert_route: String,
    datanode_table: String,
    datanode_table_for_update: String,
    upsert_datanode_table: String,
    table_info: String,
    upsert_table_info: String,
    table_ids: String,
}

impl Sql {
    fn new(schema: &str) -> Sql {
        Sql {
            leader: format!("SELECT epoch, holder FROM {schema}.leader WHERE id FOR SHARE"),
            route: format!("SELECT version, route FROM {schema}.table_routes WHERE table_id = $1"),
            route_for_update: format!(
                "SELECT version, route FROM {schema}.table_routes WHERE table_id = $1 FOR UPDATE"
            ),
            upsert_route: format!(
                "INSERT INTO {schema}.table_routes (table_id, version, route) VALUES ($1, $2, $3) \
                 ON CONFLICT (table_id) DO UPDATE SET version = EXCLUDED.version, route = EXCLUDED.route"
            ),
            datanode_table: format!(
                "SELECT value FROM {schema}.datanode_tables WHERE datanode_id = $1 AND table_id = $2"
            ),
            datanode_table_for_update: format!(
                "SELECT value FROM {schema}.datanode_tables WHERE datanode_id = $1 AND table_id = $2 FOR UPDATE"
            ),
            upsert_datanode_table: format!(
                "INSERT INTO {schema}.datanode_tables (datanode_id, table_id, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (datanode_id, table_id) DO UPDATE SET value = EXCLUDED.value"
            ),
            table_info: format!("SELECT value FROM {schema}.table_infos WHERE table_id = $1"),
            upsert_table_info: format!(
                "INSERT INTO {schema}.table_infos (table_id, value) VALUES ($1, $2) \
                 ON CONFLICT (table_id) DO UPDATE SET value = EXCLUDED.value"
            ),
            table_ids: format!("SELECT table_id FROM {schema}.table_routes ORDER BY table_id"),
        }
    }
}

fn metadata_tables_sql(schema: &str) -> String {
    format!(
        "CREATE TABLE {schema}.table_routes (
            table_id bigint NOT NULL,
            version bigint NOT NULL CHECK (version >= 0),
            route bytea NOT NULL,
            CONSTRAINT table_routes_pkey PRIMARY KEY (table_id)
        );
        CREATE TABLE {schema}.datanode_tables (
            datanode_id bigint NOT NULL,
            table_id bigint NOT NULL,
            value bytea NOT NULL,
            CONSTRAINT datanode_tables_pkey PRIMARY KEY (datanode_id, table_id)
        );
        CREATE TABLE {schema}.table_infos (
            table_id bigint NOT NULL,
            value bytea NOT NULL,
            CONSTRAINT table_infos_pkey PRIMARY KEY (table_id)
        );
        INSERT INTO {schema}.schema_version (component, version)
            VALUES ('{METADATA_COMPONENT}', {METADATA_SCHEMA_VERSION});"
    )
}

/// A failure of the store at `location` while doing `what`: the kind says whether the
/// store could be reached.
fn database_error(location: &str, what: &str, error: tokio_postgres::Error) -> MetadataError {
    let kind = if error.is_closed()
        || error
            .code()
            .is_none_or(|code| code.code().starts_with("08") || *code == SqlState::ADMIN_SHUTDOWN)
    {
        MetadataErrorKind::Unavailable
    } else {
        MetadataErrorKind::Other
    };
    MetadataError::new(kind, format!("{what} at {location}: {error}")).with_source(error)
}

fn log_error(what: &str, error: LogError) -> MetadataError {
    MetadataError::new(MetadataErrorKind::Unavailable, format!("{what}: {error}"))
        .with_source(error)
}

fn table_key(table_id: TableId) -> i64 {
    i64::from(table_id)
}

fn peer_key(peer: PeerId) -> i64 {
    peer as i64
}

impl PgMetadataStore {
    /// Opens the metadata tables beside the PostgreSQL log `log` (creating them on a
    /// writer's first open, under the schema lock), writing with the log's epoch.
    ///
    /// Errors: the log is not on PostgreSQL (kind `Other`, naming where it is); the store
    /// cannot be reached (`Unavailable`); the tables are of a newer version (`Other`).
    pub async fn open(log: &EventLog) -> Result<PgMetadataStore, MetadataError> {
        let Some(store) = PgStore::of(log) else {
            return Err(MetadataError::new(
                MetadataErrorKind::Other,
                format!(
                    "the PostgreSQL metadata store needs a PostgreSQL-backed log; the log is at {}",
                    log.store().location()
                ),
            ));
        };
        let metadata = PgMetadataStore {
            store: store.clone(),
            writer_epoch: log.store().writer_epoch(),
            sql: std::sync::Arc::new(Sql::new(store.config().schema())),
        };
        let config = store.config().clone();
        let pool = store.pool().clone();
        let read_only = log.is_read_only();
        metadata
            .run("open the metadata tables", async move {
                let mut client = pool
                    .get()
                    .await
                    .map_err(|error| crate::pg::pool_error(&config, "connect", error))?;
                ensure_metadata(&mut client, &config, read_only).await
            })
            .await?
            .map_err(|error| log_error("open the metadata tables", error))?;
        Ok(metadata)
    }

    /// Runs `work` on the log store's runtime (where its connections live).
    async fn run<T, F>(&self, what: &str, work: F) -> Result<T, MetadataError>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.store
            .spawn(async move { Ok(work.await) })
            .await
            .map_err(|error| log_error(what, error))
    }

    fn location(&self) -> String {
        self.store.config().redacted()
    }

    fn pool(&self) -> Pool {
        self.store.pool().clone()
    }

    /// Sets a table's route, bumping its version (setup); fenced like every write.
    pub async fn put_table_route(
        &self,
        table_id: TableId,
        route: TableRoute,
    ) -> Result<u64, MetadataError> {
        let this = self.clone();
        self.run("write a table route", async move {
            this.write(
                &format!("write the route of table {table_id}"),
                |transaction, sql| {
                    Box::pin(async move {
                        let current = transaction
                            .query_opt(&sql.route_for_update, &[&table_key(table_id)])
                            .await?;
                        let version = current.map_or(0, |row| row.get::<_, i64>(0) as u64 + 1);
                        store_route(transaction, sql, table_id, version, route).await?;
                        Ok(Ok(version))
                    })
                },
            )
            .await
        })
        .await
        .and_then(no_conflict)
    }

    /// Sets a datanode table (setup); fenced like every write.
    pub async fn put_datanode_table(&self, table: DatanodeTable) -> Result<(), MetadataError> {
        let this = self.clone();
        self.run("write a datanode table", async move {
            this.write(
                &format!(
                    "write the datanode table of table {} on datanode {}",
                    table.table_id, table.datanode_id
                ),
                |transaction, sql| {
                    Box::pin(async move {
                        transaction
                            .execute(
                                &sql.upsert_datanode_table,
                                &[
                                    &peer_key(table.datanode_id),
                                    &table_key(table.table_id),
                                    &encode(&table),
                                ],
                            )
                            .await?;
                        Ok(Ok(()))
                    })
                },
            )
            .await
        })
        .await
        .and_then(no_conflict)
    }

    /// Sets a table info (setup); fenced like every write.
    pub async fn put_table_info(&self, info: TableInfo) -> Result<(), MetadataError> {
        let this = self.clone();
        self.run("write a table info", async move {
            this.write(
                &format!("write the table info of table {}", info.table_id),
                |transaction, sql| {
                    Box::pin(async move {
                        transaction
                            .execute(
                                &sql.upsert_table_info,
                                &[&table_key(info.table_id), &encode(&info)],
                            )
                            .await?;
                        Ok(Ok(()))
                    })
                },
            )
            .await
        })
        .await
        .and_then(no_conflict)
    }

    /// Every table id with a route, in order.
    pub async fn table_ids(&self) -> Result<Vec<TableId>, MetadataError> {
        let (pool, sql, location) = (self.pool(), self.sql.clone(), self.location());
        self.run("list the table routes", async move {
            let client = connect(&pool, &location).await?;
            let rows = client
                .query(&sql.table_ids, &[])
                .await
                .map_err(|error| database_error(&location, "list the table routes", error))?;
            Ok(rows
                .iter()
                .map(|row| row.get::<_, i64>(0) as TableId)
                .collect())
        })
        .await?
    }

    /// Runs `body` in a transaction that first checks the writer's epoch; commits when it
    /// returns `Ok(Ok(_))`, rolls back otherwise. Called on the store's runtime.
    async fn write<T, B>(
        &self,
        what: &str,
        body: B,
    ) -> Result<Result<T, CasConflict>, MetadataError>
    where
        B: for<'t> FnOnce(
            &'t tokio_postgres::Transaction<'t>,
            &'t Sql,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<Result<T, CasConflict>, WriteFailure>>
                    + Send
                    + 't,
            >,
        >,
    {
        let location = self.location();
        let mut object = connect(&self.pool(), &location).await?;
        let client: &mut tokio_postgres::Client = &mut object;
        let failed = |error| database_error(&location, what, error);
        let transaction = client.transaction().await.map_err(failed)?;
        let leader = transaction
            .query_one(&self.sql.leader, &[])
            .await
            .map_err(failed)?;
        let current_epoch = leader.get::<_, i64>(0) as u64;
        let holder: Option<String> = leader.get(1);
        if let Some(epoch) = fenced_epoch(self.writer_epoch, current_epoch, holder.as_deref()) {
            return Err(MetadataError::new(
                MetadataErrorKind::Fenced,
                format!(
                    "{what}: the store at {location} refused a write with epoch {epoch}: it is at epoch {current_epoch}, another engine leads"
                ),
            ));
        }
        let outcome = match body(&transaction, &self.sql).await {
            Ok(outcome) => outcome,
            Err(WriteFailure::Database(error)) => return Err(failed(error)),
            Err(WriteFailure::Metadata(error)) => return Err(error),
        };
        if outcome.is_ok() {
            transaction.commit().await.map_err(failed)?;
        }
        Ok(outcome)
    }
}

/// The answer of a write that cannot conflict (a setup write).
fn no_conflict<T>(
    answer: Result<Result<T, CasConflict>, MetadataError>,
) -> Result<T, MetadataError> {
    answer?.map_err(|conflict| MetadataError::new(MetadataErrorKind::Other, conflict.to_string()))
}

/// Why a write's body failed.
enum WriteFailure {
    Database(tokio_postgres::Error),
    Metadata(MetadataError),
}

impl From<tokio_postgres::Error> for WriteFailure {
    fn from(error: tokio_postgres::Error) -> Self {
        WriteFailure::Database(error)
    }
}

/// A connection from the pool. While the server cannot be reached (a restart, a cut
/// network) it tries again, pausing 50 ms and doubling up to 1 s, for at most
/// [`RECONNECT_WAIT`](crate::log::pg_store::RECONNECT_WAIT), as the log's reads do; then
/// the error is `Unavailable`. (The pool checks a connection before handing it out, so one
/// the server ended is replaced, not handed out.)
async fn connect(pool: &Pool, location: &str) -> Result<deadpool_postgres::Object, MetadataError> {
    let deadline = tokio::time::Instant::now() + crate::log::pg_store::RECONNECT_WAIT;
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match pool.get().await {
            Ok(client) => return Ok(client),
            Err(error) => {
                let lost = matches!(
                    error,
                    deadpool_postgres::PoolError::Backend(_)
                        | deadpool_postgres::PoolError::Timeout(
                            deadpool_postgres::TimeoutType::Create
                                | deadpool_postgres::TimeoutType::Recycle
                        )
                );
                if !lost || tokio::time::Instant::now() + pause > deadline {
                    return Err(MetadataError::new(
                        MetadataErrorKind::Unavailable,
                        format!("connect to {location}: {error}"),
                    )
                    .with_source(error));
                }
                tracing::warn!(store = %location, %error, "cannot connect; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Creates the metadata tables where missing (a writer) or checks them (a reader).
async fn ensure_metadata(
    client: &mut tokio_postgres::Client,
    config: &PgConfig,
    read_only: bool,
) -> Result<(), LogError> {
    if let Some(found) = schema::component_version(&*client, config, METADATA_COMPONENT).await? {
        return schema::check_version(config, METADATA_COMPONENT, found, METADATA_SCHEMA_VERSION);
    }
    if read_only {
        return Err(LogError::NoLogAtStore {
            store: config.redacted(),
            reason: format!(
                "no `{METADATA_COMPONENT}` row in {}.schema_version: no writer has opened the metadata store yet",
                config.schema()
            ),
        });
    }
    let schema_name = config.schema();
    let transaction = client
        .transaction()
        .await
        .map_err(|error| schema::database(config, "create the metadata tables", error))?;
    let (key1, key2) = advisory_key(LockKind::Schema, schema_name);
    transaction
        .execute("SELECT pg_advisory_xact_lock($1, $2)", &[&key1, &key2])
        .await
        .map_err(|error| schema::database(config, "lock the schema for creation", error))?;
    match schema::component_version(&transaction, config, METADATA_COMPONENT).await? {
        Some(found) => {
            schema::check_version(config, METADATA_COMPONENT, found, METADATA_SCHEMA_VERSION)?
        }
        None => {
            transaction
                .batch_execute(&metadata_tables_sql(schema_name))
                .await
                .map_err(|error| schema::database(config, "create the metadata tables", error))?;
        }
    }
    transaction
        .commit()
        .await
        .map_err(|error| schema::database(config, "create the metadata tables", error))
}

#[async_trait]
impl MetadataStore for PgMetadataStore {
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError> {
        let (pool, sql, location) = (self.pool(), self.sql.clone(), self.location());
        self.run("read a table route", async move {
            let what = format!("read the route of table {table_id}");
            let client = connect(&pool, &location).await?;
            let row = client
                .query_opt(&sql.route, &[&table_key(table_id)])
                .await
                .map_err(|error| database_error(&location, &what, error))?;
            match row {
                Some(row) => Ok(Some(decode::<VersionedTableRoute>(
                    &format!("the route of table {table_id}"),
                    row.get::<_, &[u8]>(1),
                )?)),
                None => Ok(None),
            }
        })
        .await?
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let this = self.clone();
        self.run("write a table route", async move {
            this.write(
                &format!("write the route of table {table_id}"),
                |transaction, sql| {
                    Box::pin(async move {
                        let current = transaction
                            .query_opt(&sql.route_for_update, &[&table_key(table_id)])
                            .await?;
                        let actual_version = current.map(|row| row.get::<_, i64>(0) as u64);
                        if actual_version != Some(expected_version) {
                            return Ok(Err(CasConflict {
                                table_id,
                                expected_version,
                                actual_version,
                            }));
                        }
                        let version = expected_version + 1;
                        store_route(transaction, sql, table_id, version, route).await?;
                        for region_move in &region_moves {
                            move_region(transaction, sql, table_id, region_move).await?;
                        }
                        Ok(Ok(version))
                    })
                },
            )
            .await
        })
        .await?
    }

    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, MetadataError> {
        let (pool, sql, location) = (self.pool(), self.sql.clone(), self.location());
        self.run("read a datanode table", async move {
            let what =
                format!("read the datanode table of table {table_id} on datanode {datanode_id}");
            let client = connect(&pool, &location).await?;
            let row = client
                .query_opt(
                    &sql.datanode_table,
                    &[&peer_key(datanode_id), &table_key(table_id)],
                )
                .await
                .map_err(|error| database_error(&location, &what, error))?;
            match row {
                Some(row) => Ok(Some(decode("a datanode table", row.get::<_, &[u8]>(0))?)),
                None => Ok(None),
            }
        })
        .await?
    }

    async fn table_info(&self, table_id: TableId) -> Result<Option<TableInfo>, MetadataError> {
        let (pool, sql, location) = (self.pool(), self.sql.clone(), self.location());
        self.run("read a table info", async move {
            let what = format!("read the table info of table {table_id}");
            let client = connect(&pool, &location).await?;
            let row = client
                .query_opt(&sql.table_info, &[&table_key(table_id)])
                .await
                .map_err(|error| database_error(&location, &what, error))?;
            match row {
                Some(row) => Ok(Some(decode("a table info", row.get::<_, &[u8]>(0))?)),
                None => Ok(None),
            }
        })
        .await?
    }
}

/// Moves a region between two datanode tables inside the route write's transaction (the
/// same rule as the sled and memory stores: [`apply_region_move`]).
/// Writes `route` as version `version` of the table's route, in the caller's transaction.
async fn store_route(
    transaction: &tokio_postgres::Transaction<'_>,
    sql: &Sql,
    table_id: TableId,
    version: u64,
    route: TableRoute,
) -> Result<(), WriteFailure> {
    let value = VersionedTableRoute {
        table_id,
        version,
        route,
    };
    transaction
        .execute(
            &sql.upsert_route,
            &[&table_key(table_id), &(version as i64), &encode(&value)],
        )
        .await?;
    Ok(())
}

async fn move_region(
    transaction: &tokio_postgres::Transaction<'_>,
    sql: &Sql,
    table_id: TableId,
    region_move: &RegionMove,
) -> Result<(), WriteFailure> {
    let mut tables = std::collections::BTreeMap::new();
    for peer in [region_move.from_peer, region_move.to_peer] {
        let row = transaction
            .query_opt(
                &sql.datanode_table_for_update,
                &[&peer_key(peer), &table_key(table_id)],
            )
            .await?;
        if let Some(row) = row {
            let table: DatanodeTable = decode(
                &format!("the datanode table of table {table_id} on datanode {peer}"),
                row.get::<_, &[u8]>(0),
            )
            .map_err(WriteFailure::Metadata)?;
            tables.insert((peer, table_id), table);
        }
    }
    apply_region_move(&mut tables, table_id, region_move);
    for ((peer, table), value) in tables {
        transaction
            .execute(
                &sql.upsert_datanode_table,
                &[&peer_key(peer), &table_key(table), &encode(&value)],
            )
            .await?;
    }
    Ok(())
}
