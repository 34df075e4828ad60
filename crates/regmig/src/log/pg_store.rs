//! The PostgreSQL backend of the log (feature `postgres`): [`PgStore`], a [`LogStore`] that
//! several engines can share, with fencing. Table layout: `migrations-log-format.md`
//! ("PostgreSQL"); the connection: [`crate::pg`].
//!
//! # Write path
//! Appends queue for one committer task, which takes every queued request (up to
//! [`LogOptions::group_commit_max_events`] events) and writes them in one transaction:
//! 1. the fencing check: `SELECT epoch, holder FROM leader FOR SHARE` (the row an election
//!    updates at a takeover, which so waits for this transaction, or this one for it);
//! 2. `SELECT ... FROM head FOR UPDATE`: the last global seq and its chain hash, locked, so
//!    writers on other connections take turns;
//! 3. the next seq of each procedure and the open procedure of each region named, read in
//!    the same transaction; each request is checked against them in order (a stale
//!    `expected_next_seq` is [`AppendConflict::Sequence`], a held region
//!    [`AppendConflict::RegionBusy`], as on sled), and the accepted ones are sealed with
//!    [`encode_record`] and [`chain_hash`] as their global seqs are assigned;
//! 4. the rows (events, open procedures, audit entries) in one statement per table, the
//!    head row, `COMMIT`.
//!
//! The database enforces the same rules as constraints (primary key `(procedure_id, seq)`,
//! `UNIQUE (region_id)` on the open procedures): a writer that bypassed the head lock would
//! hit them, and the group is then retried one request at a time, each violation answered
//! as the conflict it is.
//!
//! With [`Durability::Durable`] a commit returns once PostgreSQL has flushed it
//! (`synchronous_commit` as the server sets it, `on` by default); with
//! [`Durability::UnsyncedForTestsOnly`] the transaction sets `synchronous_commit = off`.
//!
//! # Fencing
//! A store opened with `writer_epoch = Some(e)` writes only while `leader.epoch = e`, else
//! every append of the group is [`LogError::Fenced`]. With `None` (no election) the store
//! takes a session-level advisory lock at open ([`LockKind::Writer`]: a second such writer
//! is [`LogError::StoreInUse`]) and writes only while no engine holds the leader row (else
//! `Fenced` with epoch 0). The lock session is re-established after a reconnect.
//!
//! # Lost connections
//! A server restart (or a terminated session, a cut network) ends the connections of the
//! pool; the pool checks a connection before handing it out again, and opens new ones. An
//! append or a read that meets a lost connection is tried again on a new one, pausing
//! [`RECONNECT_PAUSE_FIRST`] and doubling up to [`RECONNECT_PAUSE_MAX`], for at most
//! [`RECONNECT_WAIT`]; after that it fails with the last error ([`LogError::Database`]).
//! Only what cannot have been written is tried again as is:
//! - a group whose connection was lost before its `COMMIT` was sent was rolled back by the
//!   server: it is written again (in a new transaction, with every check made again);
//! - a group whose `COMMIT` was sent but not answered may or may not be written: once
//!   connected again, the store reads the event at the global seq the group gave its last
//!   event, and compares its chain hash with the one the group sealed. The same hash means
//!   the same record, whose `prev_hash` chains every event before it: the group was
//!   committed, and its receipts are answered. Anything else (no event there, or another
//!   writer's, which took the same position, even the same procedure and seq, once the
//!   group was rolled back) means nothing of it was, and it is written again.
//!
//! A statement the server cancels (`statement_timeout`, [`PgConfig`]) or refuses is not
//! tried again: the connection is still there, and the error is answered at once, naming
//! the operation. A writer fenced in the meantime is answered [`LogError::Fenced`].
//!
//! # Threads
//! A store runs its own small tokio runtime (two worker threads): the connections, the
//! committer and every query run there, and callers await a hand-off. So the store works the
//! same from any async runtime and from [`block_on`] (the blocking API of `EventLog`).
//!
//! # Integers
//! PostgreSQL has no unsigned 64-bit type: seqs, global seqs, region and peer ids and times
//! are stored in `bigint` as the same 64 bits (`u64 as i64`), so values from 2^63 up read
//! negative in SQL. Range reads split a range that crosses 2^63 in two, so every read
//! answers in `u64` order.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::commit::validate;
use super::keys::{event_key, hex};
use super::record::{chain_hash, encode_record, ChainHash, Record, CHAIN_START, FORMAT_VERSION};
use super::store::{
    block_on, AppendResult, AuditEntry, AuditIndex, ListedEvent, LogStore, StoredEvent,
};
use super::verify::check_recorded_head;
use super::{
    AppendConflict, AppendReceipt, AppendRequest, Durability, EventLog, LogError, LogOptions,
};
use crate::pg::schema::{self, advisory_key, database, LockKind};
use crate::pg::{self as pgconn, PgConfig};

/// How long an open waits for the writer lock before [`LogError::StoreInUse`]: a writer
/// that just stopped may take a moment to end its session on the server.
pub const WRITER_LOCK_WAIT: Duration = Duration::from_secs(3);
/// How long an append or a read keeps trying when the connection to the server is lost
/// (a server restart, a failover, a cut network) before it fails: see "Lost connections".
pub const RECONNECT_WAIT: Duration = Duration::from_secs(15);
/// The first pause between two tries after a lost connection; each pause doubles, up to
/// [`RECONNECT_PAUSE_MAX`].
const RECONNECT_PAUSE_FIRST: Duration = Duration::from_millis(50);
/// The longest pause between two tries after a lost connection.
const RECONNECT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Worker threads of the store's own runtime.
const RUNTIME_THREADS: usize = 2;

/// The log in a PostgreSQL database. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` for a reader.
    committer: Option<mpsc::Sender<Pending>>,
    damage: Option<LogError>,
    /// Dropped last: it ends the committer and every connection.
    runtime: OwnedRuntime,
}

/// What the committer and the reads share.
struct Shared {
    config: PgConfig,
    location: String,
    sql: Sql,
    pool: Pool,
    read_only: bool,
    writer_epoch: Option<u64>,
    durability: Durability,
    group_events_max: usize,
}

/// A runtime that shuts down without blocking when dropped (also from inside another
/// runtime, where dropping a runtime would panic).
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the runtime lives as long as the store")
            .handle()
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

enum Pending {
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<AppendResult>,
    },
}

/// The statements, with the schema filled in.
struct Sql {
    leader: String,
    head_for_update: String,
    head: String,
    next_seqs: String,
    open_rows: String,
    delete_open: String,
    insert_events: String,
    insert_open: String,
    insert_region_audit: String,
    insert_peer_audit: String,
    update_head: String,
    next_seq: String,
    record_at_global_seq: String,
    procedure_events: String,
    events_from: String,
    last_event: String,
    open_procedures: String,
    open_procedure_of_region: String,
    region_audit: String,
    peer_audit: String,
    procedures: String,
}

impl Sql {
    fn new(schema: &str) -> Sql {
        Sql {
            leader: format!("SELECT epoch, holder FROM {schema}.leader WHERE id FOR SHARE"),
            head_for_update: format!(
                "SELECT last_global_seq, last_hash FROM {schema}.head WHERE id FOR UPDATE"
            ),
            head: format!("SELECT last_global_seq, last_hash FROM {schema}.head WHERE id"),
            next_seqs: format!(
                "SELECT p.id, (SELECT e.seq FROM {schema}.events e WHERE e.procedure_id = p.id \
                 ORDER BY e.seq DESC LIMIT 1) FROM unnest($1::uuid[]) AS p(id)"
            ),
            open_rows: format!(
                "SELECT procedure_id, region_id FROM {schema}.open_procedures \
                 WHERE region_id = ANY($1::bigint[]) OR procedure_id = ANY($2::uuid[])"
            ),
            delete_open: format!(
                "DELETE FROM {schema}.open_procedures WHERE procedure_id = ANY($1::uuid[])"
            ),
            insert_events: format!(
                "INSERT INTO {schema}.events (procedure_id, seq, global_seq, record) \
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bytea[])"
            ),
            insert_open: format!(
                "INSERT INTO {schema}.open_procedures (procedure_id, region_id) \
                 SELECT * FROM unnest($1::uuid[], $2::bigint[])"
            ),
            insert_region_audit: format!(
                "INSERT INTO {schema}.region_audit (region_id, recorded_at_ms, procedure_id) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[])"
            ),
            insert_peer_audit: format!(
                "INSERT INTO {schema}.peer_audit (peer_id, recorded_at_ms, procedure_id) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[])"
            ),
            update_head: format!(
                "UPDATE {schema}.head SET last_global_seq = $1, last_hash = $2 WHERE id"
            ),
            next_seq: format!(
                "SELECT seq FROM {schema}.events WHERE procedure_id = $1 ORDER BY seq DESC LIMIT 1"
            ),
            record_at_global_seq: format!(
                "SELECT record FROM {schema}.events WHERE global_seq = $1"
            ),
            procedure_events: format!(
                "SELECT seq, record FROM {schema}.events WHERE procedure_id = $1 AND seq >= $2 \
                 ORDER BY seq"
            ),
            events_from: format!(
                "SELECT global_seq, procedure_id, seq, record FROM {schema}.events \
                 WHERE global_seq >= $1 AND global_seq <= $2 ORDER BY global_seq LIMIT $3"
            ),
            last_event: format!(
                "SELECT global_seq, procedure_id, seq, record FROM {schema}.events \
                 ORDER BY global_seq DESC LIMIT 1"
            ),
            open_procedures: format!(
                "SELECT procedure_id, region_id FROM {schema}.open_procedures ORDER BY procedure_id"
            ),
            open_procedure_of_region: format!(
                "SELECT procedure_id FROM {schema}.open_procedures WHERE region_id = $1"
            ),
            region_audit: format!(
                "SELECT region_id, recorded_at_ms, procedure_id FROM {schema}.region_audit \
                 WHERE region_id BETWEEN $1 AND $2 AND recorded_at_ms BETWEEN $3 AND $4"
            ),
            peer_audit: format!(
                "SELECT peer_id, recorded_at_ms, procedure_id FROM {schema}.peer_audit \
                 WHERE peer_id BETWEEN $1 AND $2 AND recorded_at_ms BETWEEN $3 AND $4"
            ),
            procedures: format!(
                "SELECT DISTINCT procedure_id FROM {schema}.events ORDER BY procedure_id"
            ),
        }
    }
}

impl PgStore {
    /// Opens the log at `config` for writing: connects, creates the schema and tables if
    /// missing ([`crate::pg::schema`]), checks the log's end against its head row (a log
    /// that lost acknowledged history is refused: [`LogError::StoreLostHistory`]), and
    /// starts the committer.
    ///
    /// `writer_epoch`: `Some(e)` for an engine elected at epoch `e` (every append checks the
    /// leader row's epoch in its transaction: [`LogError::Fenced`] once another engine took
    /// over); `None` for a single writer without election, which takes the store's writer
    /// lock ([`LogError::StoreInUse`] while another holds it, after waiting up to
    /// [`WRITER_LOCK_WAIT`]) and is fenced once any engine holds the leader row.
    ///
    /// Blocks the calling thread until open (also inside an async runtime: prefer
    /// [`PgStore::open_async`] there).
    pub fn open(
        config: PgConfig,
        options: LogOptions,
        writer_epoch: Option<u64>,
    ) -> Result<PgStore, LogError> {
        block_on(Self::open_async(config, options, writer_epoch))
    }

    /// [`PgStore::open`] for an async caller.
    pub async fn open_async(
        config: PgConfig,
        options: LogOptions,
        writer_epoch: Option<u64>,
    ) -> Result<PgStore, LogError> {
        Self::open_with(config, Some((options, writer_epoch))).await
    }

    /// Opens the log at `config` for reading only: creates nothing (a database without the
    /// log's tables is [`LogError::NoLogAtStore`]), takes no lock, runs its sessions with
    /// `default_transaction_read_only`; what the open found wrong with the log's end is
    /// [`LogStore::damage`]. Every append is [`LogError::ReadOnly`].
    pub fn open_read_only(config: PgConfig) -> Result<PgStore, LogError> {
        block_on(Self::open_with(config, None))
    }

    /// [`PgStore::open_read_only`] for an async caller.
    pub async fn open_read_only_async(config: PgConfig) -> Result<PgStore, LogError> {
        Self::open_with(config, None).await
    }

    async fn open_with(
        config: PgConfig,
        writer: Option<(LogOptions, Option<u64>)>,
    ) -> Result<PgStore, LogError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("regmig-pg")
            .enable_all()
            .build()
            .map_err(|error| LogError::Database {
                store: config.redacted(),
                action: "start the store's runtime",
                source: Box::new(error),
            })?;
        let runtime = OwnedRuntime(Some(runtime));
        let handle = runtime.handle().clone();
        let opened = handle
            .spawn(open_on_runtime(config, writer))
            .await
            .map_err(|_| LogError::ShutDown)??;
        let (shared, committer, damage) = opened;
        Ok(PgStore {
            inner: Arc::new(Inner {
                shared,
                committer,
                damage,
                runtime,
            }),
        })
    }

    /// The PostgreSQL store under `log`, if PostgreSQL carries it.
    pub fn of(log: &EventLog) -> Option<&PgStore> {
        log.store().as_any().downcast_ref::<PgStore>()
    }

    /// The store's configuration (its `Display` shows no password).
    pub fn config(&self) -> &PgConfig {
        &self.inner.shared.config
    }

    /// The store's connection pool, for components that keep their tables beside the log
    /// (the PostgreSQL metadata store). Use it from [`PgStore::spawn`]: its connections
    /// live on the store's runtime.
    pub fn pool(&self) -> &Pool {
        &self.inner.shared.pool
    }

    /// Runs `future` on the store's runtime (where its connections live) and waits for it:
    /// works from any async runtime and from a blocking caller through [`block_on`].
    pub async fn spawn<T, F>(&self, future: F) -> Result<T, LogError>
    where
        F: Future<Output = Result<T, LogError>> + Send + 'static,
        T: Send + 'static,
    {
        self.inner
            .runtime
            .handle()
            .spawn(future)
            .await
            .map_err(|_| LogError::ShutDown)?
    }

    fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.inner.shared)
    }
}

type Opened = (Arc<Shared>, Option<mpsc::Sender<Pending>>, Option<LogError>);

async fn open_on_runtime(
    config: PgConfig,
    writer: Option<(LogOptions, Option<u64>)>,
) -> Result<Opened, LogError> {
    let read_only = writer.is_none();
    let mut session_config = config.clone();
    if read_only {
        session_config = session_config.read_only_sessions();
    }
    let pool = pgconn::connect(&session_config)?;
    let location = config.redacted();
    let (options, writer_epoch) = writer.clone().unwrap_or((LogOptions::default(), None));
    let mut lock_session = None;
    {
        let mut client = pool
            .get()
            .await
            .map_err(|error| pgconn::pool_error(&config, "connect", error))?;
        if read_only {
            schema::check_log(&**client, &config).await?;
        } else {
            schema::ensure_log(&mut client, &config).await?;
        }
    }
    if !read_only && writer_epoch.is_none() {
        lock_session = Some(take_writer_lock(&config).await?);
    }
    let shared = Arc::new(Shared {
        sql: Sql::new(config.schema()),
        location,
        pool,
        read_only,
        writer_epoch,
        durability: options.durability,
        group_events_max: options.group_commit_max_events.max(1),
        config,
    });
    let tail = check_tail(&shared).await;
    let damage = match tail {
        Ok(()) => None,
        Err(problem) if problem.is_damage() => {
            if !read_only {
                return Err(problem);
            }
            // The reader's caller reports it (LogStore::damage); a debug line for the trace.
            tracing::debug!(store = %shared.location, %problem, "the log's end disagrees with its head row");
            Some(problem)
        }
        Err(fault) => return Err(fault),
    };
    let committer = if read_only {
        None
    } else {
        let (sender, receiver) = mpsc::channel(shared.group_events_max);
        tokio::spawn(run_committer(Arc::clone(&shared), receiver, lock_session));
        Some(sender)
    };
    Ok((shared, committer, damage))
}

/// Takes the writer lock of the store on a session of its own, waiting up to
/// [`WRITER_LOCK_WAIT`] for a writer that is going away.
async fn take_writer_lock(config: &PgConfig) -> Result<tokio_postgres::Client, LogError> {
    let session = pgconn::connect_session(config).await?;
    let (key1, key2) = advisory_key(LockKind::Writer, config.schema());
    let deadline = tokio::time::Instant::now() + WRITER_LOCK_WAIT;
    loop {
        let taken: bool = session
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&key1, &key2])
            .await
            .map_err(|error| database(config, "take the writer lock", error))?
            .get(0);
        if taken {
            return Ok(session);
        }
        if tokio::time::Instant::now() >= deadline {
            let holder = session
                .query_opt(
                    "SELECT pid, coalesce(application_name, ''), coalesce(client_addr::text, 'local') \
                     FROM pg_locks JOIN pg_stat_activity USING (pid) \
                     WHERE locktype = 'advisory' AND classid::bigint = $1 AND objid::bigint = $2 \
                     AND objsubid = 2 AND granted",
                    // pg_locks shows the keys as oids: their 32 bits, unsigned.
                    &[&i64::from(key1 as u32), &i64::from(key2 as u32)],
                )
                .await
                .ok()
                .flatten()
                .map(|row| {
                    format!(
                        "server process {} (application `{}`, client {})",
                        row.get::<_, i32>(0),
                        row.get::<_, String>(1),
                        row.get::<_, String>(2)
                    )
                })
                .unwrap_or_else(|| "another session".to_string());
            return Err(LogError::StoreInUse {
                store: config.redacted(),
                reason: format!(
                    "{holder} holds its writer lock (schema `{}`); two engines without leader \
                     election may not write one history: stop the other, or configure election",
                    config.schema()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Compares the log's last event with the head row: the PostgreSQL analogue of sled's mark.
async fn check_tail(shared: &Shared) -> Result<(), LogError> {
    let client = shared.client("read the head row").await?;
    let head = client
        .query_one(&shared.sql.head, &[])
        .await
        .map_err(|error| shared.database("read the head row", error))?;
    let head_global_seq = head.get::<_, i64>(0) as u64;
    let head_hash: Vec<u8> = head.get(1);
    let last = client
        .query_opt(&shared.sql.last_event, &[])
        .await
        .map_err(|error| shared.database("read the last event", error))?;
    let (found_global_seq, found_hash) = match &last {
        Some(row) => (
            row.get::<_, i64>(0) as u64,
            chain_hash(row.get::<_, &[u8]>(3)),
        ),
        None => (0, CHAIN_START),
    };
    check_recorded_head(
        &shared.location,
        head_global_seq,
        &head_hash,
        found_global_seq,
        found_hash,
    )
}

impl Shared {
    fn database(&self, action: &'static str, error: tokio_postgres::Error) -> LogError {
        database(&self.config, action, error)
    }

    async fn client(&self, action: &'static str) -> Result<deadpool_postgres::Object, LogError> {
        self.pool
            .get()
            .await
            .map_err(|error| pgconn::pool_error(&self.config, action, error))
    }

    /// A connection; `Err((error, true))` when none could be made because the server cannot
    /// be reached now (worth trying again, see "Lost connections").
    async fn client_or_lost(
        &self,
        action: &'static str,
    ) -> Result<deadpool_postgres::Object, (LogError, bool)> {
        self.pool.get().await.map_err(|error| {
            let lost = matches!(
                error,
                deadpool_postgres::PoolError::Backend(_)
                    | deadpool_postgres::PoolError::Timeout(
                        deadpool_postgres::TimeoutType::Create
                            | deadpool_postgres::TimeoutType::Recycle
                    )
            );
            (pgconn::pool_error(&self.config, action, error), lost)
        })
    }

    /// Runs a read, trying again on a new connection while the connection is lost, for at
    /// most [`RECONNECT_WAIT`].
    async fn query(
        &self,
        action: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, LogError> {
        let mut retry = Reconnect::new();
        loop {
            let error = match self.client_or_lost(action).await {
                Ok(client) => {
                    let read = async {
                        let statement = client.prepare_cached(sql).await?;
                        client.query(&statement, params).await
                    }
                    .await;
                    match read {
                        Ok(rows) => return Ok(rows),
                        Err(error) if connection_lost(&error) => self.database(action, error),
                        Err(error) => return Err(self.database(action, error)),
                    }
                }
                Err((error, true)) => error,
                Err((error, false)) => return Err(error),
            };
            if !retry.pause(&self.location, action, &error).await {
                return Err(error);
            }
        }
    }
}

/// The 64 bits of a `u64` as PostgreSQL's `bigint` stores them.
fn to_sql_u64(value: u64) -> i64 {
    value as i64
}

fn from_sql_u64(value: i64) -> u64 {
    value as u64
}

/// A `u64` range as `bigint` ranges that cover it, in `u64` order (two when it crosses 2^63).
fn bigint_ranges(range: RangeInclusive<u64>) -> Vec<(i64, i64)> {
    let (low, high) = (*range.start(), *range.end());
    if low > high {
        return Vec::new();
    }
    let boundary = i64::MAX as u64;
    if high <= boundary || low > boundary {
        vec![(to_sql_u64(low), to_sql_u64(high))]
    } else {
        vec![(to_sql_u64(low), i64::MAX), (i64::MIN, to_sql_u64(high))]
    }
}

/// Whether `error` means the connection is gone (the server ended the session, shut down,
/// or is not accepting connections yet; the socket failed), not that a statement failed.
fn connection_lost(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code),
        None => {
            let mut cause = std::error::Error::source(error);
            while let Some(next) = cause {
                if next.is::<std::io::Error>() {
                    return true;
                }
                cause = next.source();
            }
            false
        }
    }
}

/// The pauses between tries after a lost connection, and their bound: see "Lost
/// connections".
struct Reconnect {
    deadline: tokio::time::Instant,
    pause: Duration,
}

impl Reconnect {
    fn new() -> Reconnect {
        Reconnect {
            deadline: tokio::time::Instant::now() + RECONNECT_WAIT,
            pause: RECONNECT_PAUSE_FIRST,
        }
    }

    /// Waits before the next try; false when the next try would start past the deadline.
    async fn pause(&mut self, store: &str, action: &str, error: &LogError) -> bool {
        if tokio::time::Instant::now() + self.pause > self.deadline {
            return false;
        }
        tracing::warn!(%store, action, %error, pause_ms = self.pause.as_millis() as u64, "lost the connection; trying again");
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(RECONNECT_PAUSE_MAX);
        true
    }
}

// ---------------------------------------------------------------------------------------
// The committer.

async fn run_committer(
    shared: Arc<Shared>,
    mut receiver: mpsc::Receiver<Pending>,
    mut lock_session: Option<tokio_postgres::Client>,
) {
    let mut connection: Option<deadpool_postgres::Object> = None;
    while let Some(first) = receiver.recv().await {
        let mut group = vec![first];
        let mut events = group_events(&group);
        while events < shared.group_events_max {
            match receiver.try_recv() {
                Ok(next) => {
                    events += group_events(std::slice::from_ref(&next));
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let (requests, replies): (Vec<AppendRequest>, Vec<oneshot::Sender<AppendResult>>) = group
            .into_iter()
            .map(|Pending::Append { request, reply }| (request, reply))
            .unzip();
        let outcomes = commit(&shared, &mut connection, &mut lock_session, requests).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that gave up is not an error: its append may be written.
            let _ = reply.send(outcome);
        }
    }
}

fn group_events(group: &[Pending]) -> usize {
    group
        .iter()
        .map(|Pending::Append { request, .. }| request.events.len().max(1))
        .sum()
}

/// For a writer without election: takes the writer lock again if its session ended (a
/// server restart ends every session, and releases the lock with it).
async fn relock_if_lost(
    shared: &Shared,
    lock_session: &mut Option<tokio_postgres::Client>,
) -> Result<(), LogError> {
    if shared.writer_epoch.is_some() {
        return Ok(());
    }
    if lock_session
        .as_ref()
        .is_some_and(|session| !session.is_closed())
    {
        return Ok(());
    }
    *lock_session = None;
    let session = take_writer_lock(&shared.config).await?;
    tracing::info!(store = %shared.location, "took the writer lock again on a new session");
    *lock_session = Some(session);
    Ok(())
}

/// A copy of an error that is answered to every request of a group (the driver's errors do
/// not clone: the copy keeps the message).
fn clone_error(error: &LogError) -> LogError {
    match error {
        LogError::Fenced {
            store,
            epoch,
            current_epoch,
        } => LogError::Fenced {
            store: store.clone(),
            epoch: *epoch,
            current_epoch: *current_epoch,
        },
        LogError::StoreInUse { store, reason } => LogError::StoreInUse {
            store: store.clone(),
            reason: reason.clone(),
        },
        LogError::StoreConfig { store, reason } => LogError::StoreConfig {
            store: store.clone(),
            reason: reason.clone(),
        },
        LogError::Database {
            store,
            action,
            source,
        } => LogError::Database {
            store: store.clone(),
            action,
            source: source.to_string().into(),
        },
        LogError::ShutDown => LogError::ShutDown,
        other => LogError::Storage {
            backend: "postgres",
            source: other.to_string().into(),
        },
    }
}

/// Writes a group: tried again while the connection is lost (see "Lost connections"), and
/// one request at a time when the database's own constraints refused it (a writer that
/// bypassed the head lock).
async fn commit(
    shared: &Shared,
    connection: &mut Option<deadpool_postgres::Object>,
    lock_session: &mut Option<tokio_postgres::Client>,
    requests: Vec<AppendRequest>,
) -> Vec<AppendResult> {
    let mut retry = Reconnect::new();
    loop {
        let (outcomes, error) = match relock_if_lost(shared, lock_session).await {
            Ok(()) => match commit_once(shared, connection, &requests).await {
                GroupOutcome::Done(outcomes) => return outcomes,
                GroupOutcome::Lost { outcomes, error } => (outcomes, error),
                GroupOutcome::UniqueViolation { .. } => {
                    unreachable!("commit_once answers unique violations")
                }
            },
            // The writer lock's session could not be made again: the server is away.
            Err(error @ LogError::Database { .. }) => (
                requests.iter().map(|_| Err(clone_error(&error))).collect(),
                error,
            ),
            Err(error) => return requests.iter().map(|_| Err(clone_error(&error))).collect(),
        };
        if !retry
            .pause(&shared.location, "write a group of appends", &error)
            .await
        {
            return outcomes;
        }
    }
}

/// One try of a group: [`GroupOutcome::Lost`] when it may be tried again as is.
async fn commit_once(
    shared: &Shared,
    connection: &mut Option<deadpool_postgres::Object>,
    requests: &[AppendRequest],
) -> GroupOutcome {
    let many = requests.len() > 1;
    match commit_group(shared, connection, requests).await {
        GroupOutcome::UniqueViolation { .. } if many => {
            let mut outcomes = Vec::with_capacity(requests.len());
            for request in requests {
                let one = std::slice::from_ref(request);
                outcomes.push(match commit_group(shared, connection, one).await {
                    GroupOutcome::Done(mut outcome) => outcome.pop().expect("one outcome"),
                    // Some of the group may be written one by one already: not tried again.
                    GroupOutcome::Lost { mut outcomes, .. } => outcomes.pop().expect("one outcome"),
                    GroupOutcome::UniqueViolation { constraint, error } => {
                        answer_violation(shared, request, constraint.as_deref(), error).await
                    }
                });
            }
            GroupOutcome::Done(outcomes)
        }
        GroupOutcome::UniqueViolation { constraint, error } => GroupOutcome::Done(vec![
            answer_violation(shared, &requests[0], constraint.as_deref(), error).await,
        ]),
        other => other,
    }
}

enum GroupOutcome {
    Done(Vec<AppendResult>),
    /// A unique constraint refused the group; nothing was written.
    UniqueViolation {
        constraint: Option<String>,
        error: LogError,
    },
    /// The connection was lost and nothing of the group was written: it may be tried
    /// again. `outcomes` are the answers if it is not.
    Lost {
        outcomes: Vec<AppendResult>,
        error: LogError,
    },
}

/// What a unique violation of one request means, as the conflict the sled store answers.
async fn answer_violation(
    shared: &Shared,
    request: &AppendRequest,
    constraint: Option<&str>,
    error: LogError,
) -> AppendResult {
    match constraint {
        Some("events_pkey") => {
            let actual_next_seq = read_next_seq(shared, request.procedure_id).await?;
            Ok(Err(AppendConflict::Sequence {
                procedure_id: request.procedure_id,
                expected_next_seq: request.expected_next_seq,
                actual_next_seq,
            }))
        }
        Some("open_procedures_region_key") => {
            let region_id = request.opens.as_ref().map_or(0, |opens| opens.region_id);
            match read_open_procedure_of_region(shared, region_id).await? {
                Some(open_procedure_id) => Ok(Err(AppendConflict::RegionBusy {
                    region_id,
                    open_procedure_id,
                })),
                None => Err(error),
            }
        }
        _ => Err(error),
    }
}

/// One transaction for `requests`: see the module documentation.
async fn commit_group(
    shared: &Shared,
    connection: &mut Option<deadpool_postgres::Object>,
    requests: &[AppendRequest],
) -> GroupOutcome {
    let mut outcomes: Vec<Option<AppendResult>> = requests
        .iter()
        .map(|request| validate(request).err().map(Err))
        .collect();
    if outcomes.iter().all(Option::is_some) {
        return GroupOutcome::Done(outcomes.into_iter().map(Option::unwrap).collect());
    }
    let client = match connection.take() {
        Some(client) if !client.is_closed() => client,
        _ => match shared.client_or_lost("connect for an append").await {
            Ok(client) => client,
            Err((error, true)) => {
                return GroupOutcome::Lost {
                    outcomes: fail_pending(outcomes, &error),
                    error,
                }
            }
            Err((error, false)) => return GroupOutcome::Done(fail_pending(outcomes, &error)),
        },
    };
    let mut client = client;
    let written = write_group(shared, &mut client, requests, &mut outcomes).await;
    let closed = client.is_closed();
    if !closed {
        *connection = Some(client);
    }
    match written {
        Ok(()) => GroupOutcome::Done(outcomes.into_iter().map(|o| o.expect("answered")).collect()),
        Err(WriteError::Unique { constraint, error }) => {
            GroupOutcome::UniqueViolation { constraint, error }
        }
        Err(WriteError::Lost(error)) => GroupOutcome::Lost {
            outcomes: fail_pending(outcomes, &error),
            error,
        },
        Err(WriteError::Other(error)) if closed => GroupOutcome::Lost {
            outcomes: fail_pending(outcomes, &error),
            error,
        },
        Err(WriteError::Other(error)) => GroupOutcome::Done(fail_pending(outcomes, &error)),
        Err(WriteError::CommitUnknown { error, sealed }) => match committed(shared, sealed).await {
            Some(true) => {
                tracing::info!(store = %shared.location, "a group whose commit was not answered is in the log: answered as written");
                GroupOutcome::Done(outcomes.into_iter().map(|o| o.expect("answered")).collect())
            }
            Some(false) => GroupOutcome::Lost {
                outcomes: fail_pending(outcomes, &error),
                error,
            },
            None => GroupOutcome::Done(fail_pending(outcomes, &error)),
        },
    }
}

/// Whether a group whose `COMMIT` was not answered was committed: whether the event at the
/// global seq of its last event has the chain hash the group sealed it with (the record
/// holds the hash of the one before it, so all of the group's events are the group's; a
/// group is one transaction: all of it or nothing). Where the event is or what it holds
/// alone proves nothing: once the group was rolled back, another writer may take the same
/// global seq, even for the same procedure and seq (a new leader resuming it). `None` when
/// that could not be read within [`RECONNECT_WAIT`].
async fn committed(shared: &Shared, sealed: SealedEnd) -> Option<bool> {
    let rows = shared
        .query(
            "read whether a group whose commit was not answered was written",
            &shared.sql.record_at_global_seq,
            &[&to_sql_u64(sealed.global_seq)],
        )
        .await
        .ok()?;
    Some(
        rows.first()
            .is_some_and(|row| chain_hash(row.get::<_, &[u8]>(0)) == sealed.hash),
    )
}

/// A group's last event as it sealed it: its global seq and its chain hash.
#[derive(Debug, Clone, Copy)]
struct SealedEnd {
    global_seq: u64,
    hash: ChainHash,
}

/// Every request not yet answered (and every accepted one: nothing was written) gets
/// `error`; the conflicts keep their answer, which the failed transaction read.
fn fail_pending(outcomes: Vec<Option<AppendResult>>, error: &LogError) -> Vec<AppendResult> {
    outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Some(Ok(Err(conflict))) => Ok(Err(conflict)),
            Some(Err(invalid @ LogError::InvalidAppend { .. })) => Err(invalid),
            _ => Err(clone_error(error)),
        })
        .collect()
}

enum WriteError {
    Unique {
        constraint: Option<String>,
        error: LogError,
    },
    /// The connection was lost before the `COMMIT` was sent: nothing was written.
    Lost(LogError),
    /// The connection was lost after the `COMMIT` was sent: the group may be written.
    CommitUnknown {
        error: LogError,
        sealed: SealedEnd,
    },
    Other(LogError),
}

/// Rows of one group, column by column (one `unnest` insert per table).
#[derive(Default)]
struct Rows {
    event_procedures: Vec<Uuid>,
    event_seqs: Vec<i64>,
    event_global_seqs: Vec<i64>,
    event_records: Vec<Vec<u8>>,
    open_procedures: Vec<Uuid>,
    open_regions: Vec<i64>,
    closed: Vec<Uuid>,
    region_audit: (Vec<i64>, Vec<i64>, Vec<Uuid>),
    peer_audit: (Vec<i64>, Vec<i64>, Vec<Uuid>),
}

async fn write_group(
    shared: &Shared,
    client: &mut deadpool_postgres::Object,
    requests: &[AppendRequest],
    outcomes: &mut [Option<AppendResult>],
) -> Result<(), WriteError> {
    let failed = |action: &'static str| {
        move |error: tokio_postgres::Error| {
            let constraint = (error.code() == Some(&SqlState::UNIQUE_VIOLATION)).then(|| {
                error
                    .as_db_error()
                    .and_then(|db| db.constraint().map(str::to_string))
            });
            let lost = connection_lost(&error);
            let error = database(&shared.config, action, error);
            match constraint {
                Some(constraint) => WriteError::Unique { constraint, error },
                None if lost => WriteError::Lost(error),
                None => WriteError::Other(error),
            }
        }
    };
    let sql = &shared.sql;
    let transaction = client
        .transaction()
        .await
        .map_err(failed("begin a group of appends"))?;
    if shared.durability == Durability::UnsyncedForTestsOnly {
        transaction
            .batch_execute("SET LOCAL synchronous_commit TO OFF")
            .await
            .map_err(failed("begin a group of appends"))?;
    }
    let (leader, head) = tokio::join!(
        async {
            let statement = transaction.prepare_cached(&sql.leader).await?;
            transaction.query_one(&statement, &[]).await
        },
        async {
            let statement = transaction.prepare_cached(&sql.head_for_update).await?;
            transaction.query_one(&statement, &[]).await
        },
    );
    let (leader, head) = match (leader, head) {
        (Ok(leader), Ok(head)) => (leader, head),
        (leader, head) => {
            return Err(failed("lock the leader and head rows")(cause_of([
                leader.err(),
                head.err(),
            ])))
        }
    };
    let current_epoch = from_sql_u64(leader.get::<_, i64>(0));
    let holder: Option<String> = leader.get(1);
    let fenced =
        crate::pg::lease::fenced_epoch(shared.writer_epoch, current_epoch, holder.as_deref());
    if let Some(epoch) = fenced {
        return Err(WriteError::Other(LogError::Fenced {
            store: shared.location.clone(),
            epoch,
            current_epoch,
        }));
    }
    let mut last_global_seq = from_sql_u64(head.get::<_, i64>(0));
    let mut last_hash: ChainHash = head.get::<_, &[u8]>(1).try_into().map_err(|_| {
        WriteError::Other(LogError::StoreLostHistory {
            store: shared.location.clone(),
            head_global_seq: last_global_seq,
            found_global_seq: last_global_seq,
            reason: "and a chain hash that is not 32 bytes long".to_string(),
        })
    })?;

    // What the accepted requests must be checked against, read in this transaction.
    let pending: Vec<&AppendRequest> = requests
        .iter()
        .zip(outcomes.iter())
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(request, _)| request)
        .collect();
    let procedure_ids: Vec<Uuid> = pending
        .iter()
        .map(|request| request.procedure_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let opened_regions: Vec<i64> = pending
        .iter()
        .filter_map(|request| request.opens.as_ref())
        .map(|opens| to_sql_u64(opens.region_id))
        .collect();
    let closing: Vec<Uuid> = pending
        .iter()
        .filter(|request| request.closes)
        .map(|request| request.procedure_id)
        .collect();
    let (seq_rows, open_rows) = tokio::join!(
        async {
            let statement = transaction.prepare_cached(&sql.next_seqs).await?;
            transaction.query(&statement, &[&procedure_ids]).await
        },
        async {
            let statement = transaction.prepare_cached(&sql.open_rows).await?;
            transaction
                .query(&statement, &[&opened_regions, &closing])
                .await
        },
    );
    let (seq_rows, open_rows) = match (seq_rows, open_rows) {
        (Ok(seq_rows), Ok(open_rows)) => (seq_rows, open_rows),
        (seq_rows, open_rows) => {
            return Err(failed("read the procedures of a group")(cause_of([
                seq_rows.err(),
                open_rows.err(),
            ])))
        }
    };
    let mut next_seq_by_procedure: HashMap<Uuid, u64> = seq_rows
        .iter()
        .map(|row| {
            let last: Option<i64> = row.get(1);
            (
                row.get::<_, Uuid>(0),
                last.map_or(1, |seq| from_sql_u64(seq) + 1),
            )
        })
        .collect();
    let mut open_by_region: HashMap<u64, Uuid> = HashMap::new();
    let mut stored_open: HashMap<Uuid, u64> = HashMap::new();
    for row in &open_rows {
        let (procedure_id, region_id) = (row.get::<_, Uuid>(0), from_sql_u64(row.get(1)));
        open_by_region.insert(region_id, procedure_id);
        stored_open.insert(procedure_id, region_id);
    }

    let mut rows = Rows::default();
    let mut opened_in_group: HashMap<Uuid, u64> = HashMap::new();
    let mut accepted = 0usize;
    for (request, outcome) in requests.iter().zip(outcomes.iter_mut()) {
        if outcome.is_some() {
            continue;
        }
        let procedure_id = request.procedure_id;
        let next_seq = next_seq_by_procedure
            .get(&procedure_id)
            .copied()
            .unwrap_or(1);
        if request.expected_next_seq != next_seq {
            *outcome = Some(Ok(Err(AppendConflict::Sequence {
                procedure_id,
                expected_next_seq: request.expected_next_seq,
                actual_next_seq: next_seq,
            })));
            continue;
        }
        if let Some(opens) = &request.opens {
            if let Some(open_procedure_id) = open_by_region.get(&opens.region_id) {
                *outcome = Some(Ok(Err(AppendConflict::RegionBusy {
                    region_id: opens.region_id,
                    open_procedure_id: *open_procedure_id,
                })));
                continue;
            }
        }
        let first_global_seq = last_global_seq + 1;
        for (offset, event) in (0u64..).zip(&request.events) {
            let record = Record {
                format_version: FORMAT_VERSION,
                kind: event.kind,
                procedure_id,
                seq: next_seq + offset,
                global_seq: first_global_seq + offset,
                recorded_at_ms: event.recorded_at_ms,
                payload: event.payload.clone(),
                prev_hash: Some(last_hash),
            };
            let bytes = encode_record(&record);
            last_hash = chain_hash(&bytes);
            rows.event_procedures.push(procedure_id);
            rows.event_seqs.push(to_sql_u64(record.seq));
            rows.event_global_seqs.push(to_sql_u64(record.global_seq));
            rows.event_records.push(bytes);
        }
        let event_count = request.events.len() as u64;
        last_global_seq += event_count;
        if let Some(opens) = &request.opens {
            let recorded_at_ms = to_sql_u64(request.events[0].recorded_at_ms);
            rows.region_audit.0.push(to_sql_u64(opens.region_id));
            rows.region_audit.1.push(recorded_at_ms);
            rows.region_audit.2.push(procedure_id);
            let mut peers = opens.peers.clone();
            peers.sort_unstable();
            peers.dedup();
            for peer_id in peers {
                rows.peer_audit.0.push(to_sql_u64(peer_id));
                rows.peer_audit.1.push(recorded_at_ms);
                rows.peer_audit.2.push(procedure_id);
            }
            if !request.closes {
                open_by_region.insert(opens.region_id, procedure_id);
                opened_in_group.insert(procedure_id, opens.region_id);
            }
        }
        if request.closes {
            if let Some(region_id) = opened_in_group.remove(&procedure_id) {
                open_by_region.remove(&region_id);
            } else if let Some(region_id) = stored_open.remove(&procedure_id) {
                if open_by_region.get(&region_id) == Some(&procedure_id) {
                    open_by_region.remove(&region_id);
                }
                rows.closed.push(procedure_id);
            }
        }
        next_seq_by_procedure.insert(procedure_id, next_seq + event_count);
        accepted += 1;
        *outcome = Some(Ok(Ok(AppendReceipt {
            first_seq: next_seq,
            last_seq: next_seq + event_count - 1,
            first_global_seq,
        })));
    }
    if accepted == 0 {
        // Only conflicts: nothing to write; the rollback releases the row locks.
        transaction
            .rollback()
            .await
            .map_err(failed("end a group of conflicting appends"))?;
        return Ok(());
    }
    for (procedure_id, region_id) in opened_in_group {
        rows.open_procedures.push(procedure_id);
        rows.open_regions.push(to_sql_u64(region_id));
    }
    let head_hash = last_hash.to_vec();
    let head_global_seq = to_sql_u64(last_global_seq);
    // Pipelined: sent in this order, answered in one round trip or so. The deletes go first
    // so that a region closed and reopened in one group is free when it is reopened.
    let delete = async {
        if rows.closed.is_empty() {
            return Ok(0);
        }
        let statement = transaction.prepare_cached(&sql.delete_open).await?;
        transaction.execute(&statement, &[&rows.closed]).await
    };
    let events = async {
        let statement = transaction.prepare_cached(&sql.insert_events).await?;
        transaction
            .execute(
                &statement,
                &[
                    &rows.event_procedures,
                    &rows.event_seqs,
                    &rows.event_global_seqs,
                    &rows.event_records,
                ],
            )
            .await
    };
    let open = async {
        if rows.open_procedures.is_empty() {
            return Ok(0);
        }
        let statement = transaction.prepare_cached(&sql.insert_open).await?;
        transaction
            .execute(&statement, &[&rows.open_procedures, &rows.open_regions])
            .await
    };
    let region_audit = async {
        if rows.region_audit.0.is_empty() {
            return Ok(0);
        }
        let statement = transaction.prepare_cached(&sql.insert_region_audit).await?;
        let (regions, times, procedures) = &rows.region_audit;
        transaction
            .execute(&statement, &[regions, times, procedures])
            .await
    };
    let peer_audit = async {
        if rows.peer_audit.0.is_empty() {
            return Ok(0);
        }
        let statement = transaction.prepare_cached(&sql.insert_peer_audit).await?;
        let (peers, times, procedures) = &rows.peer_audit;
        transaction
            .execute(&statement, &[peers, times, procedures])
            .await
    };
    let head = async {
        let statement = transaction.prepare_cached(&sql.update_head).await?;
        transaction
            .execute(&statement, &[&head_global_seq, &head_hash])
            .await
    };
    let written = tokio::join!(delete, events, open, region_audit, peer_audit, head);
    let errors = [
        written.0.err(),
        written.1.err(),
        written.2.err(),
        written.3.err(),
        written.4.err(),
        written.5.err(),
    ];
    if errors.iter().any(Option::is_some) {
        return Err(failed("write a group of appends")(cause_of(errors)));
    }
    let sealed = SealedEnd {
        global_seq: last_global_seq,
        hash: last_hash,
    };
    if let Err(error) = transaction.commit().await {
        let lost = connection_lost(&error);
        let error = database(
            &shared.config,
            "commit a group of appends (whether it was written is unknown: read the procedures' next seqs)",
            error,
        );
        return Err(if lost {
            WriteError::CommitUnknown { error, sealed }
        } else {
            WriteError::Other(error)
        });
    }
    Ok(())
}

/// The error to report of statements pipelined in one transaction: the first that is not
/// "current transaction is aborted" (which only echoes the failure of an earlier one).
fn cause_of<const N: usize>(errors: [Option<tokio_postgres::Error>; N]) -> tokio_postgres::Error {
    let mut errors: Vec<tokio_postgres::Error> = errors.into_iter().flatten().collect();
    let cause = errors
        .iter()
        .position(|error| error.code() != Some(&SqlState::IN_FAILED_SQL_TRANSACTION))
        .unwrap_or(0);
    errors.swap_remove(cause)
}

// ---------------------------------------------------------------------------------------
// Reads.

async fn read_next_seq(shared: &Shared, procedure_id: Uuid) -> Result<u64, LogError> {
    let rows = shared
        .query(
            "read a procedure's next seq",
            &shared.sql.next_seq,
            &[&procedure_id],
        )
        .await?;
    Ok(rows
        .first()
        .map_or(1, |row| from_sql_u64(row.get::<_, i64>(0)) + 1))
}

async fn read_open_procedure_of_region(
    shared: &Shared,
    region_id: u64,
) -> Result<Option<Uuid>, LogError> {
    let rows = shared
        .query(
            "read the open procedure of a region",
            &shared.sql.open_procedure_of_region,
            &[&to_sql_u64(region_id)],
        )
        .await?;
    Ok(rows.first().map(|row| row.get(0)))
}

#[async_trait]
impl LogStore for PgStore {
    fn location(&self) -> String {
        self.inner.shared.location.clone()
    }

    fn is_read_only(&self) -> bool {
        self.inner.shared.read_only
    }

    fn damage(&self) -> Option<&LogError> {
        self.inner.damage.as_ref()
    }

    fn writer_epoch(&self) -> Option<u64> {
        self.inner.shared.writer_epoch
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn append(&self, request: AppendRequest) -> AppendResult {
        let Some(committer) = &self.inner.committer else {
            return Err(LogError::ReadOnly {
                dir: PathBuf::from(self.location()),
            });
        };
        let (reply, answer) = oneshot::channel();
        committer
            .send(Pending::Append { request, reply })
            .await
            .map_err(|_| LogError::ShutDown)?;
        answer.await.map_err(|_| LogError::ShutDown)?
    }

    fn append_blocking(&self, request: AppendRequest) -> AppendResult {
        block_on(self.append(request))
    }

    /// Durable appends are durable when they return: nothing to do. Unsynced ones are made
    /// durable by one synchronous commit, which flushes the write-ahead log up to it.
    async fn sync(&self) -> Result<(), LogError> {
        if self.inner.shared.read_only || self.inner.shared.durability == Durability::Durable {
            return Ok(());
        }
        let shared = self.shared();
        self.spawn(async move {
            let client = shared.client("sync").await?;
            client
                .batch_execute(
                    "BEGIN; SET LOCAL synchronous_commit TO ON; SELECT txid_current(); COMMIT",
                )
                .await
                .map_err(|error| shared.database("sync", error))
        })
        .await
    }

    fn sync_blocking(&self) -> Result<(), LogError> {
        block_on(self.sync())
    }

    async fn next_seq(&self, procedure_id: Uuid) -> Result<u64, LogError> {
        let shared = self.shared();
        self.spawn(async move { read_next_seq(&shared, procedure_id).await })
            .await
    }

    async fn procedure_events(
        &self,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let shared = self.shared();
        self.spawn(async move {
            let rows = shared
                .query(
                    "read a procedure",
                    &shared.sql.procedure_events,
                    &[&procedure_id, &to_sql_u64(from_seq.max(1))],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|row| StoredEvent {
                    procedure_id,
                    seq: from_sql_u64(row.get(0)),
                    bytes: row.get(1),
                })
                .collect())
        })
        .await
    }

    async fn events_from(
        &self,
        from_global_seq: u64,
        limit: usize,
    ) -> Result<Vec<ListedEvent>, LogError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let shared = self.shared();
        self.spawn(async move {
            let from_global_seq = from_global_seq.max(1);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = shared
                .query(
                    "read the global order",
                    &shared.sql.events_from,
                    &[&to_sql_u64(from_global_seq), &i64::MAX, &limit],
                )
                .await?;
            let mut listed = Vec::with_capacity(rows.len());
            for (expected, row) in (from_global_seq..).zip(rows) {
                let global_seq = from_sql_u64(row.get(0));
                let procedure_id: Uuid = row.get(1);
                let seq = from_sql_u64(row.get(2));
                if global_seq != expected {
                    return Err(LogError::GlobalSequenceGap {
                        global_seq: expected,
                        key: hex(&event_key(procedure_id, seq)),
                        found_global_seq: global_seq,
                    });
                }
                listed.push(ListedEvent {
                    global_seq,
                    event: StoredEvent {
                        procedure_id,
                        seq,
                        bytes: row.get(3),
                    },
                });
            }
            Ok(listed)
        })
        .await
    }

    async fn open_procedures(&self) -> Result<Vec<(Uuid, u64)>, LogError> {
        let shared = self.shared();
        self.spawn(async move {
            let rows = shared
                .query("read the open procedures", &shared.sql.open_procedures, &[])
                .await?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get(0), from_sql_u64(row.get(1))))
                .collect())
        })
        .await
    }

    async fn open_procedure_of_region(&self, region_id: u64) -> Result<Option<Uuid>, LogError> {
        let shared = self.shared();
        self.spawn(async move { read_open_procedure_of_region(&shared, region_id).await })
            .await
    }

    async fn audit_entries(
        &self,
        index: AuditIndex,
        owners: RangeInclusive<u64>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<AuditEntry>, LogError> {
        let shared = self.shared();
        self.spawn(async move {
            let sql = match index {
                AuditIndex::Region => &shared.sql.region_audit,
                AuditIndex::Peer => &shared.sql.peer_audit,
            };
            let mut entries = Vec::new();
            for (owner_low, owner_high) in bigint_ranges(owners) {
                for (since, until) in bigint_ranges(since_ms..=until_ms) {
                    let rows = shared
                        .query(
                            "read an audit index",
                            sql,
                            &[&owner_low, &owner_high, &since, &until],
                        )
                        .await?;
                    entries.extend(rows.into_iter().map(|row| AuditEntry {
                        owner_id: from_sql_u64(row.get(0)),
                        recorded_at_ms: from_sql_u64(row.get(1)),
                        procedure_id: row.get(2),
                    }));
                }
            }
            // By owner, then time, then procedure, in u64 order.
            entries.sort_unstable();
            Ok(entries)
        })
        .await
    }

    async fn procedures(&self) -> Result<Vec<Uuid>, LogError> {
        let shared = self.shared();
        self.spawn(async move {
            let rows = shared
                .query("list the procedures", &shared.sql.procedures, &[])
                .await?;
            Ok(rows.into_iter().map(|row| row.get(0)).collect())
        })
        .await
    }

    async fn recorded_head(&self) -> Result<Option<(u64, ChainHash)>, LogError> {
        let shared = self.shared();
        self.spawn(async move {
            let rows = shared
                .query("read the head row", &shared.sql.head, &[])
                .await?;
            let Some(row) = rows.first() else {
                return Err(LogError::NoLogAtStore {
                    store: shared.location.clone(),
                    reason: "the head row is missing".to_string(),
                });
            };
            let global_seq = from_sql_u64(row.get(0));
            let hash: ChainHash =
                row.get::<_, &[u8]>(1)
                    .try_into()
                    .map_err(|_| LogError::StoreLostHistory {
                        store: shared.location.clone(),
                        head_global_seq: global_seq,
                        found_global_seq: global_seq,
                        reason: "and a chain hash that is not 32 bytes long".to_string(),
                    })?;
            Ok(Some((global_seq, hash)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{NewEvent, OpenProcedure};

    #[test]
    fn bigint_ranges_cover_a_u64_range_in_order() {
        assert_eq!(bigint_ranges(3..=9), vec![(3, 9)]);
        let (high, low) = (3, 9);
        assert_eq!(bigint_ranges(low..=high), vec![]);
        assert_eq!(
            bigint_ranges(0..=u64::MAX),
            vec![(0, i64::MAX), (i64::MIN, -1)]
        );
        assert_eq!(bigint_ranges(u64::MAX - 1..=u64::MAX), vec![(-2, -1)]);
    }

    fn event(kind: u16, recorded_at_ms: u64, payload: &[u8]) -> NewEvent {
        NewEvent {
            kind,
            recorded_at_ms,
            payload: payload.to_vec(),
        }
    }

    /// The in-doubt check after an unanswered `COMMIT`, in the race the restart campaign
    /// lost once: a leader's group (procedure P, seq 2) is rolled back by the restart, and
    /// the next leader resumes P, so its own event takes the same procedure, seq and global
    /// seq. The group must be found not written (the old check, "is (P, 2) at that global
    /// seq", said written, and the leader acknowledged an event the log does not hold).
    #[test]
    fn an_unanswered_commit_counts_as_written_only_with_the_records_it_sealed() {
        let server = pg_testkit::PgServer::start().expect("start a throwaway PostgreSQL server");
        let url = server
            .create_database("unanswered_commit")
            .expect("create a database");
        let config = PgConfig::from_url(&url).expect("the test server's URL parses");
        let store = PgStore::open(config, LogOptions::default(), None).expect("open the log");
        let procedure_id = Uuid::now_v7();
        let append = |seq: u64, new_event: NewEvent| {
            store
                .append_blocking(AppendRequest {
                    procedure_id,
                    expected_next_seq: seq,
                    events: vec![new_event],
                    opens: (seq == 1).then(|| OpenProcedure {
                        region_id: 7,
                        peers: vec![1, 2],
                    }),
                    closes: false,
                })
                .expect("written")
                .expect("no conflict")
        };
        append(1, event(1, 1_000, b"started"));
        let check = |sealed: SealedEnd| {
            let shared = store.shared();
            block_on(store.spawn(async move { Ok(committed(&shared, sealed).await) }))
                .expect("the store runs")
        };

        // The group that was rolled back: P's seq 2, sealed on the head as it was then.
        let (head_global_seq, head_hash) = block_on(store.recorded_head())
            .expect("read the head")
            .expect("a head row");
        let lost = encode_record(&Record {
            format_version: FORMAT_VERSION,
            kind: 2,
            procedure_id,
            seq: 2,
            global_seq: head_global_seq + 1,
            recorded_at_ms: 2_000,
            payload: b"flush reply".to_vec(),
            prev_hash: Some(head_hash),
        });
        let lost = SealedEnd {
            global_seq: head_global_seq + 1,
            hash: chain_hash(&lost),
        };
        assert_eq!(check(lost), Some(false), "nothing at its global seq yet");

        // The next leader resumes P: the same procedure, seq and global seq, another record.
        let resumed = append(2, event(3, 2_500, b"resumed"));
        assert_eq!(
            (resumed.first_seq, resumed.first_global_seq),
            (2, lost.global_seq)
        );
        assert_eq!(check(lost), Some(false), "another writer's record is there");

        // The record that was committed is found written.
        let (written_global_seq, written_hash) = block_on(store.recorded_head())
            .expect("read the head")
            .expect("a head row");
        assert_eq!(
            check(SealedEnd {
                global_seq: written_global_seq,
                hash: written_hash,
            }),
            Some(true)
        );
    }
}
