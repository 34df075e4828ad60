//! The cluster ports: what the engine needs from the outside world, as traits.
//!
//! - [`Mailbox`]: send an instruction to a datanode and wait for its reply.
//! - [`MetadataStore`]: table routes (versioned compare-and-swap), datanode tables, table infos.
//! - [`ClusterHooks`]: failure-detector registration and table-cache invalidation.
//! - [`Clock`]: wall-clock time in ms since the epoch, and sleeping until a deadline.
//! - [`Entropy`]: random values (jitter, procedure ids), seeded in the simulator.
//! - [`LeaseRenewals`]: when a datanode last heartbeated (revision 2's slow path waits one
//!   lease from then); [`NoLeaseRenewals`] when the embedder does not track heartbeats.
//!
//! Implementations: [`memory::MemoryMetadataStore`] for tests and the simulator,
//! [`sled_store::SledMetadataStore`] for production, `pg_store::PgMetadataStore` (feature
//! `postgres`) beside a PostgreSQL log that several engines share, [`SystemClock`], [`TokioClock`].

pub mod memory;
#[cfg(feature = "postgres")]
pub mod pg_store;
pub mod sled_store;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{
    DatanodeTable, Instruction, MailboxOutcome, Peer, PeerId, RegionId, TableId, TableInfo,
    TableRoute, VersionedTableRoute,
};

/// Sends instructions to datanodes.
#[async_trait]
pub trait Mailbox: Send + Sync {
    /// Sends `instruction` to `peer` and waits at most `timeout_ms` for its reply.
    async fn send(&self, peer: &Peer, instruction: Instruction, timeout_ms: u64) -> MailboxOutcome;

    /// Sends one instruction to `peer` carrying every region of `instructions` (all of one
    /// [`InstructionKind`](crate::domain::InstructionKind), each about its own region: a
    /// batch's step, spec R2.5, like upstream's multi-region open, downgrade and upgrade
    /// instructions) and waits at most `timeout_ms` for the answer. Returns one outcome per
    /// instruction, in order: the datanode answers each region's part alone, so one region's
    /// failure leaves the others' replies as they are. A mailbox that cannot reach the peer
    /// returns `Unreachable` for every part; past `timeout_ms`, a part is a `Timeout`.
    ///
    /// The default sends each part as its own [`Mailbox::send`], all at once: for
    /// datanodes that take one region per instruction.
    async fn send_batch(
        &self,
        peer: &Peer,
        instructions: Vec<Instruction>,
        timeout_ms: u64,
    ) -> Vec<MailboxOutcome> {
        crate::concurrent::join_all(
            instructions
                .into_iter()
                .map(|instruction| self.send(peer, instruction, timeout_ms)),
        )
        .await
    }
}

/// What kind of failure a metadata store met. Every kind but [`MetadataErrorKind::Fenced`]
/// is retried by the procedure (its framework retry budget bounds how often).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataErrorKind {
    /// The store could not be reached or refused the call (down, overloaded, no leader).
    Unavailable,
    /// The call did not answer in time.
    Timeout,
    /// The store answered with data that could not be decoded.
    Corrupt,
    /// A store that several engines share refused a write because the writer's epoch is no
    /// longer the leader's: another engine took the lease. Not retried: the engine halts
    /// every procedure at once and sends nothing more (see `engine::leadership`).
    Fenced,
    /// Anything else.
    Other,
}

impl MetadataErrorKind {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            MetadataErrorKind::Unavailable => "unavailable",
            MetadataErrorKind::Timeout => "timeout",
            MetadataErrorKind::Corrupt => "corrupt",
            MetadataErrorKind::Fenced => "fenced",
            MetadataErrorKind::Other => "other",
        }
    }
}

/// A metadata store failure: the store could not be read or written (retryable). Its
/// `reason` is what the procedure records in its log; the source, when given, is the
/// store's own error (kept in memory for the embedder's logs, not recorded).
#[derive(Debug, Clone)]
pub struct MetadataError {
    /// What kind of failure.
    pub kind: MetadataErrorKind,
    /// A sentence naming what failed (recorded in the procedure's log).
    pub reason: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl MetadataError {
    /// A failure of `kind`, described by `reason`.
    pub fn new(kind: MetadataErrorKind, reason: impl Into<String>) -> Self {
        MetadataError {
            kind,
            reason: reason.into(),
            source: None,
        }
    }

    /// The same failure, caused by the store's own error `source`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }
}

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "metadata store error ({}): {}",
            self.kind.name(),
            self.reason
        )
    }
}

impl std::error::Error for MetadataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// Two failures are equal when their kind and reason are (sources are not compared).
impl PartialEq for MetadataError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.reason == other.reason
    }
}

impl Eq for MetadataError {}

/// A compare-and-swap lost to a concurrent writer: an expected outcome, not a fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table route of table {table_id} changed: expected version {expected_version}, found {actual_version:?}")]
pub struct CasConflict {
    /// The table whose route was written.
    pub table_id: TableId,
    /// The version the writer read.
    pub expected_version: u64,
    /// The version in the store, if the route exists.
    pub actual_version: Option<u64>,
}

/// The plain data of a region's move is the domain's; the store ports take it.
pub use crate::domain::RegionMove;

/// Table metadata with versioned compare-and-swap on table routes.
#[async_trait]
pub trait MetadataStore: Send + Sync {
    /// A table's route and its version.
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError>;

    /// Writes `route` if the stored version is still `expected_version`; on success returns
    /// the new version. Each of `region_moves` (one per region whose leader the write changes:
    /// none for a downgrade or a rollback, one for a single migration's upgrade, one per
    /// region for a batch's upgrade, spec R2.5) moves its region's datanode-table entry in the
    /// same atomic write.
    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError>;

    /// What `datanode_id` knows of `table_id`'s regions.
    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, MetadataError>;

    /// A table's names and WAL kind.
    async fn table_info(&self, table_id: TableId) -> Result<Option<TableInfo>, MetadataError>;
}

/// A [`MetadataStore`] that wraps another and changes some of its calls (a fencing watch, a
/// fault injector, a mirror): implement [`MetadataStoreLayer::inner`] and the calls that
/// change; every other call goes to the inner store unchanged. Every layer is a
/// `MetadataStore` (call it through `dyn MetadataStore` or `MetadataStore::…`).
#[async_trait]
pub trait MetadataStoreLayer: Send + Sync {
    /// The store the calls go to.
    fn inner(&self) -> &dyn MetadataStore;

    /// [`MetadataStore::table_route`].
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError> {
        self.inner().table_route(table_id).await
    }

    /// [`MetadataStore::cas_table_route`].
    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        self.inner()
            .cas_table_route(table_id, expected_version, route, region_moves)
            .await
    }

    /// [`MetadataStore::datanode_table`].
    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, MetadataError> {
        self.inner().datanode_table(datanode_id, table_id).await
    }

    /// [`MetadataStore::table_info`].
    async fn table_info(&self, table_id: TableId) -> Result<Option<TableInfo>, MetadataError> {
        self.inner().table_info(table_id).await
    }
}

#[async_trait]
impl<L: MetadataStoreLayer> MetadataStore for L {
    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError> {
        MetadataStoreLayer::table_route(self, table_id).await
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        MetadataStoreLayer::cas_table_route(self, table_id, expected_version, route, region_moves)
            .await
    }

    async fn datanode_table(
        &self,
        datanode_id: PeerId,
        table_id: TableId,
    ) -> Result<Option<DatanodeTable>, MetadataError> {
        MetadataStoreLayer::datanode_table(self, datanode_id, table_id).await
    }

    async fn table_info(&self, table_id: TableId) -> Result<Option<TableInfo>, MetadataError> {
        MetadataStoreLayer::table_info(self, table_id).await
    }
}

/// Side effects around a migration whose failure is only logged.
#[async_trait]
pub trait ClusterHooks: Send + Sync {
    /// Watch (peer, region) for failures again.
    async fn register_failure_detector(&self, peer: PeerId, region_id: RegionId);
    /// Stop watching (peer, region): the region is moving away on purpose.
    async fn deregister_failure_detector(&self, peer: PeerId, region_id: RegionId);
    /// Tell frontends to drop their cached route of a table.
    async fn invalidate_table_cache(&self, table_id: TableId);
}

/// Hooks that do nothing: for embedders with no failure detector or cache.
#[derive(Debug, Default, Clone)]
pub struct NoopHooks;

#[async_trait]
impl ClusterHooks for NoopHooks {
    async fn register_failure_detector(&self, _peer: PeerId, _region_id: RegionId) {}
    async fn deregister_failure_detector(&self, _peer: PeerId, _region_id: RegionId) {}
    async fn invalidate_table_cache(&self, _table_id: TableId) {}
}

/// When datanodes last renewed their leases, as the control plane saw their heartbeats
/// (revision 2, R2.3): the slow path waits one lease from then, not from now.
#[async_trait]
pub trait LeaseRenewals: Send + Sync {
    /// When `peer` last heartbeated (ms since the epoch); `None` when unknown.
    async fn last_heartbeat_ms(&self, peer: PeerId) -> Option<u64>;
}

/// No heartbeat knowledge: the slow path waits a full lease from the downgrade (the
/// revision 1 behaviour), for embedders that do not track heartbeats.
#[derive(Debug, Default, Clone)]
pub struct NoLeaseRenewals;

#[async_trait]
impl LeaseRenewals for NoLeaseRenewals {
    async fn last_heartbeat_ms(&self, _peer: PeerId) -> Option<u64> {
        None
    }
}

/// Wall-clock time, as the engine sees it.
#[async_trait]
pub trait Clock: Send + Sync {
    /// Now, in ms since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Returns once `now_ms() >= deadline_ms`.
    async fn sleep_until_ms(&self, deadline_ms: u64);
}

/// The system clock; sleeps with tokio timers.
#[derive(Debug, Default, Clone)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0)
    }

    async fn sleep_until_ms(&self, deadline_ms: u64) {
        loop {
            let now_ms = self.now_ms();
            if now_ms >= deadline_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(deadline_ms - now_ms)).await;
        }
    }
}

/// A clock driven by tokio's timer: with `tokio::time::pause()` it is virtual time, starting
/// at `epoch_base_ms`. Every copy shares its origin, so an engine reopened after a simulated
/// crash sees time continue.
#[derive(Debug, Clone)]
pub struct TokioClock {
    epoch_base_ms: u64,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `epoch_base_ms` now. Must be called inside a tokio runtime.
    pub fn new(epoch_base_ms: u64) -> Self {
        TokioClock {
            epoch_base_ms,
            origin: tokio::time::Instant::now(),
        }
    }

    /// The epoch time at which this clock started.
    pub fn epoch_base_ms(&self) -> u64 {
        self.epoch_base_ms
    }

    /// Virtual ms elapsed since the clock started.
    pub fn elapsed_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

#[async_trait]
impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.epoch_base_ms + self.elapsed_ms()
    }

    async fn sleep_until_ms(&self, deadline_ms: u64) {
        let offset_ms = deadline_ms.saturating_sub(self.epoch_base_ms);
        tokio::time::sleep_until(self.origin + Duration::from_millis(offset_ms)).await;
    }
}

/// Randomness for jitter and ids.
pub trait Entropy: Send + Sync {
    /// A random u32.
    fn next_u32(&self) -> u32;
    /// Random bytes for an id.
    fn fill(&self, bytes: &mut [u8]);
}

/// Entropy from a seeded ChaCha generator: reproducible runs.
#[derive(Debug)]
pub struct SeededEntropy {
    rng: std::sync::Mutex<rand_chacha::ChaCha8Rng>,
}

impl SeededEntropy {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        SeededEntropy {
            rng: std::sync::Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
        }
    }
}

impl Entropy for SeededEntropy {
    fn next_u32(&self) -> u32 {
        use rand::RngCore;
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_u32()
    }

    fn fill(&self, bytes: &mut [u8]) {
        use rand::RngCore;
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill_bytes(bytes)
    }
}

/// Entropy from the operating system.
#[derive(Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn next_u32(&self) -> u32 {
        rand::random()
    }

    fn fill(&self, bytes: &mut [u8]) {
        use rand::RngCore;
        rand::thread_rng().fill_bytes(bytes)
    }
}

/// A uuid v7 from a time in ms and the given entropy: ids sort by creation time.
pub fn new_procedure_id(now_ms: u64, entropy: &dyn Entropy) -> Uuid {
    let mut random = [0u8; 10];
    entropy.fill(&mut random);
    uuid::Builder::from_unix_timestamp_millis(now_ms, &random).into_uuid()
}

/// Everything the engine needs from outside, bundled.
#[derive(Clone)]
pub struct Ports {
    /// Datanode mailbox.
    pub mailbox: Arc<dyn Mailbox>,
    /// Routing metadata, as running procedures read and write it.
    pub metadata: Arc<dyn MetadataStore>,
    /// The metadata that submit validation reads; usually the same store as `metadata`
    /// (the simulator gives one that its injected faults never hit).
    pub submit_metadata: Arc<dyn MetadataStore>,
    /// Failure detectors and caches.
    pub hooks: Arc<dyn ClusterHooks>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Randomness.
    pub entropy: Arc<dyn Entropy>,
    /// When datanodes last heartbeated (R2.3).
    pub lease_renewals: Arc<dyn LeaseRenewals>,
}

impl Ports {
    /// Ports over your datanode mailbox and metadata store, with the defaults for the rest
    /// (no hooks, the system clock, the OS's randomness, no heartbeat knowledge); change
    /// any of them on the builder.
    pub fn builder(mailbox: Arc<dyn Mailbox>, metadata: Arc<dyn MetadataStore>) -> PortsBuilder {
        PortsBuilder {
            ports: Ports {
                mailbox,
                submit_metadata: metadata.clone(),
                metadata,
                hooks: Arc::new(NoopHooks),
                clock: Arc::new(SystemClock),
                entropy: Arc::new(OsEntropy),
                lease_renewals: Arc::new(NoLeaseRenewals),
            },
        }
    }
}

/// Builds [`Ports`]; made by [`Ports::builder`].
#[must_use]
pub struct PortsBuilder {
    ports: Ports,
}

impl PortsBuilder {
    /// Failure detectors and caches (default: [`NoopHooks`]).
    pub fn hooks(mut self, hooks: Arc<dyn ClusterHooks>) -> Self {
        self.ports.hooks = hooks;
        self
    }

    /// Time (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.ports.clock = clock;
        self
    }

    /// Randomness (default: [`OsEntropy`]).
    pub fn entropy(mut self, entropy: Arc<dyn Entropy>) -> Self {
        self.ports.entropy = entropy;
        self
    }

    /// When datanodes last heartbeated (default: [`NoLeaseRenewals`]).
    pub fn lease_renewals(mut self, lease_renewals: Arc<dyn LeaseRenewals>) -> Self {
        self.ports.lease_renewals = lease_renewals;
        self
    }

    /// The metadata submit validation reads (default: the procedures' store).
    pub fn submit_metadata(mut self, submit_metadata: Arc<dyn MetadataStore>) -> Self {
        self.ports.submit_metadata = submit_metadata;
        self
    }

    /// The ports.
    pub fn build(self) -> Ports {
        self.ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metadata_error_names_its_kind_and_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = MetadataError::new(MetadataErrorKind::Unavailable, "read table route 1024")
            .with_source(io);
        assert_eq!(
            error.to_string(),
            "metadata store error (unavailable): read table route 1024"
        );
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), "connection refused");
        // Equal by kind and reason; the source is not compared.
        assert_eq!(
            error,
            MetadataError::new(MetadataErrorKind::Unavailable, "read table route 1024")
        );
        assert_ne!(
            error,
            MetadataError::new(MetadataErrorKind::Timeout, "read table route 1024")
        );
    }

    #[test]
    fn the_ports_builder_fills_the_defaults_and_takes_overrides() {
        struct NoMailbox;
        #[async_trait]
        impl Mailbox for NoMailbox {
            async fn send(&self, _: &Peer, _: Instruction, _: u64) -> MailboxOutcome {
                MailboxOutcome::Unreachable
            }
        }
        let metadata: Arc<dyn MetadataStore> = Arc::new(memory::MemoryMetadataStore::new());
        let defaults = Ports::builder(Arc::new(NoMailbox), metadata.clone()).build();
        assert!(Arc::ptr_eq(&defaults.metadata, &defaults.submit_metadata));
        // The system clock: within a minute of now.
        let now_ms = SystemClock.now_ms();
        assert!(defaults.clock.now_ms().abs_diff(now_ms) < 60_000);
        let other: Arc<dyn MetadataStore> = Arc::new(memory::MemoryMetadataStore::new());
        let custom = Ports::builder(Arc::new(NoMailbox), metadata)
            .clock(Arc::new(TokioClock::new(1_000)))
            .entropy(Arc::new(SeededEntropy::new(3)))
            .submit_metadata(other.clone())
            .build();
        assert!(Arc::ptr_eq(&custom.submit_metadata, &other));
        assert_eq!(custom.entropy.next_u32(), SeededEntropy::new(3).next_u32());
    }
}
