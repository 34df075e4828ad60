//! `regmig bench` as a user runs it: the table on stdout, progress on stderr.

use std::process::Command;

#[test]
fn with_stderr_not_a_terminal_bench_prints_timestamped_steps_and_no_bar() {
    let work = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args([
            "bench",
            "--quick",
            "--only",
            "5",
            "--no-cache",
            "--work-dir",
        ])
        .arg(work.path())
        .output()
        .expect("run regmig bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    // The steps as plain lines ("[   0.0 s] 5: ..."), nothing a bar would draw.
    let steps: Vec<&str> = stderr.lines().collect();
    assert_eq!(steps.len(), 1, "{stderr:?}");
    let (time, step) = steps[0].split_once("] ").expect("a timestamped line");
    assert!(
        time.strip_prefix('[')
            .and_then(|time| time.trim().strip_suffix(" s"))
            .is_some_and(|seconds| seconds.parse::<f64>().is_ok()),
        "{stderr:?}"
    );
    assert_eq!(step, "5: decoding and folding events");
    assert!(!stderr.contains(['\r', '\u{1b}']), "{stderr:?}");
    // The table alone on stdout.
    assert!(stdout.starts_with("regmig bench (QUICK sizes"), "{stdout}");
    assert!(!stdout.contains(['\r', '\u{1b}']), "{stdout:?}");
    assert_eq!(
        stdout
            .lines()
            .filter(|line| line.starts_with("| 5 |"))
            .count(),
        1,
        "{stdout}"
    );
}
