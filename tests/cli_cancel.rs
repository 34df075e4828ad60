//! `regmig cancel ID --actor A --reason R` (issue #18): refused at once when the migration
//! cannot take it, recorded for the next engine when none holds the directory (and honoured
//! when `regmig demo` resumes the campaign), answered by the engine that holds the
//! directory, withdrawn when nobody answers; bad and unknown ids exit 2.

mod cli_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cli_support::{fixture_copy, regmig, regmig_in, COMPLETED_ID};
use regmig::domain::{Peer, RegionId, WalKind};
use regmig::engine::{Engine, EngineConfig, MigrationRequest, SubmitOutcome};
use regmig::log::{EventLog, LogOptions};
use regmig::migration::{MigrationEvent, Outcome};
use regmig_tools::sim::cluster::{ClusterSetup, RegionSetup, SimCluster, TableSetup};
use regmig_tools::sim::datanode::{ScriptedReply, SimOptions};

/// The demo campaign of `tests/demo_resume.rs`: small, with migrations still open when it
/// is killed after 60 events.
const DEMO_SIZE: [&str; 6] = [
    "--datanodes",
    "5",
    "--tables",
    "6",
    "--regions-per-table",
    "5",
];

fn demo(dir: &Path, exit_after_events: Option<u64>) -> i32 {
    let mut command = Command::new(env!("CARGO_BIN_EXE_regmig"));
    command
        .args(["demo", "--json"])
        .args(DEMO_SIZE)
        .arg("--data-dir")
        .arg(dir);
    if let Some(events) = exit_after_events {
        command.args(["--exit-after-events", &events.to_string()]);
    }
    command
        .output()
        .expect("run regmig demo")
        .status
        .code()
        .unwrap_or(-1)
}

/// The `list --json` rows of `dir`.
fn rows(dir: &Path) -> Vec<serde_json::Value> {
    let run = regmig_in(dir, &["list", "--json"]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    document["migrations"].as_array().expect("an array").clone()
}

/// The keys of every `cancel --json` report, whichever way the cancel went.
const REPORT_KEYS: [&str; 4] = ["message", "ok", "procedure_id", "result"];

/// A JSON object's keys, sorted.
fn keys(document: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = document
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn events_of(dir: &Path, id: &str) -> Vec<MigrationEvent> {
    events_in(&EventLog::open_read_only(dir).expect("open the log"), id)
}

fn events_in(log: &EventLog, id: &str) -> Vec<MigrationEvent> {
    let procedure_id = id.parse().expect("a uuid");
    regmig::engine::load_procedure(log, procedure_id)
        .expect("load")
        .into_iter()
        .map(|timed| timed.event)
        .collect()
}

#[test]
fn without_an_engine_the_cancel_is_recorded_and_honoured_when_the_demo_resumes() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("data");
    assert_eq!(demo(&dir, Some(60)), 137);
    // An open migration that has not written its new route: the first one still in Start.
    let open = rows(&dir)
        .into_iter()
        .find(|row| row["state"] == "Start")
        .expect("a migration still in Start after the kill");
    let id = open["procedure_id"].as_str().expect("an id").to_string();
    let prefix = &id[..23];
    let run = regmig_in(
        &dir,
        &[
            "cancel",
            prefix,
            "--actor",
            "alice",
            "--reason",
            "wrong target",
        ],
    )
    .expect_code(0);
    assert_eq!(
        run.stdout,
        format!(
            "cancel of migration {id} recorded: no engine holds {}; the next engine to open it cancels the migration (it rolls back and ends aborted)\n",
            dir.display()
        )
    );
    assert!(dir
        .join("cancel-requests")
        .join(format!("{id}.json"))
        .is_file());
    // A request a previous engine took but did not honour (it stopped in between) is taken
    // up again.
    let taken = rows(&dir)
        .into_iter()
        .filter(|row| row["state"] == "Start")
        .map(|row| row["procedure_id"].as_str().expect("an id").to_string())
        .find(|other| *other != id)
        .expect("a second migration still in Start");
    std::fs::write(
        dir.join("cancel-requests").join(format!("{taken}.taken")),
        serde_json::json!({
            "procedure_id": taken,
            "actor": "bob",
            "reason": "taken before a crash",
            "requested_at_ms": 1,
            "awaited": false,
        })
        .to_string(),
    )
    .expect("write a taken request");

    assert_eq!(demo(&dir, None), 0);
    assert!(
        events_of(&dir, &taken).contains(&MigrationEvent::OperatorCancelled {
            actor: "bob".to_string(),
            reason: "taken before a crash".to_string()
        })
    );
    let events = events_of(&dir, &id);
    assert!(
        events.contains(&MigrationEvent::OperatorCancelled {
            actor: "alice".to_string(),
            reason: "wrong target".to_string()
        }),
        "{events:#?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(MigrationEvent::Finished {
                outcome: Outcome::Aborted,
                ..
            })
        ),
        "{events:#?}"
    );
    // Honoured once: the requests are gone.
    assert_eq!(
        std::fs::read_dir(dir.join("cancel-requests"))
            .expect("the requests directory")
            .count(),
        0
    );
    let run = regmig_in(&dir, &["audit", "--format", "json"]).expect_code(0);
    let audit: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let row = audit["migrations"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|row| row["procedure_id"] == id.as_str())
        .expect("the cancelled migration in the audit");
    assert_eq!(row["cancelled_by"], "alice", "{row}");
}

/// Every cancel recorded while no engine ran is honoured on the resume, before its
/// migration takes a step: none of them runs on to its new route first (they used to reach
/// their migrations only after these had resumed, and most completed).
#[test]
fn every_cancel_recorded_while_no_engine_ran_aborts_its_migration_on_the_resume() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("data");
    assert_eq!(demo(&dir, Some(60)), 137);
    let waiting: Vec<String> = rows(&dir)
        .into_iter()
        .filter(|row| row["state"] == "Start")
        .map(|row| row["procedure_id"].as_str().expect("an id").to_string())
        .collect();
    assert!(waiting.len() >= 3, "migrations still in Start: {waiting:?}");
    for id in &waiting {
        regmig_in(&dir, &["cancel", id, "--actor", "ops", "--reason", "hold"]).expect_code(0);
    }
    assert_eq!(demo(&dir, None), 0);
    for id in &waiting {
        let events = events_of(&dir, id);
        assert!(
            events.contains(&MigrationEvent::OperatorCancelled {
                actor: "ops".to_string(),
                reason: "hold".to_string()
            }),
            "{id}: {events:#?}"
        );
        assert!(
            matches!(
                events.last(),
                Some(MigrationEvent::Finished {
                    outcome: Outcome::Aborted,
                    ..
                })
            ),
            "{id}: {events:#?}"
        );
    }
}

#[test]
fn a_finished_migration_refuses_the_cancel_at_once_and_nothing_is_recorded() {
    let copy = fixture_copy();
    let data = copy.data_dir();
    let run = regmig_in(
        &data,
        &["cancel", COMPLETED_ID, "--actor", "bob", "--reason", "late"],
    )
    .expect_code(1);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        format!(
            "error: cannot cancel migration {COMPLETED_ID}: the migration already finished (completed)\n"
        )
    );
    assert!(!data.join("cancel-requests").exists());

    let run = regmig_in(
        &data,
        &[
            "cancel",
            COMPLETED_ID,
            "--actor",
            "bob",
            "--reason",
            "late",
            "--json",
        ],
    )
    .expect_code(1);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(document["ok"], false);
    assert_eq!(document["result"], "refused");
}

#[test]
fn bad_and_unknown_ids_and_an_empty_actor_are_bad_input() {
    let copy = fixture_copy();
    let data = copy.data_dir();
    let cases: [(&[&str], &str); 4] = [
        (
            &["cancel", "00000000-0000-7000-8000-000000000000", "--actor", "a", "--reason", "r"],
            "error: no migration with id 00000000-0000-7000-8000-000000000000\n",
        ),
        (
            &["cancel", "fffff", "--actor", "a", "--reason", "r"],
            "error: no migration id starts with \"fffff\" (see `regmig list`)\n",
        ),
        (
            &["cancel", "1024:1", "--actor", "a", "--reason", "r"],
            "error: \"1024:1\" is a region, not a migration id: `regmig region 1024:1` shows its route and migrations\n",
        ),
        (
            &["cancel", COMPLETED_ID, "--actor", " ", "--reason", "r"],
            "error: --actor and --reason must not be empty: the log records who cancelled and why\n",
        ),
    ];
    for (args, stderr) in cases {
        let run = regmig_in(&data, args).expect_code(2);
        assert_eq!(run.stderr, stderr, "regmig {args:?}");
    }
    let run = regmig(&["cancel", COMPLETED_ID, "--reason", "r"]).expect_code(2);
    assert!(run.stderr.contains("--actor"), "{}", run.stderr);
}

#[test]
fn while_the_directory_is_held_and_nobody_answers_the_request_is_withdrawn() {
    let copy = fixture_copy();
    let data = copy.data_dir();
    let held = EventLog::open(&data, LogOptions::default()).expect("hold the directory");
    let run = regmig_in(
        &data,
        &[
            "cancel",
            COMPLETED_ID,
            "--actor",
            "alice",
            "--reason",
            "r",
            "--wait",
            "200ms",
        ],
    )
    .expect_code(1);
    assert_eq!(
        run.stderr,
        format!(
            "error: the engine holding {} did not take the cancel of migration {COMPLETED_ID} within 200ms (does its host serve cancel requests?); the request was withdrawn\n",
            data.display()
        )
    );
    assert!(!data
        .join("cancel-requests")
        .join(format!("{COMPLETED_ID}.json"))
        .exists());
    // A request already waiting there (another command's) is kept, not replaced: this
    // command says so and leaves the first command to its answer.
    let first = data
        .join("cancel-requests")
        .join(format!("{COMPLETED_ID}.json"));
    let first_request = serde_json::json!({
        "procedure_id": COMPLETED_ID,
        "actor": "bob",
        "reason": "first",
        "requested_at_ms": 1,
        "awaited": true,
    })
    .to_string();
    std::fs::write(&first, &first_request).expect("write a waiting request");
    let run = regmig_in(
        &data,
        &[
            "cancel",
            COMPLETED_ID,
            "--actor",
            "alice",
            "--reason",
            "second",
            "--wait",
            "200ms",
        ],
    )
    .expect_code(0);
    assert_eq!(
        run.stdout,
        format!(
            "a cancel of migration {COMPLETED_ID} was already requested by bob (reason: first); that request is kept and this one was not recorded: the engine holding {} answers it (the command that recorded it waits for the answer); see `regmig show {COMPLETED_ID}` once the engine lets go of the directory\n",
            data.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&first).expect("the first request"),
        first_request
    );
    std::fs::remove_file(&first).expect("remove the first request");
    // A prefix cannot be resolved while the log is held.
    let run = regmig_in(
        &data,
        &[
            "cancel",
            &COMPLETED_ID[..8],
            "--actor",
            "alice",
            "--reason",
            "r",
        ],
    )
    .expect_code(2);
    assert_eq!(
        run.stderr,
        format!(
            "error: an engine holds {}, so its log cannot be read to resolve the id prefix {:?}: give the whole id\n",
            data.display(),
            &COMPLETED_ID[..8]
        )
    );
    drop(held);
}

/// A cluster of three datanodes and one region on peer 1, whose move to peer 2 stays in
/// OpenCandidateRegion: peer 2 never answers the open.
fn stalled_cluster() -> std::sync::Arc<SimCluster> {
    let cluster = SimCluster::new(
        ClusterSetup {
            seed: 7,
            peers: vec![1, 2, 3],
            tables: vec![TableSetup {
                id: 1024,
                catalog: "greptime".to_string(),
                schema: "public".to_string(),
                wal: WalKind::Local,
                logical: false,
                regions: vec![RegionSetup {
                    number: 1,
                    leader: 1,
                    followers: Vec::new(),
                    last_entry_id: 100,
                }],
            }],
            writes_per_second: None,
            flush_writes_per_second: None,
            epoch_base_ms: 1_700_000_000_000,
        },
        SimOptions::default(),
    )
    .expect("a valid cluster");
    cluster.script_replies(
        2,
        regmig::domain::InstructionKind::OpenRegion,
        std::iter::repeat_n(ScriptedReply::Timeout, 1_000),
    );
    cluster
}

/// An engine holding `TEMP/data` on [`stalled_cluster`], with the region's migration
/// started (and stalled in OpenCandidateRegion).
async fn engine_with_a_stalled_migration() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::sync::Arc<SimCluster>,
    Engine,
    uuid::Uuid,
) {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let data = temp.path().join("data");
    let cluster = stalled_cluster();
    cluster.start();
    let mut ports = cluster.ports();
    ports.submit_metadata = cluster.validation_view();
    let engine = Engine::open(&data, EngineConfig::default(), ports)
        .await
        .expect("open the engine");
    let request = MigrationRequest::new(RegionId::new(1024, 1), Peer::sim(1), Peer::sim(2))
        .with_timeout_ms(60_000);
    let Ok(SubmitOutcome::Started(id)) = engine.submit(request).await else {
        panic!("the migration did not start");
    };
    (temp, data, cluster, engine, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_holding_the_directory_answers_a_cancel_and_the_command_says_so() {
    let (_temp, data, cluster, engine, id) = engine_with_a_stalled_migration().await;

    let command = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            regmig_in(
                &data,
                &[
                    "cancel",
                    &id.to_string(),
                    "--actor",
                    "alice",
                    "--reason",
                    "stuck open",
                    "--json",
                ],
            )
        })
    };
    let serving = regmig_tools::cli::cancel::serve(&engine, &data);
    let run = tokio::select! {
        never = serving => match never {},
        run = command => run.expect("the command ran"),
    };
    let run = run.expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(keys(&document), REPORT_KEYS, "{document}");
    assert_eq!(document["ok"], true, "{document}");
    assert_eq!(document["result"], "cancelled", "{document}");
    assert_eq!(
        document["message"],
        format!("migration {id} cancelled: it rolls back and ends aborted")
    );
    tokio::time::timeout(Duration::from_secs(60), engine.wait(id))
        .await
        .expect("the migration ends")
        .expect("it ends");
    // The answer was read and removed; nothing is left pending.
    assert_eq!(
        std::fs::read_dir(data.join("cancel-requests"))
            .expect("the requests directory")
            .count(),
        0
    );
    engine.shutdown().await;
    drop(engine);
    cluster.stop();
    // The log says who cancelled, and that the migration rolled back and aborted.
    let events = tokio::task::spawn_blocking(move || {
        // The engine's log lets go of the directory a moment after the drop.
        let started = std::time::Instant::now();
        loop {
            match EventLog::open_read_only(&data) {
                Ok(log) => break events_in(&log, &id.to_string()),
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(error) => panic!("cannot read the log: {error}"),
            }
        }
    })
    .await
    .expect("read the log");
    assert!(
        events.contains(&MigrationEvent::OperatorCancelled {
            actor: "alice".to_string(),
            reason: "stuck open".to_string()
        }),
        "{events:#?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(MigrationEvent::Finished {
                outcome: Outcome::Aborted,
                ..
            })
        ),
        "{events:#?}"
    );
}

/// `cancel --json` prints one shape whether an engine holds the directory or not: an id
/// the engine does not know is the same error document as when the command reads the log
/// itself, and a request recorded for the next engine has the keys of an answered one. A
/// second cancel of the same migration keeps the first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_json_has_one_shape_with_or_without_an_engine_and_a_second_cancel_keeps_the_first() {
    let (_temp, data, cluster, engine, id) = engine_with_a_stalled_migration().await;
    let unknown = "00000000-0000-7000-8000-000000000000";
    let cancel_json = |data: &Path, id: &str, actor: &str, reason: &str| {
        regmig_in(
            data,
            &["cancel", id, "--actor", actor, "--reason", reason, "--json"],
        )
    };
    let unknown_error = serde_json::json!({
        "ok": false,
        "error": {
            "kind": "unknown_migration",
            "message": format!("no migration with id {unknown}"),
        },
    });

    // With the engine: it answers that it knows no such migration.
    let command = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || cancel_json(&data, unknown, "alice", "typo"))
    };
    let serving = regmig_tools::cli::cancel::serve(&engine, &data);
    let run = tokio::select! {
        never = serving => match never {},
        run = command => run.expect("the command ran"),
    };
    let run = run.expect_code(2);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(document, unknown_error);
    assert_eq!(
        run.stderr,
        format!("error: no migration with id {unknown}\n")
    );

    engine.shutdown().await;
    drop(engine);
    cluster.stop();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        // The engine's log lets go of the directory a moment after the drop.
        let started = std::time::Instant::now();
        while EventLog::open_read_only(&data).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the directory stays held"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Without an engine: the command reads the log itself, and says the same.
        let run = cancel_json(&data, unknown, "alice", "typo").expect_code(2);
        let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
        assert_eq!(document, unknown_error);

        // The open migration's cancel is recorded: the keys of an answered cancel.
        let run = cancel_json(&data, &id, "alice", "stuck open").expect_code(0);
        let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
        assert_eq!(keys(&document), REPORT_KEYS, "{document}");
        assert_eq!(document["ok"], true);
        assert_eq!(document["procedure_id"], id.as_str());
        assert_eq!(document["result"], "recorded");
        let request_file = data.join("cancel-requests").join(format!("{id}.json"));
        let first = std::fs::read_to_string(&request_file).expect("the request");

        // A second cancel keeps the first request and says so.
        let run = cancel_json(&data, &id, "bob", "me too").expect_code(0);
        let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
        assert_eq!(keys(&document), REPORT_KEYS, "{document}");
        assert_eq!(document["result"], "recorded");
        assert_eq!(
            document["message"],
            format!(
                "a cancel of migration {id} was already requested by alice (reason: stuck open); that request is kept and this one was not recorded: no engine holds {}; the next engine to open it cancels the migration (it rolls back and ends aborted)",
                data.display()
            )
        );
        assert_eq!(
            std::fs::read_to_string(&request_file).expect("the request"),
            first
        );
    })
    .await
    .expect("the commands ran");
}
