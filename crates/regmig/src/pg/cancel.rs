//! Cancel requests in PostgreSQL (issue 18): `regmig cancel --store URL` records an
//! operator's request as a row of `<schema>.cancel_requests`, and the engine that leads on
//! that database answers it in place. The request and answer have the shape the file-based
//! requests of a data directory have ([`CancelRequest`], [`CancelAnswer`]).
//!
//! # How the engine serves them
//! Every engine whose log is a [`PgStore`] serves the requests on its own, from the moment
//! it is open until it halts or is dropped (nothing for an embedder to start): a task looks
//! for unanswered requests every [`CANCEL_POLL_INTERVAL`], takes at most
//! [`CANCEL_REQUESTS_PER_POLL_MAX`] of them (marking them with its own name in `taken_by`,
//! `FOR UPDATE SKIP LOCKED`), calls [`Engine::cancel`] for each, and writes the answer
//! (`cancelled`, `refused` with the reason, `unknown_migration`) in the same row. Only
//! a leading engine has an `Engine` at all (a standby has none), so a request made while no
//! engine leads waits in the table; the next leader takes those before it resumes its
//! procedures and hands them over as [`EngineConfig::cancels_on_open`](crate::engine::EngineConfig::cancels_on_open), so each reaches its
//! migration before the migration takes a step.
//!
//! # When a leader goes away
//! - A request taken by an engine that then stopped (crashed, deposed) before answering
//!   stays unanswered with the old `taken_by`: every other engine takes it again.
//!   Cancelling twice is harmless: the second is refused as already rolling back.
//! - An elected engine writes an answer only while the leader row's epoch is its own
//!   (checked in the `UPDATE`), so a deposed leader never answers; and an engine that halts
//!   while it honours a request leaves the request for the next leader.
//!
//! Errors name the store without its password; a failed look is logged and retried after
//! [`CANCEL_RETRY_AFTER_ERROR`], and an answer whose write failed is written at the next
//! look.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::OnceCell;
use tracing::{info, warn};
use uuid::Uuid;

use super::config::PgConfig;
use super::schema::{self, database};
use crate::engine::{CancelAnswer, CancelOutcome, CancelRequest, Engine};
use crate::log::{LogError, PgStore};

/// How often a serving engine looks for new requests (and how often
/// [`PgCancelRequests::wait_answer`] looks for an answer).
pub const CANCEL_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The most requests an engine takes in one look; the rest wait for the next one.
pub const CANCEL_REQUESTS_PER_POLL_MAX: i64 = 64;
/// How long a serving engine waits after a look failed (the database is down, or the
/// table cannot be created), so a lasting fault is not logged five times a second.
pub const CANCEL_RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// The database's clock, in ms since the Unix epoch.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// One request as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCancelRequest {
    /// The row's id, given when the request was recorded.
    pub request_id: i64,
    /// The request.
    pub request: CancelRequest,
    /// The engine that took it (its name), if one did.
    pub taken_by: Option<String>,
    /// Its answer, once given.
    pub answer: Option<CancelAnswer>,
    /// The epoch of the engine that answered (none for an engine without election).
    pub answered_epoch: Option<u64>,
}

/// The cancel requests' table of one PostgreSQL store.
pub struct PgCancelRequests {
    config: PgConfig,
    pool: Pool,
    /// The table exists in a version this build reads: checked once.
    ready: OnceCell<()>,
}

impl PgCancelRequests {
    /// The requests of the store at `config`. Connects nothing yet; the first call
    /// connects and creates the table if it is missing (which needs the `CREATE` right on
    /// the database or its schema, as the log's tables do). Must be called inside a tokio
    /// runtime, and used from that runtime (its connections live there).
    pub fn new(config: PgConfig) -> Result<PgCancelRequests, LogError> {
        let pool = super::connect(&config)?;
        Ok(PgCancelRequests {
            config,
            pool,
            ready: OnceCell::new(),
        })
    }

    /// The store, without its password.
    pub fn location(&self) -> String {
        self.config.redacted()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LogError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|error| super::pool_error(&self.config, "connect", error))?;
        self.ready
            .get_or_try_init(|| schema::ensure_cancel_requests(&mut client, &self.config))
            .await?;
        Ok(client)
    }

    fn table(&self) -> String {
        format!("{}.cancel_requests", self.config.schema())
    }

    /// Records `request`; returns its row's id. Nothing is checked against the log here:
    /// `regmig cancel` checks the migration first, and the engine answers the rest.
    pub async fn request(&self, request: &CancelRequest) -> Result<i64, LogError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO {} (procedure_id, actor, reason, requested_at_ms) \
                     VALUES ($1, $2, $3, $4) RETURNING request_id",
                    self.table()
                ),
                &[
                    &request.procedure_id,
                    &request.actor,
                    &request.reason,
                    &(request.requested_at_ms as i64),
                ],
            )
            .await
            .map_err(|error| database(&self.config, "record a cancel request", error))?;
        Ok(row.get(0))
    }

    /// The request `request_id` as the database holds it now; `None` when there is no such
    /// row (it was withdrawn).
    pub async fn get(&self, request_id: i64) -> Result<Option<StoredCancelRequest>, LogError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT request_id, procedure_id, actor, reason, requested_at_ms, taken_by, \
                     outcome, answer_reason, answered_epoch FROM {} WHERE request_id = $1",
                    self.table()
                ),
                &[&request_id],
            )
            .await
            .map_err(|error| database(&self.config, "read a cancel request", error))?;
        row.map(|row| self.stored(&row)).transpose()
    }

    /// Every request of `procedure_id`, oldest first.
    pub async fn of_procedure(
        &self,
        procedure_id: Uuid,
    ) -> Result<Vec<StoredCancelRequest>, LogError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT request_id, procedure_id, actor, reason, requested_at_ms, taken_by, \
                     outcome, answer_reason, answered_epoch FROM {} WHERE procedure_id = $1 \
                     ORDER BY request_id",
                    self.table()
                ),
                &[&procedure_id],
            )
            .await
            .map_err(|error| database(&self.config, "read the cancel requests", error))?;
        rows.iter().map(|row| self.stored(row)).collect()
    }

    fn stored(&self, row: &tokio_postgres::Row) -> Result<StoredCancelRequest, LogError> {
        let procedure_id: Uuid = row.get(1);
        let outcome: Option<String> = row.get(6);
        let answer = match outcome {
            None => None,
            Some(name) => Some(CancelAnswer {
                procedure_id,
                outcome: CancelOutcome::from_name(&name).ok_or_else(|| {
                    LogError::StoreConfig {
                        store: self.location(),
                        reason: format!(
                            "cancel request {} has the outcome {name:?}, which this version does not know",
                            row.get::<_, i64>(0)
                        ),
                    }
                })?,
                reason: row.get::<_, Option<String>>(7).unwrap_or_default(),
            }),
        };
        Ok(StoredCancelRequest {
            request_id: row.get(0),
            request: CancelRequest {
                procedure_id,
                actor: row.get(2),
                reason: row.get(3),
                requested_at_ms: row.get::<_, i64>(4).max(0) as u64,
                awaited: false,
            },
            taken_by: row.get(5),
            answer,
            answered_epoch: row
                .get::<_, Option<i64>>(8)
                .map(|epoch| epoch.max(0) as u64),
        })
    }

    /// Withdraws request `request_id` unless an engine took it already; true when withdrawn
    /// (no engine will act on it), false when an engine is honouring it.
    pub async fn withdraw(&self, request_id: i64) -> Result<bool, LogError> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                &format!(
                    "DELETE FROM {} WHERE request_id = $1 AND taken_by IS NULL AND outcome IS NULL",
                    self.table()
                ),
                &[&request_id],
            )
            .await
            .map_err(|error| database(&self.config, "withdraw a cancel request", error))?;
        Ok(deleted == 1)
    }

    /// Whether an engine serves the store now: an elected leader whose lease runs by the
    /// database's clock, or a writer without election holding the writer lock.
    pub async fn engine_running(&self) -> Result<bool, LogError> {
        let client = self.client().await?;
        let schema = self.config.schema();
        let (key1, key2) = schema::advisory_key(schema::LockKind::Writer, schema);
        let row = client
            .query_one(
                &format!(
                    "SELECT COALESCE((SELECT holder IS NOT NULL AND lease_until_ms > {NOW_MS} \
                     FROM {schema}.leader WHERE id), false) \
                     OR EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                     AND classid::bigint = $1 AND objid::bigint = ($2::bigint & 4294967295) \
                     AND objsubid = 2)"
                ),
                &[&i64::from(key1), &i64::from(key2)],
            )
            .await
            .map_err(|error| database(&self.config, "read whether an engine leads", error))?;
        Ok(row.get(0))
    }

    /// Waits up to `wait` for the answer to `request_id`; `None` when none came in time.
    pub async fn wait_answer(
        &self,
        request_id: i64,
        wait: Duration,
    ) -> Result<Option<CancelAnswer>, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(answer) = self.get(request_id).await?.and_then(|stored| stored.answer) {
                return Ok(Some(answer));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(CANCEL_POLL_INTERVAL.min(wait)).await;
        }
    }

    /// Takes the unanswered requests not taken by `taker` (at most
    /// [`CANCEL_REQUESTS_PER_POLL_MAX`]), oldest first, marking them as `taker`'s.
    async fn take(&self, taker: &str) -> Result<Vec<(i64, CancelRequest)>, LogError> {
        let client = self.client().await?;
        let table = self.table();
        let rows = client
            .query(
                &format!(
                    "UPDATE {table} SET taken_by = $1, taken_at_ms = {NOW_MS} \
                     WHERE request_id IN (SELECT request_id FROM {table} \
                        WHERE outcome IS NULL AND (taken_by IS NULL OR taken_by <> $1) \
                        ORDER BY request_id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     RETURNING request_id, procedure_id, actor, reason, requested_at_ms"
                ),
                &[&taker, &CANCEL_REQUESTS_PER_POLL_MAX],
            )
            .await
            .map_err(|error| database(&self.config, "take the cancel requests", error))?;
        let mut taken: Vec<(i64, CancelRequest)> = rows
            .iter()
            .map(|row| {
                (
                    row.get(0),
                    CancelRequest {
                        procedure_id: row.get(1),
                        actor: row.get(2),
                        reason: row.get(3),
                        requested_at_ms: row.get::<_, i64>(4).max(0) as u64,
                        awaited: true,
                    },
                )
            })
            .collect();
        taken.sort_by_key(|(request_id, _)| *request_id);
        Ok(taken)
    }

    /// Writes the answer of a request `taker` took; false when it was not written (another
    /// engine took the request since, or, for an elected engine, `epoch` is no longer the
    /// leader row's).
    async fn record_answer(
        &self,
        request_id: i64,
        taker: &str,
        epoch: Option<u64>,
        answer: &CancelAnswer,
    ) -> Result<bool, LogError> {
        let client = self.client().await?;
        let schema = self.config.schema();
        let epoch = epoch.map(|epoch| epoch as i64);
        let updated = client
            .execute(
                &format!(
                    "UPDATE {schema}.cancel_requests SET outcome = $3, answer_reason = $4, \
                     answered_at_ms = {NOW_MS}, answered_epoch = $5 \
                     WHERE request_id = $1 AND taken_by = $2 AND outcome IS NULL \
                     AND ($5::bigint IS NULL OR $5 = (SELECT epoch FROM {schema}.leader WHERE id))"
                ),
                &[
                    &request_id,
                    &taker,
                    &answer.outcome.name(),
                    &answer.reason,
                    &epoch,
                ],
            )
            .await
            .map_err(|error| database(&self.config, "answer a cancel request", error))?;
        Ok(updated == 1)
    }
}

/// Honours the requests waiting in `requests` on `engine`, as the engine named `taker`
/// (unique per engine; `epoch` its writer epoch): takes them, cancels, writes each answer.
/// An answer the database did not take (a failed write) waits in `unrecorded` and is
/// written first at the next call, so a request this engine took is never left without its
/// answer. A request whose cancel met a halted engine is left for the next leader.
async fn honour_pending(
    engine: &Engine,
    requests: &PgCancelRequests,
    taker: &str,
    epoch: Option<u64>,
    unrecorded: &mut Vec<(i64, CancelAnswer)>,
) -> Result<(), LogError> {
    while let Some((request_id, answer)) = unrecorded.first() {
        record(requests, taker, epoch, *request_id, answer).await?;
        unrecorded.remove(0);
    }
    for (request_id, request) in requests.take(taker).await? {
        let procedure_id = request.procedure_id;
        let result = engine
            .cancel(procedure_id, &request.actor, &request.reason)
            .await;
        if result.is_err() && engine.is_halted() {
            // Stopping or deposed: the next leader answers it.
            break;
        }
        let answer = CancelAnswer::of(procedure_id, &result);
        info!(%procedure_id, request_id, actor = %request.actor, outcome = answer.outcome.name(), "cancel request answered");
        unrecorded.push((request_id, answer));
    }
    while let Some((request_id, answer)) = unrecorded.first() {
        record(requests, taker, epoch, *request_id, answer).await?;
        unrecorded.remove(0);
    }
    Ok(())
}

/// Writes one answer; one the database refuses (another engine leads now) is dropped with a
/// warning.
async fn record(
    requests: &PgCancelRequests,
    taker: &str,
    epoch: Option<u64>,
    request_id: i64,
    answer: &CancelAnswer,
) -> Result<(), LogError> {
    if !requests
        .record_answer(request_id, taker, epoch, answer)
        .await?
    {
        warn!(procedure_id = %answer.procedure_id, request_id, "the answer to a cancel request was not recorded: this engine no longer leads");
    }
    Ok(())
}

/// The requests an engine about to open on a PostgreSQL store took before resuming its
/// procedures (see the module documentation), for [`serve_in_background`].
pub(crate) struct TakenAtOpen {
    requests: PgCancelRequests,
    taker: String,
    taken: Vec<(i64, CancelRequest)>,
}

impl TakenAtOpen {
    /// The requests taken, for [`EngineConfig::cancels_on_open`](crate::engine::EngineConfig::cancels_on_open).
    pub(crate) fn requests(&self) -> impl Iterator<Item = CancelRequest> + '_ {
        self.taken.iter().map(|(_, request)| request.clone())
    }
}

/// Takes the unanswered requests of `log`'s PostgreSQL store before the engine resumes its
/// procedures; `None` for another store, or when the table cannot be read now (the requests
/// are then answered by the background task, after the resume, as before).
pub(crate) async fn take_at_open(log: &crate::log::EventLog) -> Option<TakenAtOpen> {
    let store = PgStore::of(log)?;
    let location = store.config().redacted();
    let requests = PgCancelRequests::new(store.config().clone())
        .map_err(
            |error| warn!(store = %location, %error, "cannot read the cancel requests at open"),
        )
        .ok()?;
    let taker = format!("engine-{}", Uuid::now_v7());
    match requests.take(&taker).await {
        Ok(taken) => Some(TakenAtOpen {
            requests,
            taker,
            taken,
        }),
        Err(error) => {
            warn!(store = %location, %error, "cannot take the cancel requests at open; they are answered after the resume");
            None
        }
    }
}

/// Starts serving the cancel requests of `engine`'s PostgreSQL store (see the module
/// documentation); nothing for an engine on another store. The requests `at_open` took are
/// answered first, from [`Engine::cancels_on_open_answered`]. The task ends when the
/// engine halts or its last handle is dropped.
pub(crate) fn serve_in_background(engine: &Engine, at_open: Option<TakenAtOpen>) {
    let Some(store) = PgStore::of(engine.log()) else {
        return;
    };
    let location = store.config().redacted();
    let (requests, taker, taken_at_open) = match at_open {
        Some(at_open) => (at_open.requests, at_open.taker, at_open.taken),
        None => match PgCancelRequests::new(store.config().clone()) {
            Ok(requests) => (requests, format!("engine-{}", Uuid::now_v7()), Vec::new()),
            Err(error) => {
                warn!(store = %location, %error, "cannot serve cancel requests from the database");
                return;
            }
        },
    };
    let epoch = engine.log().store().writer_epoch();
    let weak = engine.downgrade();
    let mut halted = engine.halt_signal();
    let opened = engine.clone();
    tokio::spawn(async move {
        let mut unrecorded = Vec::new();
        if !taken_at_open.is_empty() {
            let answers = opened.cancels_on_open_answered().await;
            for (request_id, request) in &taken_at_open {
                if let Some(answer) = answers
                    .iter()
                    .find(|answer| answer.procedure_id == request.procedure_id)
                {
                    info!(procedure_id = %request.procedure_id, request_id, actor = %request.actor, outcome = answer.outcome.name(), "cancel request answered");
                    unrecorded.push((*request_id, answer.clone()));
                }
            }
        }
        drop(opened);
        loop {
            let Some(engine) = weak.upgrade() else {
                break;
            };
            let honoured = honour_pending(&engine, &requests, &taker, epoch, &mut unrecorded);
            let pause = match honoured.await {
                Ok(()) => CANCEL_POLL_INTERVAL,
                Err(error) => {
                    warn!(store = %location, %error, retry_after = ?CANCEL_RETRY_AFTER_ERROR, "cannot serve cancel requests now; trying again");
                    CANCEL_RETRY_AFTER_ERROR
                }
            };
            drop(engine);
            tokio::select! {
                _ = halted.wait_for(|halted| *halted) => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
    });
}
