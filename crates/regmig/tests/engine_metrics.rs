//! The engine's metrics through the `metrics` facade, read back with a debugging recorder
//! for a scripted migration: opening the candidate times out once, the state is retried,
//! then the migration completes.

mod engine_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use engine_support::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::TokioClock;
use regmig::domain::*;
use regmig::engine::metrics::*;
use regmig::engine::{AppendMode, Engine, EngineConfig, MigrationRequest, SubmitOutcome};
use regmig::migration::{ErrorKind, Outcome};

/// A metric's name and labels, e.g. `regmig_instructions_sent_total{instruction=open_region,peer=2}`.
fn key_text(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

enum Recorded {
    Counter(u64),
    /// The samples of a histogram.
    Histogram(Vec<f64>),
}

/// One migration; with `open_times_out`, opening the candidate times out once first.
async fn scripted_migration(open_times_out: bool) -> Outcome {
    let metadata = Arc::new(MemoryMetadataStore::new());
    add_table(&metadata, 1024, 1, 1, &[]);
    let mailbox = ScriptedMailbox::new();
    if open_times_out {
        mailbox.script(
            2,
            InstructionKind::OpenRegion,
            vec![MailboxOutcome::Timeout],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        append_mode: AppendMode::Inline,
        ..EngineConfig::default()
    };
    let clock = TokioClock::new(EPOCH_BASE_MS);
    let engine = Engine::open(dir.path(), config, ports(mailbox, metadata, clock))
        .await
        .unwrap();
    let request = MigrationRequest::new(RegionId::new(1024, 1), Peer::sim(1), Peer::sim(2));
    let SubmitOutcome::Started(id) = engine.submit(request).await.unwrap() else {
        panic!("not started");
    };
    let outcome = engine.wait(id).await.unwrap().outcome.expect("finished");
    engine.shutdown().await;
    outcome
}

fn record_one_migration(open_times_out: bool) -> (Outcome, BTreeMap<String, Recorded>) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let outcome = metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(scripted_migration(open_times_out))
    });
    let mut recorded = BTreeMap::new();
    for (key, _unit, _description, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|label| (label.key().to_string(), label.value().to_string()))
            .collect();
        let text = key_text(key.key().name(), &labels);
        let value = match (key.kind(), value) {
            (MetricKind::Counter, DebugValue::Counter(count)) => Recorded::Counter(count),
            (MetricKind::Histogram, DebugValue::Histogram(samples)) => {
                Recorded::Histogram(samples.into_iter().map(|sample| sample.0).collect())
            }
            (kind, value) => panic!("{text}: unexpected {kind:?} {value:?}"),
        };
        recorded.insert(text, value);
    }
    (outcome, recorded)
}

fn counter(recorded: &BTreeMap<String, Recorded>, key: &str) -> u64 {
    match recorded.get(key) {
        Some(Recorded::Counter(count)) => *count,
        Some(Recorded::Histogram(_)) => panic!("{key} is a histogram"),
        None => panic!("{key} not recorded; recorded: {:?}", recorded.keys()),
    }
}

fn samples<'a>(recorded: &'a BTreeMap<String, Recorded>, key: &str) -> &'a [f64] {
    match recorded.get(key) {
        Some(Recorded::Histogram(samples)) => samples,
        Some(Recorded::Counter(_)) => panic!("{key} is a counter"),
        None => panic!("{key} not recorded; recorded: {:?}", recorded.keys()),
    }
}

#[test]
fn a_scripted_migration_reports_its_counts_states_and_answers() {
    let (outcome, recorded) = record_one_migration(true);
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(counter(&recorded, MIGRATIONS_SUBMITTED), 1);
    assert_eq!(
        counter(
            &recorded,
            &format!("{MIGRATIONS_FINISHED}{{outcome=completed}}")
        ),
        1
    );
    for (instruction, peer, sent) in [
        ("open_region", 2, 2),
        ("flush_region", 1, 1),
        ("downgrade_region", 1, 1),
        ("upgrade_region", 2, 1),
        ("close_region", 1, 1),
    ] {
        let key = format!("{INSTRUCTIONS_SENT}{{instruction={instruction},peer={peer}}}");
        assert_eq!(counter(&recorded, &key), sent, "{key}");
    }
    let open_answers = |answer: &str| {
        format!("{INSTRUCTION_ANSWERS}{{instruction=open_region,peer=2,answer={answer}}}")
    };
    assert_eq!(counter(&recorded, &open_answers("timeout")), 1);
    assert_eq!(counter(&recorded, &open_answers("reply")), 1);
    assert_eq!(counter(&recorded, &format!("{RETRIES}{{scope=state}}")), 1);
    assert_eq!(
        counter(
            &recorded,
            &format!("{ERRORS}{{state=OpenCandidateRegion,kind=mailbox_timeout}}")
        ),
        1
    );
    assert!(!recorded.contains_key(&format!("{RETRIES}{{scope=rollback}}")));
    // Every state of the path was left once, End included (left by Finished); the retry of
    // OpenCandidateRegion stays in that state.
    for state in [
        "Start",
        "OpenCandidateRegion",
        "FlushLeaderRegion",
        "UpdateMetadata::Downgrade",
        "DowngradeLeaderRegion",
        "UpgradeCandidateRegion",
        "UpdateMetadata::Upgrade",
        "CloseDowngradedRegion",
        "End",
    ] {
        let key = format!("{STATE_DURATION}{{state={state}}}");
        assert_eq!(samples(&recorded, &key).len(), 1, "{key}");
    }
    // The open that timed out held its state for the mailbox wait.
    let open = samples(
        &recorded,
        &format!("{STATE_DURATION}{{state=OpenCandidateRegion}}"),
    );
    assert!(open[0] >= 1.0, "{open:?}");
    assert_eq!(samples(&recorded, WRITE_PAUSE).len(), 1);
    assert!(
        !recorded.contains_key(SLOW_PATH_WAITS),
        "no slow path was taken"
    );
    let appended: f64 = samples(&recorded, LOG_APPEND_EVENTS).iter().sum();
    assert_eq!(
        samples(&recorded, LOG_APPEND_DURATION).len(),
        samples(&recorded, LOG_APPEND_EVENTS).len()
    );
    assert!(appended > 20.0, "{appended} events appended");
}

/// Issue 17: the events decided before a read (the route, a datanode table) or before
/// taking the locks, and the route read a route write rests on, are held and appended with
/// the next decision's; a datanode's answer never waits. A migration on the happy path
/// appends 8 times after its submit (8 durable waits), not once per decision (12):
/// - 6: the locks, the first route read, the datanode-table read, the open's send;
/// - 3: the open's answer, the flush's send;
/// - 2: the flush's answer, the downgrade's state (its route read comes next);
/// - 5: that route read, the route write's result, the lease, the downgrade's send;
/// - 5: the downgrade's answer, the upgrade's send;
/// - 3: the upgrade's answer, the upgrade's state;
/// - 5: the route read, the route write's result, the hooks, the close's send;
/// - 3: the close's answer, the end.
#[test]
fn events_decided_before_a_read_ride_with_the_next_append() {
    let (outcome, recorded) = record_one_migration(false);
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(
        samples(&recorded, LOG_APPEND_EVENTS),
        &[6.0, 3.0, 2.0, 5.0, 5.0, 3.0, 5.0, 3.0]
    );
}

#[test]
fn error_kind_names_are_their_serialized_names() {
    for kind in [
        ErrorKind::MetadataStore,
        ErrorKind::TableRouteNotFound,
        ErrorKind::RegionRouteNotFound,
        ErrorKind::LogicalTable,
        ErrorKind::NoLeader,
        ErrorKind::DatanodeTableNotFound,
        ErrorKind::OpenRegionFailed,
        ErrorKind::MailboxTimeout,
        ErrorKind::Unreachable,
        ErrorKind::UnexpectedReply,
        ErrorKind::CasConflict,
        ErrorKind::UnexpectedRoute,
        ErrorKind::RetryBudgetExhausted,
        ErrorKind::MigrationAborted,
        ErrorKind::Cancelled,
    ] {
        assert_eq!(
            serde_json::to_value(kind).unwrap(),
            serde_json::Value::String(kind.name().to_string())
        );
    }
}
