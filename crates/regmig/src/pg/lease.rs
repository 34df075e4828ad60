//! The leader lease in PostgreSQL ([`PgLeaderLease`]): the `<schema>.leader` row that the
//! log's appends and the metadata store's writes check their epoch against (see
//! [`crate::engine::leadership`]).
//!
//! Every decision is one `UPDATE` of that row, timed by the **database's** clock
//! (`clock_timestamp()`, in ms since the Unix epoch), so engines' clocks do not matter:
//! - acquire: `SET epoch = epoch + 1, holder = $me, lease_until_ms = now + lease` where no
//!   one holds it or `lease_until_ms <= now`. Two standbys racing both try; the row lock
//!   makes the second re-check the condition against the first's row, and it fails.
//! - renew: `SET lease_until_ms = now + lease` where the epoch and holder are still the
//!   caller's and the lease has not lapsed.
//! - release: `SET lease_until_ms = now` where the epoch and holder are the caller's (the
//!   holder stays: a writer without election stays fenced once an election ran).
//!
//! The `UPDATE` takes the row's lock, which conflicts with the `FOR SHARE` that every append
//! and route write takes in its transaction: a takeover waits for the writes in flight, and
//! writes after it see the new epoch.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::OnceCell;

use super::config::PgConfig;
use crate::engine::leadership::{LeaderLease, LeaseError, LeaseGrant, LeaseState};

/// The fencing rule every write to the shared tables checks in its transaction (the log's
/// appends, the metadata store's writes), against the leader row it reads `FOR SHARE`:
/// `Some(the epoch it wrote with)` when the writer is fenced. An elected writer
/// (`writer_epoch = Some(e)`) writes only while the row's epoch is `e`; a writer without
/// election (`None`) only while no engine has ever held the row (it then reports epoch 0).
pub fn fenced_epoch(
    writer_epoch: Option<u64>,
    current_epoch: u64,
    holder: Option<&str>,
) -> Option<u64> {
    match writer_epoch {
        Some(epoch) => (epoch != current_epoch).then_some(epoch),
        None => holder.is_some().then_some(0),
    }
}

/// The database's clock, in ms since the Unix epoch.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The leader lease of the regmig schema at a PostgreSQL server.
pub struct PgLeaderLease {
    config: PgConfig,
    location: String,
    pool: Pool,
    /// The log's tables (the leader row among them) exist: checked once.
    ready: OnceCell<()>,
    acquire: String,
    renew: String,
    release: String,
    state: String,
}

impl PgLeaderLease {
    /// A lease at `config`'s schema. Connects on first use, creating the log's tables (the
    /// leader row among them) if missing. Must be called inside a tokio runtime, which the
    /// lease's connections then run on.
    ///
    /// Errors: the pool cannot be built (a TLS file that does not read).
    pub fn new(config: PgConfig) -> Result<PgLeaderLease, LeaseError> {
        let location = config.redacted();
        let pool = super::connect(&config).map_err(|error| LeaseError {
            store: location.clone(),
            action: "set up",
            reason: error.to_string(),
        })?;
        let schema = config.schema();
        Ok(PgLeaderLease {
            acquire: format!(
                "UPDATE {schema}.leader SET epoch = epoch + 1, holder = $1, lease_until_ms = {NOW_MS} + $2 \
                 WHERE id AND (holder IS NULL OR lease_until_ms IS NULL OR lease_until_ms <= {NOW_MS}) \
                 RETURNING epoch, holder, lease_until_ms"
            ),
            renew: format!(
                "UPDATE {schema}.leader SET lease_until_ms = {NOW_MS} + $3 \
                 WHERE id AND epoch = $1 AND holder = $2 AND lease_until_ms > {NOW_MS} \
                 RETURNING epoch, holder, lease_until_ms"
            ),
            release: format!(
                "UPDATE {schema}.leader SET lease_until_ms = {NOW_MS} \
                 WHERE id AND epoch = $1 AND holder = $2 AND lease_until_ms > {NOW_MS}"
            ),
            state: format!(
                "SELECT epoch, coalesce(holder, ''), coalesce(lease_until_ms, 0), \
                 coalesce(lease_until_ms > {NOW_MS}, false) FROM {schema}.leader WHERE id"
            ),
            config,
            location,
            pool,
            ready: OnceCell::new(),
        })
    }

    fn failed(&self, action: &'static str, reason: impl std::fmt::Display) -> LeaseError {
        LeaseError {
            store: self.location.clone(),
            action,
            reason: reason.to_string(),
        }
    }

    /// A connection, with the log's tables in place.
    async fn client(&self, action: &'static str) -> Result<deadpool_postgres::Object, LeaseError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|error| self.failed(action, error))?;
        self.ready
            .get_or_try_init(|| async {
                super::schema::ensure_log(&mut client, &self.config)
                    .await
                    .map_err(|error| self.failed(action, error))
            })
            .await?;
        Ok(client)
    }
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

fn grant(row: &tokio_postgres::Row) -> LeaseGrant {
    LeaseGrant {
        epoch: row.get::<_, i64>(0) as u64,
        holder: row.get(1),
        lease_until_ms: row.get::<_, i64>(2) as u64,
    }
}

#[async_trait]
impl LeaderLease for PgLeaderLease {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn try_acquire(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        let client = self.client("acquired").await?;
        let row = client
            .query_opt(&self.acquire, &[&holder, &lease_ms(lease)])
            .await
            .map_err(|error| self.failed("acquired", error))?;
        Ok(row.as_ref().map(grant))
    }

    async fn renew(
        &self,
        current: &LeaseGrant,
        lease: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        let client = self.client("renewed").await?;
        let row = client
            .query_opt(
                &self.renew,
                &[&(current.epoch as i64), &current.holder, &lease_ms(lease)],
            )
            .await
            .map_err(|error| self.failed("renewed", error))?;
        Ok(row.as_ref().map(grant))
    }

    async fn release(&self, current: &LeaseGrant) -> Result<(), LeaseError> {
        let client = self.client("released").await?;
        client
            .execute(&self.release, &[&(current.epoch as i64), &current.holder])
            .await
            .map_err(|error| self.failed("released", error))?;
        Ok(())
    }

    async fn state(&self) -> Result<LeaseState, LeaseError> {
        let client = self.client("read").await?;
        let row = client
            .query_one(&self.state, &[])
            .await
            .map_err(|error| self.failed("read", error))?;
        Ok(LeaseState {
            epoch: row.get::<_, i64>(0) as u64,
            holder: row.get(1),
            lease_until_ms: row.get::<_, i64>(2) as u64,
            live: row.get(3),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fenced_epoch;

    #[test]
    fn the_fencing_rule_lets_only_the_current_epoch_or_an_unelected_writer_before_any_election_write(
    ) {
        assert_eq!(fenced_epoch(Some(3), 3, Some("a")), None);
        assert_eq!(fenced_epoch(Some(2), 3, Some("a")), Some(2));
        assert_eq!(fenced_epoch(Some(4), 3, Some("a")), Some(4));
        assert_eq!(fenced_epoch(None, 0, None), None);
        assert_eq!(fenced_epoch(None, 1, Some("a")), Some(0));
    }
}
