//! The read commands on a PostgreSQL store (`--store URL`): migrations written by the
//! engine into a throwaway server, then read back through the `regmig` binary; the
//! `--store`/`--data-dir` clash; and no password in any message or in `--help`.

use std::sync::{Arc, OnceLock};

mod cli_support;

use cli_support::{regmig_with_env as regmig, Run};
use pg_testkit::PgServer;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::engine::{Engine, EngineConfig};
use regmig::log::{EventLog, LogOptions, PgStore};
use regmig::pg::PgConfig;
use regmig_tools::bench::migrations::engine_migration;
use regmig_tools::bench::world::{self, InstantMailbox, FIRST_LEADER, OTHER_PEER};
use uuid::Uuid;

fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().expect("start a throwaway PostgreSQL server"))
}

/// A database holding `count` completed migrations, written by the engine; its URL and the
/// migrations' ids.
fn store_with_migrations(name: &str, count: u32) -> (String, Vec<Uuid>) {
    let url = server()
        .create_database(&format!("{name}_{}", std::process::id()))
        .expect("create a database");
    let config = PgConfig::from_url(&url).expect("valid URL");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ids = runtime.block_on(async {
        let store = PgStore::open_async(config, LogOptions::default(), None)
            .await
            .expect("open the store");
        let log = EventLog::with_store(Arc::new(store));
        let metadata = Arc::new(MemoryMetadataStore::new());
        world::create_tables_in_memory(&metadata, count);
        let ports = world::ports(Arc::new(InstantMailbox::new()), metadata);
        let engine = Engine::with_log(log.clone(), EngineConfig::default(), ports)
            .await
            .expect("the engine opens on the store");
        for index in 0..count {
            engine_migration(&engine, world::region_of(index), FIRST_LEADER, OTHER_PEER)
                .await
                .expect("the migration completes");
        }
        engine.shutdown().await;
        log.procedures().expect("list the procedures")
    });
    (url, ids)
}

fn expect(run: Run, code: i32) -> Run {
    run.expect_code(code)
}

#[test]
fn every_read_command_reads_a_postgresql_store() {
    let (url, ids) = store_with_migrations("cli_reads", 3);
    assert_eq!(ids.len(), 3);
    let list = expect(regmig(&["list", "--store", &url, "--json"], &[]), 0);
    let document: serde_json::Value = serde_json::from_str(&list.stdout).expect("JSON");
    let listed = document["migrations"]
        .as_array()
        .unwrap_or_else(|| panic!("a migrations array: {document}"));
    assert_eq!(listed.len(), 3, "{document}");
    for migration in listed {
        assert_eq!(migration["outcome"], "completed", "{migration}");
    }
    let id = ids[0].to_string();
    let show = expect(regmig(&["show", &id, "--store", &url], &[]), 0);
    assert!(show.stdout.contains(&id), "{}", show.stdout);
    let events = expect(regmig(&["events", &id, "--store", &url], &[]), 0);
    assert!(events.stdout.contains("Submitted"), "{}", events.stdout);
    expect(regmig(&["replay", &id, "--check", "--store", &url], &[]), 0);
    expect(regmig(&["audit", "--store", &url], &[]), 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle.regmig");
    expect(
        regmig(
            &[
                "export",
                &id,
                "-o",
                bundle.to_str().unwrap(),
                "--store",
                &url,
            ],
            &[],
        ),
        0,
    );
    assert!(bundle.exists());
    let svg = dir.path().join("t.svg");
    expect(
        regmig(
            &[
                "timeline",
                &id,
                "-o",
                svg.to_str().unwrap(),
                "--store",
                &url,
            ],
            &[],
        ),
        0,
    );
    assert!(std::fs::read_to_string(&svg)
        .expect("svg")
        .starts_with("<svg"));
    // REGMIG_STORE does what --store does.
    let verify = expect(regmig(&["log", "verify"], &[("REGMIG_STORE", &url)]), 0);
    assert!(
        verify.stdout.contains(
            "ok: every record and chain link checks out, and the log ends where its head row says"
        ),
        "{}",
        verify.stdout
    );
    let verify = expect(
        regmig(&["log", "verify", "--store", &url, "--json"], &[]),
        0,
    );
    let document: serde_json::Value = serde_json::from_str(&verify.stdout).expect("JSON");
    assert_eq!(document["ok"], true);
    assert_eq!(
        document["store"],
        PgConfig::from_url(&url).expect("valid").redacted()
    );
}

#[test]
fn log_verify_on_a_store_reports_lost_history() {
    let (url, _) = store_with_migrations("cli_damage", 1);
    let database = url.rsplit('/').next().expect("a database name");
    server()
        .psql(
            database,
            "DELETE FROM regmig.events WHERE global_seq = (SELECT max(global_seq) FROM regmig.events)",
        )
        .expect("damage the store");
    let verify = expect(
        regmig(&["log", "verify", "--store", &url, "--json"], &[]),
        1,
    );
    let document: serde_json::Value = serde_json::from_str(&verify.stdout).expect("JSON");
    assert_eq!(document["ok"], false);
    assert_eq!(document["problems"][0]["kind"], "store_lost_history");
    let message = document["problems"][0]["message"]
        .as_str()
        .expect("a message");
    assert!(
        message.contains("but the log ends at global seq"),
        "{message}"
    );
    // The other read commands read what is there, after one warning.
    let list = expect(regmig(&["list", "--store", &url], &[]), 0);
    assert_eq!(
        list.stderr
            .lines()
            .filter(|line| !line.trim().is_empty())
            .count(),
        1,
        "{}",
        list.stderr
    );
    assert!(
        list.stderr.starts_with(
            "warning: the event log is damaged; showing what still reads back: the event log at postgres://"
        ),
        "{}",
        list.stderr
    );
}

#[test]
fn store_and_data_dir_together_are_refused_naming_both() {
    let run = expect(
        regmig(
            &[
                "list",
                "--data-dir",
                "/tmp/x",
                "--store",
                "postgres://u@127.0.0.1:1/d",
            ],
            &[],
        ),
        2,
    );
    assert!(run.stderr.contains("--data-dir"), "{}", run.stderr);
    assert!(run.stderr.contains("--store"), "{}", run.stderr);
}

#[test]
fn no_message_and_no_help_shows_the_password() {
    const SECRET: &str = "pw-SeCrEt-42";
    let url = format!("postgres://alice:{SECRET}@127.0.0.1:1/nowhere");
    for args in [
        vec!["list", "--store", url.as_str()],
        vec![
            "show",
            "019b76da-a800-715b-9d39-b5bf90ae8891",
            "--store",
            url.as_str(),
        ],
        vec!["log", "verify", "--store", url.as_str()],
        vec!["log", "verify", "--store", url.as_str(), "--json"],
    ] {
        let run = expect(regmig(&args, &[]), 1);
        let both = format!("{}{}", run.stdout, run.stderr);
        assert!(!both.contains(SECRET), "{args:?}: {both}");
        assert!(
            both.contains(
                "postgres://alice@127.0.0.1:1/nowhere?sslmode=disable: could not connect"
            ),
            "{args:?}: {both}"
        );
    }
    // A URL the driver refuses is reported without its password, as bad usage.
    let bad = format!("postgres://alice:{SECRET}@127.0.0.1:1/nowhere?sslmode=prefer");
    let run = expect(regmig(&["list", "--store", &bad], &[]), 2);
    assert!(!run.stderr.contains(SECRET), "{}", run.stderr);
    assert!(
        run.stderr.contains("sslmode=prefer is not supported"),
        "{}",
        run.stderr
    );
    // --help shows the environment variable, never its value.
    for command in [vec!["list", "--help"], vec!["log", "verify", "--help"]] {
        let run = expect(regmig(&command, &[("REGMIG_STORE", &url)]), 0);
        assert!(run.stdout.contains("REGMIG_STORE"), "{}", run.stdout);
        assert!(!run.stdout.contains(SECRET), "{}", run.stdout);
    }
}

#[test]
fn a_missing_password_file_is_named() {
    let run = expect(
        regmig(
            &[
                "list",
                "--store",
                "postgres://alice@127.0.0.1:1/d",
                "--password-file",
                "/nonexistent/pw",
            ],
            &[],
        ),
        2,
    );
    assert!(
        run.stderr
            .contains("could not read the password file /nonexistent/pw"),
        "{}",
        run.stderr
    );
}
