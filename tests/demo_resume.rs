//! A killed demo, run again, ends exactly as an uninterrupted one: the same migrations
//! (region, from, to, phase) with the same outcomes, wherever the kill fell.

use std::path::Path;
use std::process::Command;

/// A campaign small enough to run often, large enough to hold every injected fault (an
/// aborted migration included: the candidate on datanode 4 loses its region).
const SIZE: [&str; 6] = [
    "--datanodes",
    "5",
    "--tables",
    "6",
    "--regions-per-table",
    "5",
];

/// A campaign whose setup is a dozen durable writes (two tables), to kill it after each.
const SETUP_SIZE: [&str; 6] = [
    "--datanodes",
    "5",
    "--tables",
    "2",
    "--regions-per-table",
    "5",
];

/// Runs the demo with `args`; returns its exit code, 0 or, when `args` asked for it, the
/// kill's 137.
fn run_demo(dir: &Path, args: &[&str]) -> i32 {
    let output = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(["demo", "--json"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run regmig demo");
    let code = output.status.code().unwrap_or(-1);
    let killed_on_purpose = args.iter().any(|arg| arg.starts_with("--exit-after"));
    assert!(
        code == 0 || (code == 137 && killed_on_purpose),
        "demo exited {code}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    code
}

/// Runs the demo; returns its exit code.
fn demo(dir: &Path, exit_after_events: Option<u64>) -> i32 {
    let limit = exit_after_events.map(|events| events.to_string());
    let mut args = SIZE.to_vec();
    if let Some(limit) = &limit {
        args.extend(["--exit-after-events", limit]);
    }
    run_demo(dir, &args)
}

/// Every migration of a data directory: (trigger, region, from, to, outcome), sorted.
fn migrations(dir: &Path) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(["audit", "--format", "json", "--data-dir"])
        .arg(dir)
        .output()
        .expect("run regmig audit");
    assert!(output.status.success(), "{output:?}");
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("audit prints JSON");
    let mut rows: Vec<String> = document["migrations"]
        .as_array()
        .expect("a migrations array")
        .iter()
        .map(|row| {
            format!(
                "{} {} {}->{} {}",
                row["trigger"], row["region"], row["from_peer"], row["to_peer"], row["outcome"]
            )
        })
        .collect();
    rows.sort();
    rows
}

fn uninterrupted() -> Vec<String> {
    let temp = tempfile::tempdir().expect("a temporary directory");
    assert_eq!(demo(temp.path(), None), 0);
    let rows = migrations(temp.path());
    assert_eq!(rows.len(), 18, "{rows:#?}");
    assert_eq!(
        rows.iter()
            .filter(|row| row.ends_with("\"aborted\""))
            .count(),
        1,
        "{rows:#?}"
    );
    rows
}

/// Kills the demo after `events` appended events, runs it again to the end; returns the
/// migrations it ended with.
fn killed_then_resumed(events: &[u64]) -> Vec<String> {
    let temp = tempfile::tempdir().expect("a temporary directory");
    for &limit in events {
        if demo(temp.path(), Some(limit)) == 0 {
            break;
        }
    }
    assert_eq!(demo(temp.path(), None), 0);
    migrations(temp.path())
}

#[test]
fn a_demo_killed_at_many_points_ends_as_an_uninterrupted_one() {
    let expected = uninterrupted();
    for events in [1, 9, 30, 60, 100, 150, 220, 310, 340, 380, 460] {
        assert_eq!(
            killed_then_resumed(&[events]),
            expected,
            "killed after {events} events"
        );
    }
}

/// The migrations of an uninterrupted campaign of `SETUP_SIZE`.
fn uninterrupted_small() -> Vec<String> {
    let temp = tempfile::tempdir().expect("a temporary directory");
    assert_eq!(run_demo(temp.path(), &SETUP_SIZE), 0);
    let rows = migrations(temp.path());
    assert!(!rows.is_empty(), "the campaign has migrations to compare");
    rows
}

#[test]
fn a_demo_killed_after_any_write_of_its_setup_ends_as_an_uninterrupted_one() {
    let expected = uninterrupted_small();
    let mut writes: u64 = 1;
    loop {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let limit = writes.to_string();
        let killed = [&SETUP_SIZE[..], &["--exit-after-setup-writes", &limit]].concat();
        if run_demo(temp.path(), &killed) == 0 {
            // The setup made fewer writes: a kill after each one was tried.
            break;
        }
        assert_eq!(run_demo(temp.path(), &SETUP_SIZE), 0);
        assert_eq!(
            migrations(temp.path()),
            expected,
            "killed after {writes} setup writes"
        );
        writes += 1;
        assert!(writes <= 100, "the setup never ended");
    }
    // The config, the phase, and each table's info and route at least: the kills fell
    // inside the setup, not only after it.
    assert!(writes > 2 + 2 * 2, "the setup made {} writes", writes - 1);
}

#[test]
fn a_demo_killed_in_its_setup_finishes_the_campaign_it_began_whatever_the_new_arguments() {
    let expected = uninterrupted_small();
    let temp = tempfile::tempdir().expect("a temporary directory");
    // Part-way through the first table's layout.
    let killed = [&SETUP_SIZE[..], &["--exit-after-setup-writes", "3"]].concat();
    assert_eq!(run_demo(temp.path(), &killed), 137);
    let other_size = ["--tables", "3", "--regions-per-table", "4"];
    assert_eq!(run_demo(temp.path(), &other_size), 0);
    assert_eq!(migrations(temp.path()), expected);
}

#[test]
fn a_demo_killed_again_and_again_ends_as_an_uninterrupted_one() {
    let expected = uninterrupted();
    assert_eq!(killed_then_resumed(&[40; 30]), expected);
}

#[test]
#[ignore = "long: a kill after every third event (cargo test --test demo_resume -- --ignored)"]
fn a_demo_killed_after_any_event_ends_as_an_uninterrupted_one() {
    let expected = uninterrupted();
    for events in (1..600).step_by(3) {
        assert_eq!(
            killed_then_resumed(&[events]),
            expected,
            "killed after {events} events"
        );
    }
}

#[test]
fn a_demo_killed_by_a_signal_at_several_moments_ends_as_an_uninterrupted_one() {
    let expected = uninterrupted();
    for delay_ms in [40, 120, 250, 500] {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let mut child = Command::new(env!("CARGO_BIN_EXE_regmig"))
            .args(["demo", "--json"])
            .args(SIZE)
            .arg("--data-dir")
            .arg(temp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start regmig demo");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        // SIGKILL: no handler runs, as when an operator kills -9 it.
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(demo(temp.path(), None), 0);
        assert_eq!(
            migrations(temp.path()),
            expected,
            "killed after {delay_ms} ms"
        );
    }
}
