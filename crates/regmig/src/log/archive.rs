//! Archiving: the log side of `regmig log archive`. A cut removes a prefix of the global
//! order (every event at or below the cut's global seq, all of them belonging to
//! migrations that finished before a given time) in one sled batch that also writes the
//! checkpoint record (`Mcheckpoint`): the global seq and chain hash at the cut, and the
//! SHA-256 of the archive manifest that holds the removed events. The live chain
//! continues from the checkpoint's hash, so `verify()` still proves the live history, and
//! the archive's records recomputed in global order must end on the checkpoint's hash.

use std::collections::{BTreeMap, HashSet};

use uuid::Uuid;

use super::error::LogError;
use super::keys::{
    event_key, event_prefix, global_key, hex, parse_audit_key, parse_global_key, parse_global_runs,
    parse_open_key, CHECKPOINT_KEY, PREFIX_OPEN, PREFIX_PEER_AUDIT, PREFIX_REGION_AUDIT,
};
use super::record::{decode_record, ChainHash, Record, CHAIN_HASH_LEN};
use super::{Core, EventLog};

/// The checkpoint layout this build writes and reads.
pub const CHECKPOINT_VERSION: u8 = 1;
/// Bytes of a checkpoint before the archive directory: version, cut, hash at cut,
/// manifest SHA-256, directory length.
const CHECKPOINT_FIXED_LEN: usize = 1 + 8 + CHAIN_HASH_LEN + 32 + 2;
/// The longest archive directory a checkpoint names, in bytes of UTF-8.
pub const CHECKPOINT_DIR_MAX_BYTES: usize = 4096;

/// What the live log keeps of the history it archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last global seq archived: the live log starts at the next one.
    pub cut_global_seq: u64,
    /// The chain hash of the record at the cut: the first live record's `prev_hash`.
    pub hash_at_cut: ChainHash,
    /// The SHA-256 of the manifest of the archive that ends at the cut.
    pub manifest_sha256: [u8; 32],
    /// Where the archive was written (as given then, made absolute): informative, so
    /// readers can say where older history went.
    pub archive_dir: String,
}

impl Checkpoint {
    /// The stored bytes (see migrations-log-format.md, "Archives"). A directory longer
    /// than [`CHECKPOINT_DIR_MAX_BYTES`] is cut there (at a character boundary).
    pub fn encode(&self) -> Vec<u8> {
        let mut dir_len = self.archive_dir.len().min(CHECKPOINT_DIR_MAX_BYTES);
        while !self.archive_dir.is_char_boundary(dir_len) {
            dir_len -= 1;
        }
        let mut bytes = Vec::with_capacity(CHECKPOINT_FIXED_LEN + dir_len + 4);
        bytes.push(CHECKPOINT_VERSION);
        bytes.extend_from_slice(&self.cut_global_seq.to_be_bytes());
        bytes.extend_from_slice(&self.hash_at_cut);
        bytes.extend_from_slice(&self.manifest_sha256);
        bytes.extend_from_slice(&(dir_len as u16).to_be_bytes());
        bytes.extend_from_slice(&self.archive_dir.as_bytes()[..dir_len]);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// Reads the stored bytes, checked; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        if bytes.len() < CHECKPOINT_FIXED_LEN + 4 {
            return Err(format!(
                "{} bytes, a checkpoint is at least {}",
                bytes.len(),
                CHECKPOINT_FIXED_LEN + 4
            ));
        }
        if bytes[0] != CHECKPOINT_VERSION {
            return Err(format!(
                "checkpoint version {}, this regmig reads {CHECKPOINT_VERSION}",
                bytes[0]
            ));
        }
        let dir_len = usize::from(u16::from_be_bytes([
            bytes[CHECKPOINT_FIXED_LEN - 2],
            bytes[CHECKPOINT_FIXED_LEN - 1],
        ]));
        if bytes.len() != CHECKPOINT_FIXED_LEN + dir_len + 4 {
            return Err(format!(
                "{} bytes, but its directory length {dir_len} makes {}",
                bytes.len(),
                CHECKPOINT_FIXED_LEN + dir_len + 4
            ));
        }
        let body = &bytes[..bytes.len() - 4];
        let mut stored = [0u8; 4];
        stored.copy_from_slice(&bytes[bytes.len() - 4..]);
        let stored = u32::from_be_bytes(stored);
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(format!(
                "bad checksum: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let mut cut = [0u8; 8];
        cut.copy_from_slice(&body[1..9]);
        let mut hash_at_cut = [0u8; CHAIN_HASH_LEN];
        hash_at_cut.copy_from_slice(&body[9..41]);
        let mut manifest_sha256 = [0u8; 32];
        manifest_sha256.copy_from_slice(&body[41..73]);
        let archive_dir = std::str::from_utf8(&body[CHECKPOINT_FIXED_LEN..])
            .map_err(|_| "the archive directory is not UTF-8".to_string())?
            .to_string();
        Ok(Checkpoint {
            cut_global_seq: u64::from_be_bytes(cut),
            hash_at_cut,
            manifest_sha256,
            archive_dir,
        })
    }
}

/// The checkpoint stored in `tree`, if any; a damaged one is [`LogError::MalformedKey`].
pub(crate) fn read_checkpoint(tree: &sled::Tree) -> Result<Option<Checkpoint>, LogError> {
    match tree.get(CHECKPOINT_KEY)? {
        None => Ok(None),
        Some(bytes) => {
            Checkpoint::decode(&bytes)
                .map(Some)
                .map_err(|reason| LogError::MalformedKey {
                    key: hex(CHECKPOINT_KEY),
                    reason: format!("the archive checkpoint does not read: {reason}"),
                })
        }
    }
}

/// What an archive would remove: a prefix of the global order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePlan {
    /// The previous checkpoint (`None`: the log was never archived).
    pub previous: Option<Checkpoint>,
    /// The first global seq archived (one past the previous cut).
    pub from_global_seq: u64,
    /// The last global seq archived; below `from_global_seq` when nothing can be.
    pub cut_global_seq: u64,
    /// The chain hash at the previous cut ([`super::CHAIN_START`] without one).
    pub hash_before: ChainHash,
    /// The chain hash of the record at the cut.
    pub hash_at_cut: ChainHash,
    /// Every archived migration with all its records, seq 1, 2, 3..., in the order of
    /// their first event.
    pub procedures: Vec<(Uuid, Vec<Record>)>,
    /// The first migration that stopped the cut (still open, or finished too late), and
    /// why; `None` when the cut reaches the end of the log.
    pub stopped_by: Option<(Uuid, String)>,
}

impl ArchivePlan {
    /// Whether the plan archives anything.
    pub fn is_empty(&self) -> bool {
        self.procedures.is_empty()
    }
}

impl EventLog {
    /// The checkpoint of the last archive, if the log was ever archived.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, LogError> {
        let core = self.core("read the archive checkpoint")?;
        core.guarded("read the archive checkpoint", || {
            read_checkpoint(&core.tree)
        })
    }

    /// Plans an archive of every migration that finished before `before_ms` (its last
    /// event recorded earlier, and closed), as a prefix of the global order: the cut is the
    /// end of the longest run of group commits that holds only such migrations, each of
    /// them whole. A migration still open, or finished at or after `before_ms`, stops the
    /// cut (the report names it); migrations after it stay live until a later archive.
    pub fn plan_archive(&self, before_ms: u64) -> Result<ArchivePlan, LogError> {
        let core = self.core("plan an archive")?;
        core.guarded("plan an archive", || plan(core, before_ms, None))
    }

    /// Like [`EventLog::plan_archive`], but the cut takes at most `max_migrations`
    /// migrations: the first one past the limit stops it (the retention's "keep at most N
    /// finished migrations" archives only the excess).
    pub fn plan_archive_at_most(
        &self,
        before_ms: u64,
        max_migrations: u64,
    ) -> Result<ArchivePlan, LogError> {
        let core = self.core("plan an archive")?;
        core.guarded("plan an archive", || {
            plan(core, before_ms, Some(max_migrations))
        })
    }

    /// Removes what `plan` archives, in one sled batch that deletes its events, their
    /// global-order and audit entries and writes the checkpoint naming `manifest_sha256`,
    /// then syncs. `archive_dir` is only recorded, so readers can say where the history
    /// went. Call it only after the archive's files are durable. Refused
    /// ([`LogError::ArchiveStale`]) when the log moved since the plan in a way that
    /// touches it.
    pub fn apply_archive(
        &self,
        plan: &ArchivePlan,
        manifest_sha256: [u8; 32],
        archive_dir: &std::path::Path,
    ) -> Result<Checkpoint, LogError> {
        let core = self.core("apply an archive")?;
        if core.read_only {
            return Err(LogError::ArchiveStale {
                reason: "the log was opened for reading only".to_string(),
            });
        }
        core.check_poison()?;
        let mut writer = core
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let checkpoint = Checkpoint {
            cut_global_seq: plan.cut_global_seq,
            hash_at_cut: plan.hash_at_cut,
            manifest_sha256,
            archive_dir: std::path::absolute(archive_dir)
                .unwrap_or_else(|_| archive_dir.to_path_buf())
                .to_string_lossy()
                .into_owned(),
        };
        let batch = core.guarded("prepare the archive cut", || {
            cut_batch(core, plan, &checkpoint)
        })?;
        {
            let _exclusive = core
                .visibility
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(error) = core.tree.apply_batch(batch) {
                let reason = format!("sled apply_batch failed (archive cut): {error}");
                core.set_poison(&reason);
                return Err(LogError::WriteFailed { reason });
            }
        }
        for (procedure_id, _) in &plan.procedures {
            writer.forget(*procedure_id);
        }
        if let Some(syncer) = &core.syncer {
            if let Err(error) = syncer.sync(&core.db) {
                core.set_poison(&format!("sync failed after the archive cut: {error}"));
                return Err(error);
            }
        }
        drop(writer);
        Ok(checkpoint)
    }
}

fn plan(core: &Core, before_ms: u64, max_migrations: Option<u64>) -> Result<ArchivePlan, LogError> {
    let _visible = core.read_visible();
    let tree = &core.tree;
    let previous = read_checkpoint(tree)?;
    let (from_global_seq, hash_before) = previous
        .as_ref()
        .map_or((1, super::CHAIN_START), |checkpoint| {
            (checkpoint.cut_global_seq + 1, checkpoint.hash_at_cut)
        });
    let open: HashSet<Uuid> = tree
        .scan_prefix([PREFIX_OPEN])
        .filter_map(|item| item.ok().and_then(|(key, _)| parse_open_key(&key)))
        .collect();
    // Per migration seen so far: its records, and how many events it has in all.
    let mut seen: BTreeMap<Uuid, (u64, Vec<Record>, u64)> = BTreeMap::new();
    let mut order = 0u64;
    let mut unfinished = 0usize;
    let mut cut = (from_global_seq - 1, hash_before, 0usize);
    let mut stopped_by = None;
    let mut last_hash = hash_before;
    'entries: for item in
        tree.range(global_key(from_global_seq).to_vec()..=global_key(u64::MAX).to_vec())
    {
        let (key, value) = item?;
        let (Some(first_global_seq), Some(runs)) =
            (parse_global_key(&key), parse_global_runs(&value))
        else {
            return Err(super::malformed_global_entry(&key, &value));
        };
        let mut global_seq = first_global_seq;
        for run in &runs {
            if !seen.contains_key(&run.procedure_id) {
                let id = run.procedure_id;
                let refusal = if max_migrations.is_some_and(|max| seen.len() as u64 >= max) {
                    Some(format!(
                        "the cut already holds as many migrations as it may take ({})",
                        seen.len()
                    ))
                } else if open.contains(&id) {
                    Some("it is still open".to_string())
                } else {
                    let last = last_record(tree, id)?;
                    (last.recorded_at_ms >= before_ms).then(|| {
                        format!(
                            "it finished at {} ms, not before {before_ms} ms",
                            last.recorded_at_ms
                        )
                    })
                };
                if let Some(reason) = refusal {
                    stopped_by = Some((id, reason));
                    break 'entries;
                }
                let total = super::commit::next_seq_on_disk(tree, id)? - 1;
                seen.insert(id, (order, Vec::new(), total));
                order += 1;
                unfinished += 1;
            }
            let (_, records, total) =
                seen.get_mut(&run.procedure_id)
                    .ok_or_else(|| LogError::WriteFailed {
                        reason: "archive plan lost a migration".to_string(),
                    })?;
            for offset in 0..u64::from(run.event_count) {
                let seq = run.first_seq + offset;
                let record_key = event_key(run.procedure_id, seq);
                let Some(bytes) = tree.get(record_key)? else {
                    return Err(super::sled_store::listed_but_missing(
                        &key,
                        global_seq,
                        run.procedure_id,
                        seq,
                    ));
                };
                let record = decode_record(&record_key, &bytes)?;
                last_hash = super::record::chain_hash(&bytes);
                records.push(record);
                global_seq += 1;
            }
            if records.len() as u64 == *total {
                unfinished -= 1;
            }
        }
        if unfinished == 0 {
            cut = (global_seq - 1, last_hash, seen.len());
        }
    }
    let (cut_global_seq, hash_at_cut, _) = cut;
    let mut procedures: Vec<(u64, Uuid, Vec<Record>)> = seen
        .into_iter()
        .filter(|(_, (_, records, total))| {
            records.len() as u64 == *total
                && records
                    .last()
                    .is_some_and(|last| last.global_seq <= cut_global_seq)
        })
        .map(|(id, (order, records, _))| (order, id, records))
        .collect();
    procedures.sort_by_key(|(order, _, _)| *order);
    Ok(ArchivePlan {
        previous,
        from_global_seq,
        cut_global_seq,
        hash_before,
        hash_at_cut,
        procedures: procedures
            .into_iter()
            .map(|(_, id, records)| (id, records))
            .collect(),
        stopped_by,
    })
}

fn last_record(tree: &sled::Tree, procedure_id: Uuid) -> Result<Record, LogError> {
    match tree.scan_prefix(event_prefix(procedure_id)).next_back() {
        Some(item) => {
            let (key, value) = item?;
            decode_record(&key, &value)
        }
        None => Err(LogError::IndexMismatch {
            procedure_id: Some(procedure_id),
            seq: None,
            key: hex(&event_prefix(procedure_id)),
            reason: "listed in the global order but has no event".to_string(),
        }),
    }
}

/// The batch of the cut, after checking that the log still holds what `plan` saw.
fn cut_batch(
    core: &Core,
    plan: &ArchivePlan,
    checkpoint: &Checkpoint,
) -> Result<sled::Batch, LogError> {
    let tree = &core.tree;
    let stale = |reason: String| LogError::ArchiveStale { reason };
    let current = read_checkpoint(tree)?;
    if current != plan.previous {
        return Err(stale("another archive ran since the plan".to_string()));
    }
    if plan.procedures.is_empty() {
        return Err(stale("the plan archives nothing".to_string()));
    }
    let hash = super::tail::chain_hash_at(tree, plan.cut_global_seq)?;
    if hash != plan.hash_at_cut {
        return Err(stale(format!(
            "the record at global seq {} has chain hash {}, the plan saw {}",
            plan.cut_global_seq,
            hex(&hash),
            hex(&plan.hash_at_cut)
        )));
    }
    let mut batch = sled::Batch::default();
    let mut archived = HashSet::new();
    for (procedure_id, records) in &plan.procedures {
        let next = super::commit::next_seq_on_disk(tree, *procedure_id)?;
        if next != records.len() as u64 + 1 {
            return Err(stale(format!(
                "migration {procedure_id} has {} events, the plan saw {}",
                next - 1,
                records.len()
            )));
        }
        for record in records {
            batch.remove(event_key(*procedure_id, record.seq).to_vec());
        }
        archived.insert(*procedure_id);
    }
    for item in tree
        .range(global_key(plan.from_global_seq).to_vec()..=global_key(plan.cut_global_seq).to_vec())
    {
        let (key, _) = item?;
        batch.remove(key);
    }
    for prefix in [PREFIX_REGION_AUDIT, PREFIX_PEER_AUDIT] {
        for item in tree.scan_prefix([prefix]) {
            let (key, _) = item?;
            if let Some((_, _, procedure_id)) = parse_audit_key(prefix, &key) {
                if archived.contains(&procedure_id) {
                    batch.remove(key);
                }
            }
        }
    }
    batch.insert(CHECKPOINT_KEY, checkpoint.encode());
    Ok(batch)
}

/// What [`compact`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// Entries copied, over every tree.
    pub entries: u64,
    /// Bytes of the data directory before (sled's files and the mark).
    pub bytes_before: u64,
    /// Bytes of the new data directory.
    pub bytes_after: u64,
}

/// Copies the log in `from` (and every other tree of its database) into a new data
/// directory `to` (absent or empty), entry by entry, so the new files hold only what is
/// live: sled reuses the space an archive frees but does not give it back to the file
/// system. `from` is read through a private copy of its database, as every reader reads
/// (sled 0.34 has no read-only open, and opening in place writes snapshot files), while
/// its `regmig.lock` is held, so no engine writes meanwhile: nothing is written into
/// `from`. A log whose open finds damage is refused with that damage (`salvage` is for
/// those). The new log gets a mark for the same end and is reopened (which fsyncs its
/// files) and verified before this returns. Swap the directories by hand while nothing
/// runs.
pub fn compact(from: &std::path::Path, to: &std::path::Path) -> Result<CompactReport, LogError> {
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(LogError::io(
                    "compact into",
                    to,
                    std::io::Error::other("the directory is not empty: compact writes a new log"),
                ));
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(LogError::io("compact into", to, error)),
    }
    let core = super::open::open_whole_reader(from)?;
    let bytes_before = dir_size_bytes(from);
    std::fs::create_dir_all(to).map_err(|error| LogError::io("create", to, error))?;
    let sled_dir = to.join(super::SLED_SUBDIR);
    let target = sled::Config::new()
        .path(&sled_dir)
        .open()
        .map_err(|error| {
            LogError::io(
                "create the new database",
                &sled_dir,
                std::io::Error::other(error.to_string()),
            )
        })?;
    let mut entries = 0u64;
    let tail = core.guarded("copy the database", || {
        for name in core.db.tree_names() {
            let tree = core.db.open_tree(&name)?;
            let into = target.open_tree(&name)?;
            let mut batch = sled::Batch::default();
            let mut in_batch = 0usize;
            for item in tree.iter() {
                let (key, value) = item?;
                batch.insert(key, value);
                in_batch += 1;
                entries += 1;
                if in_batch == 4096 {
                    into.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
            into.apply_batch(batch)?;
        }
        target.flush()?;
        super::tail::read_tail(&core.tree)
    })?;
    drop(target);
    // The source's lock is held until the new log is written and verified.
    super::mark::create_mark(
        to,
        &super::mark::Mark::settled(1, tail.last_global_seq, tail.last_hash),
    )?;
    // Reopen durable: its open fsyncs every file of the new log and checks it against
    // the mark; then verify it.
    let mut attempts = 0;
    let log = loop {
        match EventLog::open(to, super::LogOptions::default()) {
            Ok(log) => break log,
            Err(LogError::InUse { .. }) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => return Err(error),
        }
    };
    let report = log.verify()?;
    if let Some(problem) = report.problems.into_iter().next() {
        return Err(problem);
    }
    drop(log);
    drop(core);
    Ok(CompactReport {
        entries,
        bytes_before,
        bytes_after: dir_size_bytes(to),
    })
}

/// The bytes of the files under `dir` (0 for what does not read).
pub fn dir_size_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => dir_size_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            cut_global_seq: 149,
            hash_at_cut: [7u8; CHAIN_HASH_LEN],
            manifest_sha256: [9u8; 32],
            archive_dir: "/var/lib/regmig/archive".to_string(),
        }
    }

    #[test]
    fn a_checkpoint_round_trips_and_every_flipped_bit_is_refused() {
        let bytes = sample().encode();
        assert_eq!(bytes.len(), CHECKPOINT_FIXED_LEN + 23 + 4);
        assert_eq!(Checkpoint::decode(&bytes), Ok(sample()));
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(Checkpoint::decode(&flipped).is_err(), "bit {bit} accepted");
        }
        for cut in 0..bytes.len() {
            assert!(
                Checkpoint::decode(&bytes[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
    }

    #[test]
    fn a_long_directory_is_cut_at_a_character_boundary() {
        let mut checkpoint = sample();
        checkpoint.archive_dir = "é".repeat(CHECKPOINT_DIR_MAX_BYTES);
        let decoded = Checkpoint::decode(&checkpoint.encode()).expect("decodes");
        assert_eq!(decoded.archive_dir.len(), CHECKPOINT_DIR_MAX_BYTES);
        assert!(checkpoint.archive_dir.starts_with(&decoded.archive_dir));
    }
}
