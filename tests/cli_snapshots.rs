//! The table and JSON outputs of list, show, events, audit, replay and timeline on the
//! committed fixture log, compared exactly with `tests/fixtures/cli_v1/expected/`.
//! `REGMIG_UPDATE_SNAPSHOTS=1` rewrites them.

mod cli_support;

use cli_support::{
    assert_snapshot, copy_dir, fixture_copy, fixture_data_dir, fixture_dir, regmig, regmig_in,
    sim_run_into, ABORTED_ID, ALL_IDS, COMPLETED_ID, FAILED_ID, RESUMED_ID,
};

/// Runs each command on one copy of the fixture and compares its stdout with its snapshot.
fn check_snapshots(cases: &[(&str, &[&str])]) {
    let copy = fixture_copy();
    for (name, args) in cases {
        let run = regmig_in(&copy.data_dir(), args).expect_code(0);
        assert!(
            run.stderr.is_empty(),
            "{name}: unexpected stderr: {}",
            run.stderr
        );
        // stdout is a pipe here: no colours, no progress output.
        assert!(
            !run.stdout.contains('\u{1b}'),
            "{name}: escape codes in {}",
            run.stdout
        );
        assert_snapshot(name, &run.stdout);
    }
}

#[test]
fn list_tables_and_json_match_their_snapshots() {
    check_snapshots(&[
        ("list.txt", &["list"]),
        ("list.json", &["list", "--json"]),
        (
            "list_table_1024_completed.txt",
            &["list", "--table", "1024", "--outcome", "completed"],
        ),
        (
            "list_region_1024_1.json",
            &["list", "--region", "1024:1", "--json"],
        ),
        ("list_peer_4.txt", &["list", "--peer", "4"]),
        ("list_state_abort.txt", &["list", "--state", "Abort"]),
        ("list_state_open.txt", &["list", "--state", "open"]),
        (
            "list_since_until.txt",
            &[
                "list",
                "--since",
                "2026-01-01T00:00:01Z",
                "--until",
                "1767225630000",
            ],
        ),
    ]);
}

#[test]
fn show_of_each_outcome_matches_its_snapshot() {
    check_snapshots(&[
        ("show_completed.txt", &["show", COMPLETED_ID]),
        ("show_completed.json", &["show", COMPLETED_ID, "--json"]),
        ("show_aborted.txt", &["show", ABORTED_ID]),
        ("show_failed.txt", &["show", FAILED_ID]),
        ("show_resumed.txt", &["show", RESUMED_ID]),
        ("show_resumed.json", &["show", RESUMED_ID, "--json"]),
    ]);
}

#[test]
fn events_table_and_json_match_their_snapshots() {
    check_snapshots(&[
        ("events_aborted.txt", &["events", ABORTED_ID]),
        ("events_aborted_full.txt", &["events", ABORTED_ID, "--full"]),
        (
            "events_aborted_kinds.txt",
            &[
                "events",
                ABORTED_ID,
                "--kind",
                "statEentered",
                "--kind",
                "RetryScheduled",
            ],
        ),
        ("events_aborted.json", &["events", ABORTED_ID, "--json"]),
    ]);
}

#[test]
fn audit_formats_and_filters_match_their_snapshots() {
    check_snapshots(&[
        ("audit.txt", &["audit"]),
        ("audit.json", &["audit", "--format", "json"]),
        ("audit.csv", &["audit", "--format", "csv"]),
        ("audit_region_1024_1.txt", &["audit", "--region", "1024:1"]),
        (
            "audit_peer_2.csv",
            &["audit", "--peer", "2", "--format", "csv"],
        ),
        ("audit_table_7.json", &["audit", "--table", "7", "--json"]),
        (
            "audit_failed_since.txt",
            &["audit", "--outcome", "failed", "--since", "2026-01-01"],
        ),
    ]);
}

#[test]
fn replay_steps_and_checks_match_their_snapshots() {
    check_snapshots(&[
        ("replay_completed.txt", &["replay", COMPLETED_ID]),
        ("replay_resumed.json", &["replay", RESUMED_ID, "--json"]),
        (
            "replay_until_12.txt",
            &["replay", ABORTED_ID, "--until", "12"],
        ),
        (
            "replay_check_completed.txt",
            &["replay", COMPLETED_ID, "--check"],
        ),
        (
            "replay_check_resumed.json",
            &["replay", RESUMED_ID, "--check", "--json"],
        ),
    ]);
}

#[test]
fn timelines_match_their_snapshots() {
    let copy = fixture_copy();
    for (name, args) in [
        ("timeline_resumed.svg", vec!["timeline", RESUMED_ID]),
        ("timeline_aborted.svg", vec!["timeline", ABORTED_ID]),
        ("timeline_failed.svg", vec!["timeline", FAILED_ID]),
        (
            "timeline_region_1024_1.svg",
            vec!["timeline", "--region", "1024:1"],
        ),
    ] {
        let output = copy.path(name);
        let mut args = args;
        args.extend(["-o", output.to_str().expect("a UTF-8 path")]);
        let run = regmig_in(&copy.data_dir(), &args).expect_code(0);
        assert!(
            run.stdout.starts_with("wrote the timeline of "),
            "{}",
            run.stdout
        );
        let svg = std::fs::read_to_string(&output).expect("the SVG was written");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_texts_fit_the_canvas(name, &svg);
        assert_snapshot(name, &svg);
    }
}

/// Every `<text>` of an SVG, at a generous width per character (7.6 px bold, 6.8 regular,
/// at font-size 11, scaled by its font-size), starts and ends inside the canvas width.
fn assert_texts_fit_the_canvas(name: &str, svg: &str) {
    let attribute = |tag: &str, key: &str| -> Option<String> {
        let start = tag.find(&format!(" {key}=\""))? + key.len() + 3;
        let end = start + tag[start..].find('"')?;
        Some(tag[start..end].to_string())
    };
    let canvas_width: f64 = attribute(svg.split('>').next().expect("an svg tag"), "width")
        .expect("a canvas width")
        .parse()
        .expect("a number");
    let mut rest = svg;
    let mut checked = 0;
    while let Some(start) = rest.find("<text ") {
        let tag_end = start + rest[start..].find('>').expect("a closed tag");
        let tag = &rest[start..tag_end];
        let text_end = tag_end + rest[tag_end..].find("</text>").expect("a closed text");
        let text = &rest[tag_end + 1..text_end];
        let chars = text
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .chars()
            .count() as f64;
        let font_size: f64 =
            attribute(tag, "font-size").map_or(11.0, |size| size.parse().expect("a size"));
        let per_char = if tag.contains("font-weight=\"bold\"") {
            7.6
        } else {
            6.8
        };
        let width = chars * per_char * font_size / 11.0;
        let x: f64 = attribute(tag, "x")
            .expect("an x")
            .parse()
            .expect("a number");
        let left = match attribute(tag, "text-anchor").as_deref() {
            Some("end") => x - width,
            Some("middle") => x - width / 2.0,
            _ => x,
        };
        assert!(
            left >= 0.0 && left + width <= canvas_width,
            "{name}: {text:?} spans {left:.1}..{:.1}, outside the canvas 0..{canvas_width}",
            left + width
        );
        checked += 1;
        rest = &rest[text_end..];
    }
    assert!(checked > 0, "{name}: no text");
}

#[test]
fn every_fixture_migration_is_listed_once() {
    let copy = fixture_copy();
    let run = regmig_in(&copy.data_dir(), &["list", "--json"]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    let ids: Vec<&str> = document["migrations"]
        .as_array()
        .expect("a migrations array")
        .iter()
        .map(|summary| summary["procedure_id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids, ALL_IDS);
    assert_eq!(document["count"], 4);
}

/// Rewrites the committed fixture log from its scenario file. Run it only when the log
/// format or the engine's events change on purpose, then update the ids in
/// `cli_support` and the snapshots (`REGMIG_UPDATE_SNAPSHOTS=1`).
#[test]
#[ignore = "rewrites tests/fixtures/cli_v1/data"]
fn regenerate_the_fixture_log() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let data_dir = temp.path().join("data");
    let scenario = fixture_dir().join("scenario.toml");
    let run = sim_run_into(&scenario, &data_dir).expect_code(0);
    println!("{}", run.stdout);
    let target = fixture_data_dir();
    let _ = std::fs::remove_dir_all(&target);
    // The lock file is created by whoever opens the copy; only the database is committed.
    copy_dir(&data_dir.join("sled"), &target.join("sled"));
    let listed = regmig(&[
        "list",
        "--data-dir",
        data_dir.to_str().expect("a UTF-8 path"),
    ]);
    println!("{}", listed.stdout);
}

#[test]
fn log_verify_of_the_v1_fixture_says_it_has_no_chain_and_no_mark_yet() {
    let copy = fixture_copy();
    let run = regmig_in(&copy.data_dir(), &["log", "verify"]).expect_code(0);
    assert!(
        run.stdout.contains(
            "chain:           none: format version 1 records only (written before the chain existed)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(
            "ok: every record and index entry checks out; the log has no mark yet (an older \
             regmig wrote it; the next writer adds one), so records lost from its end could \
             not be detected\n"
        ),
        "{}",
        run.stdout
    );
}
