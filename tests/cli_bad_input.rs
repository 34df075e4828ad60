//! Issue 13, "every bad input gets a clear error": one test per finding, each with the
//! exact exit code and message, and nothing written when the input is refused.

mod cli_support;

use std::path::Path;

use cli_support::{regmig, Run};
use regmig::sim::campaign::{CampaignConfig, CampaignRecord};

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
            vec!["--tables", "100", "--regions-per-table", "51"],
            "error: --tables × --regions-per-table is 100 × 51 = 5100, outside the allowed range 1..=5000 regions\n",
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
