//! The operator's answers (issue #18): `show` opens with a verdict (is the region writable,
//! what next) and a `why` line naming the limit that ended it; `regmig region R` shows a
//! region's latest route and recent migrations; ids accept a unique prefix. On the
//! committed fixture log, on a rollback stuck behind a metadata outage and on a cancelled
//! migration (both written here by `regmig sim run`). Snapshots in
//! `tests/fixtures/cli_v1/expected/`; `REGMIG_UPDATE_SNAPSHOTS=1` rewrites them.

mod cli_support;

use std::path::{Path, PathBuf};

use cli_support::{
    assert_snapshot, fixture_copy, regmig, regmig_in, ABORTED_ID, COMPLETED_ID, FAILED_ID,
    RESUMED_ID,
};

/// The scenario of a rollback that never ends (the region stays Downgrading).
fn stuck_rollback_scenario() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/operator/stuck_rollback.toml"
    ))
}

/// A cancel by alice before the new route is written.
fn cancel_scenario() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scenarios/cancel_before_the_new_route_aborts.toml"
    ))
}

/// Runs a scenario into `data_dir` with `regmig sim run` (its exit code is not checked:
/// the stuck rollback's scenario fails by design, it never finishes).
fn simulate(scenario: &Path, data_dir: &Path) {
    let run = regmig(&[
        "sim",
        "run",
        scenario.to_str().expect("a UTF-8 path"),
        "--data-dir",
        data_dir.to_str().expect("a UTF-8 path"),
    ]);
    assert!(
        run.code == 0 || run.code == 1,
        "sim run {}: exit {}\n{}",
        scenario.display(),
        run.code,
        run.stderr
    );
}

/// The one migration id of a simulated log, from `list --json`.
fn only_id(data_dir: &Path) -> String {
    let run = regmig_in(data_dir, &["list", "--json"]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(document["count"], 1, "{}", run.stdout);
    document["migrations"][0]["procedure_id"]
        .as_str()
        .expect("an id")
        .to_string()
}

#[test]
fn show_opens_with_the_verdict_and_next_step_of_each_outcome() {
    let copy = fixture_copy();
    let first_lines = |id: &str| -> Vec<String> {
        let run = regmig_in(&copy.data_dir(), &["show", id]).expect_code(0);
        run.stdout.lines().take(2).map(str::to_string).collect()
    };
    assert_eq!(
        first_lines(COMPLETED_ID),
        [
            "region 1024:1: writable, leader 2 (moved from peer 1)",
            "next: nothing to do"
        ]
    );
    assert_eq!(
        first_lines(ABORTED_ID),
        [
            "region 7:3: writable, leader 1 (migration aborted, rolled back)".to_string(),
            format!("next: nothing is broken; to move it, fix the cause (the `why` line of `regmig show {ABORTED_ID}`) and submit again"),
        ]
    );
    assert_eq!(
        first_lines(FAILED_ID)[0],
        "region 1024:2: writable, leader 1 (migration failed, rolled back)"
    );
    assert_eq!(
        first_lines(RESUMED_ID)[0],
        "region 1024:1: writable, leader 3 (moved from peer 2)"
    );
    let json = regmig_in(&copy.data_dir(), &["show", FAILED_ID, "--json"]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(document["verdict"]["writable"], true);
    assert_eq!(document["policy"]["in_state_attempts_max"], 3);
    assert_eq!(document["rollback"]["retryable"], false);
}

#[test]
fn why_names_the_instruction_the_attempts_and_whether_time_would_help() {
    let copy = fixture_copy();
    let why = |id: &str| -> String {
        let run = regmig_in(&copy.data_dir(), &["show", id]).expect_code(0);
        run.stdout
            .lines()
            .find_map(|line| line.strip_prefix("why:"))
            .map(|rest| rest.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        why(ABORTED_ID),
        "upgrade_region to peer 2: 3 of 3 attempts, answered not_ready, not_ready, not_ready (its attempts ran out); framework retries 1 of 3 used; budget 0ms used of 5.000s; a longer timeout would not have changed it"
    );
    assert_eq!(
        why(FAILED_ID),
        "open_region to peer 4: 1 attempt, answered unreachable; framework retries 0 of 3 used (its failure, unreachable, is not retryable); budget 0ms used of 10.000s; a longer timeout would not have changed it"
    );
    assert_eq!(why(COMPLETED_ID), "", "a completed migration has no why");
}

#[test]
fn region_shows_its_latest_route_and_recent_migrations() {
    let copy = fixture_copy();
    for (name, args) in [
        ("region_1024_1.txt", vec!["region", "1024:1"]),
        ("region_7_3.json", vec!["region", "7:3", "--json"]),
        (
            "region_1024_1_recent_1.txt",
            vec!["region", "4398046511105", "--recent", "1"],
        ),
    ] {
        let run = regmig_in(&copy.data_dir(), &args).expect_code(0);
        assert!(run.stderr.is_empty(), "{name}: {}", run.stderr);
        assert_snapshot(name, &run.stdout);
    }
    let none = regmig_in(&copy.data_dir(), &["region", "9:9"]).expect_code(1);
    assert!(
        none.stderr
            .starts_with("error: no migration of region 9:9 in "),
        "{}",
        none.stderr
    );
    regmig_in(&copy.data_dir(), &["region", "nine"]).expect_code(2);
}

#[test]
fn ids_accept_a_unique_prefix_and_refuse_ambiguous_ones_and_regions() {
    let copy = fixture_copy();
    let full = regmig_in(&copy.data_dir(), &["show", FAILED_ID]).expect_code(0);
    for prefix in [
        "019b76da-afd0",
        "019B76DAAFD0",
        "019b76da-afd0-7d40-8795-7350",
    ] {
        let short = regmig_in(&copy.data_dir(), &["show", prefix]).expect_code(0);
        assert_eq!(short.stdout, full.stdout, "prefix {prefix}");
    }
    let ambiguous = regmig_in(&copy.data_dir(), &["show", "019b76da-a800"]).expect_code(2);
    assert_eq!(
        ambiguous.stderr,
        format!("error: migration id prefix \"019b76da-a800\" is ambiguous: it starts {COMPLETED_ID}, {ABORTED_ID}; give more of the id\n")
    );
    let region = regmig_in(&copy.data_dir(), &["show", "1024:2"]).expect_code(2);
    assert_eq!(
        region.stderr,
        "error: \"1024:2\" is a region, not a migration id: `regmig region 1024:2` shows its route and migrations\n"
    );
    let none = regmig_in(&copy.data_dir(), &["show", "ffff"]).expect_code(1);
    assert_eq!(
        none.stderr,
        "error: no migration id starts with \"ffff\" (see `regmig list`)\n"
    );
    let json = regmig_in(&copy.data_dir(), &["show", "019b", "--json"]).expect_code(2);
    let document: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(document["error"]["kind"], "ambiguous_id");
}

#[test]
fn a_stuck_rollback_is_reported_not_writable_with_its_attempts() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let data_dir = temp.path().join("data");
    simulate(&stuck_rollback_scenario(), &data_dir);
    let id = only_id(&data_dir);
    let show = regmig_in(&data_dir, &["show", &id]).expect_code(0);
    assert!(
        show.stdout.starts_with(
            "region 1024:1: NOT WRITABLE — leader 1 still Downgrading (rollback retrying, 125 attempts, last error: metadata store error: "
        ),
        "{}",
        show.stdout
    );
    assert_snapshot("show_stuck_rollback.txt", &show.stdout);
    let region = regmig_in(&data_dir, &["region", "1024:1"]).expect_code(0);
    assert_snapshot("region_stuck_rollback.txt", &region.stdout);
    let json = regmig_in(&data_dir, &["region", "1024:1", "--json"]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(document["verdict"]["writable"], false);
    assert_eq!(document["route"]["leader_state"], "downgrading");
}

#[test]
fn a_cancelled_migration_says_who_cancelled_and_that_no_limit_ran_out() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let data_dir = temp.path().join("data");
    simulate(&cancel_scenario(), &data_dir);
    let id = only_id(&data_dir);
    let show = regmig_in(&data_dir, &["show", &id]).expect_code(0);
    assert_snapshot("show_cancelled.txt", &show.stdout);
    assert!(
        show.stdout.contains(
            "\nwhy:             cancelled by alice: maintenance window closed; no limit ran out, a longer timeout would not have changed it\n"
        ),
        "{}",
        show.stdout
    );
}

#[test]
fn replay_with_a_longer_timeout_diverges_where_the_budget_ran_out() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let data_dir = temp.path().join("data");
    let scenario = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scenarios/upgrade_timeout_uses_the_budget_aborts.toml"
    ));
    simulate(&scenario, &data_dir);
    let id = only_id(&data_dir);
    let run = regmig_in(&data_dir, &["replay", &id, "--with", "timeout=60s"]).expect_code(0);
    assert_eq!(
        run.stdout,
        format!(
            "migration {id} replayed with timeout=1m 00.000s\n\
             recorded outcome: aborted\n\
             diverges at:      event 19 (+10.000s)\n\
             the log has:      upgrade_region to peer 2 timed out\n\
             changed policy:   would still have waited for upgrade_region to peer 2 until +1m 00.000s; no recorded answer from here on (the log knows only that none came by +10.000s)\n\
             agreed before:    6 decisions\n"
        )
    );
    let json = regmig_in(
        &data_dir,
        &["replay", &id, "--with", "timeout=60s", "--json"],
    )
    .expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(document["diverges"], true);
    assert_eq!(document["diverges_at_seq"], 19);
    // The same budget changes nothing.
    let same = regmig_in(&data_dir, &["replay", &id, "--with", "timeout=10s"]).expect_code(0);
    assert!(
        same.stdout
            .ends_with("this change would not have changed it\n"),
        "{}",
        same.stdout
    );
}

#[test]
fn replay_with_a_longer_timeout_does_not_change_an_abort_on_not_ready_but_more_attempts_do() {
    let copy = fixture_copy();
    let longer = regmig_in(
        &copy.data_dir(),
        &["replay", ABORTED_ID, "--with", "timeout=60s"],
    )
    .expect_code(0);
    assert_eq!(
        longer.stdout,
        format!(
            "migration {ABORTED_ID} replayed with timeout=1m 00.000s\n\
             recorded outcome: aborted\n\
             same outcome (aborted): with timeout=1m 00.000s today's logic behaves as recorded at all 15 decisions; this change would not have changed it\n"
        )
    );
    let attempts = regmig_in(
        &copy.data_dir(),
        &["replay", "019b76da-a800-763f", "--with", "attempts=4"],
    )
    .expect_code(0);
    assert_snapshot("replay_with_attempts_4.txt", &attempts.stdout);
    assert!(attempts.stdout.contains(
        "changed policy:   wait (attempt_interval) until +2.050s, then would have sent a 4th upgrade_region to peer 2 at +2.050s; no recorded answer from here on\n"
    ));
}

#[test]
fn replay_with_refuses_unknown_knobs_and_bad_values() {
    let copy = fixture_copy();
    for (args, message) in [
        (
            vec!["replay", ABORTED_ID, "--with", "speed=3"],
            "unknown knob \"speed\"",
        ),
        (
            vec!["replay", ABORTED_ID, "--with", "timeout=soon"],
            "\"soon\" is not a duration",
        ),
        (
            vec!["replay", ABORTED_ID, "--with", "attempts=0"],
            "at least 1 attempt",
        ),
        (
            vec!["replay", ABORTED_ID, "--with", "timeout=1s", "--check"],
            "cannot be used with",
        ),
    ] {
        let run = regmig_in(&copy.data_dir(), &args).expect_code(2);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn show_names_the_migration_that_held_the_lock_it_waited_for() {
    let copy = fixture_copy();
    let show = regmig_in(&copy.data_dir(), &["show", FAILED_ID]).expect_code(0);
    assert!(
        show.stdout.contains(&format!(
            "\nlock wait:       10.177s (for table/1024:exclusive, held by {COMPLETED_ID} (1024:1 1→2, OpenCandidateRegion))\n"
        )),
        "{}",
        show.stdout
    );
    let json = regmig_in(&copy.data_dir(), &["show", FAILED_ID, "--json"]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(
        document["lock_waits"][0]["held_by"][0],
        format!("{COMPLETED_ID} (1024:1 1→2, OpenCandidateRegion)")
    );
}

#[test]
fn a_queued_migration_is_queued_for_its_lock_measured_from_when_it_queued() {
    use regmig::domain::{Peer, RegionId, WalKind};
    use regmig::migration::{MigrationEvent, MigrationTask, RetryPolicy, TimedEvent};
    use regmig_tools::cli::inspect::render_list;
    use regmig_tools::cli::summary::summarize;
    const T0: u64 = 1_767_225_600_000;
    let events = vec![
        TimedEvent {
            at_ms: T0,
            event: MigrationEvent::Submitted {
                task: MigrationTask {
                    region_id: RegionId::new(1024, 3),
                    from_peer: Peer::sim(1),
                    to_peer: Peer::sim(2),
                    timeout_ms: 10_000,
                },
                catalog: "greptime".to_string(),
                schema: "public".to_string(),
                wal: WalKind::Local,
                policy: RetryPolicy::default(),
                actor: None,
                trigger: "operator".to_string(),
                reason: None,
            },
        },
        TimedEvent {
            at_ms: T0 + 105,
            event: MigrationEvent::LockWaitStarted {
                lock_key: "table/1024:exclusive".to_string(),
            },
        },
        TimedEvent {
            at_ms: T0 + 12_000,
            event: MigrationEvent::Resumed,
        },
    ];
    let summary =
        summarize(uuid::Uuid::nil(), &regmig::engine::History::from(events)).expect("summary");
    assert_eq!(summary.status, "queued");
    assert_eq!(summary.lock_wait_ms, 11_895);
    let queued = summary.waiting_for_lock.as_ref().expect("queued");
    assert_eq!(
        (queued.lock_key.as_str(), queued.since_ms),
        ("table/1024:exclusive", T0 + 105)
    );
    let table = render_list(&[&summary]);
    assert!(
        table.contains("  queued (lock table/1024:exclusive, 11.895s so far)  "),
        "{table}"
    );
}

#[test]
fn list_sorts_by_duration_and_filters_by_minimum_duration() {
    let copy = fixture_copy();
    let run = regmig_in(
        &copy.data_dir(),
        &["list", "--sort", "duration", "--min-duration", "10s"],
    )
    .expect_code(0);
    let ids: Vec<&str> = run
        .stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .filter(|cell| cell.len() == 36)
        .collect();
    assert_eq!(ids, [RESUMED_ID, COMPLETED_ID, FAILED_ID], "{}", run.stdout);
    assert_snapshot("list_sort_duration_min_10s.txt", &run.stdout);
    let none = regmig_in(&copy.data_dir(), &["list", "--min-duration", "1h"]).expect_code(0);
    assert_eq!(none.stdout, "no migrations match\n");
    regmig_in(&copy.data_dir(), &["list", "--min-duration", "soon"]).expect_code(2);
}

#[test]
fn events_replay_export_and_timeline_take_an_id_prefix_too() {
    let copy = fixture_copy();
    for command in ["events", "replay"] {
        let full = regmig_in(&copy.data_dir(), &[command, FAILED_ID]).expect_code(0);
        let short = regmig_in(&copy.data_dir(), &[command, "019b76da-afd0"]).expect_code(0);
        assert_eq!(short.stdout, full.stdout, "{command}");
        regmig_in(&copy.data_dir(), &[command, "019b76da-a800"]).expect_code(2);
    }
    let bundle = copy.path("failed.bundle");
    let bundle = bundle.to_str().expect("a UTF-8 path");
    regmig_in(&copy.data_dir(), &["export", "019b76da-afd0", "-o", bundle]).expect_code(0);
    let svg = copy.path("failed.svg");
    let svg = svg.to_str().expect("a UTF-8 path");
    regmig_in(&copy.data_dir(), &["timeline", "019b76da-afd0", "-o", svg]).expect_code(0);
    regmig_in(&copy.data_dir(), &["timeline", "1024:2", "-o", svg]).expect_code(2);
}

/// Appends `events` (at their times) as one procedure's history, opening it on its region.
fn append_history(
    log: &regmig::log::EventLog,
    procedure_id: uuid::Uuid,
    region: regmig::domain::RegionId,
    events: &[(u64, regmig::migration::MigrationEvent)],
) {
    let events = events
        .iter()
        .map(|(at_ms, event)| regmig::log::NewEvent {
            kind: event.kind_code(),
            recorded_at_ms: *at_ms,
            payload: event.encode().expect("encode"),
        })
        .collect();
    log.append_blocking(regmig::log::AppendRequest {
        procedure_id,
        expected_next_seq: 1,
        events,
        opens: Some(regmig::log::OpenProcedure {
            region_id: region.as_u64(),
            peers: vec![1, 2],
        }),
        closes: false,
    })
    .expect("no fault")
    .expect("no conflict");
}

#[test]
fn a_migration_queued_for_its_table_lock_names_the_revision_2_migration_writing_the_route() {
    use regmig::domain::{Peer, RegionId, WalKind};
    use regmig::migration::{MigrationEvent, MigrationTask, RetryPolicy};
    const T0: u64 = 1_767_225_600_000;
    let submitted = |region: RegionId, revision: u32| MigrationEvent::Submitted {
        task: MigrationTask {
            region_id: region,
            from_peer: Peer::sim(1),
            to_peer: Peer::sim(2),
            timeout_ms: 10_000,
        },
        catalog: "greptime".to_string(),
        schema: "public".to_string(),
        wal: WalKind::Local,
        policy: RetryPolicy {
            revision,
            ..RetryPolicy::default()
        },
        actor: None,
        trigger: "operator".to_string(),
        reason: None,
    };
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("data");
    let writer: uuid::Uuid = "019b76da-a800-7000-8000-00000000000a"
        .parse()
        .expect("uuid");
    let queued: uuid::Uuid = "019b76da-a800-7000-8000-00000000000b"
        .parse()
        .expect("uuid");
    {
        let log = regmig::log::EventLog::open(&dir, regmig::log::LogOptions::default())
            .expect("a new log");
        // Revision 2: region lock only; its table's lock around the route read (R2.6).
        append_history(
            &log,
            writer,
            RegionId::new(1024, 1),
            &[
                (T0, submitted(RegionId::new(1024, 1), 2)),
                (
                    T0,
                    MigrationEvent::LocksAcquired {
                        lock_keys: vec!["region/1024:1:exclusive".to_string()],
                        waited_ms: 0,
                    },
                ),
                (
                    T0 + 100,
                    MigrationEvent::RouteRead {
                        table_id: 1024,
                        version: Some(1),
                        route: None,
                    },
                ),
            ],
        );
        // Revision 1: its table's lock for the whole migration, so it queues.
        append_history(
            &log,
            queued,
            RegionId::new(1024, 2),
            &[
                (T0 + 50, submitted(RegionId::new(1024, 2), 1)),
                (
                    T0 + 100,
                    MigrationEvent::LockWaitStarted {
                        lock_key: "table/1024:exclusive".to_string(),
                    },
                ),
            ],
        );
    }
    let holder = format!("{writer} (1024:1 1→2, Start; table lock around a route write, R2.6)");
    let run = regmig_in(&dir, &["list", "--state", "queued"]).expect_code(0);
    assert!(
        run.stdout.contains(&format!(
            "queued (lock table/1024:exclusive, held by {holder}, 0ms so far)"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.lines().count(),
        3,
        "only the queued one:\n{}",
        run.stdout
    );
    let run = regmig_in(&dir, &["list", "--json"]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let rows = document["migrations"].as_array().expect("rows");
    let status = |id: uuid::Uuid| {
        rows.iter()
            .find(|row| row["procedure_id"] == id.to_string().as_str())
            .map(|row| (row["status"].clone(), row["lock_held_by"].clone()))
            .expect("listed")
    };
    assert_eq!(status(writer).0, "running");
    assert_eq!(
        status(queued),
        ("queued".into(), serde_json::json!([holder]))
    );

    let run = regmig_in(&dir, &["show", &queued.to_string()]).expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("(for table/1024:exclusive, held by {holder})")),
        "{}",
        run.stdout
    );
    let run = regmig_in(&dir, &["events", &queued.to_string()]).expect_code(0);
    assert!(
        run.stdout.contains(&format!(
            r#"LockWaitStarted  {{"lock_key":"table/1024:exclusive"}} held by {holder}"#
        )),
        "{}",
        run.stdout
    );
    let svg = temp.path().join("queued.svg");
    regmig_in(
        &dir,
        &[
            "timeline",
            &queued.to_string(),
            "-o",
            svg.to_str().expect("a UTF-8 path"),
        ],
    )
    .expect_code(0);
    let svg = std::fs::read_to_string(&svg).expect("the SVG");
    assert!(
        svg.contains(&format!(
            "waiting for table/1024:exclusive, held by {holder}"
        )),
        "{svg}"
    );
}

/// The `<rect class="unwritable" …>` of an SVG: its x, its width and its title.
fn unwritable_bands(svg: &str) -> Vec<(f64, f64, String)> {
    svg.match_indices(r#"<rect class="unwritable" "#)
        .map(|(start, _)| {
            let tag = &svg[start..start + svg[start..].find("</rect>").expect("closed")];
            let attribute = |name: &str| -> f64 {
                let from =
                    tag.find(&format!(" {name}=\"")).expect("the attribute") + name.len() + 3;
                tag[from..from + tag[from..].find('"').expect("quoted")]
                    .parse()
                    .expect("a number")
            };
            let title_from = tag.find("<title>").expect("a title") + "<title>".len();
            (
                attribute("x"),
                attribute("width"),
                tag[title_from..tag.find("</title>").expect("closed")].to_string(),
            )
        })
        .collect()
}

/// The texts of the count badges of an SVG, in order.
fn badges(svg: &str) -> Vec<String> {
    svg.match_indices(r#"<rect class="badge" "#)
        .map(|(start, _)| {
            let rest = &svg[start..];
            let text_from = rest.find("<text ").expect("a text");
            let open_end = text_from + rest[text_from..].find('>').expect("closed") + 1;
            rest[open_end..open_end + rest[open_end..].find("</text>").expect("closed")].to_string()
        })
        .collect()
}

#[test]
fn a_timeline_shows_when_the_region_was_unwritable_and_counts_what_happened() {
    let copy = fixture_copy();
    let svg_path = copy.path("aborted.svg");
    let svg_arg = svg_path.to_str().expect("a UTF-8 path");
    regmig_in(&copy.data_dir(), &["timeline", ABORTED_ID, "-o", svg_arg]).expect_code(0);
    let svg = std::fs::read_to_string(&svg_path).expect("the SVG");
    // The aborted migration's write pause: 1s, from its downgrade at +550ms to the rollback's
    // route write at +1.550s, drawn on the row's axis (plot from x=210 to 1060 over 1.6s).
    let show = regmig_in(&copy.data_dir(), &["show", ABORTED_ID, "--json"]).expect_code(0);
    let show: serde_json::Value = serde_json::from_str(&show.stdout).expect("JSON");
    assert_eq!(show["write_pause_ms"], 1000);
    let bands = unwritable_bands(&svg);
    assert_eq!(bands.len(), 1, "{svg}");
    let (x, width, title) = &bands[0];
    assert_eq!(
        title,
        "unwritable for 1.000s: from the downgrade to the route write that ended it"
    );
    let per_ms = (1100.0 - 210.0 - 40.0) / 1600.0;
    assert!(
        (x - (210.0 + 550.0 * per_ms)).abs() < 0.1,
        "band starts at {x}"
    );
    assert!(
        (width - 1000.0 * per_ms).abs() < 0.1,
        "band is {width} wide"
    );
    assert!(svg.contains(">unwritable 1.000s</text>"), "{svg}");
    assert_eq!(badges(&svg), ["1 retry", "3 failed answers"]);
    // The downgrade's two sends (attempts at one instant) are one marker with a count.
    assert!(
        svg.contains("<title>2 instructions sent at one instant</title>"),
        "{svg}"
    );

    // A completed migration with a mailbox timeout counts it.
    regmig_in(&copy.data_dir(), &["timeline", COMPLETED_ID, "-o", svg_arg]).expect_code(0);
    let svg = std::fs::read_to_string(&svg_path).expect("the SVG");
    assert_eq!(badges(&svg), ["2 retries", "1 timeout", "2 failed answers"]);
    assert_eq!(unwritable_bands(&svg).len(), 1);

    // A rollback that never ends: the band runs to the last event, still counting.
    let temp = tempfile::tempdir().expect("a temporary directory");
    let data = temp.path().join("data");
    simulate(&stuck_rollback_scenario(), &data);
    let id = only_id(&data);
    regmig_in(&data, &["timeline", &id, "-o", svg_arg]).expect_code(0);
    let svg = std::fs::read_to_string(&svg_path).expect("the SVG");
    let bands = unwritable_bands(&svg);
    assert_eq!(bands.len(), 1, "{svg}");
    let show = regmig_in(&data, &["show", &id, "--json"]).expect_code(0);
    let show: serde_json::Value = serde_json::from_str(&show.stdout).expect("JSON");
    let pause_ms = show["write_pause_ms"].as_u64().expect("a write pause");
    assert_eq!(
        bands[0].2,
        format!(
            "unwritable for {} and counting: the region is still Downgrading",
            regmig_tools::cli::common::format_duration(pause_ms)
        )
    );
}
