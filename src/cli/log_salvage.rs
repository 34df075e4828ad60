//! `regmig log salvage --data-dir DIR --to NEW [--json]`: copies every event of a damaged
//! log that still reads back and checks out into a new log in NEW, with a marker event
//! where a migration's history is missing. DIR is only read. Exit 0 when the new log was
//! written, 1 otherwise.

use std::path::Path;

use serde_json::json;

use regmig::log::salvage::{salvage, SalvageReport};

use super::common::{counted, print_failure};
use super::EXIT_FAILED;

/// Runs the command; returns the exit code.
pub fn run(data_dir: &Path, to: &Path, json: bool) -> u8 {
    match salvage(data_dir, to) {
        Ok(report) if json => {
            println!(
                "{}",
                json!({ "ok": true, "from": data_dir.display().to_string(), "to": to.display().to_string(), "report": report })
            );
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

fn print_text(data_dir: &Path, to: &Path, report: &SalvageReport) {
    println!("salvaged from:   {} (left untouched)", data_dir.display());
    println!("into:            {}", to.display());
    if let Some(damage) = &report.source_damage {
        println!("source damage:   {damage}");
    }
    println!("records read:    {}", report.records_read);
    println!("events copied:   {}", report.events_copied);
    println!("migrations whole: {}", report.procedures_whole);
    println!(
        "migrations cut at a gap (marker written, closed): {}",
        report.procedures_with_gap.len()
    );
    for (procedure_id, missing_from_seq) in &report.procedures_with_gap {
        println!("  - {procedure_id}: events from seq {missing_from_seq} on are missing");
    }
    println!(
        "migrations lost (no readable first event): {}",
        report.procedures_lost.len()
    );
    for procedure_id in &report.procedures_lost {
        println!("  - {procedure_id}");
    }
    println!("damaged records skipped: {}", report.damaged_records.len());
    for problem in &report.damaged_records {
        println!("  - {problem}");
    }
    if !report.trees_copied.is_empty() {
        println!("other trees copied: {}", report.trees_copied.join(", "));
    }
    for failed in &report.trees_failed {
        println!("  tree not copied: {failed}");
    }
    println!(
        "ok: the new log holds {}; check the cut migrations against the cluster before resuming work",
        counted(report.new_last_global_seq, "event")
    );
}
