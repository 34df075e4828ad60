//! Opening a data directory: telling a regmig log from anything else before a byte is
//! written, opening sled without letting a damaged file panic the process, and the checks
//! against the mark. A writer opens the database in place and refuses a damaged log; a
//! reader opens a private copy (sled has no read-only mode) and reports the damage.

use std::fs::{File, OpenOptions};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, RwLock};
use std::time::{Duration, Instant};

use super::commit::WriterState;
use super::durable::FileSyncer;
use super::error::LogError;
use super::keys::{LAYOUT_KEY, LAYOUT_VERSION, TREE_NAME};
use super::mark::{create_mark, read_mark, Mark, MarkWriter, MARK_FILE_NAME};
use super::tail::{check_against_mark, read_tail};
use super::{
    Core, Durability, LogOptions, CACHE_CAPACITY_BYTES_DEFAULT, CACHE_CAPACITY_BYTES_MIN,
    LOCK_FILE_NAME, SLED_SUBDIR,
};

/// How long an open waits for sled's own lock once it holds `regmig.lock`.
const SLED_LOCK_WAIT_MAX: Duration = Duration::from_secs(2);
/// The most entries a database directory may hold for a reader to copy it.
const COPY_ENTRIES_MAX: usize = 65_536;

/// What a data directory holds, looked at without writing anything.
struct Shape {
    mark_exists: bool,
    sled: SledShape,
}

#[derive(PartialEq, Eq)]
enum SledShape {
    Missing,
    /// A directory without sled's `db` file (empty, or a stray file or two).
    NoDatabase,
    Database,
}

/// `dir` must exist and be a directory; every failure names it and says what was tried.
pub(super) fn check_data_dir(dir: &Path) -> Result<(), LogError> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(LogError::io(
            "open the data directory",
            dir,
            std::io::Error::other("it is a file, not a directory"),
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(LogError::MissingDataDir {
                dir: dir.to_path_buf(),
            })
        }
        Err(error) => Err(LogError::io("open the data directory", dir, error)),
    }
}

fn inspect(dir: &Path) -> Result<Shape, LogError> {
    let mark_path = dir.join(MARK_FILE_NAME);
    let mark_exists = match std::fs::symlink_metadata(&mark_path) {
        Ok(_) => true,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(error) => return Err(LogError::io("look for the mark file", &mark_path, error)),
    };
    let sled_dir = dir.join(SLED_SUBDIR);
    let sled = match std::fs::metadata(&sled_dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => SledShape::Missing,
        Err(error) => {
            return Err(LogError::io(
                "open the database directory",
                &sled_dir,
                error,
            ))
        }
        Ok(metadata) if !metadata.is_dir() => {
            return Err(LogError::io(
                "open the database directory",
                &sled_dir,
                std::io::Error::other("it is a file, not a directory"),
            ))
        }
        Ok(_) => {
            let db_path = sled_dir.join("db");
            match std::fs::metadata(&db_path) {
                Ok(metadata) if metadata.is_file() => SledShape::Database,
                Ok(_) => {
                    return Err(LogError::io(
                        "open the database file",
                        &db_path,
                        std::io::Error::other("it is not a regular file"),
                    ))
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    // Listing also tells an unreadable directory from an empty one.
                    std::fs::read_dir(&sled_dir)
                        .map_err(|error| LogError::io("list", &sled_dir, error))?;
                    SledShape::NoDatabase
                }
                Err(error) => return Err(LogError::io("open the database file", &db_path, error)),
            }
        }
    };
    Ok(Shape { mark_exists, sled })
}

fn no_database(dir: &Path) -> LogError {
    LogError::NoLog {
        dir: dir.to_path_buf(),
        reason: format!(
            "{} holds no sled database: it has no `db` file",
            dir.join(SLED_SUBDIR).display()
        ),
    }
}

fn foreign_database(dir: &Path) -> LogError {
    LogError::NoLog {
        dir: dir.to_path_buf(),
        reason: format!(
            "{} is a sled database without the `regmig.log` tree: another program's database",
            dir.join(SLED_SUBDIR).display()
        ),
    }
}

/// A database without the log's tree beside a mark: regmig wrote here, and sled lost the
/// tree (damage at the start of `sled/db` does that), so this is lost history, not another
/// program's database.
fn tree_lost(dir: &Path) -> LogError {
    let vouched = match read_mark(dir) {
        Ok(Some(mark)) => format!("global seqs up to {}", mark.last_global_seq),
        Ok(None) => "a log".to_string(),
        Err(error) => format!("a log (the mark is damaged too: {error})"),
    };
    LogError::LostHistory(Box::new(super::error::LostHistory {
        dir: dir.to_path_buf(),
        last_good_global_seq: Some(0),
        first_missing_global_seq: Some(1),
        procedures: Vec::new(),
        reason: format!(
            "{} no longer holds the `regmig.log` tree, but the mark vouches for {vouched}: the database is damaged",
            db_path(dir).display()
        ),
    }))
}

/// Opens the log for writing, in place.
pub(super) fn open_writer(dir: &Path, options: LogOptions) -> Result<Core, LogError> {
    let shape = inspect(dir)?;
    let new_log = match (shape.mark_exists, &shape.sled) {
        (false, SledShape::Missing) => true,
        (false, SledShape::NoDatabase) => return Err(no_database(dir)),
        (false, SledShape::Database) => {
            // A log an older regmig wrote (no mark yet), a log whose mark is gone, or
            // another program's database: look at a copy, so the last is left untouched.
            let copy = copy_database(dir)?;
            let db = open_sled(
                &copy.path().join(SLED_SUBDIR),
                dir,
                false,
                CACHE_CAPACITY_BYTES_DEFAULT,
            )?;
            let ours = guarded(dir, "list the trees", || {
                Ok(db
                    .tree_names()
                    .iter()
                    .any(|name| name.as_ref() == TREE_NAME))
            })?;
            drop(db);
            if !ours {
                return Err(foreign_database(dir));
            }
            false
        }
        (true, _) => false,
    };

    let lock_file = lock(dir, true)?.ok_or_else(|| LogError::InUse {
        dir: dir.to_path_buf(),
    })?;
    if shape.mark_exists && shape.sled != SledShape::Database {
        // The mark says there was a log; sled would create an empty one in its place.
        let vouched = match read_mark(dir) {
            Ok(Some(mark)) => Some(mark.last_global_seq),
            Ok(None) => Some(0),
            Err(_) => None,
        };
        if vouched != Some(0) {
            return Err(LogError::LostHistory(Box::new(super::error::LostHistory {
                dir: dir.to_path_buf(),
                last_good_global_seq: Some(0),
                first_missing_global_seq: Some(1),
                procedures: Vec::new(),
                reason: format!(
                    "{} holds no sled database, but the mark vouches for {}",
                    dir.join(SLED_SUBDIR).display(),
                    vouched.map_or_else(
                        || "a log (it is damaged itself)".to_string(),
                        |seq| format!("global seqs up to {seq}")
                    )
                ),
            })));
        }
    }
    if new_log {
        create_mark(dir, &Mark::empty())?;
    }
    let sled_dir = dir.join(SLED_SUBDIR);
    if shape.sled == SledShape::Database && mark_vouches_for_events(dir) {
        // sled would recreate it empty: look before it opens.
        super::tail::missing_blobs_directory(dir)?;
    }
    remove_unfinished_snapshots(&sled_dir)?;
    let db = open_sled(&sled_dir, dir, true, options.cache_capacity_bytes)
        .map_err(|error| name_refused_files(dir, shape.mark_exists, error))?;
    let tree = guarded(dir, "open the log tree", || {
        let tree = db.open_tree(TREE_NAME)?;
        check_layout(dir, &tree, true)?;
        Ok(tree)
    });
    let tree = match tree {
        Ok(tree) => tree,
        Err(error) => {
            drop(db);
            return Err(name_refused_files(dir, shape.mark_exists, error));
        }
    };
    let syncer = FileSyncer::open(&sled_dir)?;
    if options.durability == Durability::Durable {
        syncer.sync_all_at_open(&db, dir)?;
    }
    let (mut writer, tail) = guarded(dir, "read the end of the log", || {
        Ok((WriterState::load(&tree)?, read_tail(&tree)))
    })?;
    let tail = tail.map_err(|error| {
        LogError::LostHistory(Box::new(super::error::LostHistory {
            dir: dir.to_path_buf(),
            last_good_global_seq: None,
            first_missing_global_seq: None,
            procedures: Vec::new(),
            reason: format!("the last event in global order does not check out: {error}"),
        }))
    })?;
    let mark = read_mark(dir);
    guarded(dir, "check the log against its mark", || {
        check_against_mark(dir, &tree, &tail, &mark)
    })?;
    let mark = match mark {
        Ok(Some(mark)) => mark,
        // An empty log, or one an older regmig wrote: it gets its first mark now.
        _ => {
            let mark = Mark::settled(1, tail.last_global_seq, tail.last_hash);
            create_mark(dir, &mark)?;
            mark
        }
    };
    writer.last_hash = tail.last_hash;
    writer.mark = mark;
    writer.mark_writer = Some(MarkWriter::open(dir)?);
    Ok(Core {
        data_dir: dir.to_path_buf(),
        options,
        db,
        tree,
        writer: Mutex::new(writer),
        visibility: RwLock::new(()),
        syncer: Some(syncer),
        poison: Mutex::new(None),
        read_only: false,
        damage: None,
        _lock_file: Some(DirLock {
            _file: lock_file,
            sled_db: Some(db_path(dir)),
        }),
        _copy: None,
    })
}

/// Whether the mark says the log holds events (a damaged mark is judged later).
fn mark_vouches_for_events(dir: &Path) -> bool {
    matches!(read_mark(dir), Ok(Some(mark)) if mark.last_global_seq > 0)
}

/// Opens a private copy of the log for reading. When sled refuses the copy, it is tried
/// again without the files sled reads first ([`open_copy`]): a reader that does not
/// `recover` then reports which file is at fault; one that does (salvage) reads what sled
/// serves without them, and its damage says so ([`refusal_damage`]).
pub(super) fn open_reader(dir: &Path, recover: bool) -> Result<Core, LogError> {
    let shape = inspect(dir)?;
    match shape.sled {
        SledShape::Missing => {
            return Err(LogError::NoLog {
                dir: dir.to_path_buf(),
                reason: format!("{} does not exist", dir.join(SLED_SUBDIR).display()),
            })
        }
        SledShape::NoDatabase => return Err(no_database(dir)),
        SledShape::Database => {}
    }
    let lock_file = lock(dir, false)?;
    let copy = copy_database(dir)?;
    let copy_sled_dir = copy.path().join(SLED_SUBDIR);
    let ((db, tree), refusal) = open_copy(&copy_sled_dir, dir, shape.mark_exists, recover)?;
    let damage = guarded(dir, "read the end of the log", || {
        let tail = read_tail(&tree)?;
        check_against_mark(dir, &tree, &tail, &read_mark(dir))
    })
    .err();
    let damage = match refusal {
        Some(refusal) => Some(refusal_damage(dir, refusal, damage)),
        None => damage,
    };
    Ok(Core {
        data_dir: dir.to_path_buf(),
        options: LogOptions {
            durability: Durability::UnsyncedForTestsOnly,
            ..LogOptions::default()
        },
        db,
        tree,
        writer: Mutex::new(WriterState::read_only()),
        visibility: RwLock::new(()),
        syncer: None,
        poison: Mutex::new(None),
        read_only: true,
        damage,
        _lock_file: lock_file.map(|file| DirLock {
            _file: file,
            sled_db: None,
        }),
        _copy: Some(copy),
    })
}

/// Opens a private copy of the log for reading, as a reader does, holding `regmig.lock`
/// (when it exists: a directory no writer ever opened has none) until the core is dropped,
/// and refuses a log the open finds damaged with that damage: for `compact`, which copies
/// a whole log and writes nothing into `dir`.
pub(super) fn open_whole_reader(dir: &Path) -> Result<Core, LogError> {
    check_data_dir(dir)?;
    let mut core = open_reader(dir, false)?;
    match core.damage.take() {
        Some(damage) => Err(damage),
        None => Ok(core),
    }
}

/// The layout marker must be ours; a writer gives an empty tree one.
fn check_layout(dir: &Path, tree: &sled::Tree, writer: bool) -> Result<(), LogError> {
    match tree.get(LAYOUT_KEY)? {
        Some(layout) if layout.as_ref() == [LAYOUT_VERSION] => Ok(()),
        Some(layout) => Err(LogError::UnsupportedLayout {
            dir: dir.to_path_buf(),
            found: layout.first().copied().unwrap_or(0),
            supported: LAYOUT_VERSION,
        }),
        None => {
            // A log with events but no marker is damage that verify() reports; only an
            // empty log gets a marker.
            if writer && tree.first()?.is_none() {
                tree.insert(LAYOUT_KEY, &[LAYOUT_VERSION][..])?;
            }
            Ok(())
        }
    }
}

/// Takes the directory's exclusive flock, creating the lock file when `create` (a writer);
/// a reader locks it only if it exists (a log no regmig ever opened has none).
fn lock(dir: &Path, create: bool) -> Result<Option<File>, LogError> {
    let lock_path = dir.join(LOCK_FILE_NAME);
    let opened = if create {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
    } else {
        File::open(&lock_path)
    };
    let lock_file = match opened {
        Ok(file) => file,
        Err(error) if !create && error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(LogError::io("open the lock file", &lock_path, error)),
    };
    // flock locks belong to the open file description, so a second open in this very
    // process is refused as well.
    if let Err(error) = fs2::FileExt::try_lock_exclusive(&lock_file) {
        if error.raw_os_error() == fs2::lock_contended_error().raw_os_error() {
            return Err(LogError::InUse {
                dir: dir.to_path_buf(),
            });
        }
        return Err(LogError::io("lock", &lock_path, error));
    }
    Ok(Some(lock_file))
}

/// How long closing a log waits for sled's own threads to let go of `sled/db`. Bounded
/// short: a handle onto the same database that outlives the log (a `sled::Tree` of a
/// metadata store dropped after it) holds the lock until it goes, and that must not stall.
const SLED_RELEASE_WAIT_MAX: Duration = Duration::from_secs(2);

/// The directory's `regmig.lock`, held while a log is open. A writer's is let go only once
/// sled has let go of `sled/db` too: sled's threads outlive the `Db` handle for a moment
/// (longer on a loaded machine), and a next owner — another process, or this one reopening —
/// must find the directory closed when the previous owner's drop has returned, not a moment
/// later (else its open sees the database in use, or a reader copies it mid-write).
pub(crate) struct DirLock {
    /// Holds the flock.
    _file: File,
    /// A writer's `sled/db`, waited for at drop; `None` for a reader (it opened a copy).
    sled_db: Option<PathBuf>,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let Some(sled_db) = &self.sled_db else {
            return;
        };
        let started = Instant::now();
        while started.elapsed() < SLED_RELEASE_WAIT_MAX {
            match File::open(sled_db) {
                Ok(file) => {
                    if fs2::FileExt::try_lock_exclusive(&file).is_ok() {
                        return; // Dropping `file` releases the probe's lock.
                    }
                }
                Err(_) => return,
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        tracing::warn!(
            path = %sled_db.display(),
            "sled still held its database {}s after the log closed (is a tree or a metadata store on it still open?)",
            SLED_RELEASE_WAIT_MAX.as_secs()
        );
    }
}

/// Removes `snap.*.generating`: a snapshot sled was writing when the process or the
/// machine stopped. It is never read (sled writes it under this name and renames it when
/// done), and a stale one can make sled's open fail.
fn remove_unfinished_snapshots(sled_dir: &Path) -> Result<(), LogError> {
    for path in remove_files(
        sled_dir,
        is_unfinished_snapshot,
        "remove the unfinished snapshot",
    )? {
        tracing::warn!(path = %path.display(), "removed an unfinished sled snapshot left by a crash");
    }
    Ok(())
}

/// Removes the files of `sled_dir` whose names `matches` (at most [`COPY_ENTRIES_MAX`]
/// entries are looked at); returns their paths, sorted. A missing directory has none.
fn remove_files(
    sled_dir: &Path,
    matches: impl Fn(&std::ffi::OsStr) -> bool,
    action: &'static str,
) -> Result<Vec<PathBuf>, LogError> {
    let entries = match std::fs::read_dir(sled_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(LogError::io("list", sled_dir, error)),
    };
    let mut removed = Vec::new();
    for entry in entries.take(COPY_ENTRIES_MAX) {
        let entry = entry.map_err(|error| LogError::io("list", sled_dir, error))?;
        if matches(&entry.file_name()) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|error| LogError::io(action, &path, error))?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

fn is_unfinished_snapshot(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with("snap.") && name.ends_with(".generating")
}

/// The prefix of a reader's private copy under the system's temporary directory.
const READ_COPY_PREFIX: &str = "regmig-read-";
/// The suffix of the lock file beside each copy, held by the process reading it.
const READ_COPY_LOCK_SUFFIX: &str = ".lock";

/// A reader's private copy of a database, in a directory of its own under the system's
/// temporary directory; removed when dropped (the core does not depend on `tempfile`).
///
/// A process that ends without running destructors (a signal, `std::process::exit`)
/// cannot remove its copy, so each copy `<tmp>/regmig-read-<pid>-<uuid>` has a lock file
/// `<tmp>/regmig-read-<pid>-<uuid>.lock` beside it, flocked by the reading process while
/// the copy is open. The kernel lets go of a flock when its process ends, however it ends:
/// the next reader removes every copy whose lock it can take ([`remove_stale_copies`]).
pub(crate) struct ReadCopy {
    path: PathBuf,
    lock_path: PathBuf,
    /// Holds the flock that tells a live reader's copy from a dead one's.
    _lock: File,
}

impl ReadCopy {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ReadCopy {
    fn drop(&mut self) {
        // The directory first: a lock file without its copy is never mistaken for one.
        let _ = std::fs::remove_dir_all(&self.path);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Removes the copies under `tmp` that readers which ended without cleaning up left
/// behind: a copy is stale when nobody holds the flock of its lock file. A copy whose lock
/// is held, or that has no lock file (a copy being made this instant, or one an older
/// regmig left), is left alone. Best effort: nothing here fails an open.
fn remove_stale_copies(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.take(COPY_ENTRIES_MAX).flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(copy_name) = name.strip_suffix(READ_COPY_LOCK_SUFFIX) else {
            continue;
        };
        if !copy_name.starts_with(READ_COPY_PREFIX) {
            continue;
        }
        let copy = tmp.join(copy_name);
        if !copy.is_dir() {
            continue;
        }
        let Ok(lock) = File::open(entry.path()) else {
            continue;
        };
        if fs2::FileExt::try_lock_exclusive(&lock).is_ok() {
            tracing::debug!(path = %copy.display(), "removing a copy a reader left behind");
            let _ = std::fs::remove_dir_all(&copy);
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Copies `<dir>/sled` into a new temporary directory (as `<tmp>/sled`), leaving out
/// unfinished snapshots, after removing the copies dead readers left behind. Every failure
/// names the file.
fn copy_database(dir: &Path) -> Result<ReadCopy, LogError> {
    let tmp = std::env::temp_dir();
    remove_stale_copies(&tmp);
    let name = format!(
        "{READ_COPY_PREFIX}{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    );
    let path = tmp.join(&name);
    let lock_path = tmp.join(format!("{name}{READ_COPY_LOCK_SUFFIX}"));
    // The lock before the directory: a copy never exists without its held lock.
    let lock = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock_path)
        .map_err(|error| LogError::io("create the copy's lock file", &lock_path, error))?;
    if let Err(error) = fs2::FileExt::try_lock_exclusive(&lock) {
        let _ = std::fs::remove_file(&lock_path);
        return Err(LogError::io("lock", &lock_path, error));
    }
    if let Err(error) = std::fs::create_dir(&path) {
        let _ = std::fs::remove_file(&lock_path);
        return Err(LogError::io(
            "create a temporary directory at",
            &path,
            error,
        ));
    }
    let copy = ReadCopy {
        path,
        lock_path,
        _lock: lock,
    };
    copy_tree(&dir.join(SLED_SUBDIR), &copy.path().join(SLED_SUBDIR))?;
    Ok(copy)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), LogError> {
    std::fs::create_dir(to).map_err(|error| LogError::io("create", to, error))?;
    let entries = std::fs::read_dir(from).map_err(|error| LogError::io("list", from, error))?;
    for entry in entries.take(COPY_ENTRIES_MAX) {
        let entry = entry.map_err(|error| LogError::io("list", from, error))?;
        let name = entry.file_name();
        if is_unfinished_snapshot(&name) {
            continue;
        }
        let source = entry.path();
        let target = to.join(&name);
        let file_type = entry
            .file_type()
            .map_err(|error| LogError::io("inspect", &source, error))?;
        if file_type.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            std::fs::copy(&source, &target)
                .map_err(|error| LogError::io("copy", &source, error))?;
        }
    }
    Ok(())
}

/// Opens sled at `sled_dir` (the data directory's own, or a reader's copy), naming
/// `<dir>/sled/db` in any error and turning a panic into [`LogError::Damaged`]. In place,
/// sled's lock is waited for within a bound: we hold `regmig.lock`, so a held sled lock is
/// a previous owner's last threads letting go.
fn open_sled(
    sled_dir: &Path,
    dir: &Path,
    in_place: bool,
    cache_capacity_bytes: u64,
) -> Result<sled::Db, LogError> {
    let started = Instant::now();
    loop {
        let config = sled::Config::new()
            .path(sled_dir)
            .cache_capacity(cache_capacity_bytes.max(CACHE_CAPACITY_BYTES_MIN));
        // A copy is thrown away: no background flushes into it.
        let config = if in_place {
            config
        } else {
            config.flush_every_ms(None)
        };
        let opened = catch_unwind(AssertUnwindSafe(|| config.open()));
        match opened {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(sled::Error::Io(io)))
                if in_place && io.to_string().contains("could not acquire lock") =>
            {
                if started.elapsed() >= SLED_LOCK_WAIT_MAX {
                    return Err(LogError::InUse {
                        dir: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(Err(error)) => return Err(sled_error(dir, "open the database", error)),
            Err(panic) => {
                return Err(LogError::Damaged {
                    path: db_path(dir),
                    action: "open the database",
                    reason: format!("sled panicked: {}", panic_text(panic.as_ref())),
                })
            }
        }
    }
}

/// What sled needed left out of a reader's copy to open it.
struct Refusal {
    /// The files at fault, in the data directory (not the copy).
    files: Vec<PathBuf>,
    /// What is wrong, in words.
    finding: String,
    /// sled's error on the whole copy.
    sled_error: String,
}

/// Files named in a message: "`a`, `b`".
fn file_list(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|file| format!("`{}`", file.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens sled and the log tree on a reader's copy of `dir`'s database.
fn open_copy_log(
    copy_sled_dir: &Path,
    dir: &Path,
    mark_exists: bool,
) -> Result<(sled::Db, sled::Tree), LogError> {
    let db = open_sled(copy_sled_dir, dir, false, CACHE_CAPACITY_BYTES_DEFAULT)?;
    let tree = guarded(dir, "open the log tree", || {
        if !db
            .tree_names()
            .iter()
            .any(|name| name.as_ref() == TREE_NAME)
        {
            return Err(if mark_exists {
                tree_lost(dir)
            } else {
                foreign_database(dir)
            });
        }
        let tree = db.open_tree(TREE_NAME)?;
        check_layout(dir, &tree, false)?;
        Ok(tree)
    })?;
    Ok((db, tree))
}

/// A writer's open that sled refused in place (`error`, [`LogError::Damaged`], naming
/// `sled/db` whatever the file): a copy is opened the way a reader's is, to name the file
/// at fault and say what to do ([`LogError::DatabaseRefused`]). Any other error, or a
/// copy that tells nothing more, is returned as it was.
fn name_refused_files(dir: &Path, mark_exists: bool, error: LogError) -> LogError {
    if !matches!(error, LogError::Damaged { .. }) {
        return error;
    }
    let Ok(copy) = copy_database(dir) else {
        return error;
    };
    let copy_sled_dir = copy.path().join(SLED_SUBDIR);
    match open_copy(&copy_sled_dir, dir, mark_exists, false) {
        Err(named @ LogError::DatabaseRefused(_)) => named,
        _ => error,
    }
}

/// Opens a reader's copy (sled and the log tree, [`open_copy_log`]). When sled
/// refuses it (its checks failed, or it panicked), tries again on the copy without its
/// settings file `conf` (sled writes one from the settings every regmig log is written
/// with), then also without its snapshots `snap.*` (sled then reads its page log `db` from
/// the start and stops at the first damaged message, which may serve less than was
/// written: the check against the mark after the open finds that). What had to be left
/// out names the file at fault: a reader that does not `recover` returns it as
/// [`LogError::DatabaseRefused`]; one that does gets the log and the [`Refusal`].
fn open_copy(
    copy_sled_dir: &Path,
    dir: &Path,
    mark_exists: bool,
    recover: bool,
) -> Result<((sled::Db, sled::Tree), Option<Refusal>), LogError> {
    let open_log = || open_copy_log(copy_sled_dir, dir, mark_exists);
    let sled_error = match open_log() {
        Ok(opened) => return Ok((opened, None)),
        Err(LogError::Damaged { reason, .. }) => reason,
        Err(error) => return Err(error),
    };
    if mark_vouches_for_events(dir) {
        // Without its blob directory sled cannot read the log at all (it may panic): that
        // is the damage to name, and no file left out brings the blobs back.
        super::tail::missing_blobs_directory(dir)?;
    }
    let sled_dir = dir.join(SLED_SUBDIR);
    // Another refusal goes on to the next file; any other error (the log tree is gone
    // without them) is the answer.
    let retry = || match open_log() {
        Ok(opened) => Ok(Some(opened)),
        Err(LogError::Damaged { .. }) => Ok(None),
        Err(error) => Err(error),
    };
    let conf = copy_sled_dir.join("conf");
    let mut opened = None;
    if conf.exists() {
        std::fs::remove_file(&conf)
            .map_err(|error| LogError::io("remove from the reader's copy", &conf, error))?;
        opened = retry()?.map(|log| {
            let files = vec![sled_dir.join("conf")];
            let finding = format!(
                "its settings file {} fails sled's checksum or does not parse",
                file_list(&files)
            );
            (log, files, finding)
        });
    }
    if opened.is_none() {
        let snapshots = remove_files(
            copy_sled_dir,
            |name| name.to_string_lossy().starts_with("snap."),
            "remove from the reader's copy",
        )?;
        if !snapshots.is_empty() {
            opened = retry()?.map(|log| {
                // Named as in the data directory, not in the copy.
                let mut files: Vec<PathBuf> = snapshots
                    .iter()
                    .filter_map(|path| path.file_name())
                    .map(|name| sled_dir.join(name))
                    .collect();
                let snapshot_text = file_list(&files);
                files.push(db_path(dir));
                let finding = format!(
                    "its snapshot {snapshot_text} does not agree with its page log `{}`: the snapshot is damaged, or the page log is damaged before the point the snapshot records (sled stops reading its page log at the first damaged message)",
                    db_path(dir).display()
                );
                (log, files, finding)
            });
        }
    }
    let Some((log, files, finding)) = opened else {
        let finding = format!(
            "sled refuses its page log `{}`, even without its settings file and its snapshots",
            db_path(dir).display()
        );
        return Err(LogError::DatabaseRefused(Box::new(
            super::error::DatabaseRefused {
                dir: dir.to_path_buf(),
                files: vec![db_path(dir)],
                finding,
                sled_error,
                advice: "nothing of it reads back: restore the data directory from a backup"
                    .to_string(),
            },
        )));
    };
    if !recover {
        drop(log);
        return Err(LogError::DatabaseRefused(Box::new(super::error::DatabaseRefused {
            dir: dir.to_path_buf(),
            files,
            finding,
            sled_error,
            advice: format!(
                "`regmig log salvage --data-dir {} --to NEW` reads it without those files and checks what it finds against the mark (it writes nothing into this directory)",
                dir.display()
            ),
        })));
    }
    Ok((
        log,
        Some(Refusal {
            files,
            finding,
            sled_error,
        }),
    ))
}

/// The damage of a log read without the files sled refused: what the check against the
/// mark found, said together with the refusal. The mark is what makes this honest: a log
/// that still ends where its mark says is whole; one that ends earlier, or has no mark to
/// say, is lost history (salvage marks the migrations open at its end as cut).
fn refusal_damage(dir: &Path, refusal: Refusal, found: Option<LogError>) -> LogError {
    let left_out = file_list(
        &refusal
            .files
            .iter()
            .filter(|file| **file != db_path(dir))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let read_without = format!(
        "sled refused to open its database ({}; sled: {}), so it was read without {left_out}",
        refusal.finding, refusal.sled_error
    );
    match found {
        Some(LogError::LostHistory(mut lost)) => {
            lost.reason = format!("{read_without}: {}", lost.reason);
            LogError::LostHistory(lost)
        }
        Some(other) => LogError::LostHistory(Box::new(super::error::LostHistory {
            dir: dir.to_path_buf(),
            last_good_global_seq: None,
            first_missing_global_seq: None,
            procedures: Vec::new(),
            reason: format!("{read_without}, and then: {other}"),
        })),
        None if matches!(read_mark(dir), Ok(Some(_))) => {
            let advice = format!(
                "read without {left_out}, it still ends where its mark says: no acknowledged event is missing from its end"
            );
            LogError::DatabaseRefused(Box::new(super::error::DatabaseRefused {
                dir: dir.to_path_buf(),
                files: refusal.files,
                finding: refusal.finding,
                sled_error: refusal.sled_error,
                advice,
            }))
        }
        None => LogError::LostHistory(Box::new(super::error::LostHistory {
            dir: dir.to_path_buf(),
            last_good_global_seq: None,
            first_missing_global_seq: None,
            procedures: Vec::new(),
            reason: format!(
                "{read_without}, and it has no mark to say where it should end: events at its end may be gone"
            ),
        })),
    }
}

/// `<dir>/sled/db`, the file sled's damage is in.
pub(super) fn db_path(dir: &Path) -> PathBuf {
    dir.join(SLED_SUBDIR).join("db")
}

/// A sled error as a [`LogError`] that names the file and what was being done.
pub(super) fn sled_error(dir: &Path, action: &'static str, error: sled::Error) -> LogError {
    match error {
        sled::Error::Io(io) => LogError::Io {
            action,
            path: dir.join(SLED_SUBDIR),
            source: io,
        },
        other => LogError::Damaged {
            path: db_path(dir),
            action,
            reason: sled_error_text(&other),
        },
    }
}

/// sled's message without the empty backtrace its corruption error prints
/// ("Read corrupted data at file offset None backtrace ()").
fn sled_error_text(error: &sled::Error) -> String {
    let text = error.to_string();
    match text.split_once(" backtrace ") {
        Some((message, _)) => message.to_string(),
        None => text,
    }
}

/// Runs `read` (which reads the sled database of `dir`), turning a sled panic into
/// [`LogError::Damaged`] and a bare sled error into one that names the file.
pub(super) fn guarded<T>(
    dir: &Path,
    action: &'static str,
    read: impl FnOnce() -> Result<T, LogError>,
) -> Result<T, LogError> {
    match catch_unwind(AssertUnwindSafe(read)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(LogError::Storage {
            backend: "sled",
            source,
        })) => match source.downcast::<sled::Error>() {
            Ok(error) => Err(sled_error(dir, action, *error)),
            Err(source) => Err(LogError::Storage {
                backend: "sled",
                source,
            }),
        },
        Ok(Err(error)) => Err(error),
        Err(panic) => Err(LogError::Damaged {
            path: db_path(dir),
            action,
            reason: format!("sled panicked: {}", panic_text(panic.as_ref())),
        }),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Keeps the default panic message of a panic inside sled off stderr: the log turns it
/// into a typed error that names the damaged file. Every other panic is printed as
/// before. Call once, early (the CLI does).
pub fn quiet_sled_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_sled = info.location().is_some_and(|location| {
                let file = location.file();
                file.contains("/sled-0.34") || file.contains("\\sled-0.34")
            });
            if !in_sled {
                previous(info);
            }
        }));
    });
}
