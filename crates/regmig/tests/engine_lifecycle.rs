//! The engine's lifecycle as an embedder meets it: dropping it halts it and the directory
//! reopens in the same process; a second live engine on one directory is refused by name;
//! shutdown is bounded while a port call hangs; open does not stall the async runtime; and
//! event streams give every event from any seq, with no gap, even for a procedure that
//! finished at once.

mod engine_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine_support::*;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::{
    Mailbox, MetadataError, MetadataStore, MetadataStoreLayer, Ports, SeededEntropy, TokioClock,
};
use regmig::domain::*;
use regmig::engine::{
    load_procedure, AppendMode, Engine, EngineConfig, EngineError, MigrationRequest,
    ProcedureEvent, ShutdownReport, SubmitOutcome,
};
use regmig::migration::{MigrationEvent, Outcome, SentKey};
use uuid::Uuid;

const REGION: RegionId = RegionId(4398046511105); // 1024:1

fn config() -> EngineConfig {
    EngineConfig {
        append_mode: AppendMode::Inline,
        ..EngineConfig::default()
    }
}

fn one_table() -> Arc<MemoryMetadataStore> {
    let metadata = Arc::new(MemoryMetadataStore::new());
    add_table(&metadata, 1024, 4, 1, &[]);
    metadata
}

async fn submit(engine: &Engine, region: RegionId) -> Uuid {
    let request = MigrationRequest::new(region, Peer::sim(1), Peer::sim(2));
    match engine.submit(request).await {
        Ok(SubmitOutcome::Started(id)) => id,
        other => panic!("not started: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_engine_halts_it_and_the_directory_reopens_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = one_table();
    let clock = TokioClock::new(EPOCH_BASE_MS);
    // Every answer takes 500 ms of virtual time: the migration is mid-way when dropped.
    let slow = Arc::new(ScriptedMailbox::with_delay(500));
    let engine = Engine::open(
        dir.path(),
        config(),
        ports(slow.clone(), metadata.clone(), clock.clone()),
    )
    .await
    .unwrap();
    let id = submit(&engine, REGION).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // A second live engine on the same directory is refused, naming it.
    let second = Engine::open(
        dir.path(),
        config(),
        ports(slow.clone(), metadata.clone(), clock.clone()),
    )
    .await;
    match second {
        Err(EngineError::AlreadyOpen { dir: named }) => assert_eq!(named, dir.path()),
        other => panic!("expected AlreadyOpen, got {:?}", other.map(|_| ())),
    }
    let sent_before_drop = slow.received.lock().unwrap().len();
    assert!(sent_before_drop >= 1);
    drop(engine);
    // Nothing more is sent by the dropped engine.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(slow.received.lock().unwrap().len(), sent_before_drop);
    // The same process reopens the directory and the migration finishes there.
    let fast = ScriptedMailbox::new();
    let engine = Engine::open(
        dir.path(),
        config(),
        ports(fast.clone(), metadata.clone(), clock),
    )
    .await
    .expect("reopen after drop");
    let state = engine.wait(id).await.unwrap();
    assert_eq!(state.outcome, Some(Outcome::Completed));
    assert!(
        !fast.received.lock().unwrap().is_empty(),
        "the new engine finished it"
    );
    assert_eq!(region_route(&metadata, REGION).leader_id(), Some(2));
}

/// Metadata whose route reads do not answer while `hang` is set.
struct HangingMetadata {
    inner: Arc<MemoryMetadataStore>,
    hang: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl MetadataStoreLayer for HangingMetadata {
    fn inner(&self) -> &dyn MetadataStore {
        &*self.inner
    }

    async fn table_route(
        &self,
        table_id: TableId,
    ) -> Result<Option<VersionedTableRoute>, MetadataError> {
        while self.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.table_route(table_id).await
    }
}

fn hanging_engine_ports(hanging: &Arc<HangingMetadata>, mailbox: Arc<dyn Mailbox>) -> Ports {
    // Submit validation reads the same routes: let it through, hang the procedure.
    Ports::builder(mailbox, hanging.clone())
        .submit_metadata(hanging.inner.clone())
        .clock(Arc::new(TokioClock::new(EPOCH_BASE_MS)))
        .entropy(Arc::new(SeededEntropy::new(7)))
        .build()
}

fn hanging_metadata() -> Arc<HangingMetadata> {
    Arc::new(HangingMetadata {
        inner: one_table(),
        hang: std::sync::atomic::AtomicBool::new(true),
    })
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_procedure_whose_metadata_call_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let hanging = hanging_metadata();
    let ports = hanging_engine_ports(&hanging, ScriptedMailbox::new());
    let engine = Engine::open(dir.path(), config(), ports).await.unwrap();
    let id = submit(&engine, REGION).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let report = engine.shutdown_within(Duration::from_secs(2)).await;
    // The route read reacts to the halt: the procedure stops by itself, at once.
    assert_eq!(
        report,
        ShutdownReport {
            stopped: 1,
            aborted: 0
        }
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // The migration is still open in the log, for the next open to resume.
    let events = load_procedure(engine.log(), id).unwrap();
    assert!(!events.iter().any(|timed| timed.event.is_terminal()));
}

/// Issue 15: a cancel is answered at once while a route read hangs (a read changes
/// nothing, so it is dropped), and the migration rolls back once the store answers again.
#[tokio::test(start_paused = true)]
async fn a_cancel_is_answered_at_once_while_a_route_read_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let hanging = hanging_metadata();
    let ports = hanging_engine_ports(&hanging, ScriptedMailbox::new());
    let engine = Engine::open(dir.path(), config(), ports).await.unwrap();
    let id = submit(&engine, REGION).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cancel = engine.cancel(id, "oncall", "store is slow");
    tokio::time::timeout(Duration::from_secs(1), cancel)
        .await
        .expect("the cancel is answered while the read hangs")
        .expect("a cancel before the new route is taken");
    hanging.hang.store(false, Ordering::SeqCst);
    let state = tokio::time::timeout(Duration::from_secs(60), engine.wait(id))
        .await
        .expect("the migration ends once the store answers")
        .unwrap();
    assert_eq!(state.outcome, Some(regmig::migration::Outcome::Aborted));
    assert_eq!(
        state.cancelled_by,
        Some(("oncall".to_string(), "store is slow".to_string()))
    );
    engine.shutdown().await;
}

/// A datanode transport that never answers and ignores the timeout it is given.
struct SilentMailbox;

#[async_trait]
impl Mailbox for SilentMailbox {
    async fn send(
        &self,
        _peer: &Peer,
        _instruction: Instruction,
        _timeout_ms: u64,
    ) -> MailboxOutcome {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn the_engine_enforces_the_mailbox_timeout_itself() {
    let dir = tempfile::tempdir().unwrap();
    let ports = ports(
        Arc::new(SilentMailbox),
        one_table(),
        TokioClock::new(EPOCH_BASE_MS),
    );
    let engine = Engine::open(dir.path(), config(), ports).await.unwrap();
    let id = submit(&engine, REGION).await;
    let state = tokio::time::timeout(Duration::from_secs(600), engine.wait(id))
        .await
        .expect("the migration ends although the mailbox never answers")
        .unwrap();
    assert_eq!(state.outcome, Some(Outcome::Failed));
    let timeouts = load_procedure(engine.log(), id)
        .unwrap()
        .iter()
        .filter(|timed| matches!(timed.event, MigrationEvent::MailboxTimedOut { .. }))
        .count();
    assert_eq!(
        timeouts, 4,
        "the first open and its three framework retries time out"
    );
}

#[test]
fn opening_does_not_stall_the_async_runtime() {
    // A current-thread runtime: a blocking open would keep the ticker from running at all
    // while it lasts.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_millis(1));
                loop {
                    interval.tick().await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        tokio::task::yield_now().await;
        let mut ticks_during_opens = 0;
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let before = ticks.load(Ordering::SeqCst);
            let engine = Engine::open(
                dir.path(),
                EngineConfig::default(),
                ports(
                    ScriptedMailbox::new(),
                    one_table(),
                    TokioClock::new(EPOCH_BASE_MS),
                ),
            )
            .await
            .unwrap();
            ticks_during_opens += ticks.load(Ordering::SeqCst) - before;
            engine.shutdown().await;
        }
        ticker.abort();
        assert!(
            ticks_during_opens > 0,
            "the ticker never ran while the engine opened"
        );
    });
}

fn seqs(events: &[ProcedureEvent]) -> Vec<u64> {
    events.iter().map(|event| event.seq).collect()
}

#[tokio::test(start_paused = true)]
async fn a_subscription_from_seq_1_sees_every_event_even_of_a_procedure_that_finished_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = one_table();
    let engine = Engine::open(
        dir.path(),
        config(),
        ports(
            ScriptedMailbox::new(),
            metadata,
            TokioClock::new(EPOCH_BASE_MS),
        ),
    )
    .await
    .unwrap();
    // Subscribed right after submit: the procedure may already be running or done.
    let live_id = submit(&engine, REGION).await;
    let live = engine
        .subscribe(live_id, 1)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let logged = load_procedure(engine.log(), live_id).unwrap();
    assert_eq!(seqs(&live), (1..=logged.len() as u64).collect::<Vec<_>>());
    assert!(matches!(live[0].event, MigrationEvent::Submitted { .. }));
    assert!(live.last().unwrap().event.is_terminal());
    assert_eq!(
        live.iter().map(|event| &event.event).collect::<Vec<_>>(),
        logged.iter().map(|timed| &timed.event).collect::<Vec<_>>()
    );
    // After it finished: the whole history, then the end; from seq 5: the rest.
    engine.wait(live_id).await.unwrap();
    let again = engine
        .subscribe(live_id, 1)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(again, live);
    let from_five = engine
        .subscribe(live_id, 5)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(from_five, live[4..].to_vec());
    // An unknown procedure is named.
    let unknown = Uuid::from_u128(7);
    match engine.subscribe(unknown, 1).await {
        Err(EngineError::UnknownProcedure { procedure_id }) => assert_eq!(procedure_id, unknown),
        other => panic!("expected UnknownProcedure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_all_procedures_stream_gives_every_event_in_log_order_then_follows_live() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        config(),
        ports(
            Arc::new(ScriptedMailbox::with_delay(50)),
            one_table(),
            TokioClock::new(EPOCH_BASE_MS),
        ),
    )
    .await
    .unwrap();
    let first = submit(&engine, REGION).await;
    engine.wait(first).await.unwrap();
    let mut all = engine.subscribe_all(1);
    // Submitted while the stream follows live.
    let second = submit(&engine, RegionId::new(1024, 2)).await;
    let mut seen = Vec::new();
    let mut finished = 0;
    while finished < 2 {
        let logged = all.next().await.expect("stream open").expect("event");
        if logged.event.event.is_terminal() {
            finished += 1;
        }
        seen.push(logged);
    }
    let global: Vec<u64> = seen.iter().map(|logged| logged.global_seq).collect();
    assert_eq!(global, (1..=seen.len() as u64).collect::<Vec<_>>());
    let total = load_procedure(engine.log(), first).unwrap().len()
        + load_procedure(engine.log(), second).unwrap().len();
    assert_eq!(seen.len(), total);
    for id in [first, second] {
        let of_one: Vec<u64> = seen
            .iter()
            .filter(|logged| logged.event.procedure_id == id)
            .map(|logged| logged.event.seq)
            .collect();
        assert_eq!(of_one, (1..=of_one.len() as u64).collect::<Vec<_>>());
    }
    // The stream ends when the engine stops.
    engine.shutdown().await;
    assert!(all.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_engine_can_be_reopened_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = one_table();
    let clock = TokioClock::new(EPOCH_BASE_MS);
    let slow = Arc::new(ScriptedMailbox::with_delay(500));
    let engine = Engine::open(
        dir.path(),
        EngineConfig::default(),
        ports(slow, metadata.clone(), clock.clone()),
    )
    .await
    .unwrap();
    let id = submit(&engine, REGION).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(engine);
    // No pause: the aborted tasks of the dropped engine still hold its log for a moment.
    let engine = Engine::open(
        dir.path(),
        EngineConfig::default(),
        ports(ScriptedMailbox::new(), metadata.clone(), clock),
    )
    .await
    .expect("reopen right after drop");
    assert_eq!(
        engine.wait(id).await.unwrap().outcome,
        Some(Outcome::Completed)
    );
}

#[tokio::test(start_paused = true)]
async fn history_and_audit_are_engine_methods_with_typed_ids() {
    use regmig::engine::{AuditEntry, AuditQuery, AuditSubject};
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        config(),
        ports(
            ScriptedMailbox::new(),
            one_table(),
            TokioClock::new(EPOCH_BASE_MS),
        ),
    )
    .await
    .unwrap();
    let first = submit(&engine, REGION).await;
    engine.wait(first).await.unwrap();
    let second = submit(&engine, RegionId::new(1024, 2)).await;
    engine.wait(second).await.unwrap();
    let history = engine.history(first).await.unwrap();
    assert_eq!(history, load_procedure(engine.log(), first).unwrap());
    assert!(engine.history(Uuid::from_u128(9)).await.unwrap().is_empty());
    let first_submitted_at_ms = history[0].at_ms;
    let of_region = engine
        .audit(AuditQuery::all_of(AuditSubject::Region(REGION)))
        .await
        .unwrap();
    assert_eq!(
        of_region,
        vec![AuditEntry {
            procedure_id: first,
            submitted_at_ms: first_submitted_at_ms
        }]
    );
    let of_peer = engine
        .audit(AuditQuery::all_of(AuditSubject::Peer(2)))
        .await
        .unwrap();
    // Both, ordered by submission time then id (virtual time stood still: same ms).
    let mut expected = vec![
        (engine.history(first).await.unwrap()[0].at_ms, first),
        (engine.history(second).await.unwrap()[0].at_ms, second),
    ];
    expected.sort();
    assert_eq!(
        of_peer
            .iter()
            .map(|entry| (entry.submitted_at_ms, entry.procedure_id))
            .collect::<Vec<_>>(),
        expected
    );
    let none = engine
        .audit(AuditQuery::all_of(AuditSubject::Peer(3)))
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Issue 15: `get` and `wait` give a small summary (ids, peers, who and why, state, outcome,
/// times, counts), not the model's internals; an unknown id is a typed error.
#[tokio::test(start_paused = true)]
async fn get_and_wait_give_the_migration_summary() {
    let dir = tempfile::tempdir().unwrap();
    let ports = ports(
        ScriptedMailbox::new(),
        one_table(),
        TokioClock::new(EPOCH_BASE_MS),
    );
    let engine = Engine::open(dir.path(), config(), ports).await.unwrap();
    let request =
        MigrationRequest::new(REGION, Peer::sim(1), Peer::sim(2)).by("alice", "rebalance");
    let SubmitOutcome::Started(id) = engine.submit(request).await.unwrap() else {
        panic!("not started");
    };
    let summary = engine.wait(id).await.unwrap();
    assert_eq!(summary, engine.get(id).await.unwrap());
    assert_eq!(summary.procedure_id, id);
    assert_eq!(summary.region_id, REGION);
    assert_eq!((summary.from_peer, summary.to_peer), (1, 2));
    assert_eq!(summary.batch_id, None);
    assert_eq!(summary.actor.as_deref(), Some("alice"));
    assert_eq!(summary.reason.as_deref(), Some("rebalance"));
    assert_eq!(summary.outcome, Some(Outcome::Completed));
    assert!(summary.is_finished());
    assert_eq!(summary.state, regmig::migration::StateName::End);
    assert_eq!(
        summary.path.first(),
        Some(&regmig::migration::StateName::Start)
    );
    assert_eq!(
        summary.path.last(),
        Some(&regmig::migration::StateName::End)
    );
    assert_eq!(summary.submitted_at_ms, EPOCH_BASE_MS);
    assert!(summary.finished_at_ms.unwrap() >= summary.submitted_at_ms);
    assert_eq!(summary.timeout_ms, regmig::migration::DEFAULT_TIMEOUT_MS);
    assert_eq!(
        summary
            .counters
            .sent
            .get(&SentKey::new(1, InstructionKind::DowngradeRegion)),
        Some(&1)
    );
    let history = engine.history(id).await.unwrap();
    assert_eq!(summary.counters.events, history.len() as u64);
    let unknown = Uuid::from_u128(7);
    assert!(matches!(
        engine.get(unknown).await,
        Err(EngineError::UnknownProcedure { procedure_id }) if procedure_id == unknown
    ));
    engine.shutdown().await;
}
