//! The damage sweep (issue 10): a finished log is damaged in every way a disk or an
//! operator can (flipped bytes, cut tails, zeroed pages, deleted files, a mark from another
//! log), and each damage must be either harmless (every acknowledged event reads back
//! byte-identical, verify is clean, a writer opens) or detected both by a writer's open
//! and by verify. Never a shorter log that verifies clean; never a panic.

#[path = "../crates/regmig/tests/log_support/mod.rs"]
mod log_support;

use std::path::{Path, PathBuf};

use log_support::{copy_dir, first_append, next_append};
use regmig::log::{encode_record, EventLog, LogError, LogOptions, MARK_FILE_NAME};
use uuid::Uuid;

fn procedure(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_5f3a_c000_7000_8000_0000_0000_0000 | n)
}

/// A finished log of four procedures, 36 events in 16 appends, interleaved; procedure 8
/// stores event 2 as a sled blob. Returns every record, encoded, in global order.
fn write_finished_log(dir: &Path, seed: u128) -> Vec<Vec<u8>> {
    let log = EventLog::open(dir, LogOptions::default()).expect("open a new log");
    let ids = [
        procedure(1 + seed),
        procedure(2 + seed),
        procedure(3 + seed),
        procedure(8),
    ];
    let ids = if seed == 0 { &ids[..] } else { &ids[..3] };
    for (index, id) in ids.iter().enumerate() {
        let appended = log
            .append_blocking(first_append(*id, 3, 100 + index as u64, vec![1, 2]))
            .expect("append")
            .expect("no conflict");
        assert_eq!(appended.first_seq, 1);
    }
    // Two sessions, as a restarted engine leaves it: sled writes a snapshot at the first
    // close, and the second session's writes go to a new segment.
    drop(log);
    let log = reopen(dir);
    for round in 0..3u64 {
        for id in ids {
            let closes = round == 2;
            log.append_blocking(next_append(*id, 4 + round * 2, 2, closes))
                .expect("append")
                .expect("no conflict");
        }
    }
    let records = all_records(&log).expect("read back");
    drop(log);
    records
}

/// Opens the log again, waiting for sled's last threads of the previous open to let go.
fn reopen(dir: &Path) -> EventLog {
    for _ in 0..100 {
        match EventLog::open(dir, LogOptions::default()) {
            Err(LogError::InUse { .. }) => std::thread::sleep(std::time::Duration::from_millis(20)),
            other => return other.expect("reopen"),
        }
    }
    panic!("{} stayed in use", dir.display());
}

fn all_records(log: &EventLog) -> Result<Vec<Vec<u8>>, LogError> {
    Ok(log
        .events_from(1, usize::MAX)?
        .iter()
        .map(encode_record)
        .collect())
}

/// One way to damage a data directory.
#[derive(Debug, Clone)]
enum Damage {
    Flip { offset: u64, len: u64 },
    Truncate { cut: u64 },
    ZeroPage { page: u64 },
    Delete { relative: &'static str },
    ForeignMark,
    FlipMark { offset: u64 },
    StaleSnapshot,
}

fn apply(damage: &Damage, dir: &Path, other_mark: &Path) {
    let db = dir.join("sled/db");
    match damage {
        Damage::Flip { offset, len } => {
            let mut bytes = std::fs::read(&db).unwrap();
            for byte in bytes.iter_mut().skip(*offset as usize).take(*len as usize) {
                *byte ^= 0xa5;
            }
            std::fs::write(&db, bytes).unwrap();
        }
        Damage::Truncate { cut } => {
            // Cut off the padding too: `cut` bytes of data go.
            let bytes = std::fs::read(&db).unwrap();
            let data_len = bytes
                .iter()
                .rposition(|byte| *byte != 0)
                .map_or(0, |last| last + 1);
            let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
            file.set_len((data_len as u64).saturating_sub(*cut))
                .unwrap();
        }
        Damage::ZeroPage { page } => {
            let mut bytes = std::fs::read(&db).unwrap();
            let start = (*page * 4096) as usize;
            let end = (start + 4096).min(bytes.len());
            bytes[start..end].fill(0);
            std::fs::write(&db, bytes).unwrap();
        }
        Damage::Delete { relative } => {
            let path = dir.join(relative);
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
        Damage::ForeignMark => {
            std::fs::copy(other_mark, dir.join(MARK_FILE_NAME)).unwrap();
        }
        Damage::FlipMark { offset } => {
            let path = dir.join(MARK_FILE_NAME);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[*offset as usize] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
        }
        Damage::StaleSnapshot => {
            std::fs::write(dir.join("sled/snap.00000000000000A0.generating"), b"").unwrap();
        }
    }
}

/// What the sweep saw for one damage.
#[derive(Debug)]
enum Outcome {
    Harmless,
    Detected,
}

fn judge(dir: &Path, expected: &[Vec<u8>]) -> Result<Outcome, String> {
    // Readers first: they must not change the directory (the writer's open may).
    let read = EventLog::open_read_only(dir);
    let (reads_back_whole, verify_clean, reader_saw) = match &read {
        Ok(log) => {
            let records = all_records(log);
            let verify = log.verify();
            let clean = matches!(&verify, Ok(report) if report.is_clean());
            (
                records.as_deref().ok() == Some(expected),
                clean,
                format!(
                    "damage: {:?}, verify: {:?}",
                    log.damage().map(ToString::to_string),
                    verify.map(|report| report
                        .problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>())
                ),
            )
        }
        Err(error) => (false, false, format!("open_read_only: {error}")),
    };
    drop(read);
    let writer = EventLog::open_existing(dir, LogOptions::default());
    let writer_text = match &writer {
        Ok(_) => "writer opened".to_string(),
        Err(error) => format!("writer refused: {error}"),
    };
    match (verify_clean, reads_back_whole, writer.is_ok()) {
        (true, true, true) => Ok(Outcome::Harmless),
        (false, _, false) => Ok(Outcome::Detected),
        (true, false, _) => Err(format!(
            "verify is clean but the events do not read back whole ({reader_saw}; {writer_text})"
        )),
        (false, _, true) => Err(format!(
            "verify found damage but a writer opened ({reader_saw})"
        )),
        (true, true, false) => Err(format!(
            "a false alarm: everything reads back, but {writer_text}"
        )),
    }
}

struct Fixture {
    _root: tempfile::TempDir,
    finished: PathBuf,
    other_mark: PathBuf,
    expected: Vec<Vec<u8>>,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let finished = root.path().join("finished");
    let expected = write_finished_log(&finished, 0);
    assert_eq!(expected.len(), 36);
    let other = root.path().join("other");
    write_finished_log(&other, 16);
    Fixture {
        other_mark: other.join(MARK_FILE_NAME),
        _root: root,
        finished,
        expected,
    }
}

fn sweep(fixture: &Fixture, damages: &[Damage]) -> (usize, usize) {
    let mut failures = Vec::new();
    let (mut harmless, mut detected) = (0, 0);
    for damage in damages {
        let case = tempfile::tempdir().unwrap();
        let dir = case.path().join("data");
        copy_dir(&fixture.finished, &dir);
        apply(damage, &dir, &fixture.other_mark);
        let judged = std::panic::catch_unwind(|| judge(&dir, &fixture.expected));
        match judged {
            Ok(Ok(Outcome::Harmless)) => harmless += 1,
            Ok(Ok(Outcome::Detected)) => detected += 1,
            Ok(Err(problem)) => failures.push(format!("{damage:?}: {problem}")),
            Err(_) => failures.push(format!("{damage:?}: panicked")),
        }
    }
    eprintln!(
        "{harmless} harmless, {detected} detected of {}",
        damages.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} damages went wrong:\n{}",
        failures.len(),
        damages.len(),
        failures.join("\n")
    );
    (harmless, detected)
}

/// Where the data of sled's file ends: sled pads its segments with zeros, and damage to
/// the padding alone is (rightly) harmless, so the sweep aims at the bytes before it.
fn db_len(fixture: &Fixture) -> u64 {
    let bytes = std::fs::read(fixture.finished.join("sled/db")).unwrap();
    bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last as u64 + 1)
}

#[test]
fn the_undamaged_log_is_harmless_to_itself() {
    let fixture = fixture();
    let (harmless, detected) = sweep(&fixture, &[Damage::StaleSnapshot]);
    assert_eq!((harmless, detected), (1, 0));
    // A stale unfinished snapshot is not damage: the writer removed it.
}

#[test]
fn flipped_bytes_anywhere_in_the_database_are_harmless_or_detected() {
    regmig::log::quiet_sled_panics();
    let fixture = fixture();
    let len = db_len(&fixture);
    let damages: Vec<Damage> = (0..40u64)
        .map(|step| Damage::Flip {
            offset: len * step / 40,
            len: 64.min(len - len * step / 40),
        })
        .chain((0..8u64).map(|step| Damage::Flip {
            offset: len - 1 - step * 7,
            len: 1,
        }))
        .collect();
    let (_, detected) = sweep(&fixture, &damages);
    assert!(
        detected > 0,
        "no flip was even detected: the sweep tests nothing"
    );
}

#[test]
fn cut_tails_of_every_size_are_harmless_or_detected() {
    regmig::log::quiet_sled_panics();
    let fixture = fixture();
    let len = db_len(&fixture);
    let damages: Vec<Damage> = [
        1,
        2,
        7,
        17,
        64,
        100,
        511,
        512,
        1000,
        4096,
        len / 8,
        len / 4,
        len / 3,
        len / 2,
    ]
    .into_iter()
    .filter(|cut| *cut >= 1 && *cut <= len / 2)
    .map(|cut| Damage::Truncate { cut })
    .collect();
    let (_, detected) = sweep(&fixture, &damages);
    assert!(detected > 0);
}

#[test]
fn zeroed_pages_are_harmless_or_detected() {
    regmig::log::quiet_sled_panics();
    let fixture = fixture();
    let pages = db_len(&fixture).div_ceil(4096);
    let damages: Vec<Damage> = (0..pages).map(|page| Damage::ZeroPage { page }).collect();
    let (_, detected) = sweep(&fixture, &damages);
    assert!(detected > 0);
}

#[test]
fn deleted_files_and_foreign_or_damaged_marks_are_detected() {
    regmig::log::quiet_sled_panics();
    let fixture = fixture();
    let mut damages = vec![
        Damage::Delete {
            relative: MARK_FILE_NAME,
        },
        Damage::Delete {
            relative: "sled/db",
        },
        Damage::Delete {
            relative: "sled/blobs",
        },
        Damage::ForeignMark,
        // Both slots: one flip spoils one slot only, and the other is an older mark.
        Damage::FlipMark { offset: 20 },
        Damage::FlipMark { offset: 512 + 20 },
    ];
    damages.push(Damage::Delete {
        relative: "sled/conf",
    });
    let (_, detected) = sweep(&fixture, &damages);
    assert!(
        detected >= 4,
        "mark deleted, db deleted, blobs deleted, a foreign mark: {detected} detected"
    );
}

fn regmig(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(args)
        .output()
        .expect("run regmig")
}

/// Damage stops the writers, not the readers: when sled serves an older state than the
/// mark vouches for (here, an older copy of `sled/` put back, as a disk that lost writes
/// would), `sim run` and `demo` exit 1 naming the loss; `list`, `show`, `events`, `audit`,
/// `export` and `timeline` still work, each with one warning line; `log verify` exits 1.
#[test]
fn a_damaged_log_stops_writers_and_readers_warn_once() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let dir_text = dir.to_str().unwrap();
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios");
    let first = format!("{scenarios}/crash_then_resume.toml");
    let second = format!("{scenarios}/downgrade_error_then_ok.toml");
    let run = regmig(&["sim", "run", "--data-dir", dir_text, &first]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let listed = regmig(&["list", "--data-dir", dir_text, "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = listed["migrations"][0]["procedure_id"]
        .as_str()
        .unwrap()
        .to_string();
    let verified = regmig(&["log", "verify", "--data-dir", dir_text, "--json"]);
    let verified: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    let last_good = verified["chain"]["head_global_seq"].as_u64().unwrap();
    let loss = format!(
        "last good global seq: {last_good}; first missing: {}",
        last_good + 1
    );
    let older = root.path().join("older-sled");
    copy_dir(&dir.join("sled"), &older);
    // A second session appends more (`sim run` only writes new logs): then the disk loses
    // its writes.
    let log = EventLog::open_existing(&dir, LogOptions::default()).expect("reopen");
    log.append_blocking(first_append(procedure(40), 3, 100, vec![1, 2]))
        .expect("append")
        .expect("no conflict");
    drop(log);
    std::fs::remove_dir_all(dir.join("sled")).unwrap();
    copy_dir(&older, &dir.join("sled"));

    for args in [
        vec!["sim", "run", "--data-dir", dir_text, &second],
        vec!["demo", "--data-dir", dir_text],
        vec!["log", "verify", "--data-dir", dir_text],
    ] {
        let output = regmig(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        assert!(
            text.contains("lost acknowledged history"),
            "{args:?}: {text}"
        );
        assert!(text.contains(&loss), "{args:?}: {text}");
    }
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (svg, bundle) = (out.join("t.svg"), out.join("b.bundle"));
    for args in [
        vec!["list", "--data-dir", dir_text],
        vec!["show", &id, "--data-dir", dir_text],
        vec!["events", &id, "--data-dir", dir_text],
        vec!["audit", "--data-dir", dir_text],
        vec![
            "export",
            &id,
            "--output",
            bundle.to_str().unwrap(),
            "--data-dir",
            dir_text,
        ],
        vec![
            "timeline",
            &id,
            "--output",
            svg.to_str().unwrap(),
            "--data-dir",
            dir_text,
        ],
    ] {
        let output = regmig(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("warning:"))
            .collect();
        assert_eq!(warnings.len(), 1, "{args:?}: {stderr}");
        assert!(
            warnings[0].contains("damaged")
                && warnings[0].contains(&format!("last good global seq: {last_good}")),
            "{stderr}"
        );
    }
}

/// A page sled cannot read: every command exits 1 naming `<dir>/sled/db`, none panics.
#[test]
fn an_unreadable_database_is_named_by_every_command_without_a_panic() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let dir_text = dir.to_str().unwrap();
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scenarios/crash_then_resume.toml"
    );
    let run = regmig(&["sim", "run", "--data-dir", dir_text, scenario]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let db = dir.join("sled/db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..4096].fill(0);
    std::fs::write(&db, &bytes).unwrap();
    for args in [
        vec!["list", "--data-dir", dir_text],
        vec!["log", "verify", "--data-dir", dir_text],
        vec!["demo", "--data-dir", dir_text],
        vec!["sim", "run", "--data-dir", dir_text, scenario],
    ] {
        let output = regmig(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.contains(&db.display().to_string()), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
}

/// A deleted database under a mark that vouches for events: the writer refuses it before
/// sled could create an empty database in its place.
#[test]
fn a_deleted_database_is_refused_without_creating_an_empty_one() {
    let fixture = fixture();
    let case = tempfile::tempdir().unwrap();
    let dir = case.path().join("data");
    copy_dir(&fixture.finished, &dir);
    std::fs::remove_dir_all(dir.join("sled")).unwrap();
    std::fs::create_dir(dir.join("sled")).unwrap();
    let error = EventLog::open_existing(&dir, LogOptions::default())
        .err()
        .expect("refused");
    assert!(matches!(error, LogError::LostHistory(_)), "{error}");
    assert!(
        error.to_string().contains("global seqs up to 36"),
        "{error}"
    );
    assert_eq!(std::fs::read_dir(dir.join("sled")).unwrap().count(), 0);
    let reader = EventLog::open_read_only(&dir)
        .err()
        .expect("nothing to read");
    assert!(matches!(reader, LogError::NoLog { .. }), "{reader}");
}

/// Damage that makes sled lose the log's tree (a cut or scribbled start of `sled/db`) is
/// lost history for every command, as the mark vouches for events: never "another
/// program's database", which would send the operator nowhere.
#[test]
fn a_database_that_lost_the_log_tree_under_a_mark_is_lost_history_for_every_command() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let expected = write_finished_log(&dir, 0);
    {
        let db = sled::open(dir.join("sled")).unwrap();
        assert!(db.drop_tree(regmig::log::keys::TREE_NAME).unwrap());
        db.flush().unwrap();
    }
    wait_for_sled_to_let_go(&dir);
    let dir_text = dir.to_str().unwrap();
    for args in [
        vec!["log", "verify", "--data-dir", dir_text],
        vec!["list", "--data-dir", dir_text],
        vec!["audit", "--data-dir", dir_text],
    ] {
        let output = regmig(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("has lost acknowledged history")
                && stderr.contains(&format!(
                    "no longer holds the `regmig.log` tree, but the mark vouches for global seqs up to {}",
                    expected.len()
                )),
            "{args:?}: {stderr}"
        );
    }
    let writer = EventLog::open_existing(&dir, LogOptions::default());
    assert!(
        matches!(writer, Err(LogError::LostHistory(_))),
        "{:?}",
        writer.err()
    );
}

/// A `sled/db` cut to nothing: every reader exits 1 naming the damage or the loss.
#[test]
fn a_database_cut_to_nothing_is_named_by_every_reader() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    write_finished_log(&dir, 0);
    std::fs::File::options()
        .write(true)
        .open(dir.join("sled/db"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let dir_text = dir.to_str().unwrap();
    for args in [
        vec!["log", "verify", "--data-dir", dir_text],
        vec!["list", "--data-dir", dir_text],
    ] {
        let output = regmig(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("another program")
                && (stderr.contains("has lost acknowledged history")
                    || stderr.contains("sled/db` is damaged")),
            "{args:?}: {stderr}"
        );
    }
}

/// sled's threads let go of the directory a moment after its handle is dropped.
fn wait_for_sled_to_let_go(dir: &Path) {
    for _ in 0..5000 {
        let file = std::fs::File::open(dir.join("sled/db")).unwrap();
        if fs2::FileExt::try_lock_exclusive(&file).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("sled still holds {}", dir.display());
}

/// sled's snapshots in `dir/sled`, sorted.
fn sled_snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(dir.join("sled"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with("snap.") && !name.ends_with(".generating")
        })
        .collect();
    snapshots.sort();
    snapshots
}

/// Damage sled finds itself at open (a snapshot or its settings file fails its checks):
/// `log verify`, `log compact` and `log archive` exit 1 naming the file and pointing to
/// salvage; `log salvage` reads the log without that file, finds it still ends where its
/// mark says, and writes a log that verifies.
#[test]
fn a_file_sled_refuses_is_named_by_every_log_command_and_salvage_reads_past_it() {
    let fixture = fixture();
    let snapshots = sled_snapshots(&fixture.finished);
    assert!(!snapshots.is_empty(), "sled wrote no snapshot to damage");
    let case = tempfile::tempdir().unwrap();
    for (index, damaged) in ["snapshot", "conf"].into_iter().enumerate() {
        let dir = case.path().join(format!("data-{index}"));
        copy_dir(&fixture.finished, &dir);
        let files = if damaged == "snapshot" {
            let files = sled_snapshots(&dir);
            for file in &files {
                std::fs::write(file, b"not a snapshot").unwrap();
            }
            files
        } else {
            let conf = dir.join("sled/conf");
            let mut bytes = std::fs::read(&conf).unwrap();
            bytes[5] ^= 0x20;
            std::fs::write(&conf, bytes).unwrap();
            vec![conf]
        };
        let named = format!(
            "the sled database in {} is damaged: its {} `{}`",
            dir.display(),
            if damaged == "snapshot" {
                "snapshot"
            } else {
                "settings file"
            },
            files[0].display()
        );
        let advice = format!(
            "`regmig log salvage --data-dir {} --to NEW` reads it without those files",
            dir.display()
        );
        let (dir_text, out) = (
            dir.to_str().unwrap(),
            case.path().join(format!("out-{index}")),
        );
        let out_text = out.to_str().unwrap();
        for args in [
            vec!["log", "verify", "--data-dir", dir_text],
            vec!["log", "compact", "--data-dir", dir_text, "--to", out_text],
            vec![
                "log",
                "archive",
                "--data-dir",
                dir_text,
                "--before",
                "2100-01-01",
                "--to",
                out_text,
            ],
        ] {
            let output = regmig(&args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&named) && stderr.contains(&advice),
                "{args:?}: {stderr}"
            );
            assert!(!out.exists(), "{args:?} wrote {}", out.display());
        }
        let output = regmig(&["log", "salvage", "--data-dir", dir_text, "--to", out_text]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{damaged}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(
                "it still ends where its mark says: no acknowledged event is missing from its end"
            ) && stdout.contains("ok: the new log holds 36 events"),
            "{damaged}: {stdout}"
        );
        let verified = regmig(&["log", "verify", "--data-dir", out_text]);
        assert_eq!(verified.status.code(), Some(0), "{damaged}");
    }
}

/// A damage done to a copy of a data directory, by path.
type DamageFn = Box<dyn Fn(&Path)>;

/// Damaged or cut files under every log command: an exit of 0 or 1, never a panic, and a
/// failure names the data directory (its output says what is wrong with it).
#[test]
fn no_log_command_panics_on_a_cut_or_damaged_directory() {
    let fixture = fixture();
    let len = db_len(&fixture);
    let snapshot = sled_snapshots(&fixture.finished)[0].clone();
    let snapshot_name = snapshot.file_name().unwrap().to_owned();
    let case = tempfile::tempdir().unwrap();
    let damages: Vec<(String, DamageFn)> = vec![
        (
            "db cut to 0".into(),
            Box::new(|dir: &Path| cut(&dir.join("sled/db"), 0)),
        ),
        (
            "db cut to 100".into(),
            Box::new(|dir: &Path| cut(&dir.join("sled/db"), 100)),
        ),
        (
            "db cut to 4096".into(),
            Box::new(|dir: &Path| cut(&dir.join("sled/db"), 4096)),
        ),
        (
            "db cut in half".into(),
            Box::new(move |dir: &Path| cut(&dir.join("sled/db"), len / 2)),
        ),
        (
            "conf flipped".into(),
            Box::new(|dir: &Path| {
                let conf = dir.join("sled/conf");
                let bytes: Vec<u8> = std::fs::read(&conf)
                    .unwrap()
                    .iter()
                    .map(|b| b ^ 0xa5)
                    .collect();
                std::fs::write(conf, bytes).unwrap();
            }),
        ),
        (
            "empty snapshot".into(),
            Box::new(move |dir: &Path| cut(&dir.join("sled").join(&snapshot_name), 0)),
        ),
        (
            "empty unfinished snapshot".into(),
            Box::new(|dir: &Path| {
                std::fs::write(dir.join("sled/snap.00000000000000A0.generating"), b"").unwrap()
            }),
        ),
        (
            "blobs missing".into(),
            Box::new(|dir: &Path| std::fs::remove_dir_all(dir.join("sled/blobs")).unwrap()),
        ),
    ];
    for (index, (name, damage)) in damages.iter().enumerate() {
        for (command, extra) in [
            ("verify", vec![]),
            ("salvage", vec!["--to"]),
            ("compact", vec!["--to"]),
            ("archive", vec!["--before", "2100-01-01", "--to"]),
        ] {
            let dir = case.path().join(format!("data-{index}-{command}"));
            let out = case.path().join(format!("out-{index}-{command}"));
            copy_dir(&fixture.finished, &dir);
            damage(&dir);
            let mut args = vec!["log", command, "--data-dir", dir.to_str().unwrap()];
            args.extend(extra.iter().copied());
            if !extra.is_empty() {
                args.push(out.to_str().unwrap());
            }
            let output = regmig(&args);
            // `log verify` lists the problems it finds on stdout.
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            let code = output.status.code();
            assert!(
                code == Some(0) || code == Some(1),
                "{name}: {args:?} exited {code:?}: {text}"
            );
            // A panic of sled's, caught, is named ("sled panicked: …"); this process's own
            // would print "panicked at".
            assert!(!text.contains("panicked at"), "{name}: {args:?}: {text}");
            if code == Some(1) {
                assert!(
                    text.contains(&dir.display().to_string()),
                    "{name}: {args:?}: {text}"
                );
            }
        }
    }
}

/// Cuts `path` to `len_bytes`.
fn cut(path: &Path, len_bytes: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len_bytes)
        .unwrap();
}
