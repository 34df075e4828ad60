//! The `regmig sim` commands as a user runs them: exit statuses, what the output names, the
//! `--json` schema of `scenario-format.md`, the crash sweep and the fuzzer's summary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn regmig(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(args)
        .output()
        .expect("the regmig binary runs")
}

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios")).join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

const PASSING: &str = "start_opens_candidate_and_completes.toml";

#[test]
fn sim_run_exits_0_when_every_expectation_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("log");
    let output = regmig(&[
        "sim",
        "run",
        path_arg(&scenario(PASSING)),
        "--data-dir",
        path_arg(&data_dir),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(
        stdout.starts_with(
            "scenario \"start: to_peer holds no replica -> OpenCandidateRegion; the whole fast \
             path completes\": OK\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  invariants: ok\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("  data dir: {}\n", data_dir.display())),
        "{stdout}"
    );
    // The log is kept where asked, for inspection and replay.
    assert!(data_dir.is_dir());
}

#[test]
fn sim_run_exits_1_and_names_the_key_when_an_expectation_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let original = std::fs::read_to_string(scenario(PASSING)).expect("readable");
    assert!(original.contains("\nleader = 2\n"));
    let wrong = original.replace("\nleader = 2\n", "\nleader = 3\n");
    let file = dir.path().join("wrong_leader.toml");
    std::fs::write(&file, wrong).expect("written");
    let output = regmig(&[
        "sim",
        "run",
        path_arg(&file),
        "--data-dir",
        path_arg(&dir.path().join("log")),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("\": FAILED\n"), "{stdout}");
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("  failed: "))
        .collect();
    assert_eq!(
        failures,
        vec!["  failed: migration 1 (1024:1): leader: expected 3, got 2"]
    );
}

#[test]
fn sim_run_exits_2_on_an_invalid_file_naming_file_line_and_field_and_runs_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("typo.toml");
    std::fs::write(
        &file,
        "name = \"typo\"\nseed = 1\n\n[cluster]\npeers = [1, 2]\n\n[[cluster.tables]]\nid = 1\n\
         regions = [ { number = 1, leader = 1 } ]\n\n[[migrations]]\nregion = \"1:1\"\nfrom = 1\n\
         to = 2\n\n[expect]\nleadr = 2\n",
    )
    .expect("written");
    let data_dir = dir.path().join("log");
    let output = regmig(&[
        "sim",
        "run",
        path_arg(&file),
        "--data-dir",
        path_arg(&data_dir),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: {}:17: field `expect.leadr`: unknown key",
            file.display()
        )),
        "{stderr}"
    );
    assert_eq!(text(&output.stdout), "");
    // Nothing ran: no log was created.
    assert!(!data_dir.exists());
}

#[test]
fn sim_run_json_prints_exactly_the_fields_of_the_spec() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("log");
    let output = regmig(&[
        "sim",
        "run",
        path_arg(&scenario("open_unreachable_fails.toml")),
        "--json",
        "--data-dir",
        path_arg(&data_dir),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let result: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let keys = |value: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&result),
        [
            "data_dir",
            "failures",
            "invariants",
            "migrations",
            "name",
            "ok"
        ]
    );
    assert_eq!(keys(&result["invariants"]), ["ok", "violations"]);
    let migrations = result["migrations"].as_array().expect("an array");
    assert_eq!(migrations.len(), 1);
    let migration = &migrations[0];
    assert_eq!(
        keys(migration),
        [
            "error",
            "events",
            "followers",
            "leader",
            "leader_state",
            "outcome",
            "path",
            "procedure_id",
            "region",
            "rolled_back",
            "sent",
            "unwritable_ms",
            "virtual_time_ms"
        ]
    );
    let procedure_id = migration["procedure_id"].as_str().expect("an id");
    assert!(
        uuid::Uuid::parse_str(procedure_id).is_ok(),
        "{procedure_id}"
    );
    let expected = serde_json::json!({
        "name": "open: an unreachable candidate fails the migration at once",
        "ok": true,
        "failures": [],
        "migrations": [{
            "region": "1024:1",
            "procedure_id": procedure_id,
            "outcome": "failed",
            "error": "datanode 2 is unreachable (open candidate region 1024:1)",
            "rolled_back": true,
            "path": ["Start", "OpenCandidateRegion"],
            "leader": 1,
            "followers": [],
            "leader_state": "none",
            "sent": {"2.open_region": 1},
            "virtual_time_ms": 0,
            "unwritable_ms": 0,
            "events": 13
        }],
        "invariants": {"ok": true, "violations": []},
        "data_dir": data_dir.display().to_string(),
    });
    assert_eq!(result, expected);
}

#[test]
fn sim_run_crash_at_every_event_reports_every_crash_point() {
    let output = regmig(&[
        "sim",
        "run",
        path_arg(&scenario("open_wrong_reply_fails.toml")),
        "--crash-at-every-event",
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert_eq!(
        stdout,
        "open: a reply of the wrong kind fails the migration at once: 13 crash points, all OK\n"
    );
    // stderr is not a terminal here: the progress bar over the runs draws nothing.
    assert_eq!(text(&output.stderr), "");
}

#[test]
fn sim_fuzz_runs_a_seed_range_and_refuses_an_empty_one() {
    let output = regmig(&["sim", "fuzz", "--seeds", "0..3"]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.starts_with("3 seeds in "), "{stdout}");
    assert!(stdout.ends_with(": 0 failed\n"), "{stdout}");
    // stderr is not a terminal here: the progress bar over the seeds draws nothing.
    assert_eq!(text(&output.stderr), "");

    let output = regmig(&["sim", "fuzz", "--seeds", "5..5"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        "error: --seeds: the range \"5..5\" is empty\n"
    );
}

#[test]
fn sim_fuzz_print_scenario_gives_a_file_sim_run_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = regmig(&["sim", "fuzz", "--seeds", "7..8", "--print-scenario"]);
    assert_eq!(output.status.code(), Some(0));
    let file = dir.path().join("seed-7.toml");
    std::fs::write(&file, &output.stdout).expect("written");
    let output = regmig(&[
        "sim",
        "run",
        path_arg(&file),
        "--data-dir",
        path_arg(&dir.path().join("log")),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(
        stdout.starts_with("scenario \"fuzz seed 7\": OK\n"),
        "{stdout}"
    );
}

#[test]
fn crash_at_every_event_refuses_a_data_dir_since_each_run_writes_its_own_log() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let file = scenario("crash_then_resume.toml");
    let output = regmig(&[
        "sim",
        "run",
        path_arg(&file),
        "--crash-at-every-event",
        "--data-dir",
        path_arg(&dir),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains(
            "the argument '--crash-at-every-event' cannot be used with '--data-dir <DATA_DIR>'"
        ),
        "{}",
        text(&output.stderr)
    );
    assert!(!dir.exists());
}

#[test]
fn sim_run_escapes_a_datanode_error_in_its_text_output() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("escape.toml");
    std::fs::write(
        &file,
        r#"name = "escape"
seed = 1
[cluster]
peers = [1, 2]
[[cluster.tables]]
id = 1024
regions = [ { number = 1, leader = 1, followers = [] } ]
[[migrations]]
region = "1024:1"
from = 1
to = 2
[[script]]
peer = 2
instruction = "open_region"
replies = ["error:x", "error:y", "error:z", "error:a\u001b[31mb\noutcome: completed"]
"#,
    )
    .unwrap();
    let output = regmig(&["sim", "run", path_arg(&file)]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "    error: retry budget exhausted after 3 retries: region 1024:1 is not opened by \
             datanode 2: a\\u{1b}[31mb\\noutcome: completed\n"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains('\u{1b}'), "{stdout}");
}

/// A refused cancel is part of the story an auditor reads: `show` names who asked, why,
/// and why it was refused, in its text and its JSON.
#[test]
fn show_names_a_refused_cancel() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let file = scenario("cancel_after_the_new_route_is_refused.toml");
    let run = regmig(&["sim", "run", "--data-dir", path_arg(&dir), path_arg(&file)]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let listed = regmig(&["list", "--json", "--data-dir", path_arg(&dir)]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = listed["migrations"][0]["procedure_id"].as_str().unwrap();
    let refused = "alice: too late (refused: the new route is already written (state \
                   CloseDowngradedRegion): the migration can only go forward)";
    let show = regmig(&["show", id, "--data-dir", path_arg(&dir)]);
    assert!(
        text(&show.stdout).contains(&format!("\ncancel refused:  {refused}\n")),
        "{}",
        text(&show.stdout)
    );
    let show = regmig(&["show", id, "--json", "--data-dir", path_arg(&dir)]);
    let show: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(show["cancels_refused"], serde_json::json!([refused]));
}
