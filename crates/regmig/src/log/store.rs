//! The log's storage port: what a backend must do to carry the history, and nothing about
//! how. [`EventLog`](super::EventLog) holds one `Arc<dyn LogStore>`; sled
//! ([`SledStore`](super::sled_store::SledStore)) is the first implementation.
//!
//! # What a store owns, what the log above it owns
//! A store stores records and their indexes and enforces the rules only it can enforce
//! atomically: one procedure's seqs are unique and gapless (an append names the next seq it
//! expects, [`AppendConflict::Sequence`] otherwise), a region has at most one open
//! procedure ([`AppendConflict::RegionBusy`]), a group of appends is written all or
//! nothing, and an append returns only when it is as durable as
//! [`Durability`](super::Durability) asks. It hands records back as the bytes it stored.
//!
//! The log above decodes those bytes and checks them (the envelope's checksum, version and
//! fields, [`decode_record`](super::decode_record)), checks that a procedure's records
//! follow without gaps and that a global-order read returns the global seqs it asked for.
//! Every backend gets those checks without writing them.
//!
//! A store seals records with the shared envelope and hash chain
//! ([`encode_record`](super::encode_record), [`chain_hash`](super::chain_hash)) at the
//! point where it assigns global seqs, because that is the one place that knows the
//! predecessor of each record: inside sled's writer lock, inside a database transaction.
//!
//! # Async, and blocking callers
//! Every operation is async so that a networked store (PostgreSQL, issue 16) awaits its
//! round trips instead of holding a thread. [`EventLog`](super::EventLog) keeps a
//! synchronous API for the CLI and the simulator: it drives the store's future with
//! [`block_on`], a small executor that parks the calling thread. That works for any store
//! whose futures do not need the caller's runtime to make progress (sled's complete
//! inline; a tokio-postgres client talks to a connection task on its own runtime). A
//! caller inside an async runtime should use the async methods. Appends and syncs have
//! their own blocking methods, because sled's async append may hand work to its commit
//! thread, and a blocking caller should not pay for that hand-off.
//!
//! # Fencing
//! A store that several engines share (issue 16) checks the writer's epoch in the same
//! transaction as each append and refuses a deposed writer's with [`LogError::Fenced`];
//! the engine then stops at once and sends nothing more. [`LogStore::writer_epoch`] says
//! which epoch this handle writes with. sled has one writer per directory (a file lock),
//! so it has no epoch and never returns `Fenced`.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use async_trait::async_trait;
use uuid::Uuid;

use super::{AppendConflict, AppendReceipt, AppendRequest, ChainHash, LogError};

/// What an append came to: a receipt, an expected race ([`AppendConflict`]), or a fault.
pub type AppendResult = Result<Result<AppendReceipt, AppendConflict>, LogError>;

/// One record as a store holds it: its place in its procedure and its bytes, not yet
/// checked (the log above decodes and checks them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The procedure, as the store indexes the record.
    pub procedure_id: Uuid,
    /// The seq, as the store indexes the record.
    pub seq: u64,
    /// The record's bytes (the envelope of `migrations-log-format.md`), as written.
    pub bytes: Vec<u8>,
}

/// A record read in global order: the global seq the store's order lists it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEvent {
    /// The global seq the store lists the record at (checked against the record above).
    pub global_seq: u64,
    /// The record.
    pub event: StoredEvent,
}

/// One audit-index entry: a procedure whose first event was recorded at `recorded_at_ms`
/// and named `owner_id` (a region or a peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditEntry {
    /// The region or peer the entry is filed under.
    pub owner_id: u64,
    /// When the procedure's first event was recorded, in ms since the Unix epoch.
    pub recorded_at_ms: u64,
    /// The procedure.
    pub procedure_id: Uuid,
}

/// Which audit index to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditIndex {
    /// Procedures by the region they migrate.
    Region,
    /// Procedures by each datanode they name.
    Peer,
}

/// The storage of one event log. See the module documentation for the split of duties.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Where the history lives, for messages: a directory, or a URL without its password.
    fn location(&self) -> String;

    /// Whether this handle only reads (every append is refused with
    /// [`LogError::ReadOnly`]).
    fn is_read_only(&self) -> bool;

    /// What opening the store found wrong, for a handle that reads a damaged log (a
    /// writer's open refuses damage instead).
    fn damage(&self) -> Option<&LogError>;

    /// The epoch this handle writes with, for a store that fences deposed writers; `None`
    /// for a store with one writer by construction (sled).
    fn writer_epoch(&self) -> Option<u64> {
        None
    }

    /// The store as `Any`, so a backend's own extras (sled's database handle) stay on the
    /// backend's type: see [`SledStore::of`](super::sled_store::SledStore::of).
    fn as_any(&self) -> &dyn std::any::Any;

    /// Appends one batch of one procedure's events, all or nothing: the first gets
    /// `request.expected_next_seq`, or the append is an [`AppendConflict::Sequence`].
    /// Concurrent appends may share one durable write (group commit).
    ///
    /// If the future is dropped before it completes, the append may still be written:
    /// read [`LogStore::next_seq`] to find out.
    async fn append(&self, request: AppendRequest) -> AppendResult;

    /// [`LogStore::append`] for a caller outside any async runtime, on its own thread.
    fn append_blocking(&self, request: AppendRequest) -> AppendResult;

    /// Makes every write acknowledged so far durable (for a store that shares its
    /// durability with other data, theirs too). A no-op when appends are not synced.
    async fn sync(&self) -> Result<(), LogError>;

    /// [`LogStore::sync`] for a caller outside any async runtime.
    fn sync_blocking(&self) -> Result<(), LogError>;

    /// The seq the next event of `procedure_id` gets (1 for a procedure never seen).
    async fn next_seq(&self, procedure_id: Uuid) -> Result<u64, LogError>;

    /// A procedure's stored records with seq `from_seq` or later, in seq order.
    async fn procedure_events(
        &self,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<Vec<StoredEvent>, LogError>;

    /// At most `limit` records in global order from `from_global_seq` on (archived
    /// records excluded), each with the global seq the store lists it at. A gap in the
    /// store's own order is an error ([`LogError::GlobalSequenceGap`]).
    async fn events_from(
        &self,
        from_global_seq: u64,
        limit: usize,
    ) -> Result<Vec<ListedEvent>, LogError>;

    /// The open procedures, with their region, in id order.
    async fn open_procedures(&self) -> Result<Vec<(Uuid, u64)>, LogError>;

    /// The open procedure of a region, if it has one.
    async fn open_procedure_of_region(&self, region_id: u64) -> Result<Option<Uuid>, LogError>;

    /// The entries of an audit index with owner in `owners` and first event recorded in
    /// `since_ms..=until_ms`, by owner, then time, then procedure id.
    async fn audit_entries(
        &self,
        index: AuditIndex,
        owners: std::ops::RangeInclusive<u64>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<AuditEntry>, LogError>;

    /// Every procedure that has a live (not archived) event, in id order.
    async fn procedures(&self) -> Result<Vec<Uuid>, LogError>;

    /// Where the store recorded its log's end (last global seq, its chain hash) beside the
    /// data, in the same atomic write as every append, so a verify can tell a lost tail
    /// from a short log: PostgreSQL's head row. `None` for a store without one (sled
    /// checks its own mark file, outside this trait).
    async fn recorded_head(&self) -> Result<Option<(u64, ChainHash)>, LogError> {
        Ok(None)
    }
}

/// Runs `future` to completion on the calling thread, parking it while the future waits.
/// For the blocking API of [`EventLog`](super::EventLog) over an async [`LogStore`]; see
/// the module documentation for when that is sound.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_finishes_a_future_woken_from_another_thread() {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            sender.send(7u32).expect("the receiver waits");
        });
        assert_eq!(block_on(receiver), Ok(7));
        thread.join().expect("the sender thread");
    }
}
