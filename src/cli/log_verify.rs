//! `regmig log verify --data-dir DIR [--json]`: checks every record and index entry of a
//! data directory's event log and names every problem. Exit 0 when clean, 1 otherwise.

use std::path::Path;

use serde_json::json;

use crate::log::keys::hex;
use crate::log::{EventLog, LogError, VerifyReport};

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
    // A private copy: verifying writes nothing into the directory.
    let log = EventLog::open_read_only(data_dir)?;
    log.verify()
}

/// How the chain reads, in one line.
fn chain_text(report: &VerifyReport) -> String {
    let chain = &report.chain;
    match chain.chained_from_global_seq {
        None if chain.records == 0 => "empty log, no chain yet".to_string(),
        None => format!(
            "none: format version 1 records only (written before the chain existed), {} records",
            chain.records
        ),
        Some(from) => format!(
            "global seq {from} to {}, head hash {}",
            chain.head_global_seq,
            hex(&chain.head_hash)
        ),
    }
}

fn print_text(data_dir: &Path, report: &VerifyReport) {
    println!("event log:       {}", data_dir.display());
    println!("events:          {}", report.events);
    println!("procedures:      {}", report.procedures);
    println!("open procedures: {}", report.open_procedures);
    println!("chain:           {}", chain_text(report));
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
    if report.is_clean() && !data_dir.join(crate::log::MARK_FILE_NAME).exists() {
        println!("ok: every record and index entry checks out; the log has no mark yet (an older regmig wrote it; the next writer adds one)");
    } else if report.is_clean() {
        println!("ok: every record, index entry and chain link checks out, and the log ends where its mark says");
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
        "chain": {
            "chained_from_global_seq": report.chain.chained_from_global_seq,
            "head_global_seq": report.chain.head_global_seq,
            "head_hash": hex(&report.chain.head_hash),
            "records": report.chain.records,
        },
        "problem_count": report.problem_count(),
        "problems_omitted": report.problems_omitted,
        "problems": problems,
    })
}
