//! Issue 13, "every bad input gets a clear error": one test per finding, each with the
//! exact exit code and message, and nothing written when the input is refused.

mod cli_support;

use std::path::Path;

use cli_support::{regmig, regmig_with_env, Run};
use regmig_tools::sim::campaign::{CampaignConfig, CampaignRecord};

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn assert_no_panic(run: &Run) {
    assert_ne!(run.code, 101, "a panic: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "a panic: {}", run.stderr);
}

fn demo_in(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["demo", "--json", "--data-dir", path_str(dir)];
    args.extend_from_slice(extra);
    regmig(&args)
}

#[test]
fn demo_sizes_out_of_bounds_are_refused_before_anything_is_written() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("demo");
    for (extra, message) in [
        (
            vec!["--datanodes", "18446744073709551615"],
            "error: --datanodes is 18446744073709551615, outside the allowed range 2..=64\n",
        ),
        (
            vec!["--datanodes", "1000000"],
            "error: --datanodes is 1000000, outside the allowed range 2..=64\n",
        ),
        (
            vec!["--datanodes", "0"],
            "error: --datanodes is 0, outside the allowed range 2..=64\n",
        ),
        (
            vec!["--datanodes", "1"],
            "error: --datanodes is 1, outside the allowed range 2..=64\n",
        ),
        (
            vec!["--tables", "0"],
            "error: --tables is 0, outside the allowed range 1..=1000\n",
        ),
        (
            vec!["--regions-per-table", "0"],
            "error: --regions-per-table is 0, outside the allowed range 1..=1000\n",
        ),
        (
            vec!["--tables", "4294967295", "--regions-per-table", "4294967295"],
            "error: --tables is 4294967295, outside the allowed range 1..=1000\n",
        ),
        (
            vec!["--tables", "100", "--regions-per-table", "101"],
            "error: --tables × --regions-per-table is 100 × 101 = 10100, outside the allowed range 1..=10000 regions\n",
        ),
    ] {
        let run = demo_in(&dir, &extra).expect_code(2);
        assert_eq!(run.stderr, message, "{extra:?}");
        assert_eq!(run.stdout, "", "{extra:?}");
        assert!(!dir.exists(), "{extra:?}: the data directory was created");
    }
}

#[test]
fn a_saved_demo_config_out_of_bounds_is_refused_not_a_panic() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("demo");
    {
        let log = regmig::log::EventLog::open(&dir, regmig::log::LogOptions::default())
            .expect("open a log");
        let record = CampaignRecord::open(&log).expect("open the record");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let saved = CampaignConfig {
            datanodes: u64::MAX,
            ..CampaignConfig::default()
        };
        runtime
            .block_on(record.set_config(&saved))
            .expect("save a config");
    }
    let run = demo_in(&dir, &[]).expect_code(2);
    assert_eq!(
        run.stderr,
        format!(
            "error: {}: the saved datanodes is 18446744073709551615, outside the allowed range 2..=64; use another --data-dir to start a new campaign\n",
            dir.display()
        )
    );
    assert_no_panic(&run);
}

fn scenario_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
}

/// Every file under `dir`, with its length, to show nothing was written.
fn tree(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(tree(&path));
        } else {
            let length = entry.metadata().map_or(0, |metadata| metadata.len());
            files.push((path, length));
        }
    }
    files.sort();
    files
}

#[test]
fn sim_run_refuses_a_data_dir_that_already_holds_a_log() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let data_dir = temp.path().join("log");
    let scenario = scenario_file("start_opens_candidate_and_completes.toml");
    regmig(&[
        "sim",
        "run",
        path_str(&scenario),
        "--data-dir",
        path_str(&data_dir),
    ])
    .expect_code(0);
    let before = tree(&data_dir);
    let run = regmig(&[
        "sim",
        "run",
        path_str(&scenario),
        "--data-dir",
        path_str(&data_dir),
    ])
    .expect_code(2);
    assert_eq!(
        run.stderr,
        format!(
            "error: --data-dir {} already holds a log; sim run writes a new one: give a new or empty directory\n",
            data_dir.display()
        )
    );
    assert_eq!(run.stdout, "");
    assert_eq!(tree(&data_dir), before, "the log was changed");
    // A directory with other files is refused too; an empty one is fine.
    let other = temp.path().join("other");
    std::fs::create_dir_all(&other).expect("create a directory");
    std::fs::write(other.join("notes.txt"), "keep me").expect("write a file");
    let run = regmig(&[
        "sim",
        "run",
        path_str(&scenario),
        "--data-dir",
        path_str(&other),
    ])
    .expect_code(2);
    assert_eq!(
        run.stderr,
        format!(
            "error: --data-dir {} is not empty; sim run writes a new log: give a new or empty directory\n",
            other.display()
        )
    );
    let empty = temp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("create a directory");
    regmig(&[
        "sim",
        "run",
        path_str(&scenario),
        "--data-dir",
        path_str(&empty),
    ])
    .expect_code(0);
}

#[test]
fn a_bundle_that_never_ends_is_read_only_to_the_limit() {
    for device in ["/dev/zero", "/dev/urandom"] {
        if !Path::new(device).exists() {
            continue;
        }
        let run = regmig(&["replay", "--file", device]).expect_code(1);
        assert_eq!(
            run.stderr,
            format!(
                "error: bundle {device}: at least 268435457 bytes, more than the 268435456 bytes a bundle may hold\n"
            )
        );
        assert_eq!(run.stdout, "");
    }
}

/// Every file regmig reads from a user is read to a limit, not to its end: a scenario, a
/// password file and an archive's bundle replaced by `/dev/zero` are refused by size.
#[test]
fn files_that_never_end_are_read_only_to_their_limits() {
    if !Path::new("/dev/zero").exists() {
        return;
    }
    let run = regmig(&["sim", "run", "/dev/zero"]).expect_code(2);
    assert_eq!(
        run.stderr,
        "error: /dev/zero: the scenario file has at least 1048577 bytes, more than the limit of 1048576\n"
    );
    let run = regmig(&[
        "list",
        "--store",
        "postgres://u@127.0.0.1:1/d?sslmode=disable",
        "--password-file",
        "/dev/zero",
    ])
    .expect_code(2);
    assert_eq!(
        run.stderr,
        "error: store postgres://u@127.0.0.1:1/d?sslmode=disable: the password file /dev/zero holds more than 65536 bytes\n"
    );

    let copy = cli_support::fixture_copy();
    let data_dir = copy.data_dir();
    let archive = copy.path("archive");
    regmig(&[
        "log",
        "archive",
        "--data-dir",
        path_str(&data_dir),
        "--before",
        "1d",
        "--to",
        path_str(&archive),
    ])
    .expect_code(0);
    let bundle = archive.join(format!("{}.rgmb", cli_support::ALL_IDS[0]));
    std::fs::remove_file(&bundle).expect("the first migration's bundle");
    std::os::unix::fs::symlink("/dev/zero", &bundle).expect("symlink");
    let run = regmig(&[
        "log",
        "verify",
        "--data-dir",
        path_str(&data_dir),
        "--archive",
        path_str(&archive),
    ])
    .expect_code(1);
    assert!(
        run.stdout.contains(&format!(
            "DOES NOT JOIN: archive {}: holds at least 268435457 bytes, more than the 268435456 bytes it may hold",
            bundle.display()
        )),
        "{}",
        run.stdout
    );
}

/// An output path inside the data directory being read is refused before anything is
/// written: `-o DATA_DIR/sled/db` would have replaced the log with a picture.
#[test]
fn outputs_inside_the_data_directory_are_refused() {
    let copy = cli_support::fixture_copy();
    let data_dir = copy.data_dir();
    let data = path_str(&data_dir);
    let db = data_dir.join("sled").join("db");
    let db_before = std::fs::read(&db).expect("the fixture's db");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                "timeline".into(),
                cli_support::COMPLETED_ID.into(),
                "-o".into(),
                db.display().to_string(),
            ],
            format!("the timeline {}", db.display()),
        ),
        (
            vec![
                "export".into(),
                cli_support::COMPLETED_ID.into(),
                "-o".into(),
                format!("{data}/../data/regmig.mark"),
            ],
            format!("the bundle {data}/../data/regmig.mark"),
        ),
        (
            vec![
                "log".into(),
                "compact".into(),
                "--to".into(),
                format!("{data}/new"),
            ],
            format!("the compacted log's directory {data}/new"),
        ),
        (
            vec![
                "log".into(),
                "archive".into(),
                "--before".into(),
                "1d".into(),
                "--to".into(),
                format!("{data}/sled"),
            ],
            format!("the archive directory {data}/sled"),
        ),
    ];
    for (mut args, what) in cases {
        args.extend(["--data-dir".to_string(), data.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = regmig(&args).expect_code(2);
        assert_eq!(
            run.stderr,
            format!("error: {what} is inside the data directory {data}: writing there could damage the log; choose a path outside it\n"),
            "{args:?}"
        );
    }
    assert_eq!(std::fs::read(&db).expect("the db"), db_before);
    assert!(!data_dir.join("new").exists());
    regmig(&["list", "--data-dir", data]).expect_code(0);
}

/// A command given `--json` answers a usage error clap finds with one JSON document too.
#[test]
fn usage_errors_of_a_json_command_are_json() {
    for (args, message) in [
        (
            vec!["list", "--region", "abc", "--json"],
            "invalid value 'abc' for '--region <REGION>': invalid region \"abc\": expected TABLE:NUMBER (e.g. \"1024:1\") or the packed u64",
        ),
        (
            vec!["replay", "--json"],
            "the following required arguments were not provided: <ID>",
        ),
    ] {
        let run = regmig(&args).expect_code(2);
        let document: serde_json::Value =
            serde_json::from_str(&run.stdout).expect("one JSON document");
        assert_eq!(
            document,
            serde_json::json!({"ok": false, "error": {"kind": "usage", "message": message}}),
            "{args:?}"
        );
    }
    // Without --json, nothing on stdout.
    assert_eq!(
        regmig(&["list", "--region", "abc"]).expect_code(2).stdout,
        ""
    );
}

#[test]
fn output_that_cannot_be_written_exits_1_with_the_error() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let copy = cli_support::fixture_copy();
    let data_dir = copy.data_dir();
    for args in [
        vec!["list"],
        vec!["list", "--json"],
        vec!["show", cli_support::COMPLETED_ID],
        vec!["audit", "--format", "csv"],
        vec!["log", "verify"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_regmig"))
            .args(&args)
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(full)
            .output()
            .expect("run regmig");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "error: cannot write the output to stdout: No space left on device (os error 28)\n",
            "{args:?}"
        );
    }
    // Commands that print with println! fail the same way, not with a panic.
    for args in [
        vec!["sim", "fuzz", "--seeds", "0..1"],
        vec!["--version"],
        vec!["--help"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_regmig"))
            .args(&args)
            .stdout(full)
            .output()
            .expect("run regmig");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr,
            "error: cannot write the output to stdout: No space left on device (os error 28)\n",
            "{args:?}"
        );
    }
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let copy = cli_support::fixture_copy();
    for args in [
        vec!["list"],
        vec!["events", cli_support::COMPLETED_ID],
        vec!["log", "verify"],
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_regmig"))
            .args(&args)
            .arg("--data-dir")
            .arg(copy.data_dir())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run regmig");
        // The reader goes away before the first byte is written.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait for regmig");
        assert!(
            output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?}",
            output.status
        );
        assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{args:?}");
    }
}

/// A datanode error that tries to forge lines and colour the terminal.
const HOSTILE_ERROR: &str = "disk full\\noutcome:         completed\\u001b[31m";

/// Runs a scenario whose candidate answers every open with [`HOSTILE_ERROR`]; returns the
/// data directory (inside `temp`) with the failed migration.
fn hostile_log(temp: &Path) -> std::path::PathBuf {
    let file = temp.join("hostile.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"hostile\"\nseed = 15\n\n[cluster]\npeers = [1, 2, 3]\n\n[[cluster.tables]]\n\
             id = 1024\nregions = [ {{ number = 1, leader = 1 }} ]\n\n[[migrations]]\n\
             region = \"1024:1\"\nfrom = 1\nto = 2\n\n[[script]]\npeer = 2\n\
             instruction = \"open_region\"\nreplies = [\"error:{HOSTILE_ERROR}\", \
             \"error:{HOSTILE_ERROR}\", \"error:{HOSTILE_ERROR}\", \"error:{HOSTILE_ERROR}\"]\n\n\
             [expect]\noutcome = \"failed\"\n"
        ),
    )
    .expect("write the scenario");
    let data_dir = temp.join("log");
    regmig(&[
        "sim",
        "run",
        path_str(&file),
        "--data-dir",
        path_str(&data_dir),
    ])
    .expect_code(0);
    data_dir
}

fn only_id(data_dir: &Path) -> String {
    let run = regmig(&["list", "--json", "--data-dir", path_str(data_dir)]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    document["migrations"][0]["procedure_id"]
        .as_str()
        .expect("an id")
        .to_string()
}

#[test]
fn text_from_a_datanode_is_escaped_in_tables_and_plain_output() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let data_dir = hostile_log(temp.path());
    let id = only_id(&data_dir);
    let escaped = "disk full\\noutcome:         completed\\u{1b}[31m";
    let show = regmig(&["show", &id, "--data-dir", path_str(&data_dir)]).expect_code(0);
    assert!(!show.stdout.contains('\u{1b}'), "{}", show.stdout);
    let outcome_lines: Vec<&str> = show
        .stdout
        .lines()
        .filter(|line| line.starts_with("outcome:"))
        .collect();
    assert_eq!(outcome_lines, ["outcome:         failed"]);
    assert!(
        show.stdout.lines().any(|line| line
            == format!("final error:     retry budget exhausted after 3 retries: region 1024:1 is not opened by datanode 2: {escaped}")),
        "{}",
        show.stdout
    );
    // Every detail cell stays on its row.
    let error_rows = show
        .stdout
        .lines()
        .filter(|line| line.contains(escaped))
        .count();
    assert!(error_rows >= 5, "{}", show.stdout);
    for args in [
        vec!["events", id.as_str()],
        vec!["replay", id.as_str()],
        vec!["audit"],
        vec!["list"],
    ] {
        let mut all = args.clone();
        all.extend(["--data-dir", path_str(&data_dir)]);
        let run = regmig(&all).expect_code(0);
        assert!(!run.stdout.contains('\u{1b}'), "{args:?}: {}", run.stdout);
        assert!(
            !run.stdout.lines().any(|line| line.starts_with("outcome:")),
            "{args:?}: {}",
            run.stdout
        );
    }
    // JSON keeps the text exactly.
    let json = regmig(&["show", &id, "--json", "--data-dir", path_str(&data_dir)]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert!(document["final_error"]
        .as_str()
        .expect("a final error")
        .ends_with("disk full\noutcome:         completed\u{1b}[31m"));
}

#[test]
fn a_divergence_only_in_time_shows_both_times() {
    use regmig::engine::store::decode_record;
    use regmig::migration::EventRole;
    let copy = cli_support::fixture_copy();
    let id: uuid::Uuid = cli_support::COMPLETED_ID.parse().expect("an id");
    let mut records = {
        let log = regmig::log::EventLog::open(&copy.data_dir(), regmig::log::LogOptions::default())
            .expect("open the fixture copy");
        log.procedure_events(id, 1).expect("read the events")
    };
    // The first decision event right after an input: it must carry the input's time.
    let roles: Vec<EventRole> = records
        .iter()
        .map(|record| decode_record(record).expect("decodable").event.role())
        .collect();
    let index = (1..records.len())
        .find(|&index| roles[index] == EventRole::Decision && roles[index - 1] == EventRole::Input)
        .expect("a decision after an input");
    let input_ms = records[index - 1].recorded_at_ms;
    records[index].recorded_at_ms = input_ms + 7;
    let bundle = copy.path("shifted.bundle");
    std::fs::write(&bundle, regmig::log::bundle::encode_bundle(id, &records))
        .expect("write the bundle");
    let run = regmig(&["replay", "--file", path_str(&bundle), "--check"]).expect_code(1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(
        lines[1].ends_with(&format!(" at recorded_at_ms {}", input_ms + 7)),
        "{}",
        run.stdout
    );
    assert!(
        lines[2].ends_with(&format!(
            " at recorded_at_ms {input_ms} (the time of input event {index})"
        )),
        "{}",
        run.stdout
    );
    assert_ne!(lines[1][24..], lines[2][24..], "{}", run.stdout);
}

#[test]
fn since_later_than_until_is_bad_usage() {
    let copy = cli_support::fixture_copy();
    for command in ["list", "audit"] {
        let run = cli_support::regmig_in(
            &copy.data_dir(),
            &[command, "--since", "2026-02-01", "--until", "2026-01-01"],
        )
        .expect_code(2);
        assert_eq!(
            run.stderr,
            "error: --since 2026-02-01T00:00:00.000Z is later than --until 2026-01-01T23:59:59.999Z: no migration can match\n",
            "{command}"
        );
        assert_eq!(run.stdout, "", "{command}");
        // The same date on both sides is that whole day.
        cli_support::regmig_in(
            &copy.data_dir(),
            &[command, "--since", "2026-01-01", "--until", "2026-01-01"],
        )
        .expect_code(0);
    }
}

/// A valid scenario; the tests below change one line of it.
const SCENARIO: &str = "name = \"gaps\"\nseed = 7\n\n[cluster]\npeers = [1, 2, 3]\n\n\
[[cluster.tables]]\nid = 1024\nregions = [ { number = 1, leader = 1 } ]\n\n\
[[migrations]]\nregion = \"1024:1\"\nfrom = 1\nto = 2\ntimeout = \"10s\"\nat = \"0s\"\n";

#[test]
fn scenario_validation_gaps_are_bad_usage_naming_file_line_and_field() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let file = temp.path().join("gaps.toml");
    let data_dir = temp.path().join("log");
    let file_name = file.display().to_string();
    for (from, to, message) in [
        (
            "to = 2",
            "to = 9",
            "14: field `migrations[0].to`: peer 9 is not in cluster.peers [1, 2, 3]",
        ),
        (
            "at = \"0s\"",
            "at = \"100000y\"",
            "16: field `migrations[0].at`: duration \"100000y\" is longer than 1h, the virtual time a run may last",
        ),
        (
            "seed = 7",
            "seed = 99999999999999999999",
            "2: field `seed`: invalid value: number too large to fit in target type (an integer is at most 9223372036854775807)",
        ),
        (
            "timeout = \"10s\"",
            "timeout = \"0s\"",
            "15: field `migrations[0].timeout`: must be at least 1ms, found 0ms",
        ),
    ] {
        assert!(SCENARIO.contains(from), "{from}");
        std::fs::write(&file, SCENARIO.replace(from, to)).expect("write the scenario");
        let run = regmig(&[
            "sim",
            "run",
            path_str(&file),
            "--data-dir",
            path_str(&data_dir),
        ])
        .expect_code(2);
        assert_eq!(run.stderr, format!("error: {file_name}:{message}\n"), "{to}");
        assert_eq!(run.stdout, "", "{to}");
        assert!(!data_dir.exists(), "{to}: a log was written");
    }
    // The unchanged scenario runs.
    std::fs::write(&file, SCENARIO).expect("write the scenario");
    regmig(&[
        "sim",
        "run",
        path_str(&file),
        "--data-dir",
        path_str(&data_dir),
    ])
    .expect_code(0);
}

#[test]
fn fuzz_seeds_stop_at_the_largest_seed_a_scenario_file_can_hold() {
    let run = regmig(&[
        "sim",
        "fuzz",
        "--seeds",
        "9223372036854775806..9223372036854775809",
    ])
    .expect_code(2);
    assert_eq!(
        run.stderr,
        "error: --seeds: the range \"9223372036854775806..9223372036854775809\" goes past the largest seed, 9223372036854775807: a seed is written into its scenario file, where an integer is at most 9223372036854775807\n"
    );
    assert_eq!(run.stdout, "");
    // The largest seed itself runs, and its scenario file parses.
    let run = regmig(&[
        "sim",
        "fuzz",
        "--seeds",
        "9223372036854775806..9223372036854775808",
    ])
    .expect_code(0);
    assert!(run.stdout.ends_with(": 0 failed\n"), "{}", run.stdout);
    let run = regmig(&["sim", "fuzz", "--seeds", "0..1000001"]).expect_code(2);
    assert_eq!(
        run.stderr,
        "error: --seeds: the range \"0..1000001\" holds 1000001 seeds, more than the 1000000 one run may take\n"
    );
}

#[test]
fn an_integer_too_large_names_its_field_under_its_table() {
    let text = format!(
        "{SCENARIO}\n[[migrations]]\nregion = \"1024:1\"\nfrom = 18446744073709551616\nto = 2\n"
    );
    let error = regmig_tools::sim::scenario::parse_scenario(&text, "big.toml").unwrap_err();
    assert_eq!(
        error.to_string(),
        "big.toml:20: field `migrations[1].from`: invalid value: number too large to fit in target type (an integer is at most 9223372036854775807)"
    );
    // A syntax error outside a value is still a syntax error.
    let error = regmig_tools::sim::scenario::parse_scenario("name = \"x\"\n[cluster\n", "bad.toml")
        .unwrap_err();
    assert!(
        error.to_string().starts_with("bad.toml:2: invalid TOML: "),
        "{error}"
    );
}

/// The values every option is fed: empty, negative, overflowing, not UTF-8, huge, and
/// text with control characters.
fn bad_values() -> Vec<(&'static str, std::ffi::OsString)> {
    use std::os::unix::ffi::OsStringExt;
    vec![
        ("empty", "".into()),
        ("negative", "-1".into()),
        ("overflowing", "18446744073709551616".into()),
        // 2^128: too large for any integer, and too long to be a uuid.
        (
            "far overflowing",
            "340282366920938463463374607431768211456".into(),
        ),
        (
            "not UTF-8",
            std::ffi::OsString::from_vec(vec![b'1', 0xff, 0xfe]),
        ),
        ("huge number", "9".repeat(5_000).into()),
        ("huge text", "x".repeat(100_000).into()),
        ("control characters", "1\n\u{1b}[31m".into()),
    ]
}

/// Runs `regmig` with `args` in `cwd`; returns the exit code and stderr.
fn run_os(cwd: &Path, args: &[std::ffi::OsString]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("run regmig");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_option_refuses_bad_values_without_a_panic_or_a_write() {
    let cwd = tempfile::tempdir().expect("a temporary directory");
    let absent = cwd.path().join("absent");
    let id = cli_support::COMPLETED_ID;
    // `V` marks where the bad value goes.
    let commands: Vec<Vec<&str>> = vec![
        vec!["demo", "--datanodes", "V"],
        vec!["demo", "--tables", "V"],
        vec!["demo", "--regions-per-table", "V"],
        vec!["demo", "--seed", "V"],
        vec!["demo", "--exit-after-events", "V"],
        vec!["demo", "--exit-after-setup-writes", "V"],
        vec!["list", "--region", "V"],
        vec!["list", "--peer", "V"],
        vec!["list", "--table", "V"],
        vec!["list", "--since", "V"],
        vec!["list", "--until", "V"],
        vec!["list", "--state", "V"],
        vec!["list", "--outcome", "V"],
        vec!["audit", "--format", "V"],
        vec!["audit", "--region", "V"],
        vec!["audit", "--peer", "V"],
        vec!["audit", "--since", "V"],
        vec!["show", "V"],
        vec!["events", "V"],
        vec!["replay", "V"],
        vec!["replay", id, "--until", "V"],
        vec!["export", "V", "-o", "b.bundle"],
        vec!["timeline", "V", "-o", "t.svg"],
        vec!["timeline", "--region", "V", "-o", "t.svg"],
        vec!["sim", "fuzz", "--seeds", "V"],
    ];
    for command in &commands {
        for (label, value) in bad_values() {
            let mut args: Vec<std::ffi::OsString> = command
                .iter()
                .map(|arg| {
                    if *arg == "V" {
                        value.clone()
                    } else {
                        std::ffi::OsString::from(arg)
                    }
                })
                .collect();
            if command[0] != "sim" {
                args.push("--data-dir".into());
                args.push(absent.clone().into_os_string());
            }
            let (code, stderr) = run_os(cwd.path(), &args);
            assert_eq!(code, 2, "{command:?} with {label}: {stderr}");
            assert!(
                !stderr.contains("panicked"),
                "{command:?} with {label}: {stderr}"
            );
            assert!(
                stderr.starts_with("error: "),
                "{command:?} with {label}: {stderr}"
            );
            assert_eq!(
                tree(cwd.path()),
                Vec::new(),
                "{command:?} with {label} wrote something"
            );
        }
    }
}

#[test]
fn every_path_option_refuses_bad_paths_without_a_panic_or_a_write() {
    let cwd = tempfile::tempdir().expect("a temporary directory");
    let copy = cli_support::fixture_copy();
    let fixture = copy.data_dir();
    let id = cli_support::COMPLETED_ID;
    let bad_paths: Vec<(&str, std::ffi::OsString)> = vec![
        ("huge name", "x".repeat(5_000).into()),
        ("under a file", "/dev/null/x".into()),
        (
            "under a regular file",
            copy.path("file").join("x").into_os_string(),
        ),
    ];
    std::fs::write(copy.path("file"), "a regular file").expect("write a file");
    let fixture_arg = fixture.to_str().expect("a UTF-8 path");
    let commands: Vec<Vec<&str>> = vec![
        vec!["demo", "--data-dir", "V"],
        vec!["list", "--data-dir", "V"],
        vec!["show", id, "--data-dir", "V"],
        vec!["audit", "--data-dir", "V"],
        vec!["replay", "--file", "V"],
        vec!["sim", "run", "V"],
        vec!["export", id, "-o", "V", "--data-dir", fixture_arg],
        vec!["timeline", id, "-o", "V", "--data-dir", fixture_arg],
    ];
    for command in &commands {
        for (label, value) in &bad_paths {
            let args: Vec<std::ffi::OsString> = command
                .iter()
                .map(|arg| {
                    if *arg == "V" {
                        value.clone()
                    } else {
                        std::ffi::OsString::from(arg)
                    }
                })
                .collect();
            let (code, stderr) = run_os(cwd.path(), &args);
            assert!(
                code == 1 || code == 2,
                "{command:?} with {label}: exit {code}: {stderr}"
            );
            assert!(
                !stderr.contains("panicked"),
                "{command:?} with {label}: {stderr}"
            );
            assert!(
                stderr.starts_with("error: "),
                "{command:?} with {label}: {stderr}"
            );
            assert_eq!(
                tree(cwd.path()),
                Vec::new(),
                "{command:?} with {label} wrote something"
            );
        }
    }
}

#[test]
fn the_demo_refuses_a_log_that_is_not_a_demo_campaigns() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let data_dir = temp.path().join("log");
    let scenario = scenario_file("start_opens_candidate_and_completes.toml");
    regmig(&[
        "sim",
        "run",
        path_str(&scenario),
        "--data-dir",
        path_str(&data_dir),
    ])
    .expect_code(0);
    let run = demo_in(&data_dir, &[]).expect_code(2);
    assert_eq!(
        run.stderr,
        format!(
            "error: {} holds a log that is not a demo campaign's; use another --data-dir\n",
            data_dir.display()
        )
    );
    let list = regmig(&["list", "--json", "--data-dir", path_str(&data_dir)]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&list.stdout).expect("JSON");
    assert_eq!(document["count"], 1, "the demo added migrations");
}

/// A path the user typed comes back in an error with its control characters escaped (an
/// ESC would reach the terminal as the start of an escape sequence), on one line; the
/// JSON error keeps it exactly.
#[test]
fn control_characters_in_paths_are_escaped_in_errors() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let hostile = temp.path().join("data\u{1b}[31m\nred");
    let shown = format!("{}/data\\u{{1b}}[31m\\nred", path_str(temp.path()));
    let copy = cli_support::fixture_copy();
    let fixture = copy.data_dir();
    let output = hostile.join("b.bundle");
    let cases: [(Vec<&str>, String); 3] = [
        (
            vec!["list", "--data-dir", path_str(&hostile)],
            format!("error: data directory {shown} does not exist\n"),
        ),
        (
            vec!["log", "verify", "--data-dir", path_str(&hostile)],
            format!("error: data directory {shown} does not exist\n"),
        ),
        (
            vec![
                "export",
                cli_support::COMPLETED_ID,
                "-o",
                path_str(&output),
                "--data-dir",
                path_str(&fixture),
            ],
            format!(
                "error: bundle {shown}/b.bundle: could not write: No such file or directory (os error 2)\n"
            ),
        ),
    ];
    for (args, stderr) in cases {
        let run = regmig(&args);
        assert_no_panic(&run);
        assert_eq!(run.stderr, stderr, "regmig {args:?}");
        assert!(!run.stderr.contains('\u{1b}'), "regmig {args:?}");
    }
    let run = regmig(&["list", "--json", "--data-dir", path_str(&hostile)]).expect_code(1);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        document["error"]["message"],
        format!("data directory {} does not exist", path_str(&hostile))
    );
}

/// `replay --file` reads no log: a `--data-dir` or `--store` given with it is refused
/// (exit 2, naming both) instead of being ignored; the environment's REGMIG_DATA_DIR, set
/// for every command, is not a `--data-dir` given to this one.
#[test]
fn replay_file_refuses_a_log_given_with_it() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let bundle = temp.path().join("absent.bundle");
    for (option, value) in [
        ("--data-dir", "somewhere"),
        ("--store", "postgres://regmig@localhost/regmig"),
    ] {
        let run = regmig(&["replay", "--file", path_str(&bundle), option, value]).expect_code(2);
        assert_eq!(
            run.stderr,
            format!("error: --file and {option} exclude each other: a bundle is replayed from its file alone, never from a log\n")
        );
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(["replay", "--file", path_str(&bundle)])
        .env("REGMIG_DATA_DIR", temp.path())
        .output()
        .expect("run regmig");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: bundle {}: could not read: No such file or directory (os error 2)\n",
            bundle.display()
        )
    );
}

/// An option on the command line beats the other option's environment variable: with
/// REGMIG_DATA_DIR exported, every `--store` command used to be refused as "`--store`
/// cannot be used with `--data-dir`" (clap counts a value from the environment as given),
/// and `--data-dir` with REGMIG_STORE exported the same way.
#[test]
fn an_option_on_the_command_line_beats_the_other_options_environment_variable() {
    let fixture = cli_support::fixture_copy();
    let data_dir = fixture.data_dir();
    let data_dir = path_str(&data_dir);
    // Port 1 on loopback: nothing listens, so the store cannot be reached.
    let store = "postgres://nobody@127.0.0.1:1/nothing";
    let plain = regmig_with_env(&["list", "--data-dir", data_dir], &[]).expect_code(0);
    let listed = regmig_with_env(
        &["list", "--data-dir", data_dir],
        &[("REGMIG_STORE", store)],
    )
    .expect_code(0);
    assert_eq!(listed.stdout, plain.stdout);

    let stored = regmig_with_env(
        &["list", "--store", store],
        &[("REGMIG_DATA_DIR", data_dir)],
    );
    assert_no_panic(&stored);
    assert_eq!(stored.code, 1, "{}", stored.stderr);
    assert!(
        stored.stderr.contains("127.0.0.1:1"),
        "the error names the store: {}",
        stored.stderr
    );
    assert!(
        !stored.stderr.contains("cannot be used with"),
        "{}",
        stored.stderr
    );

    // Both exported and neither given: which one is meant is not known, so it is refused.
    let both = regmig_with_env(
        &["list"],
        &[("REGMIG_STORE", store), ("REGMIG_DATA_DIR", data_dir)],
    );
    assert_eq!(both.code, 2, "{}", both.stderr);
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
}
