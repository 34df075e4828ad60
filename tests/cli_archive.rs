//! `regmig log archive` on the fixture: the live log keeps a checkpoint, `log verify
//! --archive` proves the archive joins it, `audit`/`list --archive` give what they gave
//! before archiving (and without `--archive` say where the history went), and every
//! archived migration replays from its bundle with `--check` as it did from the log.

mod cli_support;

use std::path::Path;

use cli_support::{fixture_copy, regmig, regmig_in, ALL_IDS};

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `regmig log archive --before BEFORE --to ARCHIVE --json` on `data`, expecting exit
/// `code`; returns its JSON document.
fn archive_json(data: &Path, before: &str, archive: &Path, code: i32) -> serde_json::Value {
    let run = regmig_in(
        data,
        &[
            "log",
            "archive",
            "--before",
            before,
            "--to",
            path_str(archive),
            "--json",
        ],
    )
    .expect_code(code);
    serde_json::from_str(&run.stdout).expect("json")
}

#[test]
fn an_archived_fixture_verifies_audits_lists_and_replays_as_before() {
    let copy = fixture_copy();
    let data = copy.data_dir();
    let archive = copy.path("archive");
    let audit_before = regmig_in(&data, &["audit", "--json"]).expect_code(0);
    let list_before = regmig_in(&data, &["list", "--json"]).expect_code(0);
    let replays_before: Vec<String> = ALL_IDS
        .iter()
        .map(|id| {
            regmig_in(&data, &["replay", id, "--check", "--json"])
                .expect_code(0)
                .stdout
        })
        .collect();

    let report = archive_json(&data, "2100-01-01", &archive, 0);
    assert_eq!(report["migrations"], 4);
    assert_eq!(report["events"], 149);
    assert_eq!(report["checkpoint"]["cut_global_seq"], 149);
    assert_eq!(report["stopped_by"], serde_json::Value::Null);

    let verified =
        regmig_in(&data, &["log", "verify", "--archive", path_str(&archive)]).expect_code(0);
    assert!(
        verified.stdout.contains(&format!(
            "archive:         {}: 1 manifest, 149 records, chained from global seq 1 and joined to the live log at global seq 149\n",
            archive.display()
        )),
        "{}",
        verified.stdout
    );
    let plain = regmig_in(&data, &["log", "verify"]).expect_code(0);
    assert!(plain.stdout.contains(
        "archive:         global seqs 1 to 149 are archived (not checked: pass --archive DIR)\n"
    ));

    // The live log alone is empty and says where its history went.
    let audit_live = regmig_in(&data, &["audit", "--json"]).expect_code(0);
    let live: serde_json::Value = serde_json::from_str(&audit_live.stdout).expect("json");
    assert_eq!(live["count"], 0);
    let absolute = std::path::absolute(&archive).expect("absolute");
    assert_eq!(
        audit_live.stderr,
        format!(
            "note: this log's history up to global seq 149 is archived in {}; pass --archive DIR to include it\n",
            absolute.display()
        )
    );
    // With the archive: exactly what they said before.
    let audit_after =
        regmig_in(&data, &["audit", "--json", "--archive", path_str(&archive)]).expect_code(0);
    assert_eq!(audit_after.stdout, audit_before.stdout);
    assert_eq!(audit_after.stderr, "");
    let list_after =
        regmig_in(&data, &["list", "--json", "--archive", path_str(&archive)]).expect_code(0);
    assert_eq!(list_after.stdout, list_before.stdout);

    // Every archived migration replays from its bundle as it did from the log.
    for (id, before) in ALL_IDS.iter().zip(&replays_before) {
        let bundle = archive.join(format!("{id}.rgmb"));
        let replay =
            regmig(&["replay", "--file", path_str(&bundle), "--check", "--json"]).expect_code(0);
        assert_eq!(&replay.stdout, before, "replay {id}");
    }

    // The archived log compacts into a new directory that still joins the archive.
    let compacted = copy.path("compacted");
    regmig_in(&data, &["log", "compact", "--to", path_str(&compacted)]).expect_code(0);
    regmig_in(
        &compacted,
        &["log", "verify", "--archive", path_str(&archive)],
    )
    .expect_code(0);

    // A changed bundle does not join: verify says so and fails.
    let bundle = archive.join(format!("{}.rgmb", ALL_IDS[0]));
    let mut bytes = std::fs::read(&bundle).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&bundle, &bytes).expect("write");
    let broken =
        regmig_in(&data, &["log", "verify", "--archive", path_str(&archive)]).expect_code(1);
    assert!(
        broken.stdout.contains("DOES NOT JOIN") && broken.stdout.contains(path_str(&bundle)),
        "{}",
        broken.stdout
    );
    regmig_in(&data, &["audit", "--archive", path_str(&archive)]).expect_code(1);
}

/// A failed archive says what failed in its JSON error, with a stable `kind`: here the
/// archive directory is a file, so the bundles cannot be written and the log is untouched.
#[test]
fn a_failed_archive_names_its_kind_in_json() {
    let copy = fixture_copy();
    let data = copy.data_dir();
    let not_a_dir = copy.path("not-a-dir");
    std::fs::write(&not_a_dir, b"a file").expect("write");
    let error = archive_json(&data, "2100-01-01", &not_a_dir, 1);
    assert_eq!(error["ok"], false);
    assert_eq!(error["error"]["kind"], "archive_io");
    assert_eq!(
        error["error"]["message"],
        format!(
            "archive {}: could not create the archive directory: File exists (os error 17)",
            not_a_dir.display()
        )
    );
    let verified = regmig_in(&data, &["log", "verify", "--json"]).expect_code(0);
    let verified: serde_json::Value = serde_json::from_str(&verified.stdout).expect("json");
    assert_eq!(verified["archived_to_global_seq"], 0);
    assert_eq!(verified["events"], 149);
}

/// Archive the three migrations that finished in the fixture's first 30 s and keep the
/// fourth live: audit and list across the live log and the archive give exactly what they
/// gave before, the live log alone lists the fourth only, and verify proves the join.
#[test]
fn a_partly_archived_fixture_audits_across_the_live_log_and_the_archive_as_before() {
    let copy = fixture_copy();
    let data = copy.data_dir();
    let archive = copy.path("archive");
    let audit_before = regmig_in(&data, &["audit", "--json"]).expect_code(0);
    let csv_before = regmig_in(&data, &["audit", "--format", "csv"]).expect_code(0);
    let list_before = regmig_in(&data, &["list", "--json"]).expect_code(0);

    let report = archive_json(&data, "2026-01-01T00:00:30Z", &archive, 0);
    assert_eq!(report["migrations"], 3);
    let stopped = report["stopped_by"].as_str().expect("the cut stops");
    assert!(
        stopped.starts_with("migration 019b76db-9260-74c0-9eb3-424d02a6d161: it finished at "),
        "{stopped}"
    );

    regmig_in(&data, &["log", "verify", "--archive", path_str(&archive)]).expect_code(0);
    let live = regmig_in(&data, &["list", "--json"]).expect_code(0);
    let live: serde_json::Value = serde_json::from_str(&live.stdout).expect("json");
    assert_eq!(live["count"], 1);
    assert_eq!(
        live["migrations"][0]["procedure_id"],
        "019b76db-9260-74c0-9eb3-424d02a6d161"
    );

    let audit_after =
        regmig_in(&data, &["audit", "--json", "--archive", path_str(&archive)]).expect_code(0);
    assert_eq!(audit_after.stdout, audit_before.stdout);
    let csv_after = regmig_in(
        &data,
        &["audit", "--format", "csv", "--archive", path_str(&archive)],
    )
    .expect_code(0);
    assert_eq!(csv_after.stdout, csv_before.stdout);
    let list_after =
        regmig_in(&data, &["list", "--json", "--archive", path_str(&archive)]).expect_code(0);
    assert_eq!(list_after.stdout, list_before.stdout);
}

/// `--before` takes an age, counted back from now: the fixture's migrations all finished
/// on 2026-01-01, so "1d" archives all four and "36500d" (a century) none.
#[test]
fn archive_before_an_age_counts_back_from_now() {
    let copy = fixture_copy();
    let data = copy.data_dir();
    let none = archive_json(&data, "36500d", &copy.path("archive-none"), 0);
    assert_eq!(none["migrations"], 0);
    assert_eq!(none["events"], 0);
    let all = archive_json(&data, "1d", &copy.path("archive-all"), 0);
    assert_eq!(all["migrations"], 4);
    assert_eq!(all["events"], 149);
    let refused = regmig(&[
        "log",
        "archive",
        "--data-dir",
        path_str(&data),
        "--before",
        "soon",
        "--to",
        path_str(&copy.path("archive-bad")),
    ])
    .expect_code(2);
    assert!(
        refused.stderr.contains("invalid time \"soon\""),
        "{}",
        refused.stderr
    );
}

/// A copy of the fixture whose completed migration lost event 5 behind the log's back,
/// salvaged: the copy and the salvaged data directory.
fn salvaged_with_a_hole() -> (cli_support::FixtureCopy, std::path::PathBuf) {
    use regmig::log::keys::{event_key, TREE_NAME};
    let copy = fixture_copy();
    let data = copy.data_dir();
    let procedure: uuid::Uuid = cli_support::COMPLETED_ID.parse().expect("a uuid");
    {
        // A hole behind the log's back: event 5 of the completed migration removed.
        let db = sled::Config::new()
            .path(data.join("sled"))
            .open()
            .expect("open the fixture's sled");
        let tree = db.open_tree(TREE_NAME).expect("the log tree");
        tree.remove(event_key(procedure, 5)).expect("remove");
        db.flush().expect("flush");
    }
    let salvaged = copy.path("salvaged");
    regmig(&[
        "log",
        "salvage",
        "--data-dir",
        path_str(&data),
        "--to",
        path_str(&salvaged),
    ])
    .expect_code(0);
    (copy, salvaged)
}

/// A salvaged log's marker reads as what it is in `events`: `HistoryGap`, with the seq from
/// which the history is missing, not an undecodable event.
#[test]
fn events_of_a_salvaged_migration_show_its_history_gap() {
    let (_copy, salvaged) = salvaged_with_a_hole();
    let run = regmig_in(
        &salvaged,
        &[
            "events",
            cli_support::COMPLETED_ID,
            "--kind",
            "HistoryGap",
            "--json",
        ],
    )
    .expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let rows = document["events"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{document}");
    assert_eq!(rows[0]["kind"], "HistoryGap");
    assert_eq!(rows[0]["seq"], 5);
    assert_eq!(rows[0]["payload"]["missing_from_seq"], 5);
    assert_eq!(rows[0]["decode_error"], serde_json::Value::Null);
    let text = regmig_in(&salvaged, &["events", cli_support::COMPLETED_ID]).expect_code(0);
    assert!(!text.stdout.contains("undecodable"), "{}", text.stdout);
}

/// A migration salvage cut before it finished is neither running nor finished: `list`,
/// `show` and `region` give it the status history_missing (closed, its end unknown), and it
/// is not open. The others keep theirs.
#[test]
fn a_migration_cut_by_salvage_has_the_status_history_missing() {
    let (_copy, salvaged) = salvaged_with_a_hole();
    let id = cli_support::COMPLETED_ID;
    let list = |extra: &[&str]| {
        let mut args = vec!["list", "--json"];
        args.extend_from_slice(extra);
        let run = regmig_in(&salvaged, &args).expect_code(0);
        let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
        document["migrations"].as_array().expect("rows").clone()
    };
    let rows = list(&[]);
    let cut = rows
        .iter()
        .find(|row| row["procedure_id"] == id)
        .expect("the cut migration is listed");
    assert_eq!(cut["status"], "history_missing", "{cut}");
    assert_eq!(cut["history_missing_from_seq"], 5, "{cut}");
    assert_eq!(cut["outcome"], serde_json::Value::Null, "{cut}");
    for row in rows.iter().filter(|row| row["procedure_id"] != id) {
        assert_ne!(row["status"], "history_missing", "{row}");
        assert!(row.get("history_missing_from_seq").is_none(), "{row}");
    }
    let ids = |rows: Vec<serde_json::Value>| -> Vec<String> {
        rows.iter()
            .map(|row| row["procedure_id"].as_str().expect("an id").to_string())
            .collect()
    };
    assert_eq!(ids(list(&["--state", "history_missing"])), [id]);
    assert!(!ids(list(&["--state", "open"])).contains(&id.to_string()));

    let text = regmig_in(&salvaged, &["list"]).expect_code(0);
    assert!(
        text.stdout.lines().any(|line| line.starts_with(id)
            && line.contains("history_missing (from event 5 on; closed by salvage)")),
        "{}",
        text.stdout
    );

    let run = regmig_in(&salvaged, &["show", id, "--json"]).expect_code(0);
    let show: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(show["status"], "history_missing", "{show}");
    assert_eq!(
        show["verdict"]["writable"],
        serde_json::Value::Null,
        "{show}"
    );
    let region = show["region"].as_str().expect("a region").to_string();
    let text = regmig_in(&salvaged, &["show", id]).expect_code(0);
    assert!(
        text.stdout.lines().any(|line| line
            == format!("region {region}: unknown — this migration's history is missing from event 5 on (cut by `regmig log salvage`, which closed it)")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.lines().any(|line| line
            == "history:         MISSING from event 5 on: `regmig log salvage` cut it there and closed the migration, so how it ended is unknown"),
        "{}",
        text.stdout
    );
    let run = regmig_in(&salvaged, &["region", &region, "--json"]).expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(
        document["recent"]
            .as_array()
            .expect("recent migrations")
            .iter()
            .any(|row| row["procedure_id"] == id && row["status"] == "history_missing"),
        "{document}"
    );
    assert_eq!(
        document["open_migration"],
        serde_json::Value::Null,
        "{document}"
    );
    // Closed: a cancel is refused at once, and nothing is recorded.
    let run = regmig_in(
        &salvaged,
        &["cancel", id, "--actor", "alice", "--reason", "stuck?"],
    )
    .expect_code(1);
    assert_eq!(
        run.stderr,
        format!("error: cannot cancel migration {id}: its history is missing from event 5 on: `regmig log salvage` closed it, so no engine runs it\n")
    );
    assert!(!salvaged.join("cancel-requests").exists());
}
