//! Making sled's writes survive a machine crash.
//!
//! sled 0.34.7's `flush()` writes its buffers and calls `sync_file_range`, which flushes
//! neither the disk's cache nor the file's size: a power cut can still lose what it wrote.
//! So around every flush the log `fdatasync`s the files sled writes: every new or grown file
//! in `<sled>/blobs/` (pages too big for the page log; before the flush, so no durable page
//! points at a blob that is not), `<sled>/db` (the page log) after it, and
//! `fsync`s a directory whenever its entries changed. A directory whose mtime has not moved
//! since it was last seen (and was old enough then) is not listed again. `conf` is written once, when the
//! database is created, and is synced at open.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::error::LogError;

/// How many directory entries a sync looks at, at most (sled keeps a handful; blobs are rare).
const DIR_ENTRIES_MAX: usize = 65_536;
/// Older than this, a timestamp cannot be the one a change made now would get (kernel
/// timestamps come from a clock that ticks every few ms at most).
const TIMESTAMP_SETTLE: Duration = Duration::from_millis(50);

/// Flushes sled and fdatasyncs what it wrote. One sync at a time.
pub(crate) struct FileSyncer {
    sled_dir: PathBuf,
    blobs_dir: PathBuf,
    db_path: PathBuf,
    /// Our own handle on `<sled>/db`: fdatasync through any descriptor covers the file.
    db_file: File,
    /// A std Mutex: held across blocking syscalls only, never across an await.
    state: Mutex<SyncState>,
    /// Set by tests: the next fdatasync of `db` fails as an I/O error would.
    fail_next_fdatasync: AtomicBool,
}

/// What the last sync saw, so a sync only touches what changed since.
#[derive(Default)]
struct SyncState {
    sled_dir: DirSeen,
    blobs_dir: DirSeen,
    /// Blob files and the length they had when last fdatasynced.
    synced_blob_lens: HashMap<OsString, u64>,
}

/// A directory as its last sync saw it.
#[derive(Default)]
struct DirSeen {
    /// Entry names at its last fsync.
    names: Vec<OsString>,
    /// Its mtime then, once that is old enough that any later change gets a newer one
    /// (the kernel stamps with a coarse clock): while it matches, nothing changed inside.
    settled_mtime: Option<SystemTime>,
}

impl DirSeen {
    fn unchanged(&self, dir: &Path) -> Result<bool, LogError> {
        Ok(self.settled_mtime.is_some() && self.settled_mtime == Some(mtime(dir)?))
    }
}

impl FileSyncer {
    /// Opens `<sled>/db` for syncing. The database must already be open.
    pub(crate) fn open(sled_dir: &Path) -> Result<Self, LogError> {
        let db_path = sled_dir.join("db");
        let db_file =
            File::open(&db_path).map_err(|error| LogError::io("open", &db_path, error))?;
        Ok(FileSyncer {
            sled_dir: sled_dir.to_path_buf(),
            blobs_dir: sled_dir.join("blobs"),
            db_path,
            db_file,
            state: Mutex::new(SyncState::default()),
            fail_next_fdatasync: AtomicBool::new(false),
        })
    }

    /// Syncs everything sled has written so far, `conf` included, and the directories up
    /// to `data_dir`'s parent (so a freshly created data directory survives a crash too).
    pub(crate) fn sync_all_at_open(&self, db: &sled::Db, data_dir: &Path) -> Result<(), LogError> {
        let conf_path = self.sled_dir.join("conf");
        sync_file_data(&conf_path)?;
        self.sync(db)?;
        fsync_dir(data_dir)?;
        if let Some(parent) = data_dir
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            fsync_dir(parent)?;
        }
        Ok(())
    }

    /// Flushes sled, then fdatasyncs `db` and the new blobs, and fsyncs changed directories.
    /// When it returns Ok, every write sled accepted before the call survives a power cut.
    pub(crate) fn sync(&self, db: &sled::Db) -> Result<(), LogError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Blobs first: the pages the flush writes may point at blobs written before it, and
        // a durable pointer to a blob that is not durable would be damage after a crash.
        if !state.blobs_dir.unchanged(&self.blobs_dir)? {
            self.sync_blobs(&mut state)?;
        }
        db.flush()?;
        if self.fail_next_fdatasync.swap(false, Ordering::AcqRel) {
            return Err(LogError::io(
                "fdatasync",
                &self.db_path,
                std::io::Error::other("failure injected by a test"),
            ));
        }
        self.db_file
            .sync_data()
            .map_err(|error| LogError::io("fdatasync", &self.db_path, error))?;
        // Blobs another tree wrote while we flushed: durable by the time we return.
        if !state.blobs_dir.unchanged(&self.blobs_dir)? {
            self.sync_blobs(&mut state)?;
        }
        if !state.sled_dir.unchanged(&self.sled_dir)? {
            sync_dir_entries(&self.sled_dir, &mut state.sled_dir)?;
        }
        Ok(())
    }

    /// Makes the next fdatasync of `db` fail (for tests of the failure path).
    pub(crate) fn fail_next_fdatasync(&self) {
        self.fail_next_fdatasync.store(true, Ordering::Release);
    }

    fn sync_blobs(&self, state: &mut SyncState) -> Result<(), LogError> {
        let mtime_before = mtime(&self.blobs_dir)?;
        let names = dir_names(&self.blobs_dir)?;
        let mut all_settled = true;
        for name in &names {
            let path = self.blobs_dir.join(name);
            let file = match File::open(&path) {
                Ok(file) => file,
                // Removed by sled's blob GC since the listing: nothing left to make durable.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(LogError::io("open", &path, error)),
            };
            let metadata = file
                .metadata()
                .map_err(|error| LogError::io("stat", &path, error))?;
            // A blob is written once, front to back: one still being written is looked at
            // again by the next sync.
            all_settled &= metadata.modified().map(is_settled).unwrap_or(false);
            if state.synced_blob_lens.get(name) == Some(&metadata.len()) {
                continue;
            }
            file.sync_data()
                .map_err(|error| LogError::io("fdatasync", &path, error))?;
            state.synced_blob_lens.insert(name.clone(), metadata.len());
        }
        state
            .synced_blob_lens
            .retain(|name, _| names.contains(name));
        if names != state.blobs_dir.names {
            fsync_dir(&self.blobs_dir)?;
            state.blobs_dir.names = names;
        }
        state.blobs_dir.settled_mtime =
            (all_settled && is_settled(mtime_before)).then_some(mtime_before);
        Ok(())
    }
}

/// Lists `dir` and fsyncs it if its entries changed since the last fsync.
fn sync_dir_entries(dir: &Path, seen: &mut DirSeen) -> Result<(), LogError> {
    let mtime_before = mtime(dir)?;
    let names = dir_names(dir)?;
    if names != seen.names {
        fsync_dir(dir)?;
        seen.names = names;
    }
    seen.settled_mtime = is_settled(mtime_before).then_some(mtime_before);
    Ok(())
}

fn mtime(path: &Path) -> Result<SystemTime, LogError> {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .map_err(|error| LogError::io("stat", path, error))
}

/// Whether a file-system timestamp is far enough in the past that a change made now would
/// get a different one, however coarse the kernel's clock.
fn is_settled(stamp: SystemTime) -> bool {
    SystemTime::now()
        .duration_since(stamp)
        .is_ok_and(|age| age >= TIMESTAMP_SETTLE)
}

/// The sorted entry names of a directory (at most [`DIR_ENTRIES_MAX`]).
fn dir_names(dir: &Path) -> Result<Vec<OsString>, LogError> {
    let entries = std::fs::read_dir(dir).map_err(|error| LogError::io("list", dir, error))?;
    let mut names = Vec::new();
    for entry in entries.take(DIR_ENTRIES_MAX) {
        let entry = entry.map_err(|error| LogError::io("list", dir, error))?;
        names.push(entry.file_name());
    }
    names.sort_unstable();
    Ok(names)
}

fn sync_file_data(path: &Path) -> Result<(), LogError> {
    File::open(path)
        .and_then(|file| file.sync_data())
        .map_err(|error| LogError::io("fdatasync", path, error))
}

/// fsyncs a directory, so the entries created or renamed in it survive a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(|error| LogError::io("fsync directory", dir, error))
}
