//! Archives of finished migrations (`regmig log archive`, `regmig log verify --archive`):
//! the files side of [`crate::log::archive`]. One archive run writes, into one directory,
//! a bundle per migration (the export bundle format, `<procedure_id>.rgmb`) and a manifest
//! `manifest-<from>-<cut>.json` (global seqs, 20 digits) listing them with their SHA-256,
//! then cuts the live log, whose checkpoint names the manifest's SHA-256. Files are
//! written to a temporary name, fsynced, renamed and the directory fsynced before the cut:
//! a crash before the cut leaves the old log (and files a rerun overwrites), a crash after
//! it the new one. The format is in migrations-log-format.md, "Archives".

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::files::{read_at_most, Bounded};
use crate::log::bundle::{encode_bundle, read_bundle, BundleError, BUNDLE_SIZE_MAX_BYTES};
use crate::log::keys::hex;
use crate::log::{chain_hash, encode_record, ArchivePlan, Checkpoint, EventLog, LogError, Record};

/// The manifest layout this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// What every manifest's `format` field says.
pub const MANIFEST_FORMAT: &str = "regmig-archive-manifest";

/// One archive run's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// The first global seq this archive holds.
    pub from_global_seq: u64,
    /// The last global seq it holds: the live log's checkpoint after the cut.
    pub cut_global_seq: u64,
    /// The chain hash at `from_global_seq - 1` (all zeros at the start of the log), hex.
    pub hash_before: String,
    /// The chain hash of the record at `cut_global_seq`, hex.
    pub hash_at_cut: String,
    /// The migrations archived finished before this time (ms since the Unix epoch).
    pub before_ms: u64,
    /// One bundle per migration, in the order of their first event.
    pub bundles: Vec<ManifestBundle>,
}

/// One bundle a manifest lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBundle {
    /// The file name, in the archive directory.
    pub file: String,
    /// The migration.
    pub procedure_id: Uuid,
    /// Its events.
    pub events: u64,
    /// The global seq of its first event.
    pub first_global_seq: u64,
    /// The global seq of its last event.
    pub last_global_seq: u64,
    /// The SHA-256 of the bundle file, hex.
    pub sha256: String,
}

/// Why an archive could not be written, read or proven. Every variant names its file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The live log refused.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A file of the archive could not be read or written.
    #[error("archive {}: could not {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A bundle does not read.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The archive does not prove what it should: a manifest or bundle that does not read
    /// or disagrees with the others, the live log's checkpoint or the chain.
    #[error("archive {}: {reason}", path.display())]
    Broken {
        /// The file at fault (or the directory).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl ArchiveError {
    /// A stable snake_case name for the variant (the `kind` of a `--json` error): the
    /// log's or the bundle's own name for theirs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ArchiveError::Log(error) => error.kind_name(),
            ArchiveError::Io { .. } => "archive_io",
            ArchiveError::Bundle(error) => error.kind_name(),
            ArchiveError::Broken { .. } => "archive_broken",
        }
    }
}

/// What an archive run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// The manifest written (`None`: nothing could be archived, nothing written).
    pub manifest: Option<PathBuf>,
    /// Migrations archived.
    pub migrations: u64,
    /// Events archived (removed from the live log).
    pub events: u64,
    /// The checkpoint the live log now holds (the previous one when nothing was archived).
    pub checkpoint: Option<Checkpoint>,
    /// The migration that stopped the cut, and why.
    pub stopped_by: Option<(Uuid, String)>,
}

/// Archives every migration that finished before `before_ms` (as far as
/// [`EventLog::plan_archive`] can cut) into `dir`, then removes them from the live log.
pub fn archive_before(
    log: &EventLog,
    before_ms: u64,
    dir: &Path,
) -> Result<ArchiveReport, ArchiveError> {
    let plan = log.plan_archive(before_ms)?;
    archive_planned(log, &plan, before_ms, dir)
}

/// Writes the archive of `plan` (made for `before_ms`) into `dir`, then cuts the live log.
fn archive_planned(
    log: &EventLog,
    plan: &ArchivePlan,
    before_ms: u64,
    dir: &Path,
) -> Result<ArchiveReport, ArchiveError> {
    if plan.is_empty() {
        return Ok(ArchiveReport {
            manifest: None,
            migrations: 0,
            events: 0,
            checkpoint: plan.previous.clone(),
            stopped_by: plan.stopped_by.clone(),
        });
    }
    let (manifest, manifest_sha256) = write_archive_files(plan, before_ms, dir)?;
    let checkpoint = log.apply_archive(plan, manifest_sha256, dir)?;
    Ok(ArchiveReport {
        manifest: Some(manifest),
        migrations: plan.procedures.len() as u64,
        events: plan
            .procedures
            .iter()
            .map(|(_, records)| records.len() as u64)
            .sum(),
        checkpoint: Some(checkpoint),
        stopped_by: plan.stopped_by.clone(),
    })
}

/// The manifest file name of the archive from `from` to `cut`.
pub fn manifest_file_name(from_global_seq: u64, cut_global_seq: u64) -> String {
    format!("manifest-{from_global_seq:020}-{cut_global_seq:020}.json")
}

/// Writes and fsyncs the bundles and the manifest of `plan` into `dir` (created if
/// needed); returns the manifest's path and SHA-256. The live log is not touched.
pub fn write_archive_files(
    plan: &ArchivePlan,
    before_ms: u64,
    dir: &Path,
) -> Result<(PathBuf, [u8; 32]), ArchiveError> {
    std::fs::create_dir_all(dir).map_err(|source| ArchiveError::Io {
        path: dir.to_path_buf(),
        action: "create the archive directory",
        source,
    })?;
    let mut bundles = Vec::with_capacity(plan.procedures.len());
    for (procedure_id, records) in &plan.procedures {
        let file = format!("{procedure_id}.rgmb");
        let bytes = encode_bundle(*procedure_id, records);
        write_durably(&dir.join(&file), &bytes)?;
        bundles.push(ManifestBundle {
            file,
            procedure_id: *procedure_id,
            events: records.len() as u64,
            first_global_seq: records.first().map_or(0, |record| record.global_seq),
            last_global_seq: records.last().map_or(0, |record| record.global_seq),
            sha256: hex(&Sha256::digest(&bytes)),
        });
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_string(),
        version: MANIFEST_VERSION,
        from_global_seq: plan.from_global_seq,
        cut_global_seq: plan.cut_global_seq,
        hash_before: hex(&plan.hash_before),
        hash_at_cut: hex(&plan.hash_at_cut),
        before_ms,
        bundles,
    };
    let mut bytes = serde_json::to_vec_pretty(&manifest).map_err(|error| ArchiveError::Broken {
        path: dir.to_path_buf(),
        reason: format!("could not encode the manifest: {error}"),
    })?;
    bytes.push(b'\n');
    let path = dir.join(manifest_file_name(
        plan.from_global_seq,
        plan.cut_global_seq,
    ));
    write_durably(&path, &bytes)?;
    let dir_file = std::fs::File::open(dir).map_err(|source| ArchiveError::Io {
        path: dir.to_path_buf(),
        action: "open the directory to fsync it",
        source,
    })?;
    dir_file.sync_all().map_err(|source| ArchiveError::Io {
        path: dir.to_path_buf(),
        action: "fsync the directory",
        source,
    })?;
    Ok((path, Sha256::digest(&bytes).into()))
}

/// Writes `bytes` to a temporary name beside `path`, fsyncs it and renames it over `path`.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let io = |action: &'static str| {
        let path = temporary.clone();
        move |source| ArchiveError::Io {
            path,
            action,
            source,
        }
    };
    let mut file = std::fs::File::create(&temporary).map_err(io("create"))?;
    file.write_all(bytes).map_err(io("write"))?;
    file.sync_all().map_err(io("fsync"))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        action: "rename into place",
        source,
    })
}

/// An archive directory, read and checked: its manifests in global order and every
/// record of every bundle.
#[derive(Debug, Clone)]
pub struct ArchiveContents {
    /// The manifests, from the start of the log on, each with its path.
    pub manifests: Vec<(PathBuf, Manifest)>,
    /// Every archived record, in global order.
    pub records: Vec<Record>,
    /// The chain hash of the last archived record (recomputed).
    pub head_hash: [u8; 32],
}

/// Reads every manifest in `dir` and every bundle they list, checks each bundle's SHA-256,
/// that the manifests cover global seqs 1 to the last cut without gap or overlap, and
/// recomputes the chain over every record in global order.
pub fn read_archive(dir: &Path) -> Result<ArchiveContents, ArchiveError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ArchiveError::Io {
        path: dir.to_path_buf(),
        action: "list the archive directory",
        source,
    })?;
    let mut manifests = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ArchiveError::Io {
            path: dir.to_path_buf(),
            action: "list the archive directory",
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("manifest-") && name.ends_with(".json") {
            let path = entry.path();
            let manifest = read_manifest(&path)?.0;
            manifests.push((path, manifest));
        }
    }
    manifests.sort_by_key(|(_, manifest)| manifest.from_global_seq);
    let mut records = Vec::new();
    let mut hash = crate::log::CHAIN_START;
    let mut next_global_seq = 1u64;
    for (path, manifest) in &manifests {
        let broken = |reason: String| ArchiveError::Broken {
            path: path.clone(),
            reason,
        };
        if manifest.from_global_seq != next_global_seq {
            return Err(broken(format!(
                "starts at global seq {}, but the archive before it ends at global seq {}",
                manifest.from_global_seq,
                next_global_seq - 1
            )));
        }
        if manifest.hash_before != hex(&hash) {
            return Err(broken(format!(
                "says the chain hash before it is {}, the archive before it ends on {}",
                manifest.hash_before,
                hex(&hash)
            )));
        }
        let mut these = Vec::new();
        for listed in &manifest.bundles {
            let bundle_path = dir.join(&listed.file);
            let bytes = read_bounded(&bundle_path, BUNDLE_SIZE_MAX_BYTES, "read the bundle")?;
            let sha256 = hex(&Sha256::digest(&bytes));
            if sha256 != listed.sha256 {
                return Err(ArchiveError::Broken {
                    path: bundle_path,
                    reason: format!(
                        "SHA-256 {sha256}, the manifest {} says {}",
                        path.display(),
                        listed.sha256
                    ),
                });
            }
            let bundle = read_bundle(&bundle_path)?;
            if bundle.procedure_id != listed.procedure_id
                || bundle.records.len() as u64 != listed.events
            {
                return Err(ArchiveError::Broken {
                    path: bundle_path,
                    reason: format!(
                        "holds {} events of migration {}, the manifest lists {} of {}",
                        bundle.records.len(),
                        bundle.procedure_id,
                        listed.events,
                        listed.procedure_id
                    ),
                });
            }
            these.extend(bundle.records);
        }
        these.sort_by_key(|record| record.global_seq);
        for record in &these {
            if record.global_seq != next_global_seq {
                return Err(broken(format!(
                    "global seq {next_global_seq} is missing from its bundles (the next one holds global seq {}, migration {} seq {})",
                    record.global_seq, record.procedure_id, record.seq
                )));
            }
            if let Some(prev_hash) = record.prev_hash {
                if prev_hash != hash {
                    return Err(broken(format!(
                        "the chain breaks at global seq {} (migration {} seq {}): its prev_hash is {}, the record before it hashes to {}",
                        record.global_seq,
                        record.procedure_id,
                        record.seq,
                        hex(&prev_hash),
                        hex(&hash)
                    )));
                }
            }
            hash = chain_hash(&encode_record(record));
            next_global_seq += 1;
        }
        if next_global_seq - 1 != manifest.cut_global_seq {
            return Err(broken(format!(
                "says it ends at global seq {}, its bundles end at global seq {}",
                manifest.cut_global_seq,
                next_global_seq - 1
            )));
        }
        if manifest.hash_at_cut != hex(&hash) {
            return Err(broken(format!(
                "says the chain hash at its cut is {}, its records hash to {}",
                manifest.hash_at_cut,
                hex(&hash)
            )));
        }
        records.extend(these);
    }
    Ok(ArchiveContents {
        manifests,
        records,
        head_hash: hash,
    })
}

/// The largest manifest read: one line per bundle, far below this for any real archive.
pub const MANIFEST_SIZE_MAX_BYTES: u64 = 64 << 20;

/// Reads an archive file of at most `limit_bytes` (a bundle or a manifest is outside input:
/// a file replaced by a link to `/dev/zero` must not be read to its end).
fn read_bounded(
    path: &Path,
    limit_bytes: u64,
    action: &'static str,
) -> Result<Vec<u8>, ArchiveError> {
    match read_at_most(path, limit_bytes).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        action,
        source,
    })? {
        Bounded::Whole(bytes) => Ok(bytes),
        Bounded::TooLarge { read_bytes } => Err(ArchiveError::Broken {
            path: path.to_path_buf(),
            reason: format!(
                "holds at least {read_bytes} bytes, more than the {limit_bytes} bytes it may hold"
            ),
        }),
    }
}

/// Reads one manifest; returns it and the SHA-256 of its bytes.
pub fn read_manifest(path: &Path) -> Result<(Manifest, [u8; 32]), ArchiveError> {
    let bytes = read_bounded(path, MANIFEST_SIZE_MAX_BYTES, "read the manifest")?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|error| ArchiveError::Broken {
            path: path.to_path_buf(),
            reason: format!("the manifest does not read: {error}"),
        })?;
    if manifest.format != MANIFEST_FORMAT || manifest.version != MANIFEST_VERSION {
        return Err(ArchiveError::Broken {
            path: path.to_path_buf(),
            reason: format!(
                "format {:?} version {}; this regmig reads {MANIFEST_FORMAT:?} version {MANIFEST_VERSION}",
                manifest.format, manifest.version
            ),
        });
    }
    Ok((manifest, Sha256::digest(&bytes).into()))
}

/// Proves that the archive in `dir` joins `log` without a gap: the archive reads and
/// chains from global seq 1 to its last cut ([`read_archive`]), that cut is the live
/// log's checkpoint, the last manifest's SHA-256 is the one the checkpoint names, and the
/// recomputed chain ends on the checkpoint's hash (which the live log's first record
/// links to: `verify()` checks that side). Returns what was read.
pub fn verify_archive(log: &EventLog, dir: &Path) -> Result<ArchiveContents, ArchiveError> {
    let contents = read_archive(dir)?;
    let broken = |reason: String| ArchiveError::Broken {
        path: dir.to_path_buf(),
        reason,
    };
    let Some(checkpoint) = log.checkpoint()? else {
        return if contents.manifests.is_empty() {
            Ok(contents)
        } else {
            Err(broken(
                "holds archived history, but the live log was never archived (no checkpoint)"
                    .to_string(),
            ))
        };
    };
    let Some((last_path, last)) = contents.manifests.last() else {
        return Err(broken(format!(
            "holds no manifest, but the live log's checkpoint says global seqs 1 to {} were archived",
            checkpoint.cut_global_seq
        )));
    };
    if last.cut_global_seq != checkpoint.cut_global_seq {
        return Err(broken(format!(
            "ends at global seq {}, the live log's checkpoint at global seq {}",
            last.cut_global_seq, checkpoint.cut_global_seq
        )));
    }
    if contents.head_hash != checkpoint.hash_at_cut {
        return Err(broken(format!(
            "its chain ends on {}, the live log's checkpoint says {}",
            hex(&contents.head_hash),
            hex(&checkpoint.hash_at_cut)
        )));
    }
    let (_, sha256) = read_manifest(last_path)?;
    if sha256 != checkpoint.manifest_sha256 {
        return Err(ArchiveError::Broken {
            path: last_path.clone(),
            reason: format!(
                "SHA-256 {}, the live log's checkpoint names {}",
                hex(&sha256),
                hex(&checkpoint.manifest_sha256)
            ),
        });
    }
    Ok(contents)
}

/// The retention setting for embedders: move finished migrations out of the live log into
/// `archive_dir` once they are older than `archive_after_ms`, and/or once more than
/// `keep_finished` finished migrations are live (the oldest go first). Off by default
/// (both `None`): regmig never removes history unless asked. With it on, the engine
/// ([`crate::engine::EngineConfig::retention`]) applies it after a migration finishes, at
/// most once every `check_every_ms` and one run at a time; an embedder may also call
/// [`apply_retention`] itself (say, on a timer). Open migrations are never archived, and
/// an archive always cuts a prefix of the global order, so a migration that is open or
/// young keeps every migration after it live until a later run. A migration it archived
/// is gone from the live log (`Engine::get` and `wait` no longer find it; its bundle
/// holds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// How long a finished migration stays in the live log; `None`: no age limit.
    pub archive_after_ms: Option<u64>,
    /// How many finished migrations the live log keeps at most; `None`: no count limit.
    pub keep_finished: Option<u64>,
    /// Where archives go (required when a limit is set).
    pub archive_dir: Option<PathBuf>,
    /// The engine checks the limits at most this often (after a migration finishes):
    /// planning an archive reads the live log's index of migrations.
    pub check_every_ms: u64,
}

/// How often the engine checks the retention limits by default: once a minute.
pub const RETENTION_CHECK_EVERY_MS_DEFAULT: u64 = 60_000;

impl Default for Retention {
    fn default() -> Self {
        Retention {
            archive_after_ms: None,
            keep_finished: None,
            archive_dir: None,
            check_every_ms: RETENTION_CHECK_EVERY_MS_DEFAULT,
        }
    }
}

impl Retention {
    /// Whether any limit is set.
    pub fn is_on(&self) -> bool {
        self.archive_after_ms.is_some() || self.keep_finished.is_some()
    }
}

/// Applies `retention` at `now_ms`: `Ok(None)` when it is off, else what the archive did
/// (`migrations: 0` when nothing was due). Every migration that finished before
/// `now_ms - archive_after_ms` is archived, and the oldest finished ones beyond
/// `keep_finished`, as far as a prefix of the global order reaches (an open migration
/// stops it). A limit without a directory is [`ArchiveError::Broken`] naming the setting.
pub fn apply_retention(
    log: &EventLog,
    retention: &Retention,
    now_ms: u64,
) -> Result<Option<ArchiveReport>, ArchiveError> {
    if !retention.is_on() {
        return Ok(None);
    }
    let Some(dir) = &retention.archive_dir else {
        return Err(ArchiveError::Broken {
            path: PathBuf::new(),
            reason: format!(
                "the retention setting (archive after {:?} ms, keep {:?} finished migrations) names no archive directory",
                retention.archive_after_ms, retention.keep_finished
            ),
        });
    };
    let by_age = retention
        .archive_after_ms
        .map(|after_ms| {
            let before_ms = now_ms.saturating_sub(after_ms);
            log.plan_archive(before_ms).map(|plan| (plan, before_ms))
        })
        .transpose()?;
    let by_count = match retention.keep_finished {
        Some(keep) => {
            let finished = (log.procedures()?.len() as u64)
                .saturating_sub(log.open_procedures()?.len() as u64);
            let excess = finished.saturating_sub(keep);
            // Everything recorded up to now has finished "before now + 1".
            let before_ms = now_ms.saturating_add(1);
            if excess > 0 {
                Some((log.plan_archive_at_most(before_ms, excess)?, before_ms))
            } else {
                None
            }
        }
        None => None,
    };
    // Both plans are prefixes of the same order: the longer one satisfies both limits.
    let chosen = match (by_age, by_count) {
        (Some(age), Some(count)) => {
            if count.0.cut_global_seq > age.0.cut_global_seq {
                count
            } else {
                age
            }
        }
        (Some(plan), None) | (None, Some(plan)) => plan,
        (None, None) => {
            return Ok(Some(ArchiveReport {
                manifest: None,
                migrations: 0,
                events: 0,
                checkpoint: log.checkpoint()?,
                stopped_by: None,
            }))
        }
    };
    archive_planned(log, &chosen.0, chosen.1, dir).map(Some)
}
