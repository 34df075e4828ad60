//! The log's conformance suite: what every [`LogStore`] backend must do, checked through
//! [`EventLog`] (the integrity layer every caller uses). A backend runs it with its own
//! [`LogFactory`]: `conformance::run_all(&mut MyFactory::new())` in one test, or each case
//! in a test of its own (`log_conformance.rs` does that for sled). A test file includes it
//! beside `log_support` (it uses its helpers):
//! `mod log_support; #[path = "log_support/conformance.rs"] mod conformance;`.
//!
//! Every case starts from an empty log and asserts exact outcomes: receipts, conflicts,
//! what each read returns, in order. The damage cases wrap the backend's store in
//! [`TamperingStore`], which hands up altered bytes or drops a record, so they check the
//! layer above the trait on every backend without knowing how the backend stores anything.

use std::sync::Arc;

use async_trait::async_trait;
use regmig::log::store::AppendResult;
use regmig::log::{
    chain_hash, encode_record, AppendConflict, AppendReceipt, AppendRequest, AuditEntry,
    AuditIndex, EventLog, ListedEvent, LogError, LogStore, NewEvent, OpenProcedure, StoredEvent,
    CHAIN_START,
};
use uuid::Uuid;

use crate::log_support::{assert_events_are_the_written_ones, first_append, next_append};

/// Makes the logs the suite runs on.
pub trait LogFactory {
    /// A new, empty log, open for writing.
    fn create(&mut self) -> EventLog;
    /// The same store opened again, after `log` (the caller's last handle) is dropped.
    fn reopen(&mut self, log: EventLog) -> EventLog;
}

/// The suite as tests: one `#[test]` per case, each on a factory made by `$factory`, and
/// the whole suite in order on one factory ([`run_all`]). A backend's test file includes
/// this module as `conformance` and calls `crate::conformance_tests!(ItsFactory)`, so a
/// new case is listed here once for every backend.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@cases $factory;
            appends_take_consecutive_seqs_and_global_seqs,
            a_stale_expected_seq_is_a_conflict_and_writes_nothing,
            a_busy_region_is_a_conflict_until_its_procedure_closes,
            invalid_appends_are_refused_with_the_reason,
            reads_by_procedure_start_where_asked,
            reads_in_global_order_start_where_asked_and_stop_at_the_limit,
            the_audit_indexes_find_procedures_by_region_peer_and_time,
            open_procedures_follow_opens_and_closes,
            records_are_chained_in_global_order,
            concurrent_async_appends_all_land_without_gaps,
            everything_survives_a_reopen,
            altered_bytes_from_the_store_are_damage,
            a_record_the_store_drops_is_a_sequence_gap,
            verify_through_the_trait_agrees_with_the_store_and_finds_tampering,
        );

        /// The whole suite on one factory, in order, as a backend that runs it in one test
        /// would.
        #[test]
        fn the_whole_suite_runs_on_one_factory() {
            $crate::conformance::run_all(&mut $factory);
        }
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case(&mut $factory);
            }
        )*
    };
}

/// Every case, in order.
pub fn run_all(factory: &mut dyn LogFactory) {
    appends_take_consecutive_seqs_and_global_seqs(factory);
    a_stale_expected_seq_is_a_conflict_and_writes_nothing(factory);
    a_busy_region_is_a_conflict_until_its_procedure_closes(factory);
    invalid_appends_are_refused_with_the_reason(factory);
    reads_by_procedure_start_where_asked(factory);
    reads_in_global_order_start_where_asked_and_stop_at_the_limit(factory);
    the_audit_indexes_find_procedures_by_region_peer_and_time(factory);
    open_procedures_follow_opens_and_closes(factory);
    records_are_chained_in_global_order(factory);
    concurrent_async_appends_all_land_without_gaps(factory);
    everything_survives_a_reopen(factory);
    altered_bytes_from_the_store_are_damage(factory);
    a_record_the_store_drops_is_a_sequence_gap(factory);
    verify_through_the_trait_agrees_with_the_store_and_finds_tampering(factory);
}

fn id() -> Uuid {
    Uuid::now_v7()
}

fn append(log: &EventLog, request: AppendRequest) -> AppendReceipt {
    match log.append_blocking(request) {
        Ok(Ok(receipt)) => receipt,
        other => panic!("the append should land, got {other:?}"),
    }
}

/// One event recorded at `recorded_at_ms`.
fn event_at(recorded_at_ms: u64) -> NewEvent {
    NewEvent {
        kind: 1,
        recorded_at_ms,
        payload: recorded_at_ms.to_be_bytes().to_vec(),
    }
}

/// A first batch of one event at `recorded_at_ms`, opening `region_id` with `peers`.
fn opening_at(
    procedure_id: Uuid,
    region_id: u64,
    peers: Vec<u64>,
    recorded_at_ms: u64,
) -> AppendRequest {
    AppendRequest {
        procedure_id,
        expected_next_seq: 1,
        events: vec![event_at(recorded_at_ms)],
        opens: Some(OpenProcedure { region_id, peers }),
        closes: false,
    }
}

pub fn appends_take_consecutive_seqs_and_global_seqs(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let (a, b) = (id(), id());
    assert_eq!(
        append(&log, first_append(a, 3, 10, vec![1, 2])),
        AppendReceipt {
            first_seq: 1,
            last_seq: 3,
            first_global_seq: 1
        }
    );
    assert_eq!(
        append(&log, first_append(b, 1, 11, vec![2, 3])),
        AppendReceipt {
            first_seq: 1,
            last_seq: 1,
            first_global_seq: 4
        }
    );
    assert_eq!(
        append(&log, next_append(a, 4, 2, false)),
        AppendReceipt {
            first_seq: 4,
            last_seq: 5,
            first_global_seq: 5
        }
    );
    assert_eq!(log.next_seq(a).expect("next seq"), 6);
    assert_eq!(log.next_seq(b).expect("next seq"), 2);
    assert_eq!(log.next_seq(id()).expect("next seq"), 1);
    let records = log.procedure_events(a, 1).expect("read a");
    assert_eq!(records.len(), 5);
    assert_events_are_the_written_ones(a, &records);
    let global: Vec<(Uuid, u64, u64)> = records
        .iter()
        .map(|record| (record.procedure_id, record.seq, record.global_seq))
        .collect();
    assert_eq!(
        global,
        vec![(a, 1, 1), (a, 2, 2), (a, 3, 3), (a, 4, 5), (a, 5, 6)]
    );
    let mut procedures = vec![a, b];
    procedures.sort();
    assert_eq!(log.procedures().expect("procedures"), procedures);
}

pub fn a_stale_expected_seq_is_a_conflict_and_writes_nothing(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let a = id();
    append(&log, first_append(a, 2, 10, vec![1]));
    for stale in [1, 2, 4] {
        let outcome = log
            .append_blocking(next_append(a, stale, 1, false))
            .expect("a conflict is not a fault");
        assert_eq!(
            outcome,
            Err(AppendConflict::Sequence {
                procedure_id: a,
                expected_next_seq: stale,
                actual_next_seq: 3
            })
        );
    }
    assert_eq!(log.next_seq(a).expect("next seq"), 3);
    assert_eq!(log.events_from(1, usize::MAX).expect("global").len(), 2);
    // The conflict cost no global seq: the next append follows on.
    assert_eq!(
        append(&log, next_append(a, 3, 1, false)).first_global_seq,
        3
    );
}

pub fn a_busy_region_is_a_conflict_until_its_procedure_closes(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let (a, b) = (id(), id());
    append(&log, first_append(a, 1, 42, vec![1]));
    assert_eq!(
        log.append_blocking(first_append(b, 1, 42, vec![2]))
            .expect("a conflict is not a fault"),
        Err(AppendConflict::RegionBusy {
            region_id: 42,
            open_procedure_id: a
        })
    );
    assert_eq!(log.next_seq(b).expect("next seq"), 1);
    append(&log, next_append(a, 2, 1, true));
    assert_eq!(
        append(&log, first_append(b, 1, 42, vec![2])),
        AppendReceipt {
            first_seq: 1,
            last_seq: 1,
            first_global_seq: 3
        }
    );
    assert_eq!(log.open_procedure_of_region(42).expect("region"), Some(b));
}

pub fn invalid_appends_are_refused_with_the_reason(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let v4 = Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);
    let cases = [
        (first_append(v4, 1, 1, vec![]), "uuid v4"),
        (
            AppendRequest {
                events: Vec::new(),
                ..first_append(id(), 1, 2, vec![])
            },
            "no events",
        ),
        (next_append(id(), 0, 1, false), "expected_next_seq is 0"),
        (
            AppendRequest {
                expected_next_seq: 2,
                ..first_append(id(), 1, 3, vec![])
            },
            "`opens` comes with the first batch",
        ),
    ];
    for (request, reason_part) in cases {
        match log.append_blocking(request) {
            Err(LogError::InvalidAppend { reason, .. }) => assert!(
                reason.contains(reason_part),
                "{reason:?} should say {reason_part:?}"
            ),
            other => panic!("expected InvalidAppend ({reason_part}), got {other:?}"),
        }
    }
    assert_eq!(log.procedures().expect("procedures"), Vec::<Uuid>::new());
}

pub fn reads_by_procedure_start_where_asked(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let a = id();
    append(&log, first_append(a, 4, 10, vec![]));
    let seqs = |from_seq| -> Vec<u64> {
        log.procedure_events(a, from_seq)
            .expect("read")
            .iter()
            .map(|record| record.seq)
            .collect()
    };
    assert_eq!(seqs(0), vec![1, 2, 3, 4]);
    assert_eq!(seqs(3), vec![3, 4]);
    assert_eq!(seqs(5), Vec::<u64>::new());
    assert!(log.procedure_events(id(), 1).expect("read").is_empty());
}

pub fn reads_in_global_order_start_where_asked_and_stop_at_the_limit(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let (a, b) = (id(), id());
    append(&log, first_append(a, 2, 10, vec![]));
    append(&log, first_append(b, 2, 11, vec![]));
    append(&log, next_append(a, 3, 1, true));
    let order = |from, limit| -> Vec<(Uuid, u64, u64)> {
        log.events_from(from, limit)
            .expect("read")
            .iter()
            .map(|record| (record.global_seq, record.procedure_id, record.seq))
            .map(|(global_seq, procedure_id, seq)| (procedure_id, seq, global_seq))
            .collect()
    };
    assert_eq!(
        order(0, usize::MAX),
        vec![(a, 1, 1), (a, 2, 2), (b, 1, 3), (b, 2, 4), (a, 3, 5)]
    );
    assert_eq!(order(2, 2), vec![(a, 2, 2), (b, 1, 3)]);
    assert_eq!(order(5, 10), vec![(a, 3, 5)]);
    assert_eq!(order(6, 10), vec![]);
    assert_eq!(order(1, 0), vec![]);
}

pub fn the_audit_indexes_find_procedures_by_region_peer_and_time(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let (a, b, c) = (id(), id(), id());
    append(&log, opening_at(a, 100, vec![7, 8, 7], 1_000));
    append(&log, opening_at(b, 101, vec![8, 9], 2_000));
    append(&log, next_append(a, 2, 1, true));
    append(&log, opening_at(c, 100, vec![9], 3_000));
    assert_eq!(
        log.procedures_by_region(100, 0, u64::MAX).expect("region"),
        vec![(1_000, a), (3_000, c)]
    );
    // Both ends of the window are included.
    assert_eq!(
        log.procedures_by_region(100, 1_000, 2_999).expect("region"),
        vec![(1_000, a)]
    );
    assert_eq!(
        log.procedures_by_region(100, 1_001, 3_000).expect("region"),
        vec![(3_000, c)]
    );
    assert_eq!(
        log.procedures_by_region(100, 3_000, 1_000).expect("region"),
        vec![]
    );
    assert_eq!(
        log.procedures_by_peer(8, 0, u64::MAX).expect("peer"),
        vec![(1_000, a), (2_000, b)]
    );
    // A peer named twice is filed once.
    assert_eq!(
        log.procedures_by_peer(7, 0, u64::MAX).expect("peer"),
        vec![(1_000, a)]
    );
    assert_eq!(
        log.procedures_by_peer(9, 2_000, 2_000).expect("peer"),
        vec![(2_000, b)]
    );
    assert_eq!(
        log.procedures_by_regions(100..=101, 1_000, 2_000)
            .expect("regions"),
        vec![
            AuditEntry {
                owner_id: 100,
                recorded_at_ms: 1_000,
                procedure_id: a
            },
            AuditEntry {
                owner_id: 101,
                recorded_at_ms: 2_000,
                procedure_id: b
            },
        ]
    );
    assert_eq!(
        log.procedures_by_regions(102..=200, 0, u64::MAX)
            .expect("regions"),
        vec![]
    );
}

pub fn open_procedures_follow_opens_and_closes(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let (a, b, c) = (id(), id(), id());
    append(&log, first_append(a, 1, 20, vec![]));
    append(&log, first_append(b, 1, 21, vec![]));
    // Opened and closed in one batch: never open.
    append(
        &log,
        AppendRequest {
            closes: true,
            ..first_append(c, 2, 22, vec![])
        },
    );
    assert_eq!(log.open_procedures().expect("open"), vec![(a, 20), (b, 21)]);
    append(&log, next_append(a, 2, 1, true));
    assert_eq!(log.open_procedures().expect("open"), vec![(b, 21)]);
    assert_eq!(log.open_procedure_of_region(20).expect("region"), None);
    assert_eq!(log.open_procedure_of_region(21).expect("region"), Some(b));
    assert_eq!(log.open_procedure_of_region(22).expect("region"), None);
    // The audit index keeps closed procedures.
    assert_eq!(
        log.procedures_by_region(22, 0, u64::MAX)
            .expect("region")
            .len(),
        1
    );
}

pub fn records_are_chained_in_global_order(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let (a, b) = (id(), id());
    append(&log, first_append(a, 2, 10, vec![]));
    append(&log, first_append(b, 3, 11, vec![]));
    append(&log, next_append(a, 3, 1, false));
    let records = log.events_from(1, usize::MAX).expect("read");
    assert_eq!(records.len(), 6);
    let mut expected_prev = CHAIN_START;
    for record in &records {
        assert_eq!(
            record.prev_hash,
            Some(expected_prev),
            "global seq {}",
            record.global_seq
        );
        expected_prev = chain_hash(&encode_record(record));
    }
}

pub fn concurrent_async_appends_all_land_without_gaps(factory: &mut dyn LogFactory) {
    const PROCEDURES: u64 = 16;
    const BATCHES: u64 = 5;
    let log = factory.create();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .expect("a runtime");
    let procedures: Vec<Uuid> = (0..PROCEDURES).map(|_| id()).collect();
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (region_id, procedure_id) in (1000u64..).zip(procedures.clone()) {
            let log = log.clone();
            tasks.spawn(async move {
                let first = first_append(procedure_id, 1, region_id, vec![1]);
                assert!(matches!(log.append(first).await, Ok(Ok(_))));
                for batch in 1..BATCHES {
                    let request = next_append(procedure_id, batch + 1, 1, batch + 1 == BATCHES);
                    let receipt = log.append(request).await.expect("no fault");
                    assert_eq!(receipt.expect("no conflict").first_seq, batch + 1);
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("an appending task");
        }
        log.sync().await.expect("sync");
    });
    let all = log.events_from(1, usize::MAX).expect("read");
    let global_seqs: Vec<u64> = all.iter().map(|record| record.global_seq).collect();
    assert_eq!(
        global_seqs,
        (1..=PROCEDURES * BATCHES).collect::<Vec<u64>>()
    );
    for procedure_id in procedures {
        let records = log.procedure_events(procedure_id, 1).expect("read");
        assert_eq!(records.len() as u64, BATCHES);
        assert_events_are_the_written_ones(procedure_id, &records);
    }
    assert_eq!(log.open_procedures().expect("open"), vec![]);
}

pub fn everything_survives_a_reopen(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let (a, b) = (id(), id());
    append(&log, first_append(a, 2, 30, vec![5]));
    append(&log, first_append(b, 1, 31, vec![6]));
    append(&log, next_append(b, 2, 1, true));
    log.sync_blocking().expect("sync");
    let before = log.events_from(1, usize::MAX).expect("read");
    let log = factory.reopen(log);
    assert_eq!(log.events_from(1, usize::MAX).expect("read"), before);
    assert_eq!(log.open_procedures().expect("open"), vec![(a, 30)]);
    assert_eq!(log.next_seq(a).expect("next seq"), 3);
    assert_eq!(
        log.procedures_by_peer(6, 0, u64::MAX).expect("peer").len(),
        1
    );
    // The writer picks up where it was: seqs, global seqs, the chain, the busy region.
    assert_eq!(
        append(&log, next_append(a, 3, 1, false)),
        AppendReceipt {
            first_seq: 3,
            last_seq: 3,
            first_global_seq: 5
        }
    );
    assert_eq!(
        log.append_blocking(first_append(id(), 1, 30, vec![]))
            .expect("no fault"),
        Err(AppendConflict::RegionBusy {
            region_id: 30,
            open_procedure_id: a
        })
    );
    let records = log.events_from(1, usize::MAX).expect("read");
    let last = &records[records.len() - 1];
    assert_eq!(
        last.prev_hash,
        Some(chain_hash(&encode_record(&records[records.len() - 2])))
    );
}

pub fn altered_bytes_from_the_store_are_damage(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let a = id();
    append(&log, first_append(a, 3, 10, vec![]));
    let tampered = tampered(&log, (a, 2), Tamper::FlipLastByte);
    match tampered.procedure_events(a, 1) {
        Err(LogError::BadChecksum {
            procedure_id, seq, ..
        }) => assert_eq!((procedure_id, seq), (a, 2)),
        other => panic!("expected BadChecksum at seq 2, got {other:?}"),
    }
    match tampered.events_from(1, usize::MAX) {
        Err(LogError::BadChecksum {
            procedure_id, seq, ..
        }) => assert_eq!((procedure_id, seq), (a, 2)),
        other => panic!("expected BadChecksum at seq 2, got {other:?}"),
    }
    // Records past the damage still read.
    assert_eq!(tampered.procedure_events(a, 3).expect("read").len(), 1);
}

pub fn a_record_the_store_drops_is_a_sequence_gap(factory: &mut dyn LogFactory) {
    let log = factory.create();
    let a = id();
    append(&log, first_append(a, 3, 10, vec![]));
    let tampered = tampered(&log, (a, 2), Tamper::Drop);
    match tampered.procedure_events(a, 1) {
        Err(LogError::SequenceGap {
            procedure_id,
            seq,
            found_seq,
            ..
        }) => assert_eq!((procedure_id, seq, found_seq), (a, 2, 3)),
        other => panic!("expected a SequenceGap at seq 2, got {other:?}"),
    }
}

pub fn verify_through_the_trait_agrees_with_the_store_and_finds_tampering(
    factory: &mut dyn LogFactory,
) {
    let log = factory.create();
    let (a, b) = (id(), id());
    append(&log, first_append(a, 3, 10, vec![1]));
    append(&log, first_append(b, 2, 11, vec![2]));
    append(&log, next_append(b, 3, 1, true));
    let own = log.verify().expect("verify");
    assert!(own.is_clean(), "{:#?}", own.problems);
    assert_eq!((own.events, own.procedures, own.open_procedures), (6, 2, 1));
    // A store that alters nothing, but is not the backend's own type: verified through the
    // trait alone, with the same counts and the same chain head.
    let untouched = tampered(&log, (a, 99), Tamper::Drop)
        .verify()
        .expect("verify");
    assert!(untouched.is_clean(), "{:#?}", untouched.problems);
    assert_eq!(
        (
            untouched.events,
            untouched.procedures,
            untouched.open_procedures
        ),
        (6, 2, 1)
    );
    assert_eq!(untouched.chain, own.chain);

    let flipped = tampered(&log, (a, 2), Tamper::FlipLastByte)
        .verify()
        .expect("verify");
    let found: Vec<(&str, Option<Uuid>, Option<u64>)> = flipped
        .problems
        .iter()
        .map(|problem| (problem.kind_name(), problem.procedure_id(), problem.seq()))
        .collect();
    assert_eq!(found, vec![("bad_checksum", Some(a), Some(2))]);

    let dropped = tampered(&log, (a, 2), Tamper::Drop)
        .verify()
        .expect("verify");
    let found: Vec<(&str, Option<Uuid>, Option<u64>)> = dropped
        .problems
        .iter()
        .map(|problem| (problem.kind_name(), problem.procedure_id(), problem.seq()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("sequence_gap", Some(a), Some(2)),
            ("chain_broken", Some(a), Some(3)),
        ]
    );
}

/// `log` read through a [`TamperingStore`] that alters `target` (procedure, seq).
pub fn tampered(log: &EventLog, target: (Uuid, u64), tamper: Tamper) -> EventLog {
    EventLog::with_store(Arc::new(TamperingStore {
        inner: Arc::clone(log.store()),
        target,
        tamper,
    }))
}

/// What [`TamperingStore`] does to its target record on reads.
#[derive(Debug, Clone, Copy)]
pub enum Tamper {
    /// Flips the last byte (the crc32's).
    FlipLastByte,
    /// Leaves the record out.
    Drop,
}

/// A store that forwards everything to `inner`, but alters one record (procedure, seq) on
/// the way up: damage as any backend might hand it over.
pub struct TamperingStore {
    pub inner: Arc<dyn LogStore>,
    pub target: (Uuid, u64),
    pub tamper: Tamper,
}

impl TamperingStore {
    fn alter(&self, mut events: Vec<StoredEvent>) -> Vec<StoredEvent> {
        let target = self.target;
        match self.tamper {
            Tamper::FlipLastByte => {
                for event in &mut events {
                    if (event.procedure_id, event.seq) == target {
                        if let Some(last) = event.bytes.last_mut() {
                            *last ^= 0xff;
                        }
                    }
                }
            }
            Tamper::Drop => events.retain(|event| (event.procedure_id, event.seq) != target),
        }
        events
    }
}

#[async_trait]
impl LogStore for TamperingStore {
    fn location(&self) -> String {
        format!("{} (tampered)", self.inner.location())
    }
    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }
    fn damage(&self) -> Option<&LogError> {
        self.inner.damage()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    async fn append(&self, request: AppendRequest) -> AppendResult {
        self.inner.append(request).await
    }
    fn append_blocking(&self, request: AppendRequest) -> AppendResult {
        self.inner.append_blocking(request)
    }
    async fn sync(&self) -> Result<(), LogError> {
        self.inner.sync().await
    }
    fn sync_blocking(&self) -> Result<(), LogError> {
        self.inner.sync_blocking()
    }
    async fn next_seq(&self, procedure_id: Uuid) -> Result<u64, LogError> {
        self.inner.next_seq(procedure_id).await
    }
    async fn procedure_events(
        &self,
        procedure_id: Uuid,
        from_seq: u64,
    ) -> Result<Vec<StoredEvent>, LogError> {
        Ok(self.alter(self.inner.procedure_events(procedure_id, from_seq).await?))
    }
    async fn events_from(
        &self,
        from_global_seq: u64,
        limit: usize,
    ) -> Result<Vec<ListedEvent>, LogError> {
        let listed = self.inner.events_from(from_global_seq, limit).await?;
        let (global_seqs, events): (Vec<u64>, Vec<StoredEvent>) = listed
            .into_iter()
            .map(|listed| (listed.global_seq, listed.event))
            .unzip();
        let target = self.target;
        let kept: Vec<u64> = global_seqs
            .into_iter()
            .zip(&events)
            .filter(|(_, event)| {
                !matches!(self.tamper, Tamper::Drop) || (event.procedure_id, event.seq) != target
            })
            .map(|(global_seq, _)| global_seq)
            .collect();
        Ok(kept
            .into_iter()
            .zip(self.alter(events))
            .map(|(global_seq, event)| ListedEvent { global_seq, event })
            .collect())
    }
    async fn open_procedures(&self) -> Result<Vec<(Uuid, u64)>, LogError> {
        self.inner.open_procedures().await
    }
    async fn open_procedure_of_region(&self, region_id: u64) -> Result<Option<Uuid>, LogError> {
        self.inner.open_procedure_of_region(region_id).await
    }
    async fn audit_entries(
        &self,
        index: AuditIndex,
        owners: std::ops::RangeInclusive<u64>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<AuditEntry>, LogError> {
        self.inner
            .audit_entries(index, owners, since_ms, until_ms)
            .await
    }
    async fn procedures(&self) -> Result<Vec<Uuid>, LogError> {
        self.inner.procedures().await
    }
}
