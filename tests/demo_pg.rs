//! `regmig demo --store URL --engines 3 --kill-leader-at K` against a throwaway PostgreSQL
//! server: the campaign runs on three engines elected on the database, the leader is killed
//! part-way, a standby takes over, the takeover time is printed, every migration ends
//! exactly once (checked by the demo and again through `regmig list --store`), and no
//! password shows; and the combinations that make no sense are refused (exit 2).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

use pg_testkit::PgServer;

fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().expect("start a throwaway PostgreSQL server"))
}

/// A new database's URL, with a password in it (the server trusts every local login, so the
/// password is ignored by it, and must never be printed by regmig).
fn new_database(name: &str) -> String {
    let url = server()
        .create_database(&format!("{name}_{}", std::process::id()))
        .expect("create a database");
    url.replacen("postgres://postgres@", "postgres://postgres:sekrit-pw@", 1)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn regmig(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("REGMIG_DATA_DIR")
        .env_remove("REGMIG_STORE")
        .env_remove("PGPASSWORD")
        .output()
        .expect("run the regmig binary");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !run.stdout.contains("sekrit") && !run.stderr.contains("sekrit"),
        "a password was printed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    run
}

fn expect(run: Run, code: i32) -> Run {
    assert_eq!(
        run.code, code,
        "exit code {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
        run.code, run.stdout, run.stderr
    );
    run
}

/// 40 regions over 4 tables on 5 datanodes: 16 rebalance migrations and 8 evacuation ones,
/// with the demo's faults.
const SIZE: [&str; 4] = ["--tables", "4", "--regions-per-table", "10"];

#[test]
fn three_engines_finish_the_campaign_after_the_leader_is_killed() {
    let url = new_database("demo_kill");
    let mut args = vec![
        "demo",
        "--store",
        &url,
        "--engines",
        "3",
        "--kill-leader-at",
        "4",
    ];
    args.extend(SIZE);
    let started = std::time::Instant::now();
    let text = expect(regmig(&args), 0);
    let elapsed = started.elapsed();
    // stderr is not a terminal here: no progress bar was drawn on it (a redraw starts with a
    // carriage return); its lines went to stdout.
    assert!(!text.stderr.contains('\r'), "{:?}", text.stderr);
    eprintln!("{}", text.stdout);
    assert!(
        text.stdout.contains("elected on it (lease 1000ms)"),
        "{}",
        text.stdout
    );
    let killed = text
        .stdout
        .lines()
        .find(|line| line.starts_with("killed the leader "))
        .unwrap_or_else(|| panic!("no kill line:\n{}", text.stdout));
    // The kill is due at the 4th finish; a few more may finish while it is carried out.
    let finished_at_kill: u64 = killed
        .split(" after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("a count in {killed}"));
    assert!((4..24).contains(&finished_at_kill), "{killed}");
    let takeover_ms: u64 = text
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("takeover: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no takeover time:\n{}", text.stdout));
    // The lease is 1 s; the standby takes it once it lapses by the database's clock.
    assert!(takeover_ms <= 1_000 + 1_000, "takeover {takeover_ms} ms");
    assert!(
        text.stdout
            .contains("every migration ended exactly once: ok (24 migrations"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("invariants: ok"), "{}", text.stdout);
    assert!(
        text.stdout.contains("regmig list --store "),
        "{}",
        text.stdout
    );
    eprintln!("the demo took {elapsed:?}");

    // The history, read back through the read commands: 24 migrations, each ended once.
    let list = expect(regmig(&["list", "--store", &url, "--json"]), 0);
    let document: serde_json::Value = serde_json::from_str(&list.stdout).expect("JSON");
    let listed = document["migrations"]
        .as_array()
        .unwrap_or_else(|| panic!("a migrations array: {document}"));
    assert_eq!(listed.len(), 24, "{document}");
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for migration in listed {
        let outcome = migration["outcome"]
            .as_str()
            .unwrap_or_else(|| panic!("an outcome: {migration}"));
        *outcomes.entry(outcome.to_string()).or_default() += 1;
    }
    assert_eq!(outcomes.get("unfinished"), None, "{outcomes:?}");
    // The demo's faults: one candidate whose region vanished is rolled back.
    assert_eq!(outcomes.get("aborted"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("completed"), Some(&23), "{outcomes:?}");
    expect(regmig(&["log", "verify", "--store", &url]), 0);

    // Run again on the same history: refused, the demo on PostgreSQL does not resume.
    let mut again = vec!["demo", "--store", &url, "--engines", "2"];
    again.extend(SIZE);
    let refused = expect(regmig(&again), 2);
    assert!(
        refused.stderr.contains(
            "already holds 24 migrations; the demo on PostgreSQL starts on an empty history"
        ),
        "{}",
        refused.stderr
    );
}

#[test]
fn the_demo_summary_in_json_has_the_takeover_and_the_exactly_once_check() {
    let url = new_database("demo_json");
    let mut args = vec![
        "demo",
        "--store",
        &url,
        "--engines",
        "2",
        "--kill-leader-at",
        "10",
        "--no-faults",
        "--json",
        "--metrics",
    ];
    args.extend(SIZE);
    let run = expect(regmig(&args), 0);
    // With --metrics too, stdout is one JSON document: the metrics text is a field of it.
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert!(
        summary["metrics"]
            .as_str()
            .is_some_and(|text| text.contains("# TYPE regmig_migrations_submitted_total ")),
        "{summary}"
    );
    assert!(summary.get("data_dir").is_none(), "{summary}");
    assert!(
        summary["store"]
            .as_str()
            .is_some_and(|store| store.starts_with("postgres://postgres@127.0.0.1:")),
        "{summary}"
    );
    let election = &summary["election"];
    assert_eq!(election["engines"], 2, "{summary}");
    assert_eq!(election["ended_exactly_once"], true, "{summary}");
    assert_eq!(election["migrations"], 24, "{summary}");
    let after = election["kill"]["after_migrations"]
        .as_u64()
        .expect("a count");
    assert!((10..24).contains(&after), "{summary}");
    assert!(election["kill"]["takeover_ms"].is_u64(), "{summary}");
    assert_eq!(
        election["leaders"].as_array().map(Vec::len),
        Some(2),
        "{summary}"
    );
    assert_eq!(summary["all_time"]["completed"], 24, "{summary}");
    assert_eq!(summary["invariant_violations"], serde_json::json!([]));
}

#[test]
fn election_flags_without_a_store_or_a_standby_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().expect("UTF-8");
    let refused = expect(
        regmig(&["demo", "--data-dir", data_dir, "--engines", "3"]),
        2,
    );
    assert!(
        refused.stderr.contains("--engines needs --store"),
        "{}",
        refused.stderr
    );
    let refused = expect(regmig(&["demo", "--kill-leader-at", "3"]), 2);
    assert!(
        refused.stderr.contains("--kill-leader-at needs --store"),
        "{}",
        refused.stderr
    );
    assert!(!std::path::Path::new(data_dir).exists(), "nothing written");
    let url = "postgres://u:sekrit-pw@127.0.0.1:1/d";
    for (args, message) in [
        (
            vec!["demo", "--store", url, "--kill-leader-at", "3"],
            "--kill-leader-at needs --engines 2 or more (given 1)",
        ),
        (
            vec![
                "demo",
                "--store",
                url,
                "--engines",
                "2",
                "--kill-leader-at",
                "0",
            ],
            "--kill-leader-at is 0",
        ),
        (
            vec!["demo", "--store", url, "--exit-after-events", "5"],
            "--exit-after-events is for the demo on a data directory",
        ),
        (
            vec!["demo", "--store", url, "--exit-after-setup-writes", "5"],
            "--exit-after-setup-writes is for the demo on a data directory",
        ),
        (
            vec!["demo", "--store", url, "--engines", "10"],
            "--engines is 10, outside the allowed range 1..=9",
        ),
        (
            vec![
                "demo",
                "--store",
                "postgres://u:sekrit-pw@h/d?sslmode=prefer",
            ],
            "sslmode=prefer is not supported",
        ),
    ] {
        let refused = expect(regmig(&args), 2);
        assert!(
            refused.stderr.contains(message),
            "{args:?}: {}",
            refused.stderr
        );
    }
    let clash = expect(regmig(&["demo", "--store", url, "--data-dir", data_dir]), 2);
    assert!(
        clash.stderr.contains("cannot be used with"),
        "{}",
        clash.stderr
    );
}
