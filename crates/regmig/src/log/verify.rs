//! `verify()`: one walk over the whole log tree that checks every record and every index
//! entry against the events, and reports every problem it finds.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::archive::read_checkpoint;
use super::error::LogError;
use super::keys::CHECKPOINT_KEY;
use super::keys::{
    event_key, global_key, global_runs_event_count, hex, locate_in_global_runs, open_key,
    parse_audit_key, parse_event_key, parse_global_key, parse_global_runs, parse_open_key,
    parse_region_open_key, parse_u64, parse_uuid, region_audit_key, region_open_key, GlobalRun,
    LAYOUT_KEY, LAYOUT_VERSION, PREFIX_EVENT, PREFIX_GLOBAL, PREFIX_META, PREFIX_OPEN,
    PREFIX_PEER_AUDIT, PREFIX_REGION_AUDIT, PREFIX_REGION_OPEN,
};
use super::mark::read_mark;
use super::record::{chain_hash, decode_record, ChainHash, Record, CHAIN_START, FORMAT_VERSION_V1};
use super::store::{ListedEvent, LogStore};
use super::tail::{check_against_mark, read_tail};
use super::{check_listed_bytes, malformed_global_entry, Core};

/// The most problems a report lists; past it they are only counted.
pub const VERIFY_PROBLEMS_MAX: usize = 10_000;

/// What `verify()` found: counts, and every problem (each naming procedure, seq and key).
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Event records stored (damaged ones included).
    pub events: u64,
    /// Procedures with at least one stored event.
    pub procedures: u64,
    /// Entries of the open-procedures index.
    pub open_procedures: u64,
    /// Every problem found, in key order (at most [`VERIFY_PROBLEMS_MAX`]).
    pub problems: Vec<LogError>,
    /// Problems found past [`VERIFY_PROBLEMS_MAX`], not listed.
    pub problems_omitted: u64,
    /// The hash chain, walked in global order.
    pub chain: ChainReport,
    /// The last global seq archived (0: never archived); the live log starts after it.
    pub archived_to_global_seq: u64,
}

/// The hash chain as `verify()` walked it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// The global seq of the first record that carries a chain link; `None` when no record
    /// does (an empty log, or a log of version-1 records only: it has no chain).
    pub chained_from_global_seq: Option<u64>,
    /// The global seq of the last record walked (0: none).
    pub head_global_seq: u64,
    /// The chain hash of that record: whoever writes it down can later check that the
    /// history up to it is unchanged ([`CHAIN_START`] for an empty log).
    pub head_hash: ChainHash,
    /// Records walked in global order.
    pub records: u64,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.problems_omitted == 0
    }

    /// Every problem found, listed or not.
    pub fn problem_count(&self) -> u64 {
        self.problems.len() as u64 + self.problems_omitted
    }

    fn push(&mut self, problem: LogError) {
        if self.problems.len() < VERIFY_PROBLEMS_MAX {
            self.problems.push(problem);
        } else {
            self.problems_omitted += 1;
        }
    }
}

/// Walks the whole tree once, in key order.
pub(crate) fn verify(core: &Core) -> Result<VerifyReport, LogError> {
    // After an archive the live history starts past the cut, chained to its hash.
    let (checkpoint, checkpoint_problem) = match read_checkpoint(&core.tree) {
        Ok(checkpoint) => (checkpoint, None),
        Err(error @ LogError::Storage { .. }) => return Err(error),
        Err(problem) => (None, Some(problem)),
    };
    let (cut_global_seq, hash_at_cut) = checkpoint.map_or((0, CHAIN_START), |checkpoint| {
        (checkpoint.cut_global_seq, checkpoint.hash_at_cut)
    });
    let mut walker = Walker {
        tree: &core.tree,
        report: VerifyReport {
            archived_to_global_seq: cut_global_seq,
            ..VerifyReport::default()
        },
        current_procedure: None,
        next_global_seq: Some(cut_global_seq + 1),
        last_global_entry: None,
        layout_seen: false,
    };
    core.walk(None, |key, value| walker.visit(key, value))?;
    let mut chain = ChainWalker {
        tree: &core.tree,
        check: ChainCheck::after(cut_global_seq, hash_at_cut),
    };
    core.walk(Some(PREFIX_GLOBAL), |key, value| chain.visit(key, value))?;
    let chain = chain.check;
    walker.report.chain = chain.chain;
    if let Some(problem) = checkpoint_problem {
        walker.report.push(problem);
    }
    for problem in chain.problems {
        walker.report.push(problem);
    }
    {
        // Under the writer lock: no group moves the end or the mark meanwhile.
        let _writer = core
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let checked = read_tail(&core.tree).and_then(|tail| {
            check_against_mark(
                &core.data_dir,
                &core.tree,
                &tail,
                &read_mark(&core.data_dir),
            )
        });
        if let Err(problem) = checked {
            walker.report.push(problem);
        }
    }
    let mut report = walker.report;
    if !walker.layout_seen && report.events > 0 {
        report.push(LogError::MalformedKey {
            key: hex(LAYOUT_KEY),
            reason: "the layout marker is missing from a log that holds events".to_string(),
        });
    }
    Ok(report)
}

struct Walker<'a> {
    tree: &'a sled::Tree,
    report: VerifyReport,
    /// The procedure whose events are being walked, and the seq its next event must have.
    current_procedure: Option<(Uuid, u64)>,
    /// Where the next global-order entry must start; `None` after a malformed entry.
    next_global_seq: Option<u64>,
    /// The last global-order entry looked up for an event: consecutive events of one
    /// procedure often share it.
    last_global_entry: Option<GlobalEntry>,
    layout_seen: bool,
}

/// A parsed global-order entry.
struct GlobalEntry {
    key: Vec<u8>,
    first_global_seq: u64,
    /// `None` when the value is malformed (reported when the entry itself is walked).
    runs: Option<Vec<GlobalRun>>,
}

impl GlobalEntry {
    fn covers(&self, global_seq: u64) -> bool {
        match &self.runs {
            Some(runs) => {
                global_seq >= self.first_global_seq
                    && global_seq - self.first_global_seq < global_runs_event_count(runs)
            }
            None => global_seq == self.first_global_seq,
        }
    }
}

impl Walker<'_> {
    fn visit(&mut self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        match key.first().copied() {
            Some(PREFIX_EVENT) => self.visit_event(key, value),
            Some(PREFIX_GLOBAL) => self.visit_global(key, value),
            Some(PREFIX_OPEN) => self.visit_open(key, value),
            Some(PREFIX_REGION_OPEN) => self.visit_region_open(key, value),
            Some(prefix @ (PREFIX_REGION_AUDIT | PREFIX_PEER_AUDIT)) => {
                self.visit_audit(prefix, key, value)
            }
            Some(PREFIX_META) => {
                self.visit_meta(key, value);
                Ok(())
            }
            _ => {
                self.report.push(LogError::MalformedKey {
                    key: hex(key),
                    reason: "unknown key prefix".to_string(),
                });
                Ok(())
            }
        }
    }

    fn visit_meta(&mut self, key: &[u8], value: &[u8]) {
        if key == CHECKPOINT_KEY {
            // Read (and judged) before the walk.
        } else if key != LAYOUT_KEY {
            self.report.push(LogError::MalformedKey {
                key: hex(key),
                reason: "unknown meta key".to_string(),
            });
        } else if value != [LAYOUT_VERSION] {
            self.report.push(LogError::MalformedKey {
                key: hex(key),
                reason: format!(
                    "layout marker holds {}, expected {LAYOUT_VERSION:02x}",
                    hex(value)
                ),
            });
        } else {
            self.layout_seen = true;
        }
    }

    fn visit_event(&mut self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        let Some((procedure_id, seq)) = parse_event_key(key) else {
            self.report.push(LogError::MalformedKey {
                key: hex(key),
                reason: "an event-prefixed key of the wrong length".to_string(),
            });
            return Ok(());
        };
        self.report.events += 1;
        let expected_seq = match self.current_procedure {
            Some((current, next_seq)) if current == procedure_id => next_seq,
            _ => {
                self.report.procedures += 1;
                1
            }
        };
        if seq != expected_seq {
            self.report.push(LogError::SequenceGap {
                procedure_id,
                seq: expected_seq,
                key: hex(key),
                found_seq: seq,
            });
        }
        self.current_procedure = Some((procedure_id, seq.saturating_add(1)));
        let record = match decode_record(key, value) {
            Ok(record) => record,
            Err(problem) => {
                self.report.push(problem);
                return Ok(());
            }
        };
        self.check_listed_in_global_order(key, &record)?;
        Ok(())
    }

    /// The event's global seq must be listed, as this event, by a global-order entry.
    fn check_listed_in_global_order(
        &mut self,
        key: &[u8],
        record: &Record,
    ) -> Result<(), LogError> {
        let global_seq = record.global_seq;
        let cached = self
            .last_global_entry
            .as_ref()
            .is_some_and(|entry| entry.covers(global_seq));
        if !cached {
            self.last_global_entry = match self
                .tree
                .range(global_key(0)..=global_key(global_seq))
                .next_back()
            {
                None => None,
                Some(item) => {
                    let (entry_key, value) = item?;
                    parse_global_key(&entry_key).map(|first_global_seq| GlobalEntry {
                        key: entry_key.to_vec(),
                        first_global_seq,
                        runs: parse_global_runs(&value),
                    })
                }
            };
        }
        let listed = self.last_global_entry.as_ref().and_then(|entry| {
            let runs = entry.runs.as_ref()?;
            Some((
                entry,
                locate_in_global_runs(runs, entry.first_global_seq, global_seq),
            ))
        });
        match listed {
            Some((_, Some(found))) if found == (record.procedure_id, record.seq) => {}
            Some((entry, Some((other_id, other_seq)))) => self.report.push(LogError::IndexMismatch {
                procedure_id: Some(record.procedure_id),
                seq: Some(record.seq),
                key: hex(&entry.key),
                reason: format!(
                    "the event has global seq {global_seq}, which the global order lists as procedure {other_id} seq {other_seq}"
                ),
            }),
            // A malformed entry is reported when the walk reaches it.
            None if self.last_global_entry.as_ref().is_some_and(|entry| entry.runs.is_none()) => {}
            _ => self.report.push(LogError::IndexMismatch {
                procedure_id: Some(record.procedure_id),
                seq: Some(record.seq),
                key: hex(key),
                reason: format!("the event has global seq {global_seq}, which no global-order entry lists"),
            }),
        }
        Ok(())
    }

    fn visit_global(&mut self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        let Some(first_global_seq) = parse_global_key(key) else {
            self.report.push(LogError::MalformedKey {
                key: hex(key),
                reason: "a global-order key of the wrong length".to_string(),
            });
            return Ok(());
        };
        match self.next_global_seq {
            Some(expected) if first_global_seq > expected => self.report.push(LogError::GlobalSequenceGap {
                global_seq: expected,
                key: hex(key),
                found_global_seq: first_global_seq,
            }),
            Some(expected) if first_global_seq < expected => self.report.push(LogError::IndexMismatch {
                procedure_id: None,
                seq: None,
                key: hex(key),
                reason: format!("the entry starts at global seq {first_global_seq}, inside the previous entry (which ends before {expected})"),
            }),
            _ => {}
        }
        let Some(runs) = parse_global_runs(value) else {
            self.report.push(malformed_global_entry(key, value));
            self.next_global_seq = None;
            return Ok(());
        };
        let mut global_seq = first_global_seq;
        for run in &runs {
            for offset in 0..u64::from(run.event_count) {
                let seq = run.first_seq + offset;
                self.check_global_listing(key, global_seq, run.procedure_id, seq)?;
                global_seq += 1;
            }
        }
        self.next_global_seq = Some(global_seq);
        Ok(())
    }

    /// What a global-order entry lists at `global_seq` must exist and carry that global seq.
    fn check_global_listing(
        &mut self,
        key: &[u8],
        global_seq: u64,
        procedure_id: Uuid,
        seq: u64,
    ) -> Result<(), LogError> {
        let record_key = event_key(procedure_id, seq);
        match self.tree.get(record_key)? {
            None => self.report.push(super::sled_store::listed_but_missing(
                key,
                global_seq,
                procedure_id,
                seq,
            )),
            Some(bytes) => {
                // A record that does not decode was reported when the events were walked.
                if let Ok(record) = decode_record(&record_key, &bytes) {
                    if record.global_seq != global_seq {
                        self.report.push(LogError::IndexMismatch {
                            procedure_id: Some(procedure_id),
                            seq: Some(seq),
                            key: hex(key),
                            reason: format!(
                                "global seq {global_seq} is listed as this event, whose global seq is {}",
                                record.global_seq
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn visit_open(&mut self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        let Some(procedure_id) = parse_open_key(key) else {
            self.report.push(LogError::MalformedKey {
                key: hex(key),
                reason: "an open-procedure key of the wrong length".to_string(),
            });
            return Ok(());
        };
        self.report.open_procedures += 1;
        let mismatch = |reason: String| LogError::IndexMismatch {
            procedure_id: Some(procedure_id),
            seq: None,
            key: hex(key),
            reason,
        };
        let Some(region_id) = parse_u64(value) else {
            self.report.push(mismatch(format!(
                "the value is {} bytes, expected 8 (a region id)",
                value.len()
            )));
            return Ok(());
        };
        let region_entry = self.tree.get(region_open_key(region_id))?;
        if region_entry.as_deref().and_then(parse_uuid) != Some(procedure_id) {
            self.report.push(mismatch(format!(
                "the procedure is open on region {region_id}, but that region's open-procedure entry is {}",
                region_entry.map(|entry| hex(&entry)).unwrap_or_else(|| "missing".to_string())
            )));
        }
        match self.first_event(procedure_id)? {
            None => self
                .report
                .push(mismatch("the open procedure has no event 1".to_string())),
            Some(Ok(first)) => {
                let audit_key = region_audit_key(region_id, first.recorded_at_ms, procedure_id);
                if self.tree.get(audit_key)?.is_none() {
                    self.report.push(mismatch(format!(
                        "no region audit entry {} for the open procedure",
                        hex(&audit_key)
                    )));
                }
            }
            Some(Err(_)) => {}
        }
        Ok(())
    }

    fn visit_region_open(&mut self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        let Some(region_id) = parse_region_open_key(key) else {
            self.report.push(LogError::MalformedKey {
                key: hex(key),
                reason: "a region-open key of the wrong length".to_string(),
            });
            return Ok(());
        };
        let Some(procedure_id) = parse_uuid(value) else {
            self.report.push(LogError::IndexMismatch {
                procedure_id: None,
                seq: None,
                key: hex(key),
                reason: format!(
                    "the value is {} bytes, expected 16 (a procedure id)",
                    value.len()
                ),
            });
            return Ok(());
        };
        let open_entry = self.tree.get(open_key(procedure_id))?;
        if open_entry.as_deref().and_then(parse_u64) != Some(region_id) {
            self.report.push(LogError::IndexMismatch {
                procedure_id: Some(procedure_id),
                seq: None,
                key: hex(key),
                reason: format!(
                    "region {region_id} names this procedure as open, but the open index {}",
                    match open_entry.as_deref().map(parse_u64) {
                        None => "does not list it".to_string(),
                        Some(Some(other)) => format!("puts it on region {other}"),
                        Some(None) => "entry is malformed".to_string(),
                    }
                ),
            });
        }
        Ok(())
    }

    fn visit_audit(&mut self, prefix: u8, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        let Some((_owner_id, recorded_at_ms, procedure_id)) = parse_audit_key(prefix, key) else {
            self.report.push(LogError::MalformedKey {
                key: hex(key),
                reason: "an audit key of the wrong length".to_string(),
            });
            return Ok(());
        };
        let mismatch = |reason: String| LogError::IndexMismatch {
            procedure_id: Some(procedure_id),
            seq: Some(1),
            key: hex(key),
            reason,
        };
        if !value.is_empty() {
            self.report.push(mismatch(format!(
                "an audit entry holds {} bytes, expected none",
                value.len()
            )));
        }
        match self.first_event(procedure_id)? {
            None => self.report.push(mismatch(
                "the audit entry names a procedure that has no event 1".to_string(),
            )),
            Some(Ok(first)) if first.recorded_at_ms != recorded_at_ms => {
                self.report.push(mismatch(format!(
                    "the audit entry says {recorded_at_ms} ms, event 1 was recorded at {} ms",
                    first.recorded_at_ms
                )))
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Event 1 of a procedure: `None` if absent, `Some(Err)` if damaged (reported elsewhere).
    fn first_event(
        &self,
        procedure_id: Uuid,
    ) -> Result<Option<Result<Record, LogError>>, LogError> {
        let key = event_key(procedure_id, 1);
        Ok(self.tree.get(key)?.map(|bytes| decode_record(&key, &bytes)))
    }
}

/// Walks the global order and checks every record's link to the one before it.
struct ChainWalker<'a> {
    tree: &'a sled::Tree,
    check: ChainCheck,
}

impl ChainWalker<'_> {
    fn visit(&mut self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        // Malformed entries and gaps are reported by the key walk.
        let (Some(first_global_seq), Some(runs)) =
            (parse_global_key(key), parse_global_runs(value))
        else {
            self.check.lose_track();
            return Ok(());
        };
        if first_global_seq != self.check.chain.head_global_seq + 1 {
            self.check.lose_track();
        }
        let mut global_seq = first_global_seq;
        for run in &runs {
            for offset in 0..u64::from(run.event_count) {
                let seq = run.first_seq + offset;
                let bytes = self.tree.get(event_key(run.procedure_id, seq))?;
                self.check
                    .visit(global_seq, run.procedure_id, seq, bytes.as_deref());
                global_seq += 1;
            }
        }
        Ok(())
    }
}

/// The hash chain check, record by record in global order, whatever stores the records.
pub(crate) struct ChainCheck {
    pub(crate) chain: ChainReport,
    /// The chain hash of the record before the next one; `None` after a record that does
    /// not read (its problem is reported elsewhere), so the next link is not judged.
    prev_hash: Option<ChainHash>,
    pub(crate) problems: Vec<LogError>,
}

impl ChainCheck {
    /// A check of the history after `head_global_seq`, whose chain hash is `head_hash`
    /// ([`CHAIN_START`] at 0; the archive checkpoint's after an archive).
    pub(crate) fn after(head_global_seq: u64, head_hash: ChainHash) -> Self {
        ChainCheck {
            chain: ChainReport {
                head_hash,
                head_global_seq,
                ..ChainReport::default()
            },
            prev_hash: Some(head_hash),
            problems: Vec::new(),
        }
    }

    /// The next record is not judged against the one before it (which did not read).
    pub(crate) fn lose_track(&mut self) {
        self.prev_hash = None;
    }

    /// The record listed at `global_seq` as (`procedure_id`, `seq`), with its stored
    /// bytes (`None`: missing). A record that is missing, does not decode or carries
    /// another global seq is reported elsewhere; here it only breaks the walk.
    pub(crate) fn visit(
        &mut self,
        global_seq: u64,
        procedure_id: Uuid,
        seq: u64,
        bytes: Option<&[u8]>,
    ) {
        self.chain.head_global_seq = global_seq;
        let record_key = event_key(procedure_id, seq);
        let record = bytes
            .and_then(|bytes| decode_record(&record_key, bytes).ok())
            .filter(|record| record.global_seq == global_seq);
        let (Some(bytes), Some(record)) = (bytes, record) else {
            self.prev_hash = None;
            return;
        };
        self.chain.records += 1;
        let broken = |reason: String| LogError::ChainBroken {
            global_seq,
            procedure_id,
            seq,
            key: hex(&record_key),
            reason,
        };
        match record.prev_hash {
            None if self.chain.chained_from_global_seq.is_some() => {
                self.problems.push(broken(format!(
                    "a format version {FORMAT_VERSION_V1} record (no chain field) after chained ones: a version-{FORMAT_VERSION_V1} writer never follows a newer one"
                )));
            }
            None => {}
            Some(stored) => {
                self.chain.chained_from_global_seq.get_or_insert(global_seq);
                if let Some(expected) = self.prev_hash {
                    if stored != expected {
                        self.problems.push(broken(format!(
                            "its prev_hash is {}, but the chain hash of global seq {} is {}: a record before it was removed, replaced or reordered",
                            hex(&stored),
                            global_seq - 1,
                            hex(&expected)
                        )));
                    }
                }
            }
        }
        let hash = chain_hash(bytes);
        self.prev_hash = Some(hash);
        self.chain.head_hash = hash;
    }
}

/// How many records [`verify_store`] reads per call to the store.
const STORE_WALK_CHUNK_EVENTS: usize = 1024;

/// Verifies any store through the [`LogStore`] trait alone: every record in global order
/// decodes and checks out, each procedure's seqs follow on without a gap, the hash chain
/// holds, and the open index names procedures that have events. A backend's own index
/// checks (sled's key walk, its mark) are its own business.
pub(crate) async fn verify_store(store: &dyn LogStore) -> Result<VerifyReport, LogError> {
    let mut report = VerifyReport::default();
    let mut check = ChainCheck::after(0, CHAIN_START);
    let mut next_seq_by_procedure: BTreeMap<Uuid, u64> = BTreeMap::new();
    let mut from_global_seq = 1;
    loop {
        let listed = match store
            .events_from(from_global_seq, STORE_WALK_CHUNK_EVENTS)
            .await
        {
            Ok(listed) => listed,
            // A hole in the store's own order: report it and walk on from the record after
            // it (the records around it report what else it broke).
            Err(LogError::GlobalSequenceGap {
                global_seq,
                key,
                found_global_seq,
            }) if found_global_seq > from_global_seq => {
                report.push(LogError::GlobalSequenceGap {
                    global_seq,
                    key,
                    found_global_seq,
                });
                // Walk up to the hole, then from the record after it.
                let before = store
                    .events_from(from_global_seq, (global_seq - from_global_seq) as usize)
                    .await?;
                let resume_at = found_global_seq;
                walk_listed(&mut report, &mut check, &mut next_seq_by_procedure, before);
                from_global_seq = resume_at;
                continue;
            }
            // The store's own order is broken otherwise: what follows cannot be walked.
            Err(problem) if problem.is_damage() => {
                report.push(problem);
                break;
            }
            Err(fault) => return Err(fault),
        };
        let Some(last) = listed.last() else {
            break;
        };
        from_global_seq = last.global_seq + 1;
        let chunk_len = listed.len();
        walk_listed(&mut report, &mut check, &mut next_seq_by_procedure, listed);
        if chunk_len < STORE_WALK_CHUNK_EVENTS {
            break;
        }
    }
    report.procedures = next_seq_by_procedure.len() as u64;
    let open = store.open_procedures().await?;
    report.open_procedures = open.len() as u64;
    for (procedure_id, _) in open {
        if !next_seq_by_procedure.contains_key(&procedure_id) {
            report.push(LogError::IndexMismatch {
                procedure_id: Some(procedure_id),
                seq: None,
                key: hex(procedure_id.as_bytes()),
                reason: "the open index names a procedure that has no events".to_string(),
            });
        }
    }
    report.chain = check.chain;
    for problem in check.problems {
        report.push(problem);
    }
    if let Some((head_global_seq, head_hash)) = store.recorded_head().await? {
        if let Err(problem) = check_recorded_head(
            &store.location(),
            head_global_seq,
            &head_hash,
            report.chain.head_global_seq,
            report.chain.head_hash,
        ) {
            report.push(problem);
        }
    }
    Ok(report)
}

/// Checks records read in global order: each one's bytes, its procedure's seqs, the chain.
fn walk_listed(
    report: &mut VerifyReport,
    check: &mut ChainCheck,
    next_seq_by_procedure: &mut BTreeMap<Uuid, u64>,
    listed: Vec<ListedEvent>,
) {
    for ListedEvent { global_seq, event } in listed {
        report.events += 1;
        let key = event_key(event.procedure_id, event.seq);
        if let Err(problem) =
            check_listed_bytes(global_seq, event.procedure_id, event.seq, &event.bytes)
        {
            report.push(problem);
        }
        let expected_seq = next_seq_by_procedure.entry(event.procedure_id).or_insert(1);
        if event.seq != *expected_seq {
            report.push(LogError::SequenceGap {
                procedure_id: event.procedure_id,
                seq: *expected_seq,
                key: hex(&key),
                found_seq: event.seq,
            });
        }
        *expected_seq = event.seq.saturating_add(1);
        check.visit(
            global_seq,
            event.procedure_id,
            event.seq,
            Some(&event.bytes),
        );
    }
}

/// The end a store recorded beside its data (`head_global_seq`, `head_hash`: PostgreSQL's
/// head row, written in the same transaction as every append) against where its log ends
/// (`found_global_seq` and that record's chain hash): a log that ends earlier lost
/// acknowledged history; one that goes on, or ends on another hash, was written or
/// replaced behind the store's back. Each is [`LogError::StoreLostHistory`] naming
/// `location`.
pub(crate) fn check_recorded_head(
    location: &str,
    head_global_seq: u64,
    head_hash: &[u8],
    found_global_seq: u64,
    found_hash: ChainHash,
) -> Result<(), LogError> {
    let lost = |reason: String| {
        Err(LogError::StoreLostHistory {
            store: location.to_string(),
            head_global_seq,
            found_global_seq,
            reason,
        })
    };
    if found_global_seq < head_global_seq {
        return lost(format!(
            "but the log ends at global seq {found_global_seq}: global seqs {} to {head_global_seq} are gone",
            found_global_seq + 1
        ));
    }
    if found_global_seq > head_global_seq {
        return lost(format!(
            "but the log goes on to global seq {found_global_seq}: rows were written behind the store's back, or the head row was set back"
        ));
    }
    if head_hash != found_hash {
        return lost(format!(
            "and the log ends there, but its chain hash there is {} where the head row records {}: the last event was replaced",
            hex(&found_hash),
            hex(head_hash)
        ));
    }
    Ok(())
}
