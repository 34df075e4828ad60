//! The write path: validating an append against the in-memory writer state, turning it
//! into one sled batch, and the group-commit thread that shares one flush + fdatasync
//! between every append that arrived while the previous one was syncing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::error::LogError;
use super::keys::{
    encode_global_runs, event_key, event_prefix, global_key, global_runs_event_count, hex,
    open_key, parse_global_key, parse_global_runs, parse_open_key, parse_u64, peer_audit_key,
    region_audit_key, region_open_key, GlobalRun, GLOBAL_RUNS_PER_ENTRY_MAX, PREFIX_EVENT,
    PREFIX_GLOBAL, PREFIX_OPEN,
};
use super::mark::{Mark, MarkWriter};
use super::record::decode_record;
use super::record::{
    chain_hash, encode_record, envelope_violation, ChainHash, Record, CHAIN_START, FORMAT_VERSION,
    PAYLOAD_MAX_BYTES,
};
use super::{AppendConflict, AppendReceipt, AppendRequest, Core};

/// The most events one append may carry.
pub const APPEND_EVENTS_MAX: usize = 4096;
/// The most peers one `OpenProcedure` may name.
pub const OPEN_PEERS_MAX: usize = 64;
/// Above this many cached next-seqs, the cache keeps only open procedures (the others are
/// read back from the tree when they append again).
const NEXT_SEQ_CACHE_MAX: usize = 65_536;
/// The most requests one group commit takes, whatever their event count.
const GROUP_REQUESTS_MAX: usize = 65_536;
/// How long the commit thread polls for the next request before it parks.
const COMMITTER_SPIN: Duration = Duration::from_micros(50);

/// The result of one append, as the caller sees it.
pub(crate) type AppendOutcome = Result<Result<AppendReceipt, AppendConflict>, LogError>;

/// What the writer must know to validate an append without reading history: the next
/// global seq, each active procedure's next seq, and which procedure holds which region.
/// Only ever touched under `Core::writer`.
pub(crate) struct WriterState {
    next_global_seq: u64,
    /// Next seq per procedure that appended recently; a miss reads the last event key.
    next_seq_by_procedure: HashMap<Uuid, u64>,
    open_region_by_procedure: HashMap<Uuid, u64>,
    open_procedure_by_region: HashMap<u64, Uuid>,
    /// The chain hash of the last record (global seq `next_global_seq - 1`).
    pub(crate) last_hash: ChainHash,
    /// Writes the high-water mark; `None` for a log opened for reading.
    pub(crate) mark_writer: Option<MarkWriter>,
    /// The last mark written (or read at open).
    pub(crate) mark: Mark,
}

impl WriterState {
    /// Reads the last global seq and the open index: nothing else of the history.
    pub(crate) fn load(tree: &sled::Tree) -> Result<Self, LogError> {
        let next_global_seq = next_global_seq_on_disk(tree)?;
        let mut state = WriterState {
            next_global_seq,
            next_seq_by_procedure: HashMap::new(),
            open_region_by_procedure: HashMap::new(),
            open_procedure_by_region: HashMap::new(),
            last_hash: CHAIN_START,
            mark_writer: None,
            mark: Mark::empty(),
        };
        for item in tree.scan_prefix([PREFIX_OPEN]) {
            let (key, value) = item?;
            match (parse_open_key(&key), parse_u64(&value)) {
                (Some(procedure_id), Some(region_id)) => {
                    state
                        .open_region_by_procedure
                        .insert(procedure_id, region_id);
                    state
                        .open_procedure_by_region
                        .insert(region_id, procedure_id);
                }
                _ => tracing::warn!(
                    key = %hex(&key),
                    "malformed open-procedure entry ignored by the writer; `regmig log verify` reports it"
                ),
            }
        }
        Ok(state)
    }

    /// The next seq of `procedure_id`: from the cache, or from its last event key.
    fn next_seq(&mut self, tree: &sled::Tree, procedure_id: Uuid) -> Result<u64, LogError> {
        if let Some(next_seq) = self.next_seq_by_procedure.get(&procedure_id) {
            return Ok(*next_seq);
        }
        let next_seq = next_seq_on_disk(tree, procedure_id)?;
        self.next_seq_by_procedure.insert(procedure_id, next_seq);
        Ok(next_seq)
    }

    /// Forgets what is cached of `procedure_id` (its events were archived): its next seq
    /// is read from the disk again.
    pub(crate) fn forget(&mut self, procedure_id: Uuid) {
        self.next_seq_by_procedure.remove(&procedure_id);
    }

    /// The state of a log opened for reading: it never writes.
    pub(crate) fn read_only() -> Self {
        WriterState {
            next_global_seq: 1,
            next_seq_by_procedure: HashMap::new(),
            open_region_by_procedure: HashMap::new(),
            open_procedure_by_region: HashMap::new(),
            last_hash: CHAIN_START,
            mark_writer: None,
            mark: Mark::empty(),
        }
    }

    /// The global seq the next accepted event gets.
    pub(crate) fn next_global_seq(&self) -> u64 {
        self.next_global_seq
    }

    /// Validates `request`, adds its keys to `batch` and its run to `runs` (the group's
    /// global-order entry). On a conflict or an error nothing is touched; on success the
    /// state already reflects the batch.
    pub(crate) fn plan(
        &mut self,
        tree: &sled::Tree,
        request: AppendRequest,
        batch: &mut sled::Batch,
        runs: &mut Vec<GlobalRun>,
    ) -> AppendOutcome {
        validate(&request)?;
        let procedure_id = request.procedure_id;
        let next_seq = self.next_seq(tree, procedure_id)?;
        if request.expected_next_seq != next_seq {
            return Ok(Err(AppendConflict::Sequence {
                procedure_id,
                expected_next_seq: request.expected_next_seq,
                actual_next_seq: next_seq,
            }));
        }
        if let Some(opens) = &request.opens {
            if let Some(open_procedure_id) = self.open_procedure_by_region.get(&opens.region_id) {
                return Ok(Err(AppendConflict::RegionBusy {
                    region_id: opens.region_id,
                    open_procedure_id: *open_procedure_id,
                }));
            }
        }

        let event_count = request.events.len() as u64;
        let first_global_seq = self.next_global_seq;
        let first_recorded_at_ms = request.events[0].recorded_at_ms;
        for (offset, event) in (0u64..).zip(request.events) {
            let record = Record {
                format_version: FORMAT_VERSION,
                kind: event.kind,
                procedure_id,
                seq: next_seq + offset,
                global_seq: first_global_seq + offset,
                recorded_at_ms: event.recorded_at_ms,
                payload: event.payload,
                prev_hash: Some(self.last_hash),
            };
            // validate() checked everything the caller controls; what is left is ours.
            assert_eq!(
                envelope_violation(&record),
                None,
                "the writer built a bad record"
            );
            let bytes = encode_record(&record);
            self.last_hash = chain_hash(&bytes);
            batch.insert(&event_key(procedure_id, record.seq)[..], bytes);
        }
        runs.push(GlobalRun {
            procedure_id,
            first_seq: next_seq,
            event_count: u32::try_from(event_count)
                .expect("validate() bounds the events of an append"),
        });
        if let Some(opens) = request.opens {
            let mut peers = opens.peers;
            peers.sort_unstable();
            peers.dedup();
            batch.insert(
                &region_audit_key(opens.region_id, first_recorded_at_ms, procedure_id)[..],
                &[][..],
            );
            for peer_id in peers {
                batch.insert(
                    &peer_audit_key(peer_id, first_recorded_at_ms, procedure_id)[..],
                    &[][..],
                );
            }
            if !request.closes {
                batch.insert(
                    &open_key(procedure_id)[..],
                    &opens.region_id.to_be_bytes()[..],
                );
                batch.insert(
                    &region_open_key(opens.region_id)[..],
                    procedure_id.as_bytes(),
                );
                self.open_region_by_procedure
                    .insert(procedure_id, opens.region_id);
                self.open_procedure_by_region
                    .insert(opens.region_id, procedure_id);
            }
        }
        if request.closes {
            if let Some(region_id) = self.open_region_by_procedure.remove(&procedure_id) {
                batch.remove(&open_key(procedure_id)[..]);
                if self.open_procedure_by_region.get(&region_id) == Some(&procedure_id) {
                    self.open_procedure_by_region.remove(&region_id);
                    batch.remove(&region_open_key(region_id)[..]);
                }
            }
        }
        self.next_seq_by_procedure
            .insert(procedure_id, next_seq + event_count);
        self.next_global_seq = first_global_seq + event_count;
        Ok(Ok(AppendReceipt {
            first_seq: next_seq,
            last_seq: next_seq + event_count - 1,
            first_global_seq,
        }))
    }

    /// Keeps the next-seq cache bounded. Only between groups: within one, the tree does not
    /// yet hold the planned events, so an evicted entry would be read back stale.
    pub(crate) fn evict_if_over_bound(&mut self) {
        if self.next_seq_by_procedure.len() > NEXT_SEQ_CACHE_MAX {
            let open = &self.open_region_by_procedure;
            self.next_seq_by_procedure
                .retain(|procedure_id, _| open.contains_key(procedure_id));
        }
    }
}

/// Adds the global-order entries of a group whose first event has `first_global_seq`:
/// one entry per [`GLOBAL_RUNS_PER_ENTRY_MAX`] runs.
pub(crate) fn add_global_entries(
    batch: &mut sled::Batch,
    first_global_seq: u64,
    runs: &[GlobalRun],
) {
    let mut entry_first_global_seq = first_global_seq;
    for chunk in runs.chunks(GLOBAL_RUNS_PER_ENTRY_MAX) {
        batch.insert(
            &global_key(entry_first_global_seq)[..],
            encode_global_runs(chunk),
        );
        entry_first_global_seq += global_runs_event_count(chunk);
    }
}

/// The global seq the next event gets: one past the end of the last global-order entry.
/// When that entry is damaged (verify() reports it), the records themselves are scanned.
fn next_global_seq_on_disk(tree: &sled::Tree) -> Result<u64, LogError> {
    let Some(item) = tree.scan_prefix([PREFIX_GLOBAL]).next_back() else {
        // Everything archived: the log goes on after the cut.
        return Ok(super::archive::read_checkpoint(tree)?
            .map_or(1, |checkpoint| checkpoint.cut_global_seq + 1));
    };
    let (key, value) = item?;
    if let (Some(first_global_seq), Some(runs)) =
        (parse_global_key(&key), parse_global_runs(&value))
    {
        return Ok(first_global_seq + global_runs_event_count(&runs));
    }
    tracing::warn!(key = %hex(&key), "the last global-order entry is damaged; scanning the records for the last global seq");
    let mut last_global_seq = parse_global_key(&key).unwrap_or(0);
    for item in tree.scan_prefix([PREFIX_EVENT]) {
        let (key, value) = item?;
        if let Ok(record) = decode_record(&key, &value) {
            last_global_seq = last_global_seq.max(record.global_seq);
        }
    }
    Ok(last_global_seq + 1)
}

/// The next seq of a procedure as stored: one past its last event key.
pub(crate) fn next_seq_on_disk(tree: &sled::Tree, procedure_id: Uuid) -> Result<u64, LogError> {
    match tree.scan_prefix(event_prefix(procedure_id)).next_back() {
        None => Ok(1),
        Some(item) => {
            let (key, _) = item?;
            let (_, seq) = super::sled_store::checked_event_key(&key)?;
            Ok(seq.saturating_add(1))
        }
    }
}

/// The checks on what the caller controls; a failure is the caller's bug.
pub(crate) fn validate(request: &AppendRequest) -> Result<(), LogError> {
    let invalid = |reason: String| LogError::InvalidAppend {
        procedure_id: request.procedure_id,
        reason,
    };
    if request.procedure_id.get_version_num() != 7 {
        return Err(invalid(format!(
            "procedure id is a uuid v{}, the log takes uuid v7 only",
            request.procedure_id.get_version_num()
        )));
    }
    if request.events.is_empty() {
        return Err(invalid("no events".to_string()));
    }
    if request.events.len() > APPEND_EVENTS_MAX {
        return Err(invalid(format!(
            "{} events, at most {APPEND_EVENTS_MAX} per append",
            request.events.len()
        )));
    }
    if request.expected_next_seq == 0 {
        return Err(invalid(
            "expected_next_seq is 0; sequences start at 1".to_string(),
        ));
    }
    if request
        .expected_next_seq
        .checked_add(request.events.len() as u64)
        .is_none()
    {
        return Err(invalid("the sequence would overflow u64".to_string()));
    }
    if let Some(event) = request
        .events
        .iter()
        .find(|event| event.payload.len() > PAYLOAD_MAX_BYTES)
    {
        return Err(invalid(format!(
            "a payload of {} bytes, at most {PAYLOAD_MAX_BYTES}",
            event.payload.len()
        )));
    }
    if let Some(opens) = &request.opens {
        if request.expected_next_seq != 1 {
            return Err(invalid(format!(
                "`opens` comes with the first batch (seq 1), not with seq {}",
                request.expected_next_seq
            )));
        }
        if opens.peers.len() > OPEN_PEERS_MAX {
            return Err(invalid(format!(
                "{} peers, at most {OPEN_PEERS_MAX}",
                opens.peers.len()
            )));
        }
    }
    Ok(())
}

/// A message to the group-commit thread.
pub(crate) enum CommitMessage {
    /// Append, then answer once durable.
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<AppendOutcome>,
    },
    /// Make every write so far durable, then answer.
    Sync {
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

impl CommitMessage {
    fn event_count(&self) -> usize {
        match self {
            CommitMessage::Append { request, .. } => request.events.len(),
            CommitMessage::Sync { .. } => 0,
        }
    }
}

/// The group-commit thread: takes every queued message (up to `group_events_max` events),
/// writes them as one batch, syncs once, answers all. Returns when every sender is gone.
pub(crate) fn run_committer(
    core: Arc<Core>,
    mut receiver: mpsc::Receiver<CommitMessage>,
    group_events_max: usize,
) {
    let mut carried: Option<CommitMessage> = None;
    loop {
        let first = match carried.take() {
            Some(message) => message,
            None => match next_message(&mut receiver) {
                Some(message) => message,
                None => return,
            },
        };
        let mut requests = Vec::new();
        let mut append_replies = Vec::new();
        let mut sync_replies = Vec::new();
        let mut group_events = 0usize;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            group_events += message.event_count();
            match message {
                CommitMessage::Append { request, reply } => {
                    requests.push(request);
                    append_replies.push(reply);
                }
                CommitMessage::Sync { reply } => sync_replies.push(reply),
            }
            if group_events >= group_events_max
                || requests.len() + sync_replies.len() >= GROUP_REQUESTS_MAX
            {
                break;
            }
            if let Ok(message) = receiver.try_recv() {
                if group_events + message.event_count() > group_events_max {
                    carried = Some(message);
                } else {
                    next = Some(message);
                }
            }
        }
        let outcome = core.commit(requests, !sync_replies.is_empty());
        // A caller that stopped waiting (its future was dropped) gets no answer; its append
        // is in the log all the same.
        for (reply, append) in append_replies.into_iter().zip(outcome.appends) {
            let _ = reply.send(append);
        }
        for reply in sync_replies {
            let _ = reply.send(outcome.sync.as_ref().map(|_| ()).map_err(|error| {
                LogError::WriteFailed {
                    reason: error.to_string(),
                }
            }));
        }
    }
}

/// The next message: polled for [`COMMITTER_SPIN`] first, since a writer that was just
/// answered usually sends its next append within microseconds and waking a parked thread
/// costs tens of them; then parked. `None` once every sender is gone.
fn next_message(receiver: &mut mpsc::Receiver<CommitMessage>) -> Option<CommitMessage> {
    let spin_started = Instant::now();
    while spin_started.elapsed() < COMMITTER_SPIN {
        match receiver.try_recv() {
            Ok(message) => return Some(message),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
    receiver.blocking_recv()
}

/// What one group commit came to.
pub(crate) struct CommitOutcome {
    /// One outcome per request, in order.
    pub(crate) appends: Vec<AppendOutcome>,
    /// Whether the sync (when one was done or asked for) succeeded.
    pub(crate) sync: Result<(), LogError>,
}
