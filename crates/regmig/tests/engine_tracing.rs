//! The engine's tracing, in a test binary of its own: a subscriber set for one thread
//! shares tracing's per-callsite interest cache with every other test of the binary, so
//! with other tests running beside it, lines could be filtered by another thread's
//! (absent) subscriber.

mod engine_support;

use std::sync::Arc;

use engine_support::*;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::TokioClock;
use regmig::domain::*;
use regmig::engine::{Engine, EngineConfig, MigrationRequest, SubmitOutcome};

const REGION: RegionId = RegionId(4398046511105); // 1024:1

/// Writes what a tracing subscriber prints into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Issue 15: the submit line sits inside the procedure's span, with the same field names as
/// every other line of that migration (`procedure_id`, `region`).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_line_of_a_migration_is_in_its_span_with_the_same_field_names() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let metadata = Arc::new(MemoryMetadataStore::new());
    add_table(&metadata, 1024, 4, 1, &[]);
    let ports = ports(
        ScriptedMailbox::new(),
        metadata,
        TokioClock::new(EPOCH_BASE_MS),
    );
    let engine = Engine::open(dir.path(), EngineConfig::default(), ports)
        .await
        .unwrap();
    let request = MigrationRequest::new(REGION, Peer::sim(1), Peer::sim(2));
    let Ok(SubmitOutcome::Started(id)) = engine.submit(request).await else {
        panic!("not started");
    };
    engine.wait(id).await.unwrap();
    engine.shutdown().await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let span = format!("procedure{{procedure_id={id} region={REGION}}}");
    let submitted = text
        .lines()
        .find(|line| line.contains("migration submitted"))
        .unwrap_or_else(|| panic!("no submit line in:\n{text}"));
    assert!(submitted.contains(&span), "{submitted}");
    let lines_of_it: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(&id.to_string()))
        .collect();
    assert!(lines_of_it.len() > 3, "{text}");
    assert!(
        lines_of_it.iter().all(|line| line.contains(&span)),
        "every line naming the procedure is in its span:\n{}",
        lines_of_it.join("\n")
    );
    assert!(!text.contains(" id="), "no bare `id` field:\n{text}");
}
