//! `regmig audit` answers "who moved what off which datanode, when and why": the actor and
//! reason recorded with the submit, an operator's cancel and the abort reason, in the table,
//! JSON and CSV (read back here by a CSV parser), with direction and relative-time filters.

mod cli_support;

use std::path::{Path, PathBuf};

use cli_support::{fixture_copy, regmig_in, sim_run_into, ABORTED_ID};

/// The CSV header `audit --format csv` writes (the snapshot `audit.csv` pins its text).
const CSV_HEADER: [&str; 16] = regmig_tools::cli::inspect::AUDIT_CSV_COLUMNS;

/// Parses CSV text with a CSV parser: the header, then each row as header → cell.
fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<(String, String)>>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("a CSV header")
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|record| {
            let record = record.expect("a well-formed CSV row");
            assert_eq!(record.len(), header.len(), "a row of another width");
            header
                .iter()
                .cloned()
                .zip(record.iter().map(str::to_string))
                .collect()
        })
        .collect();
    (header, rows)
}

fn cell<'a>(row: &'a [(String, String)], column: &str) -> &'a str {
    row.iter()
        .find(|(name, _)| name == column)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no column {column}"))
}

/// Runs the cancel scenario (bob submits with a reason, alice cancels) into a data directory.
fn cancelled_by_alice(dir: &Path) -> PathBuf {
    let data_dir = dir.join("data");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios/cancel_before_the_new_route_aborts.toml");
    sim_run_into(&scenario, &data_dir).expect_code(0);
    data_dir
}

#[test]
fn a_cancelled_migration_names_who_asked_why_and_who_cancelled_in_csv_json_and_table() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let data_dir = cancelled_by_alice(temp.path());

    let csv_run = regmig_in(&data_dir, &["audit", "--format", "csv"]).expect_code(0);
    let (header, rows) = parse_csv(&csv_run.stdout);
    assert_eq!(header, CSV_HEADER);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let wanted = [
        ("region", "1024:1"),
        ("from_peer", "1"),
        ("to_peer", "2"),
        ("actor", "bob"),
        ("trigger", "scenario"),
        ("reason", "rebalance hot datanode 1"),
        ("cancelled_by", "alice"),
        ("cancel_reason", "maintenance window closed"),
        ("outcome", "aborted"),
        (
            "final_error",
            "cancelled by alice: maintenance window closed",
        ),
    ];
    for (column, value) in wanted {
        assert_eq!(cell(row, column), value, "column {column}");
    }

    let json_run = regmig_in(&data_dir, &["audit", "--json"]).expect_code(0);
    let json: serde_json::Value = serde_json::from_str(&json_run.stdout).expect("JSON");
    let migration = &json["migrations"][0];
    assert_eq!(json["count"], 1);
    for (column, value) in wanted {
        let field = &migration[column];
        let text = field
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| field.to_string());
        assert_eq!(text, value, "field {column}");
    }
    // Every CSV cell is a JSON field with the same text (an empty cell is a null).
    for (column, value) in row {
        let field = &migration[column.as_str()];
        let text = match field {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        assert_eq!(&text, value, "field {column}");
    }

    let table = regmig_in(&data_dir, &["audit"]).expect_code(0).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for (header_cell, value) in [
        ("ACTOR", "bob"),
        ("WHY", "scenario: rebalance hot datanode 1"),
        ("CANCELLED BY", "alice: maintenance window closed"),
        ("OUTCOME", "aborted"),
    ] {
        let column = lines[0].find(header_cell).expect(header_cell);
        let rest = lines[1].get(column..).expect("a cell under the header");
        assert!(rest.starts_with(value), "{header_cell}: {:?}", lines[1]);
    }
}

#[test]
fn from_and_to_filter_by_direction_while_peer_takes_either() {
    let copy = fixture_copy();
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["audit", "--format", "csv"];
        all.extend_from_slice(args);
        let run = regmig_in(&copy.data_dir(), &all).expect_code(0);
        parse_csv(&run.stdout)
            .1
            .iter()
            .map(|row| {
                format!(
                    "{}:{}→{}",
                    cell(row, "region"),
                    cell(row, "from_peer"),
                    cell(row, "to_peer")
                )
            })
            .collect()
    };
    assert_eq!(
        ids(&["--peer", "2"]),
        ["1024:1:1→2", "7:3:1→2", "1024:1:2→3"]
    );
    assert_eq!(ids(&["--from", "2"]), ["1024:1:2→3"]);
    assert_eq!(ids(&["--to", "2"]), ["1024:1:1→2", "7:3:1→2"]);
    assert_eq!(ids(&["--from", "1", "--to", "4"]), ["1024:2:1→4"]);
    assert_eq!(ids(&["--from", "2", "--to", "4"]), Vec::<String>::new());
}

#[test]
fn a_date_alone_until_includes_that_day_and_ages_count_back_from_now() {
    let copy = fixture_copy();
    let count = |args: &[&str]| -> usize {
        let mut all = vec!["audit", "--format", "csv"];
        all.extend_from_slice(args);
        let run = regmig_in(&copy.data_dir(), &all).expect_code(0);
        parse_csv(&run.stdout).1.len()
    };
    // The fixture's four migrations were all submitted on 2026-01-01.
    assert_eq!(count(&["--until", "2026-01-01"]), 4);
    assert_eq!(
        count(&["--since", "2026-01-01", "--until", "2026-01-01"]),
        4
    );
    assert_eq!(count(&["--until", "2025-12-31"]), 0);
    assert_eq!(count(&["--until", "2026-01-01T00:00:00Z"]), 2);
    // Ages: the fixture is older than an hour and younger than 100,000 days.
    assert_eq!(count(&["--since", "100000d"]), 4);
    assert_eq!(count(&["--since", "1h"]), 0);
    assert_eq!(count(&["--until", "1h"]), 4);
    let run = regmig_in(&copy.data_dir(), &["audit", "--since", "7 days ago"]).expect_code(2);
    assert!(
        run.stderr.contains("an age (7d, 24h, 90m"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_fixture_csv_reads_back_with_the_abort_reason_of_the_aborted_migration() {
    let copy = fixture_copy();
    let run = regmig_in(&copy.data_dir(), &["audit", "--format", "csv"]).expect_code(0);
    let (header, rows) = parse_csv(&run.stdout);
    assert_eq!(header, CSV_HEADER);
    assert_eq!(rows.len(), 4);
    let aborted = rows
        .iter()
        .find(|row| cell(row, "procedure_id") == ABORTED_ID)
        .expect("the aborted migration");
    assert_eq!(
        cell(aborted, "abort_reason"),
        "failed to upgrade the candidate region"
    );
    // Written before actors were recorded: no actor, no cancel.
    for row in &rows {
        assert_eq!(cell(row, "actor"), "");
        assert_eq!(cell(row, "cancelled_by"), "");
    }
}

#[test]
fn regmig_data_dir_is_the_default_data_directory_and_data_dir_still_wins() {
    let copy = fixture_copy();
    let empty = tempfile::tempdir().expect("a temporary directory");
    let run = |env_dir: &Path, args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_regmig"))
            .args(args)
            .env("REGMIG_DATA_DIR", env_dir)
            .env_remove("RUST_LOG")
            .output()
            .expect("run the regmig binary");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, stdout) = run(&copy.data_dir(), &["audit", "--format", "csv"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(parse_csv(&stdout).1.len(), 4);
    // --data-dir names another (missing) directory: it wins over the variable.
    let missing = empty.path().join("nowhere");
    let (code, _) = run(
        &copy.data_dir(),
        &[
            "audit",
            "--data-dir",
            missing.to_str().expect("a UTF-8 path"),
        ],
    );
    assert_eq!(code, Some(1));
    let (code, stdout) = run(&copy.data_dir(), &["log", "verify"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("events:          149"), "{stdout}");
}
