//! Connecting to PostgreSQL (feature `postgres`): the configuration ([`PgConfig`]), TLS,
//! the connection pool ([`connect`]) and regmig's tables ([`schema`]). The log store on top
//! is [`PgStore`](crate::log::PgStore); the operators' cancel requests are [`cancel`].

pub mod cancel;
pub mod config;
pub mod lease;
pub mod schema;
mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

pub use config::{PgConfig, TlsMode};
/// The driver and the pool, re-exported so that a user of [`connect`] and
/// [`PgStore::pool`](crate::log::PgStore::pool) names the same versions.
pub use {deadpool_postgres, tokio_postgres};

use crate::log::LogError;

/// How long taking a connection from the pool may wait for a free one, or for a new one to
/// connect, before it is an error.
pub const POOL_WAIT: Duration = Duration::from_secs(30);

/// A pool of connections to the server of `config` (nothing is connected until the first
/// `get`): TLS as `config.tls()` says, at most `config.pool_size()` connections, each
/// checked with a round trip before it is reused (a server restart leaves closed
/// connections behind, and this hands out a fresh one instead). Must be called inside a
/// tokio runtime (the pool's timeouts use it).
pub fn connect(config: &PgConfig) -> Result<Pool, LogError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Verified,
    };
    let driver = config.driver_config().clone();
    let manager = match tls::connector(config)? {
        Some(tls) => {
            let mut driver = driver;
            driver.ssl_mode(tokio_postgres::config::SslMode::Require);
            Manager::from_config(driver, tls, manager_config)
        }
        None => {
            let mut driver = driver;
            driver.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(driver, tokio_postgres::NoTls, manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(config.pool_size())
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .recycle_timeout(Some(POOL_WAIT))
        .build()
        .map_err(|error| LogError::StoreConfig {
            store: config.redacted(),
            reason: format!("could not build the connection pool: {error}"),
        })
}

/// One connection of its own, outside any pool (for a session-level advisory lock, which
/// lives as long as the session). Its connection task runs on the current tokio runtime.
pub async fn connect_session(config: &PgConfig) -> Result<tokio_postgres::Client, LogError> {
    let mut driver = config.driver_config().clone();
    let failed = |error: tokio_postgres::Error| schema::database(config, "connect", error);
    match tls::connector(config)? {
        Some(tls) => {
            driver.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, connection) = driver.connect(tls).await.map_err(failed)?;
            tokio::spawn(connection);
            Ok(client)
        }
        None => {
            driver.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = driver
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(failed)?;
            tokio::spawn(connection);
            Ok(client)
        }
    }
}

/// A pool error while doing `action` at the store of `config`.
pub fn pool_error(
    config: &PgConfig,
    action: &'static str,
    error: deadpool_postgres::PoolError,
) -> LogError {
    LogError::Database {
        store: config.redacted(),
        action,
        source: Box::new(DriverError::new(error)),
    }
}

/// A driver or pool error whose message is its whole chain of causes: the driver's own
/// `Display` says only "db error", and the server's message (with its SQLSTATE) is the
/// cause.
#[derive(Debug)]
pub struct DriverError {
    message: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl DriverError {
    /// Wraps `error`, reading its chain of causes into the message.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> DriverError {
        let mut message = error.to_string();
        let mut cause = error.source();
        while let Some(next) = cause {
            let text = next.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = next.source();
        }
        if let Some(code) = db_error_code(&error) {
            message.push_str(&format!(" (SQLSTATE {code})"));
        }
        DriverError {
            message,
            source: Box::new(error),
        }
    }
}

/// The SQLSTATE of a server error somewhere in `error`'s chain.
fn db_error_code(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(db) = error.downcast_ref::<tokio_postgres::error::DbError>() {
            return Some(db.code().code().to_string());
        }
        current = error.source();
    }
    None
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}
