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

/// The value of one Prometheus sample line `name{labels} value`, if the text has it.
fn prometheus_sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

#[test]
fn with_json_the_metrics_text_is_a_field_and_stdout_is_one_json_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = demo(dir.path(), &["--metrics"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // With --json, stdout is one JSON document: the metrics text is its "metrics" field.
    let summary = parse_summary(&output);
    let metrics = summary["metrics"]
        .as_str()
        .unwrap_or_else(|| panic!("no metrics text in {summary}"))
        .to_string();
    let this_run = &summary["this_run"];
    for outcome in ["completed", "aborted", "failed"] {
        let series = format!("regmig_migrations_finished_total{{outcome=\"{outcome}\"}}");
        assert_eq!(
            prometheus_sample(&metrics, &series).unwrap_or(0),
            this_run[outcome].as_u64().unwrap(),
            "{series} in:\n{metrics}"
        );
    }
    assert_eq!(
        prometheus_sample(&metrics, "regmig_migrations_submitted_total"),
        this_run["migrations"].as_u64()
    );
    assert_eq!(
        prometheus_sample(&metrics, "regmig_retries_total{scope=\"state\"}").unwrap_or(0),
        this_run["retries"].as_u64().unwrap(),
        "{metrics}"
    );
    for family in [
        "regmig_state_duration_seconds",
        "regmig_write_pause_seconds",
        "regmig_log_append_seconds",
        "regmig_instructions_sent_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{family} missing from:\n{metrics}"
        );
    }
}

#[test]
fn without_json_the_metrics_text_follows_the_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(["demo", "--metrics", "--datanodes", "3", "--tables", "4"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run regmig demo");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary_end = stdout.find("regmig log verify").expect("the summary");
    let metrics_start = stdout
        .find("# TYPE regmig_migrations_submitted_total ")
        .expect("the metrics text");
    assert!(summary_end < metrics_start, "{stdout}");
}

/// The progress bar's marks: a redraw starts with a carriage return or an escape code.
fn bar_marks(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| line.contains('\r') || line.contains('\u{1b}') || line.contains("=>"))
        .collect()
}

#[test]
fn with_stderr_not_a_terminal_the_demo_draws_no_bar_and_says_its_phases_on_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args([
            "demo",
            "--datanodes",
            "3",
            "--tables",
            "2",
            "--regions-per-table",
            "3",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run regmig demo");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr, "", "stderr: {stderr:?}");
    assert_eq!(bar_marks(&stdout), Vec::<&str>::new(), "{stdout}");
    let phases: Vec<&str> = stdout
        .lines()
        .filter(|line| line.ends_with(" migrations") && line.contains(": "))
        .collect();
    assert_eq!(phases.len(), 2, "{stdout}");
    assert!(phases[0].starts_with("rebalance: "), "{stdout}");
    assert!(phases[1].starts_with("evacuate datanode 3: "), "{stdout}");
}
