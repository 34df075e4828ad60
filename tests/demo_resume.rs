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

/// Runs the demo; returns its exit code.
fn demo(dir: &Path, exit_after_events: Option<u64>) -> i32 {
    let mut command = Command::new(env!("CARGO_BIN_EXE_regmig"));
    command
        .args(["demo", "--json"])
        .args(SIZE)
        .arg("--data-dir")
        .arg(dir);
    if let Some(events) = exit_after_events {
        command.args(["--exit-after-events", &events.to_string()]);
    }
    let output = command.output().expect("run regmig demo");
    let code = output.status.code().unwrap_or(-1);
    assert!(
        code == 0 || (code == 137 && exit_after_events.is_some()),
        "demo exited {code}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    code
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
