//! `regmig log verify --data-dir DIR [--json]`: checks every record and index entry of a
//! data directory's event log and names every problem. Exit 0 when clean, 1 otherwise.
//! With `--archive ARCHIVE_DIR` it also proves that the archive joins the live log without
//! a gap ([`regmig::archive::verify_archive`]); an archive that does not is a problem.

use std::path::Path;

use serde_json::json;

use regmig::archive::{verify_archive, ArchiveError};
use regmig::log::keys::hex;
use regmig::log::{EventLog, LogError, VerifyReport};

use super::EXIT_FAILED;

/// Runs the command; returns the exit code.
pub fn run(data_dir: &Path, archive: Option<&Path>, json: bool) -> u8 {
    let report = open_and_verify(data_dir, archive);
    match (&report, json) {
        (Ok((report, joined)), false) => print_text(data_dir, report, archive, joined.as_ref()),
        (Ok((report, joined)), true) => println!(
            "{}",
            report_json(data_dir, report, archive, joined.as_ref())
        ),
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
        Ok((report, None | Some(Ok(_)))) if report.is_clean() => 0,
        _ => EXIT_FAILED,
    }
}

/// What `--archive` found: the archive's records and manifests, or why it does not join.
type Joined = Result<(usize, usize), ArchiveError>;

fn open_and_verify(
    data_dir: &Path,
    archive: Option<&Path>,
) -> Result<(VerifyReport, Option<Joined>), LogError> {
    // A private copy: verifying writes nothing into the directory.
    let log = EventLog::open_read_only(data_dir)?;
    let report = log.verify()?;
    let joined = archive.map(|dir| {
        verify_archive(&log, dir).map(|contents| (contents.manifests.len(), contents.records.len()))
    });
    Ok((report, joined))
}

fn archive_text(report: &VerifyReport, archive: Option<&Path>, joined: Option<&Joined>) -> String {
    match (archive, joined) {
        (Some(dir), Some(Ok((manifests, records)))) => format!(
            "{}: {manifests} manifests, {records} records, chained from global seq 1 and joined to the live log at global seq {}",
            dir.display(),
            report.archived_to_global_seq
        ),
        (Some(dir), Some(Err(error))) => format!("{}: DOES NOT JOIN: {error}", dir.display()),
        _ if report.archived_to_global_seq > 0 => format!(
            "global seqs 1 to {} are archived (not checked: pass --archive DIR)",
            report.archived_to_global_seq
        ),
        _ => "none".to_string(),
    }
}

/// How the chain reads, in one line.
fn chain_text(report: &VerifyReport) -> String {
    let chain = &report.chain;
    match chain.chained_from_global_seq {
        None if chain.records == 0 && report.archived_to_global_seq > 0 => format!(
            "no live records: everything up to global seq {} is archived, chain hash there {}",
            report.archived_to_global_seq,
            hex(&chain.head_hash)
        ),
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

fn print_text(
    data_dir: &Path,
    report: &VerifyReport,
    archive: Option<&Path>,
    joined: Option<&Joined>,
) {
    println!("event log:       {}", data_dir.display());
    println!("events:          {}", report.events);
    println!("procedures:      {}", report.procedures);
    println!("open procedures: {}", report.open_procedures);
    println!("chain:           {}", chain_text(report));
    println!("archive:         {}", archive_text(report, archive, joined));
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
    if let Some(Err(_)) = joined {
        println!("DAMAGED: the archive does not join the live log");
    } else if report.is_clean() && !data_dir.join(regmig::log::MARK_FILE_NAME).exists() {
        println!("ok: every record and index entry checks out; the log has no mark yet (an older regmig wrote it; the next writer adds one)");
    } else if report.is_clean() {
        println!("ok: every record, index entry and chain link checks out, and the log ends where its mark says");
    } else {
        println!("DAMAGED: {} problems found", report.problem_count());
    }
}

fn report_json(
    data_dir: &Path,
    report: &VerifyReport,
    archive: Option<&Path>,
    joined: Option<&Joined>,
) -> serde_json::Value {
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
        "ok": report.is_clean() && !matches!(joined, Some(Err(_))),
        "archived_to_global_seq": report.archived_to_global_seq,
        "archive": archive.map(|dir| json!({
            "dir": dir.display().to_string(),
            "joins": matches!(joined, Some(Ok(_))),
            "text": archive_text(report, archive, joined),
        })),
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
