//! `salvage`: copies every event of a damaged log that still reads back and checks out into
//! a new log, with an explicit marker event where a procedure's history is missing, so an
//! operator can get back to work. The damaged directory is only read (through a private
//! copy, like every reader).
//!
//! What checks out: a record that decodes (its checksum, its envelope), sits in an
//! unbroken run of its procedure's seqs from 1, and whose chain link agrees with its
//! predecessor when that predecessor is there. A procedure is copied up to its first
//! missing or damaged event; when anything of it is (or may be) missing, a marker record
//! of kind [`HISTORY_GAP_KIND`] follows its last copied event and the procedure is closed,
//! so no engine resumes it on a history with a hole.
//!
//! A database sled refuses to open is read from the copy without the files it refused (its
//! settings file, then its snapshots), and what sled then serves is checked against the
//! mark: a log that ends earlier than the mark says is lost history, reported and marked
//! as such, never copied as if whole.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use uuid::Uuid;

use super::keys::{
    parse_audit_key, parse_event_key, parse_open_key, PREFIX_EVENT, PREFIX_OPEN, PREFIX_PEER_AUDIT,
    PREFIX_REGION_AUDIT,
};
use super::record::{chain_hash, decode_record, Record};
use super::{
    AppendRequest, Durability, EventLog, LogError, LogOptions, NewEvent, OpenProcedure,
    OPEN_PEERS_MAX,
};

/// The kind of the marker record salvage writes where history is missing. Kinds
/// `0xff00..=0xffff` belong to the log; no migration event uses them.
pub const HISTORY_GAP_KIND: u16 = 0xff00;

/// The payload of a [`HISTORY_GAP_KIND`] record (rmp-serde, named fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HistoryGap {
    /// The first seq of the procedure that is missing from here on.
    pub missing_from_seq: u64,
    /// The data directory the history was salvaged from.
    pub salvaged_from: String,
    /// Why: what the salvage found there.
    pub reason: String,
}

impl HistoryGap {
    /// The payload of the marker record.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// The marker a [`HISTORY_GAP_KIND`] record's payload holds; `None` when it does not
    /// read.
    pub fn decode(payload: &[u8]) -> Option<HistoryGap> {
        rmp_serde::from_slice(payload).ok()
    }
}

/// What a salvage did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SalvageReport {
    /// Records that decoded in the damaged log.
    pub records_read: u64,
    /// Records copied into the new log (markers not counted).
    pub events_copied: u64,
    /// Procedures copied whole.
    pub procedures_whole: u64,
    /// Procedures copied up to a gap, each followed by a marker: (id, first missing seq).
    pub procedures_with_gap: Vec<(Uuid, u64)>,
    /// Procedures with no readable event 1: nothing of them could be copied.
    pub procedures_lost: Vec<Uuid>,
    /// Records that did not read or check out, as the errors that say why (at most 1,000).
    pub damaged_records: Vec<String>,
    /// What the open of the damaged log found, if anything.
    pub source_damage: Option<String>,
    /// Other trees of the database (the metadata store, the demo's campaign record) copied
    /// as they were, and the ones that did not read.
    pub trees_copied: Vec<String>,
    /// Trees that could not be read whole, with the reason.
    pub trees_failed: Vec<String>,
    /// The new log's last global seq.
    pub new_last_global_seq: u64,
}

const DAMAGED_LISTED_MAX: usize = 1000;

/// Copies what still reads back from the log in `from` into a new log in `to` (which must
/// not exist, or be an empty directory, outside `from`).
pub fn salvage(from: &Path, to: &Path) -> Result<SalvageReport, LogError> {
    if crate::files::is_inside(to, from) {
        return Err(LogError::io(
            "salvage into",
            to,
            std::io::Error::other(format!(
                "it is inside the damaged data directory {}, which salvage leaves untouched",
                from.display()
            )),
        ));
    }
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(LogError::io(
                    "salvage into",
                    to,
                    std::io::Error::other("the directory is not empty: salvage writes a new log"),
                ));
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(LogError::io("salvage into", to, error)),
    }
    let source = EventLog::with_store(std::sync::Arc::new(super::SledStore::open_for_salvage(
        from,
    )?));
    let mut report = SalvageReport {
        source_damage: source.damage().map(ToString::to_string),
        ..SalvageReport::default()
    };
    let core = source.core("salvage the log")?;
    let lost_history = matches!(source.damage(), Some(LogError::LostHistory(_)));

    // Every record that decodes, by procedure then seq; the walk stops where sled does.
    let mut by_procedure: BTreeMap<Uuid, BTreeMap<u64, (Record, [u8; 32])>> = BTreeMap::new();
    let mut damaged: BTreeMap<Uuid, BTreeSet<u64>> = BTreeMap::new();
    let walked = core.guarded("read the events", || {
        core.walk(Some(PREFIX_EVENT), |key, value| {
            match decode_record(key, value) {
                Ok(record) => {
                    report.records_read += 1;
                    let hash = chain_hash(value);
                    by_procedure
                        .entry(record.procedure_id)
                        .or_default()
                        .insert(record.seq, (record, hash));
                }
                Err(error) => {
                    if let Some((procedure_id, seq)) = parse_event_key(key) {
                        damaged.entry(procedure_id).or_default().insert(seq);
                    }
                    if report.damaged_records.len() < DAMAGED_LISTED_MAX {
                        report.damaged_records.push(error.to_string());
                    }
                }
            }
            Ok(())
        })
    });
    if let Err(error) = walked {
        report
            .damaged_records
            .push(format!("reading stopped early: {error}"));
    }

    // Chain links: a record whose predecessor is there but hashes otherwise is suspect.
    let mut hash_by_global: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    for records in by_procedure.values() {
        for (record, hash) in records.values() {
            hash_by_global.insert(record.global_seq, *hash);
        }
    }
    for (procedure_id, records) in &by_procedure {
        for (seq, (record, _)) in records {
            let (Some(prev_hash), Some(global_before)) =
                (record.prev_hash, record.global_seq.checked_sub(1))
            else {
                continue;
            };
            let expected = if global_before == 0 {
                Some(super::record::CHAIN_START)
            } else {
                hash_by_global.get(&global_before).copied()
            };
            if expected.is_some_and(|expected| expected != prev_hash) {
                damaged.entry(*procedure_id).or_default().insert(*seq);
                if report.damaged_records.len() < DAMAGED_LISTED_MAX {
                    report.damaged_records.push(format!(
                        "event {seq} of procedure {procedure_id}: its chain link does not match the record at global seq {global_before}"
                    ));
                }
            }
        }
    }

    // Regions, peers and the open index, for the new log's indexes.
    let mut region_of: BTreeMap<Uuid, u64> = BTreeMap::new();
    let mut peers_of: BTreeMap<Uuid, Vec<u64>> = BTreeMap::new();
    let mut open_in_source: BTreeSet<Uuid> = BTreeSet::new();
    let indexed = core.guarded("read the indexes", || {
        core.walk(Some(PREFIX_REGION_AUDIT), |key, _| {
            if let Some((region_id, _, procedure_id)) = parse_audit_key(PREFIX_REGION_AUDIT, key) {
                region_of.insert(procedure_id, region_id);
            }
            Ok(())
        })?;
        core.walk(Some(PREFIX_PEER_AUDIT), |key, _| {
            if let Some((peer_id, _, procedure_id)) = parse_audit_key(PREFIX_PEER_AUDIT, key) {
                peers_of.entry(procedure_id).or_default().push(peer_id);
            }
            Ok(())
        })?;
        core.walk(Some(PREFIX_OPEN), |key, _| {
            if let Some(procedure_id) = parse_open_key(key) {
                open_in_source.insert(procedure_id);
            }
            Ok(())
        })
    });
    if let Err(error) = indexed {
        report
            .damaged_records
            .push(format!("the indexes stopped reading early: {error}"));
    }

    // What to copy of each procedure: its unbroken, undamaged run from seq 1.
    struct Plan {
        copy_through_seq: u64,
        gap_reason: Option<String>,
    }
    let mut plans: BTreeMap<Uuid, Plan> = BTreeMap::new();
    let all_ids: BTreeSet<Uuid> = by_procedure.keys().chain(damaged.keys()).copied().collect();
    for procedure_id in all_ids {
        let records = by_procedure.get(&procedure_id);
        let bad = damaged.get(&procedure_id);
        let mut seq = 1;
        while records.is_some_and(|records| records.contains_key(&seq))
            && !bad.is_some_and(|bad| bad.contains(&seq))
        {
            seq += 1;
        }
        let copied_through = seq - 1;
        let stored_after = records.is_some_and(|records| records.range(seq..).next().is_some())
            || bad.is_some_and(|bad| bad.range(seq..).next().is_some());
        if copied_through == 0 {
            report.procedures_lost.push(procedure_id);
            continue;
        }
        let gap_reason = if stored_after || bad.is_some_and(|bad| bad.contains(&seq)) {
            Some(format!("event {seq} is missing or damaged"))
        } else if lost_history && open_in_source.contains(&procedure_id) {
            Some(
                "the log lost acknowledged history while this migration was open: its later events may be gone"
                    .to_string(),
            )
        } else {
            None
        };
        plans.insert(
            procedure_id,
            Plan {
                copy_through_seq: copied_through,
                gap_reason,
            },
        );
    }

    // Appends in the source's global order, consecutive events of a procedure together.
    let mut ordered: Vec<&Record> = Vec::new();
    for (procedure_id, plan) in &plans {
        if let Some(records) = by_procedure.get(procedure_id) {
            ordered.extend(
                records
                    .range(1..=plan.copy_through_seq)
                    .map(|(_, (record, _))| record),
            );
        }
    }
    ordered.sort_by_key(|record| record.global_seq);

    std::fs::create_dir_all(to).map_err(|error| LogError::io("create", to, error))?;
    let target = EventLog::open(
        to,
        LogOptions {
            durability: Durability::UnsyncedForTestsOnly,
            ..LogOptions::default()
        },
    )?;
    let mut index = 0;
    while index < ordered.len() {
        let procedure_id = ordered[index].procedure_id;
        let mut end = index + 1;
        while end < ordered.len()
            && ordered[end].procedure_id == procedure_id
            && end - index < super::APPEND_EVENTS_MAX
        {
            end += 1;
        }
        let batch = &ordered[index..end];
        let first_seq = batch[0].seq;
        let last_seq = batch[batch.len() - 1].seq;
        let plan = &plans[&procedure_id];
        let ends_procedure = last_seq == plan.copy_through_seq;
        // Without its region (an audit entry the damage took), a procedure is copied
        // without index entries: no engine resumes it, and `verify` stays clean.
        let opens = region_of
            .get(&procedure_id)
            .filter(|_| first_seq == 1)
            .map(|region_id| OpenProcedure {
                region_id: *region_id,
                peers: peers_of
                    .get(&procedure_id)
                    .map(|peers| peers.iter().copied().take(OPEN_PEERS_MAX).collect())
                    .unwrap_or_default(),
            });
        let mut events: Vec<NewEvent> = batch
            .iter()
            .map(|record| NewEvent {
                kind: record.kind,
                recorded_at_ms: record.recorded_at_ms,
                payload: record.payload.clone(),
            })
            .collect();
        if ends_procedure {
            if let Some(reason) = &plan.gap_reason {
                let gap = HistoryGap {
                    missing_from_seq: last_seq + 1,
                    salvaged_from: from.display().to_string(),
                    reason: reason.clone(),
                };
                events.push(NewEvent {
                    kind: HISTORY_GAP_KIND,
                    recorded_at_ms: batch[batch.len() - 1].recorded_at_ms,
                    payload: gap.encode(),
                });
                report
                    .procedures_with_gap
                    .push((procedure_id, last_seq + 1));
            } else {
                report.procedures_whole += 1;
            }
        }
        let closes = ends_procedure
            && (plan.gap_reason.is_some() || !open_in_source.contains(&procedure_id));
        report.events_copied += batch.len() as u64;
        let mut request = AppendRequest {
            procedure_id,
            expected_next_seq: first_seq,
            events,
            opens,
            closes,
        };
        if let Err(conflict) = target.append_blocking(request.clone())? {
            // Two open procedures on one region (the source's indexes disagreed): keep the
            // events, without the region's open entry.
            report.damaged_records.push(format!(
                "procedure {procedure_id} copied without its region's open entry: {conflict}"
            ));
            request.opens = None;
            if let Err(conflict) = target.append_blocking(request)? {
                return Err(LogError::WriteFailed {
                    reason: format!("salvage could not append: {conflict}"),
                });
            }
        }
        index = end;
    }

    // The other trees, as they were.
    let target_db = target.core("salvage the log")?.db.clone();
    for name in core.db.tree_names() {
        if name.as_ref() == super::keys::TREE_NAME || name.as_ref() == b"__sled__default" {
            continue;
        }
        let label = String::from_utf8_lossy(&name).into_owned();
        let copied = core.guarded("read a tree", || {
            let tree = core.db.open_tree(&name)?;
            let into = target_db.open_tree(&name)?;
            for item in tree.iter() {
                let (key, value) = item?;
                into.insert(key, value)?;
            }
            Ok(())
        });
        match copied {
            Ok(()) => report.trees_copied.push(label),
            Err(error) => report.trees_failed.push(format!("{label}: {error}")),
        }
    }
    report.new_last_global_seq = target.events_from(1, usize::MAX)?.len() as u64;
    drop(target_db);
    drop(target);
    drop(source);
    // Reopen durable: its open fsyncs every file of the new log, and its close settles
    // the mark.
    let mut attempts = 0;
    loop {
        match EventLog::open(to, LogOptions::default()) {
            Ok(log) => {
                drop(log);
                break;
            }
            Err(LogError::InUse { .. }) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(report)
}
