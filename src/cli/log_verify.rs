//! `regmig log verify --data-dir DIR [--json]`: checks every record and index entry of a
//! data directory's event log and names every problem. Exit 0 when clean, 1 otherwise.

use std::path::Path;

use serde_json::json;

use crate::log::{EventLog, LogError, LogOptions, VerifyReport, SLED_SUBDIR};

use super::EXIT_FAILED;

/// Runs the command; returns the exit code.
pub fn run(data_dir: &Path, json: bool) -> u8 {
    let report = open_and_verify(data_dir);
    match (&report, json) {
        (Ok(report), false) => print_text(data_dir, report),
        (Ok(report), true) => println!("{}", report_json(data_dir, report)),
        (Err(error), false) => eprintln!("error: {error}"),
        (Err(error), true) => println!(
            "{}",
            json!({
                "data_dir": data_dir.display().to_string(),
                "ok": false,
                "error": { "kind": error.kind_name(), "message": error.to_string() },
            })
        ),
    }
    match report {
        Ok(report) if report.is_clean() => 0,
        _ => EXIT_FAILED,
    }
}

fn open_and_verify(data_dir: &Path) -> Result<VerifyReport, LogError> {
    if !data_dir.exists() {
        return Err(LogError::MissingDataDir {
            dir: data_dir.to_path_buf(),
        });
    }
    // Opening would create an empty log: a directory without one is reported instead.
    let sled_dir = data_dir.join(SLED_SUBDIR);
    if !sled_dir.is_dir() {
        return Err(LogError::io(
            "find the event log in",
            data_dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} does not exist: this directory holds no regmig event log",
                    sled_dir.display()
                ),
            ),
        ));
    }
    let log = EventLog::open_existing(data_dir, LogOptions::default())?;
    log.verify()
}

fn print_text(data_dir: &Path, report: &VerifyReport) {
    println!("event log:       {}", data_dir.display());
    println!("events:          {}", report.events);
    println!("procedures:      {}", report.procedures);
    println!("open procedures: {}", report.open_procedures);
    println!("problems:        {}", report.problem_count());
    for problem in &report.problems {
        println!("  - {}: {problem}", problem.kind_name());
    }
    if report.problems_omitted > 0 {
        println!(
            "  ... and {} more problems not listed",
            report.problems_omitted
        );
    }
    if report.is_clean() {
        println!("ok: every record and index entry checks out");
    } else {
        println!("DAMAGED: {} problems found", report.problem_count());
    }
}

fn report_json(data_dir: &Path, report: &VerifyReport) -> serde_json::Value {
    let problems: Vec<serde_json::Value> = report
        .problems
        .iter()
        .map(|problem| {
            json!({
                "kind": problem.kind_name(),
                "procedure_id": problem.procedure_id().map(|id| id.to_string()),
                "seq": problem.seq(),
                "key": problem.key(),
                "message": problem.to_string(),
            })
        })
        .collect();
    json!({
        "data_dir": data_dir.display().to_string(),
        "ok": report.is_clean(),
        "events": report.events,
        "procedures": report.procedures,
        "open_procedures": report.open_procedures,
        "problem_count": report.problem_count(),
        "problems_omitted": report.problems_omitted,
        "problems": problems,
    })
}
