//! `regmig log archive --before T --to DIR --data-dir D [--json]`: moves every migration
//! that finished before T (as far as the log can cut a prefix of its global order) into
//! bundles and a manifest in DIR, then removes them from the live log in one step, leaving
//! a checkpoint. Exit 0 when done (also when nothing could be archived), 1 on an error.

use std::path::Path;

use serde_json::json;

use regmig::archive::{archive_before, ArchiveReport};
use regmig::log::keys::hex;
use regmig::log::{EventLog, LogOptions};

use super::common::{print_failure, refuse_inside, report_error};
use super::EXIT_FAILED;

/// Runs the command; returns the exit code.
pub fn run(data_dir: &Path, before_ms: u64, to: &Path, json: bool) -> u8 {
    if let Err(error) = refuse_inside(to, data_dir, "the archive directory") {
        return report_error(&error, json);
    }
    let result = EventLog::open_existing(data_dir, LogOptions::default())
        .map_err(regmig::archive::ArchiveError::from)
        .and_then(|log| archive_before(&log, before_ms, to));
    match result {
        Ok(report) if json => {
            println!("{}", report_json(data_dir, to, &report));
            0
        }
        Ok(report) => {
            print_text(data_dir, to, &report);
            0
        }
        Err(error) => {
            print_failure(error.kind_name(), &error, json);
            EXIT_FAILED
        }
    }
}

fn stopped_text(report: &ArchiveReport) -> Option<String> {
    report
        .stopped_by
        .as_ref()
        .map(|(procedure_id, reason)| format!("migration {procedure_id}: {reason}"))
}

fn print_text(data_dir: &Path, to: &Path, report: &ArchiveReport) {
    println!("event log:           {}", data_dir.display());
    println!("archive:             {}", to.display());
    match &report.manifest {
        Some(manifest) => println!("manifest:            {}", manifest.display()),
        None => println!("manifest:            none written: nothing could be archived"),
    }
    println!("migrations archived: {}", report.migrations);
    println!("events archived:     {}", report.events);
    if let Some(checkpoint) = &report.checkpoint {
        println!(
            "checkpoint:          global seqs 1 to {} are archived, chain hash there {}",
            checkpoint.cut_global_seq,
            hex(&checkpoint.hash_at_cut)
        );
    }
    if let Some(stopped) = stopped_text(report) {
        println!("the cut stops at:    {stopped} (it and everything after it stay live)");
    }
}

fn report_json(data_dir: &Path, to: &Path, report: &ArchiveReport) -> serde_json::Value {
    json!({
        "ok": true,
        "data_dir": data_dir.display().to_string(),
        "archive": to.display().to_string(),
        "manifest": report.manifest.as_ref().map(|path| path.display().to_string()),
        "migrations": report.migrations,
        "events": report.events,
        "checkpoint": report.checkpoint.as_ref().map(|checkpoint| json!({
            "archive_dir": checkpoint.archive_dir,
            "cut_global_seq": checkpoint.cut_global_seq,
            "hash_at_cut": hex(&checkpoint.hash_at_cut),
            "manifest_sha256": hex(&checkpoint.manifest_sha256),
        })),
        "stopped_by": stopped_text(report),
    })
}

/// `regmig log compact --data-dir D --to NEW [--json]`: copies the log into a new data
/// directory whose files hold only what is live (sled does not shrink its files after an
/// archive). D is held and only read. Exit 0 when the new log was written and verifies.
pub fn run_compact(data_dir: &Path, to: &Path, json: bool) -> u8 {
    if let Err(error) = refuse_inside(to, data_dir, "the compacted log's directory") {
        return report_error(&error, json);
    }
    match regmig::log::archive::compact(data_dir, to) {
        Ok(report) if json => {
            println!(
                "{}",
                json!({
                    "ok": true,
                    "from": data_dir.display().to_string(),
                    "to": to.display().to_string(),
                    "entries": report.entries,
                    "bytes_before": report.bytes_before,
                    "bytes_after": report.bytes_after,
                })
            );
            0
        }
        Ok(report) => {
            println!("compacted:       {} (left untouched)", data_dir.display());
            println!("into:            {}", to.display());
            println!("entries copied:  {}", report.entries);
            println!(
                "size:            {} bytes before, {} bytes after",
                report.bytes_before, report.bytes_after
            );
            println!("ok: the new log verifies; stop every writer, then swap the directories");
            0
        }
        Err(error) => {
            print_failure(error.kind_name(), &error, json);
            EXIT_FAILED
        }
    }
}
