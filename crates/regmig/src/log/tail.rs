//! Where the log ends, and whether that agrees with the mark: the check every open makes.
//! A writer refuses a log that fails it; a reader warns and reads what is there.

use std::path::Path;

use uuid::Uuid;

use super::error::LogError;
use super::keys::{
    global_key, global_runs_event_count, hex, locate_in_global_runs, parse_global_key,
    parse_global_runs, parse_open_key, PREFIX_EVENT, PREFIX_GLOBAL, PREFIX_OPEN,
};
use super::mark::{Mark, MARK_FILE_NAME};
use super::record::{chain_hash, ChainHash, CHAIN_START, FORMAT_VERSION_V1};

/// The last record of the log in global order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Its global seq (0: the log is empty).
    pub(crate) last_global_seq: u64,
    /// Its chain hash ([`CHAIN_START`] for an empty log).
    pub(crate) last_hash: ChainHash,
    /// Its envelope version (`None` for an empty log).
    pub(crate) last_format_version: Option<u8>,
}

/// Reads the end of the global order and the record there, checked.
pub(crate) fn read_tail(tree: &sled::Tree) -> Result<Tail, LogError> {
    let Some(item) = tree.scan_prefix([PREFIX_GLOBAL]).next_back() else {
        if let Some(item) = tree.scan_prefix([PREFIX_EVENT]).next() {
            let (key, _) = item?;
            return Err(LogError::IndexMismatch {
                procedure_id: None,
                seq: None,
                key: hex(&key),
                reason: "the log holds events but its global order is empty".to_string(),
            });
        }
        // Everything archived: the log ends at the checkpoint.
        if let Some(checkpoint) = super::archive::read_checkpoint(tree)? {
            return Ok(Tail {
                last_global_seq: checkpoint.cut_global_seq,
                last_hash: checkpoint.hash_at_cut,
                last_format_version: Some(super::record::FORMAT_VERSION),
            });
        }
        return Ok(Tail {
            last_global_seq: 0,
            last_hash: CHAIN_START,
            last_format_version: None,
        });
    };
    let (key, value) = item?;
    let (Some(first_global_seq), Some(runs)) = (parse_global_key(&key), parse_global_runs(&value))
    else {
        return Err(super::malformed_global_entry(&key, &value));
    };
    let last_global_seq = first_global_seq + global_runs_event_count(&runs) - 1;
    let (hash, version) = hash_listed(tree, &key, &runs, first_global_seq, last_global_seq)?;
    Ok(Tail {
        last_global_seq,
        last_hash: hash,
        last_format_version: Some(version),
    })
}

/// The chain hash of the record at `global_seq`, found through the global order, checked.
pub(crate) fn chain_hash_at(tree: &sled::Tree, global_seq: u64) -> Result<ChainHash, LogError> {
    if global_seq == 0 {
        return Ok(CHAIN_START);
    }
    if let Some(checkpoint) = super::archive::read_checkpoint(tree)? {
        if global_seq == checkpoint.cut_global_seq {
            return Ok(checkpoint.hash_at_cut);
        }
        if global_seq < checkpoint.cut_global_seq {
            return Err(LogError::IndexMismatch {
                procedure_id: None,
                seq: None,
                key: hex(super::keys::CHECKPOINT_KEY),
                reason: format!(
                    "global seq {global_seq} was archived (the live log starts after global seq {})",
                    checkpoint.cut_global_seq
                ),
            });
        }
    }
    let missing = |key: &[u8]| LogError::IndexMismatch {
        procedure_id: None,
        seq: None,
        key: hex(key),
        reason: format!("no global-order entry lists global seq {global_seq}"),
    };
    let Some(item) = tree
        .range(global_key(0)..=global_key(global_seq))
        .next_back()
    else {
        return Err(missing(&global_key(global_seq)));
    };
    let (key, value) = item?;
    let (Some(first_global_seq), Some(runs)) = (parse_global_key(&key), parse_global_runs(&value))
    else {
        return Err(super::malformed_global_entry(&key, &value));
    };
    Ok(hash_listed(tree, &key, &runs, first_global_seq, global_seq)?.0)
}

fn hash_listed(
    tree: &sled::Tree,
    entry_key: &[u8],
    runs: &[super::keys::GlobalRun],
    first_global_seq: u64,
    global_seq: u64,
) -> Result<(ChainHash, u8), LogError> {
    let Some((procedure_id, seq)) = locate_in_global_runs(runs, first_global_seq, global_seq)
    else {
        return Err(LogError::IndexMismatch {
            procedure_id: None,
            seq: None,
            key: hex(entry_key),
            reason: format!("no global-order entry lists global seq {global_seq}"),
        });
    };
    let (record, bytes) = super::listed_record(tree, entry_key, global_seq, procedure_id, seq)?;
    Ok((chain_hash(&bytes), record.format_version))
}

/// The procedures the open index lists (for naming what a loss touched); empty when the
/// index does not read.
fn open_procedures(tree: &sled::Tree) -> Vec<Uuid> {
    tree.scan_prefix([PREFIX_OPEN])
        .filter_map(|item| item.ok().and_then(|(key, _)| parse_open_key(&key)))
        .collect()
}

/// Checks the log's end against the mark. `mark` is what [`super::mark::read_mark`] gave.
/// A log without a mark is accepted when it is empty or ends in a version-1 record (a log
/// an older regmig wrote, before there were marks).
/// sled keeps pages too large for its page log in `sled/blobs/`, a directory it creates with
/// the database and recreates, empty, when it is gone. Gone under a log that holds events,
/// the pages in it are gone too, and sled reads their keys as absent: that is damage, said
/// before sled hides it.
pub(crate) fn missing_blobs_directory(dir: &Path) -> Result<(), LogError> {
    let blobs = dir.join(super::SLED_SUBDIR).join("blobs");
    match std::fs::symlink_metadata(&blobs) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(LogError::Damaged {
            path: blobs,
            action: "check the log's files",
            reason: "it is not a directory".to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(LogError::Damaged {
            path: blobs,
            action: "check the log's files",
            reason: "sled's blob directory is missing from a log that holds events, so the large pages it held are gone (if it was empty, as in a copy that drops empty directories, create it again)".to_string(),
        }),
        Err(error) => Err(LogError::io("inspect", blobs, error)),
    }
}

pub(crate) fn check_against_mark(
    dir: &Path,
    tree: &sled::Tree,
    tail: &Tail,
    mark: &Result<Option<Mark>, LogError>,
) -> Result<(), LogError> {
    let lost = |last_good: Option<u64>, first_missing: Option<u64>, reason: String| {
        LogError::LostHistory(Box::new(super::error::LostHistory {
            dir: dir.to_path_buf(),
            last_good_global_seq: last_good,
            first_missing_global_seq: first_missing,
            procedures: open_procedures(tree),
            reason,
        }))
    };
    let end = tail.last_global_seq;
    let mark = match mark {
        Ok(Some(mark)) => *mark,
        Ok(None) => {
            return match tail.last_format_version {
                None | Some(FORMAT_VERSION_V1) => Ok(()),
                Some(_) => Err(lost(
                    Some(end),
                    None,
                    format!(
                        "the mark file {} is missing from a log that holds {end} events, so nobody can tell how many it should hold",
                        dir.join(MARK_FILE_NAME).display()
                    ),
                )),
            };
        }
        Err(error) => {
            return if end == 0 && tail.last_format_version.is_none() {
                Err(lost(None, None, error.to_string()))
            } else {
                Err(lost(
                    Some(end),
                    None,
                    format!("{error}, so nobody can tell how many events the log should hold (it holds {end})"),
                ))
            };
        }
    };
    if mark.last_global_seq > 0 {
        missing_blobs_directory(dir)?;
    }
    if end >= mark.last_global_seq {
        let hash = if end == mark.last_global_seq {
            tail.last_hash
        } else {
            match chain_hash_at(tree, mark.last_global_seq) {
                Ok(hash) => hash,
                Err(error @ LogError::Storage { .. }) => return Err(error),
                Err(error) => {
                    return Err(lost(
                        None,
                        Some(mark.last_global_seq),
                        format!(
                            "the record at global seq {} that the mark vouches for does not check out: {error}",
                            mark.last_global_seq
                        ),
                    ))
                }
            }
        };
        if hash != mark.hash_at_last {
            return Err(lost(
                None,
                None,
                format!(
                    "the record at global seq {} has chain hash {}, the mark says {}: this is not the history the mark was written for",
                    mark.last_global_seq,
                    hex(&hash),
                    hex(&mark.hash_at_last)
                ),
            ));
        }
        return Ok(());
    }
    if end + 1 == mark.group_first_global_seq {
        // The group in flight when the mark was written never reached the disk: it was not
        // acknowledged, so losing it is no damage.
        if tail.last_hash != mark.hash_before_group {
            return Err(lost(
                None,
                None,
                format!(
                    "the log ends at global seq {end} with chain hash {}, the mark says {}: this is not the history the mark was written for",
                    hex(&tail.last_hash),
                    hex(&mark.hash_before_group)
                ),
            ));
        }
        return Ok(());
    }
    Err(lost(
        Some(end),
        Some(end + 1),
        format!(
            "it ends at global seq {end}, but appends were acknowledged up to global seq {} (mark {})",
            mark.acknowledged_global_seq(),
            dir.join(MARK_FILE_NAME).display()
        ),
    ))
}
