//! Directories that hold no regmig log (issue 10): an empty `sled/`, another program's
//! sled database. Every command refuses them with "holds no regmig event log", exit 1, and
//! writes nothing (the tree is compared byte for byte before and after). And every odd
//! shape of the data directory (a file, a `sled` file, a symlink loop, a name too long)
//! is an error that names the path and what was being done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use regmig::log::{EventLog, LogError, LogOptions};

const SCENARIO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/scenarios/crash_then_resume.toml"
);
const SOME_ID: &str = "019b7d6e-2a80-7000-8000-000000000001";

fn regmig(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(args)
        .output()
        .expect("run regmig")
}

/// Every file under `dir` (relative path → bytes; directories → empty, marked by a '/').
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            if entry.file_type().unwrap().is_dir() {
                into.insert(relative.join(""), Vec::new());
                walk(root, &path, into);
            } else {
                into.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

/// A sled database another program made: its own trees, no `regmig.log`.
fn foreign_database(dir: &Path) {
    let db = sled::Config::new().path(dir.join("sled")).open().unwrap();
    db.insert(b"their-key", b"their-value".to_vec()).unwrap();
    db.open_tree("their-tree")
        .unwrap()
        .insert(b"k", b"v".to_vec())
        .unwrap();
    db.flush().unwrap();
    drop(db);
    // sled lets go of its files from a background thread: wait until they settle.
    std::thread::sleep(std::time::Duration::from_millis(200));
}

fn every_command(dir: &str, out: &str) -> Vec<Vec<String>> {
    let svg = format!("{out}/t.svg");
    let bundle = format!("{out}/b.bundle");
    [
        vec!["list", "--data-dir", dir],
        vec!["show", SOME_ID, "--data-dir", dir],
        vec!["events", SOME_ID, "--data-dir", dir],
        vec!["audit", "--data-dir", dir],
        vec!["export", SOME_ID, "--output", &bundle, "--data-dir", dir],
        vec!["timeline", SOME_ID, "--output", &svg, "--data-dir", dir],
        vec!["log", "verify", "--data-dir", dir],
        vec!["demo", "--data-dir", dir],
        vec!["sim", "run", "--data-dir", dir, SCENARIO],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(str::to_string).collect())
    .collect()
}

fn assert_refused_and_untouched(dir: &Path) {
    let out = tempfile::tempdir().unwrap();
    let before = snapshot(dir);
    for args in every_command(dir.to_str().unwrap(), out.path().to_str().unwrap()) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = regmig(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}{stdout}");
        assert!(
            stderr.contains("holds no regmig event log")
                || stdout.contains("holds no regmig event log"),
            "{args:?}: {stderr}{stdout}"
        );
        assert_eq!(
            snapshot(dir),
            before,
            "{args:?} wrote into {}",
            dir.display()
        );
    }
    assert!(
        snapshot(out.path()).is_empty(),
        "an output file was written"
    );
}

#[test]
fn an_empty_sled_directory_is_refused_by_every_command_and_left_as_it_was() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    std::fs::create_dir_all(dir.join("sled")).unwrap();
    assert_refused_and_untouched(&dir);
}

#[test]
fn a_foreign_sled_database_is_refused_by_every_command_and_left_as_it_was() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    foreign_database(&dir);
    assert_refused_and_untouched(&dir);
    // The library's writer open refuses it too, writing nothing.
    let before = snapshot(&dir);
    let error = EventLog::open(&dir, LogOptions::default())
        .err()
        .expect("refused");
    assert!(matches!(error, LogError::NoLog { .. }), "{error}");
    assert!(
        error.to_string().contains("another program's database"),
        "{error}"
    );
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn reading_a_regmig_log_writes_nothing_into_its_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let run = regmig(&["sim", "run", "--data-dir", dir.to_str().unwrap(), SCENARIO]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = snapshot(&dir);
    for args in [
        vec!["list", "--data-dir", dir.to_str().unwrap()],
        vec!["audit", "--data-dir", dir.to_str().unwrap()],
        vec!["log", "verify", "--data-dir", dir.to_str().unwrap()],
    ] {
        let output = regmig(&args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(snapshot(&dir), before, "{args:?} wrote into the directory");
    }
}

fn assert_names(error: &LogError, path: &Path, action: &str) {
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(action), "{text}");
}

#[test]
fn odd_data_directories_are_errors_that_name_the_path_and_what_was_tried() {
    let root = tempfile::tempdir().unwrap();

    let file = root.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    for error in [
        EventLog::open(&file, LogOptions::default()).err().unwrap(),
        EventLog::open_read_only(&file).err().unwrap(),
    ] {
        assert!(
            error.to_string().contains(&file.display().to_string()),
            "{error}"
        );
    }
    let error = EventLog::open_existing(&file, LogOptions::default())
        .err()
        .unwrap();
    assert_names(&error, &file, "open the data directory");

    let sled_file = root.path().join("sled-is-a-file");
    std::fs::create_dir(&sled_file).unwrap();
    std::fs::write(sled_file.join("sled"), b"x").unwrap();
    for error in [
        EventLog::open(&sled_file, LogOptions::default())
            .err()
            .unwrap(),
        EventLog::open_read_only(&sled_file).err().unwrap(),
    ] {
        assert_names(
            &error,
            &sled_file.join("sled"),
            "open the database directory",
        );
        assert!(error.to_string().contains("not a directory"), "{error}");
    }

    let looped = root.path().join("loop");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    for error in [
        EventLog::open(&looped, LogOptions::default())
            .err()
            .unwrap(),
        EventLog::open_read_only(&looped).err().unwrap(),
    ] {
        assert!(
            error.to_string().contains(&looped.display().to_string()),
            "{error}"
        );
    }

    let long = root.path().join("n".repeat(300));
    for error in [
        EventLog::open(&long, LogOptions::default()).err().unwrap(),
        EventLog::open_read_only(&long).err().unwrap(),
    ] {
        assert!(error.to_string().contains(&"n".repeat(300)), "{error}");
        assert!(!matches!(error, LogError::MissingDataDir { .. }), "{error}");
    }

    // Through the command line: exit 1, the path named.
    let output = regmig(&["list", "--data-dir", sled_file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&sled_file.join("sled").display().to_string()),
        "{stderr}"
    );
}

#[test]
fn an_unreadable_data_directory_names_the_path() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: root reads every directory");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    std::fs::create_dir_all(dir.join("sled")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let error = EventLog::open_read_only(&dir).err().unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        error.to_string().contains(&dir.display().to_string()),
        "{error}"
    );
}
