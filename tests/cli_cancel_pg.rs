//! `regmig cancel ID --store URL` (issue 18), end to end against a throwaway PostgreSQL
//! server: with an engine running on the store (in this process), the command records the
//! request, the engine answers it, and `--wait --json` reports the answer; with no engine,
//! the request is recorded and the next engine to open the store honours it once it has
//! resumed the migration.

use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use pg_testkit::PgServer;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::Mailbox;
use regmig::domain::{Instruction, MailboxOutcome, Peer};
use regmig::engine::{Engine, EngineConfig, MigrationRequest, SubmitOutcome};
use regmig::log::{EventLog, LogOptions, PgStore};
use regmig::migration::Outcome;
use regmig::pg::cancel::PgCancelRequests;
use regmig::pg::PgConfig;
use regmig_tools::bench::world::{self, InstantMailbox, FIRST_LEADER, OTHER_PEER};
use uuid::Uuid;

fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().expect("start a throwaway PostgreSQL server"))
}

fn database(name: &str) -> String {
    server()
        .create_database(&format!("{name}_{}", std::process::id()))
        .expect("create a database")
}

/// Every datanode answer takes 300 ms: a migration stays open long enough to cancel.
struct SlowMailbox(InstantMailbox);

#[async_trait]
impl Mailbox for SlowMailbox {
    async fn send(&self, peer: &Peer, instruction: Instruction, timeout_ms: u64) -> MailboxOutcome {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0.send(peer, instruction, timeout_ms).await
    }
}

/// An engine on the store (a single writer, without election), over one table.
async fn open_engine(url: &str, metadata: &Arc<MemoryMetadataStore>) -> Engine {
    let config = PgConfig::from_url(url).expect("valid URL");
    let store = PgStore::open_async(config, LogOptions::default(), None)
        .await
        .expect("open the store");
    let log = EventLog::with_store(Arc::new(store));
    let ports = world::ports(
        Arc::new(SlowMailbox(InstantMailbox::new())),
        metadata.clone(),
    );
    Engine::with_log(log, EngineConfig::default(), ports)
        .await
        .expect("the engine opens on the store")
}

async fn submit(engine: &Engine) -> Uuid {
    let request = MigrationRequest::new(
        world::region_of(0),
        Peer::sim(FIRST_LEADER),
        Peer::sim(OTHER_PEER),
    );
    match engine.submit(request).await {
        Ok(SubmitOutcome::Started(id)) => id,
        other => panic!("not started: {other:?}"),
    }
}

/// Runs `regmig cancel ARGS --store URL --json` off the async threads; its exit code and
/// JSON document.
async fn cancel(url: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_regmig"));
    command
        .arg("cancel")
        .args(args)
        .args(["--store", url, "--json"])
        .env_remove("RUST_LOG")
        .env_remove("REGMIG_DATA_DIR")
        .env_remove("REGMIG_STORE");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the command's thread")
        .expect("run regmig cancel");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let document = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}):\n{stdout}\n--- stderr\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), document)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_store_is_answered_by_the_running_engine() {
    let url = database("cli_cancel_live");
    let metadata = Arc::new(MemoryMetadataStore::new());
    world::create_tables_in_memory(&metadata, 1);
    let engine = open_engine(&url, &metadata).await;
    let id = submit(&engine).await;
    // A prefix is enough: the shared log is readable while the engine runs.
    let prefix = &id.to_string()[..30];
    let (code, document) = cancel(
        &url,
        &[
            prefix,
            "--actor",
            "ops",
            "--reason",
            "drain peer 2",
            "--wait",
            "10s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{document}");
    assert_eq!(document["result"], "cancelled");
    assert_eq!(document["procedure_id"], id.to_string());
    let summary = tokio::time::timeout(Duration::from_secs(30), engine.wait(id))
        .await
        .expect("ends in time")
        .unwrap();
    assert_eq!(summary.outcome, Some(Outcome::Aborted));
    assert_eq!(
        summary.cancelled_by,
        Some(("ops".to_string(), "drain peer 2".to_string()))
    );
    // Finished now: refused at once from the log, exit 1.
    let (code, document) = cancel(
        &url,
        &[&id.to_string(), "--actor", "ops", "--reason", "again"],
    )
    .await;
    assert_eq!(code, 1, "{document}");
    assert_eq!(document["result"], "refused");
    assert_eq!(
        document["message"],
        format!("cannot cancel migration {id}: the migration already finished (aborted)")
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_store_and_no_engine_is_recorded_and_honoured_by_the_next_engine() {
    let url = database("cli_cancel_offline");
    let metadata = Arc::new(MemoryMetadataStore::new());
    world::create_tables_in_memory(&metadata, 1);
    let engine = open_engine(&url, &metadata).await;
    let id = submit(&engine).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Stopped mid-migration: it stays open in the log.
    engine.halt();
    engine.shutdown().await;
    drop(engine);
    // Until its writer lock's session is gone.
    let requests = PgCancelRequests::new(PgConfig::from_url(&url).unwrap()).unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while requests.engine_running().await.unwrap() {
        assert!(
            tokio::time::Instant::now() < until,
            "the engine lets go of the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, document) = cancel(
        &url,
        &[&id.to_string(), "--actor", "ops", "--reason", "maintenance"],
    )
    .await;
    assert_eq!(code, 0, "{document}");
    assert_eq!(document["result"], "recorded");
    let engine = open_engine(&url, &metadata).await;
    let summary = tokio::time::timeout(Duration::from_secs(30), engine.wait(id))
        .await
        .expect("ends in time")
        .unwrap();
    assert_eq!(summary.outcome, Some(Outcome::Aborted));
    assert_eq!(
        summary.cancelled_by,
        Some(("ops".to_string(), "maintenance".to_string()))
    );
    engine.shutdown().await;
}
