//! The demo, the README's main job: a short campaign, and a kill followed by a resume.

use std::process::Command;

fn demo(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args([
            "demo",
            "--json",
            "--datanodes",
            "3",
            "--tables",
            "4",
            "--regions-per-table",
            "5",
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run regmig demo")
}

fn parse_summary(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "demo output is not JSON ({error}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn a_short_demo_campaign_finishes_with_every_invariant_holding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = demo(dir.path(), &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = parse_summary(&output);
    assert_eq!(summary["regions"], 20);
    assert_eq!(summary["invariant_violations"], serde_json::json!([]));
    let all_time = &summary["all_time"];
    assert!(
        all_time["migrations"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert_eq!(all_time["unfinished"], 0);
    assert_eq!(
        all_time["migrations"].as_u64(),
        Some(
            all_time["completed"].as_u64().unwrap_or(0)
                + all_time["aborted"].as_u64().unwrap_or(0)
                + all_time["failed"].as_u64().unwrap_or(0)
        )
    );
    // Run again: the campaign is complete, nothing starts over.
    let again = parse_summary(&demo(dir.path(), &[]));
    assert_eq!(again["this_run"]["migrations"], 0);
    assert_eq!(again["all_time"]["migrations"], all_time["migrations"]);
}

#[test]
fn a_killed_demo_resumes_its_open_migrations_and_finishes_the_campaign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let killed = demo(dir.path(), &["--exit-after-events", "120"]);
    assert_eq!(
        killed.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let resumed = demo(dir.path(), &[]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let summary = parse_summary(&resumed);
    assert!(
        summary["resumed"].as_u64().unwrap_or(0) > 0,
        "nothing was resumed: {summary}"
    );
    assert_eq!(summary["all_time"]["unfinished"], 0);
    assert_eq!(summary["invariant_violations"], serde_json::json!([]));
    let verify = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(["log", "verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run regmig log verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
