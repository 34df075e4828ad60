//! Bad input: every error names the thing at fault, bad usage exits 2, a failure exits 1,
//! and nothing hangs or panics.

mod cli_support;

use std::path::Path;
use std::time::Duration;

use cli_support::{fixture_copy, regmig, regmig_in, COMPLETED_ID};
use regmig::log::{EventLog, LogOptions};

/// An id no migration of the fixture has.
const UNKNOWN_ID: &str = "019b76da-a800-7000-8000-000000000000";

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
}

#[test]
fn an_unknown_id_is_named_exactly() {
    let copy = fixture_copy();
    let svg = copy.path("t.svg");
    let bundle = copy.path("b.bundle");
    for args in [
        vec!["show", UNKNOWN_ID],
        vec!["events", UNKNOWN_ID],
        vec!["replay", UNKNOWN_ID],
        vec!["replay", UNKNOWN_ID, "--check"],
        vec!["export", UNKNOWN_ID, "-o", path_str(&bundle)],
        vec!["timeline", UNKNOWN_ID, "-o", path_str(&svg)],
    ] {
        let run = regmig_in(&copy.data_dir(), &args).expect_code(1);
        assert_eq!(
            run.stderr,
            format!("error: no migration with id {UNKNOWN_ID}\n"),
            "{args:?}"
        );
        assert_eq!(run.stdout, "", "{args:?}");
    }
    assert!(!bundle.exists(), "no bundle is written for an unknown id");
}

#[test]
fn json_errors_are_one_document_too() {
    let copy = fixture_copy();
    let run = regmig_in(&copy.data_dir(), &["show", UNKNOWN_ID, "--json"]).expect_code(1);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("one document");
    assert_eq!(document["ok"], false);
    assert_eq!(document["error"]["kind"], "unknown_migration");
    assert_eq!(
        document["error"]["message"],
        format!("no migration with id {UNKNOWN_ID}")
    );
}

#[test]
fn a_bad_id_is_bad_usage_and_named() {
    let copy = fixture_copy();
    for args in [
        vec!["show", "not-an-id"],
        vec!["events", "not-an-id"],
        vec!["replay", "not-an-id"],
    ] {
        let run = regmig_in(&copy.data_dir(), &args).expect_code(2);
        assert!(
            run.stderr
                .starts_with("error: invalid migration id \"not-an-id\": expected a uuid"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn bad_region_syntax_is_bad_usage_and_named() {
    let copy = fixture_copy();
    let svg = copy.path("t.svg");
    for args in [
        vec!["list", "--region", "1024-1"],
        vec!["audit", "--region", "1024-1"],
        vec!["timeline", "--region", "1024-1", "-o", path_str(&svg)],
    ] {
        let run = regmig_in(&copy.data_dir(), &args).expect_code(2);
        assert!(
            run.stderr.contains("invalid region \"1024-1\""),
            "{args:?}: {}",
            run.stderr
        );
        assert_no_panic(&run.stderr);
    }
}

#[test]
fn bad_times_states_and_formats_are_bad_usage() {
    let copy = fixture_copy();
    for (args, named) in [
        (
            vec!["list", "--since", "yesterday"],
            "invalid time \"yesterday\"",
        ),
        (
            vec!["audit", "--until", "2026-02-30"],
            "invalid time \"2026-02-30\"",
        ),
        (
            vec!["list", "--state", "sleeping"],
            "unknown state \"sleeping\"",
        ),
        (vec!["audit", "--format", "xml"], "xml"),
        (vec!["list", "--outcome", "lost"], "lost"),
        (vec!["replay", COMPLETED_ID, "--until", "0"], "--until 0"),
        (vec!["replay"], "required"),
    ] {
        let run = regmig_in(&copy.data_dir(), &args).expect_code(2);
        assert!(run.stderr.contains(named), "{args:?}: {}", run.stderr);
    }
    let run = regmig(&["replay", COMPLETED_ID, "--file", "x.bundle"]).expect_code(2);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}

#[test]
fn a_missing_data_dir_says_it_does_not_exist() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let missing = temp.path().join("nowhere");
    let svg = temp.path().join("t.svg");
    let bundle = temp.path().join("b.bundle");
    for args in [
        vec!["list"],
        vec!["show", COMPLETED_ID],
        vec!["events", COMPLETED_ID],
        vec!["audit"],
        vec!["replay", COMPLETED_ID],
        vec!["export", COMPLETED_ID, "-o", path_str(&bundle)],
        vec!["timeline", COMPLETED_ID, "-o", path_str(&svg)],
    ] {
        let run = regmig_in(&missing, &args).expect_code(1);
        assert_eq!(
            run.stderr,
            format!(
                "error: data directory {} does not exist\n",
                missing.display()
            ),
            "{args:?}"
        );
    }
    assert!(
        !missing.exists(),
        "a read must not create the data directory"
    );
}

#[test]
fn a_directory_without_a_log_says_so_and_stays_empty() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let run = regmig_in(temp.path(), &["list"]).expect_code(1);
    assert!(
        run.stderr.contains("holds no regmig event log"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_dir(temp.path()).expect("read").count(),
        0,
        "a read must not create a log"
    );
}

#[test]
fn a_data_dir_held_by_a_running_engine_is_in_use_at_once() {
    let copy = fixture_copy();
    let _held = EventLog::open(&copy.data_dir(), LogOptions::default()).expect("hold the log");
    for args in [vec!["list"], vec!["show", COMPLETED_ID], vec!["audit"]] {
        let run = regmig_in(&copy.data_dir(), &args).expect_code(1);
        assert!(
            run.stderr.starts_with(&format!(
                "error: data directory {} is in use by another process",
                copy.data_dir().display()
            )),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.elapsed < Duration::from_secs(10),
            "{args:?} took {:?}: it must not wait for the lock",
            run.elapsed
        );
    }
}

#[test]
fn a_corrupt_bundle_is_a_clear_error() {
    let copy = fixture_copy();
    let good = copy.path("good.bundle");
    regmig_in(
        &copy.data_dir(),
        &["export", COMPLETED_ID, "-o", path_str(&good)],
    )
    .expect_code(0);
    let bytes = std::fs::read(&good).expect("read the bundle");

    // A flipped bit in the last record: the record's checksum names it.
    let flipped = copy.path("flipped.bundle");
    let mut damaged = bytes.clone();
    let last = damaged.len() - 10;
    damaged[last] ^= 0x40;
    std::fs::write(&flipped, &damaged).expect("write");
    let run = regmig(&["replay", "--file", path_str(&flipped)]).expect_code(1);
    assert!(
        run.stderr.starts_with(&format!(
            "error: bundle {}: event 42: bad checksum in event 42 of procedure {COMPLETED_ID}",
            flipped.display()
        )),
        "{}",
        run.stderr
    );

    // Cut short.
    let cut = copy.path("cut.bundle");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let run = regmig(&["replay", "--file", path_str(&cut), "--check"]).expect_code(1);
    assert!(
        run.stderr.starts_with(&format!(
            "error: bundle {}: truncated in event ",
            cut.display()
        )),
        "{}",
        run.stderr
    );

    // Not a bundle at all.
    let text = copy.path("notes.txt");
    std::fs::write(&text, "this is not a bundle\n").expect("write");
    let run = regmig(&["replay", "--file", path_str(&text)]).expect_code(1);
    assert_eq!(
        run.stderr,
        format!(
            "error: {} is not a regmig bundle (it does not start with \"RGMGBNDL\")\n",
            text.display()
        )
    );

    // A damaged header.
    let header = copy.path("header.bundle");
    let mut damaged = bytes.clone();
    damaged[20] ^= 0x01;
    std::fs::write(&header, &damaged).expect("write");
    let run = regmig(&["replay", "--file", path_str(&header)]).expect_code(1);
    assert!(run.stderr.contains("bad header checksum"), "{}", run.stderr);

    // Missing.
    let missing = copy.path("missing.bundle");
    let run = regmig(&["replay", "--file", path_str(&missing)]).expect_code(1);
    assert!(
        run.stderr.starts_with(&format!(
            "error: bundle {}: could not read",
            missing.display()
        )),
        "{}",
        run.stderr
    );
    assert_no_panic(&run.stderr);
}

#[test]
fn a_region_without_migrations_draws_nothing_and_says_so() {
    let copy = fixture_copy();
    let svg = copy.path("t.svg");
    let run = regmig_in(
        &copy.data_dir(),
        &["timeline", "--region", "1024:9", "-o", path_str(&svg)],
    )
    .expect_code(1);
    assert!(
        run.stderr
            .starts_with("error: no migration of region 1024:9 in "),
        "{}",
        run.stderr
    );
    assert!(!svg.exists());
}

#[test]
fn an_event_of_an_unknown_kind_is_shown_raw_and_named_elsewhere() {
    // A log written by a later version: event 2 has a kind this build does not know.
    let copy = fixture_copy();
    let procedure_id = uuid::Uuid::parse_str(COMPLETED_ID).expect("a uuid");
    let submitted = {
        let log = EventLog::open_existing(&copy.data_dir(), LogOptions::default()).expect("open");
        log.procedure_events(procedure_id, 1)
            .expect("read")
            .remove(0)
    };
    let newer = copy.path("newer-data");
    {
        let log = EventLog::open(&newer, LogOptions::default()).expect("open a new log");
        let events = [
            (submitted.kind, submitted.payload.clone()),
            (999, vec![0xc0]),
        ]
        .into_iter()
        .map(|(kind, payload)| regmig::log::NewEvent {
            kind,
            recorded_at_ms: submitted.recorded_at_ms,
            payload,
        })
        .collect();
        log.append_blocking(regmig::log::AppendRequest {
            procedure_id,
            expected_next_seq: 1,
            events,
            opens: None,
            closes: false,
        })
        .expect("no fault")
        .expect("no conflict");
    }
    let run = regmig_in(&newer, &["events", COMPLETED_ID]).expect_code(0);
    assert!(
        run.stdout
            .contains("2    +0ms    Unknown    <undecodable: procedure "),
        "{}",
        run.stdout
    );
    for args in [
        vec!["show", COMPLETED_ID],
        vec!["replay", COMPLETED_ID],
        vec!["list"],
    ] {
        let run = regmig_in(&newer, &args).expect_code(1);
        assert!(
            run.stderr.starts_with(&format!(
                "error: procedure {COMPLETED_ID}, event 2: cannot decode event of kind 999 (unknown to this version): "
            )),
            "{args:?}: {}",
            run.stderr
        );
        assert_no_panic(&run.stderr);
    }
}
