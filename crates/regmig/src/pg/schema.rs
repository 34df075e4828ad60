//! regmig's tables in PostgreSQL: created on a writer's first open, versioned, checked on
//! every open. The layout is documented in `migrations-log-format.md` ("PostgreSQL").
//!
//! Everything lives in one PostgreSQL schema ([`PgConfig::schema`], default `regmig`),
//! created by the first writer if it is missing (which needs the `CREATE` right on the
//! database: its owner has it; nothing needs a superuser). `<schema>.schema_version` holds
//! one row per component (`log` here; other components add their own rows and tables), so
//! each can migrate alone. A version newer than this build reads is
//! [`LogError::UnsupportedSchema`].
//!
//! Creation runs in one transaction under a transaction-level advisory lock
//! ([`advisory_key`] with [`LockKind::Schema`]), so engines starting together create it
//! once.

use tokio_postgres::GenericClient;

use super::config::PgConfig;
use crate::log::LogError;

/// The version of the log's tables this build writes and reads.
pub const LOG_SCHEMA_VERSION: i32 = 1;
/// The component name of the log's tables in `<schema>.schema_version`.
pub const LOG_COMPONENT: &str = "log";

/// The version of the cancel requests' table ([`crate::pg::cancel`]) this build writes and
/// reads.
pub const CANCEL_SCHEMA_VERSION: i32 = 1;
/// The component name of the cancel requests' table in `<schema>.schema_version`.
pub const CANCEL_COMPONENT: &str = "cancel_requests";

/// The advisory locks regmig takes, each keyed by kind and PostgreSQL schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Held (per transaction) while the schema is created or migrated.
    Schema,
    /// Held (per session) by a log writer opened without leader election: one such writer
    /// per schema.
    Writer,
}

/// The two `int4` keys of `pg_advisory_lock(key1, key2)` for `kind` on `schema`: key1 is
/// `0x7267_6d00` ("rgm") plus the kind, key2 the crc32 of the schema name.
pub fn advisory_key(kind: LockKind, schema: &str) -> (i32, i32) {
    let kind_code = match kind {
        LockKind::Schema => 1,
        LockKind::Writer => 2,
    };
    (
        0x7267_6d00 + kind_code,
        crc32fast::hash(schema.as_bytes()) as i32,
    )
}

/// The log's tables of `schema`, with their statements. `schema` is checked by
/// [`PgConfig`] to be an identifier that needs no quoting.
fn log_tables_sql(schema: &str) -> String {
    format!(
        "CREATE TABLE {schema}.events (
            procedure_id uuid NOT NULL,
            seq bigint NOT NULL CHECK (seq >= 1),
            global_seq bigint NOT NULL CHECK (global_seq >= 1),
            record bytea NOT NULL,
            CONSTRAINT events_pkey PRIMARY KEY (procedure_id, seq),
            CONSTRAINT events_global_seq_key UNIQUE (global_seq)
        );
        CREATE TABLE {schema}.open_procedures (
            procedure_id uuid NOT NULL,
            region_id bigint NOT NULL,
            CONSTRAINT open_procedures_pkey PRIMARY KEY (procedure_id),
            CONSTRAINT open_procedures_region_key UNIQUE (region_id)
        );
        CREATE TABLE {schema}.region_audit (
            region_id bigint NOT NULL,
            recorded_at_ms bigint NOT NULL,
            procedure_id uuid NOT NULL,
            CONSTRAINT region_audit_pkey PRIMARY KEY (region_id, recorded_at_ms, procedure_id)
        );
        CREATE TABLE {schema}.peer_audit (
            peer_id bigint NOT NULL,
            recorded_at_ms bigint NOT NULL,
            procedure_id uuid NOT NULL,
            CONSTRAINT peer_audit_pkey PRIMARY KEY (peer_id, recorded_at_ms, procedure_id)
        );
        CREATE TABLE {schema}.head (
            id boolean NOT NULL DEFAULT true CHECK (id),
            last_global_seq bigint NOT NULL,
            last_hash bytea NOT NULL CHECK (length(last_hash) = 32),
            CONSTRAINT head_pkey PRIMARY KEY (id)
        );
        INSERT INTO {schema}.head (id, last_global_seq, last_hash)
            VALUES (true, 0, decode(repeat('00', 32), 'hex'));
        CREATE TABLE {schema}.leader (
            id boolean NOT NULL DEFAULT true CHECK (id),
            epoch bigint NOT NULL CHECK (epoch >= 0),
            holder text,
            lease_until_ms bigint,
            CONSTRAINT leader_pkey PRIMARY KEY (id)
        );
        INSERT INTO {schema}.leader (id, epoch, holder, lease_until_ms) VALUES (true, 0, NULL, NULL);
        INSERT INTO {schema}.schema_version (component, version) VALUES ('{LOG_COMPONENT}', {LOG_SCHEMA_VERSION});"
    )
}

/// The cancel requests' table of `schema` (issue 18), with its statements: one row per
/// request of `regmig cancel --store`, answered in place by the engine that leads.
fn cancel_tables_sql(schema: &str) -> String {
    format!(
        "CREATE TABLE {schema}.cancel_requests (
            request_id bigserial NOT NULL,
            procedure_id uuid NOT NULL,
            actor text NOT NULL,
            reason text NOT NULL,
            requested_at_ms bigint NOT NULL,
            taken_by text,
            taken_at_ms bigint,
            outcome text CHECK (outcome IN ('cancelled', 'refused', 'unknown_migration')),
            answer_reason text,
            answered_at_ms bigint,
            answered_epoch bigint,
            CONSTRAINT cancel_requests_pkey PRIMARY KEY (request_id)
        );
        CREATE INDEX cancel_requests_unanswered ON {schema}.cancel_requests (request_id)
            WHERE outcome IS NULL;
        INSERT INTO {schema}.schema_version (component, version) VALUES ('{CANCEL_COMPONENT}', {CANCEL_SCHEMA_VERSION});"
    )
}

/// Creates the schema, the version table and the cancel requests' table where missing, in
/// one transaction under the schema lock, and checks the table's version (a newer one is
/// [`LogError::UnsupportedSchema`]). Both sides call it: `regmig cancel --store` before it
/// records a request (no engine may have run yet) and the engine before it serves them.
pub async fn ensure_cancel_requests(
    client: &mut tokio_postgres::Client,
    config: &PgConfig,
) -> Result<(), LogError> {
    if let Some(found) = component_version(client, config, CANCEL_COMPONENT).await? {
        return check_version(config, CANCEL_COMPONENT, found, CANCEL_SCHEMA_VERSION);
    }
    let schema = config.schema();
    let failed = |error| database(config, "create the cancel requests' table", error);
    let transaction = client.transaction().await.map_err(failed)?;
    let (key1, key2) = advisory_key(LockKind::Schema, schema);
    transaction
        .execute("SELECT pg_advisory_xact_lock($1, $2)", &[&key1, &key2])
        .await
        .map_err(|error| database(config, "lock the schema for creation", error))?;
    transaction
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.schema_version (
                component text NOT NULL PRIMARY KEY,
                version integer NOT NULL
             )"
        ))
        .await
        .map_err(failed)?;
    match component_version(&transaction, config, CANCEL_COMPONENT).await? {
        Some(found) => check_version(config, CANCEL_COMPONENT, found, CANCEL_SCHEMA_VERSION)?,
        None => {
            transaction
                .batch_execute(&cancel_tables_sql(schema))
                .await
                .map_err(failed)?;
            tracing::info!(store = %config, schema, version = CANCEL_SCHEMA_VERSION, "created the cancel requests' table");
        }
    }
    transaction.commit().await.map_err(failed)
}

/// The version of `component` in `schema`: `None` when the schema, its version table or
/// the component's row is missing.
pub async fn component_version(
    client: &impl GenericClient,
    config: &PgConfig,
    component: &str,
) -> Result<Option<i32>, LogError> {
    let schema = config.schema();
    let exists = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{schema}.schema_version")],
        )
        .await
        .map_err(|error| database(config, "read the schema version", error))?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!("SELECT version FROM {schema}.schema_version WHERE component = $1"),
            &[&component],
        )
        .await
        .map_err(|error| database(config, "read the schema version", error))?;
    Ok(row.map(|row| row.get(0)))
}

/// Refuses a `component` version newer than `supported`.
pub fn check_version(
    config: &PgConfig,
    component: &str,
    found: i32,
    supported: i32,
) -> Result<(), LogError> {
    if found > supported {
        return Err(LogError::UnsupportedSchema {
            store: config.redacted(),
            schema: config.schema().to_string(),
            component: component.to_string(),
            found,
            supported,
        });
    }
    Ok(())
}

/// Creates the schema, the version table and the log's tables where missing, in one
/// transaction, and checks the log's version. For a writer; a reader calls
/// [`check_log`] instead.
pub async fn ensure_log(
    client: &mut tokio_postgres::Client,
    config: &PgConfig,
) -> Result<(), LogError> {
    // Most opens find everything in place: check without a transaction or any right
    // beyond USAGE and SELECT.
    if let Some(found) = component_version(client, config, LOG_COMPONENT).await? {
        return check_version(config, LOG_COMPONENT, found, LOG_SCHEMA_VERSION);
    }
    let schema = config.schema();
    let transaction = client
        .transaction()
        .await
        .map_err(|error| database(config, "create the schema", error))?;
    let (key1, key2) = advisory_key(LockKind::Schema, schema);
    transaction
        .execute("SELECT pg_advisory_xact_lock($1, $2)", &[&key1, &key2])
        .await
        .map_err(|error| database(config, "lock the schema for creation", error))?;
    let schema_exists = transaction
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .map_err(|error| database(config, "create the schema", error))?
        .get::<_, bool>(0);
    if !schema_exists {
        transaction
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .map_err(|error| database(config, "create the schema", error))?;
    }
    transaction
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {schema}.schema_version (
                component text NOT NULL PRIMARY KEY,
                version integer NOT NULL
            )"
        ))
        .await
        .map_err(|error| database(config, "create the schema version table", error))?;
    match component_version(&transaction, config, LOG_COMPONENT).await? {
        // Another engine created it while this one waited for the lock.
        Some(found) => check_version(config, LOG_COMPONENT, found, LOG_SCHEMA_VERSION)?,
        None => {
            transaction
                .batch_execute(&log_tables_sql(schema))
                .await
                .map_err(|error| database(config, "create the log's tables", error))?;
            tracing::info!(store = %config, schema, version = LOG_SCHEMA_VERSION, "created the event log's tables");
        }
    }
    transaction
        .commit()
        .await
        .map_err(|error| database(config, "create the schema", error))
}

/// Checks that the log's tables exist in a version this build reads, creating nothing: a
/// missing log is [`LogError::NoLogAtStore`].
pub async fn check_log(client: &impl GenericClient, config: &PgConfig) -> Result<(), LogError> {
    match component_version(client, config, LOG_COMPONENT).await? {
        Some(found) => check_version(config, LOG_COMPONENT, found, LOG_SCHEMA_VERSION),
        None => Err(LogError::NoLogAtStore {
            store: config.redacted(),
            reason: format!(
                "no `{}` row in {}.schema_version: no writer has opened it yet",
                LOG_COMPONENT,
                config.schema()
            ),
        }),
    }
}

/// A driver error while doing `action` at the store of `config`.
pub fn database(config: &PgConfig, action: &'static str, error: tokio_postgres::Error) -> LogError {
    LogError::Database {
        store: config.redacted(),
        action,
        source: Box::new(super::DriverError::new(error)),
    }
}
