//! Revision 2 in `list` and `show`: a rollback being retried shows its attempts and last
//! error, and `show` reports the write pause the log shows.

use regmig::domain::{Instruction, Peer, RegionId, WalKind};
use regmig::engine::History;
use regmig::migration::write_pause_ms;
use regmig::migration::{
    ErrorKind, MigrationEvent, MigrationTask, RetryPolicy, RouteChange, StateName, StepError,
    TimedEvent,
};
use regmig_tools::cli::inspect::render_show;
use regmig_tools::cli::summary::{detail, summarize};
use uuid::Uuid;

const T0: u64 = 1_767_225_600_000;

fn at(offset_ms: u64, event: MigrationEvent) -> TimedEvent {
    TimedEvent {
        at_ms: T0 + offset_ms,
        event,
    }
}

fn metadata_error() -> StepError {
    StepError {
        kind: ErrorKind::MetadataStore,
        message: "metadata store error: read the route of table 1024: unavailable".to_string(),
        retryable: true,
    }
}

/// A migration whose downgrade was sent at 100 ms, that started rolling back at 10.6 s and
/// whose rollback failed twice.
fn rolling_back() -> Vec<TimedEvent> {
    vec![
        at(
            0,
            MigrationEvent::Submitted {
                task: MigrationTask {
                    region_id: RegionId::new(1024, 1),
                    from_peer: Peer::sim(1),
                    to_peer: Peer::sim(2),
                    timeout_ms: 10_000,
                },
                catalog: "greptime".to_string(),
                schema: "public".to_string(),
                wal: WalKind::Local,
                policy: RetryPolicy::default(),
                trigger: "operator".to_string(),
                reason: None,
                actor: None,
            },
        ),
        at(
            0,
            MigrationEvent::StateEntered {
                state: StateName::DowngradeLeaderRegion,
                reason: None,
            },
        ),
        at(
            100,
            MigrationEvent::InstructionSent {
                peer: Peer::sim(1),
                instruction: Instruction::DowngradeRegion {
                    region_id: RegionId::new(1024, 1),
                    flush_timeout_ms: 10_000,
                    reject_write: true,
                },
                timeout_ms: 10_000,
                deadline_ms: T0 + 10_100,
                attempt: 1,
                resend: false,
                regions: Vec::new(),
            },
        ),
        at(
            10_600,
            MigrationEvent::RollbackStarted {
                error: StepError {
                    kind: ErrorKind::RetryBudgetExhausted,
                    message: "retry budget exhausted".to_string(),
                    retryable: false,
                },
            },
        ),
        at(
            10_600,
            MigrationEvent::MetadataFailed {
                operation: "read the route of table 1024".to_string(),
                error: "unavailable".to_string(),
            },
        ),
        at(
            10_600,
            MigrationEvent::RetryScheduled {
                attempt: 1,
                delay_ms: 500,
                due_at_ms: T0 + 11_100,
                jitter_random: 0,
                rollback: true,
                error: metadata_error(),
            },
        ),
        at(11_100, MigrationEvent::WaitElapsed),
        at(
            11_100,
            MigrationEvent::RetryScheduled {
                attempt: 2,
                delay_ms: 1_000,
                due_at_ms: T0 + 12_100,
                jitter_random: 0,
                rollback: true,
                error: metadata_error(),
            },
        ),
    ]
}

#[test]
fn a_retried_rollback_shows_its_attempts_and_last_error() {
    let events = History::from(rolling_back());
    let summary = summarize(Uuid::nil(), &events).expect("summary");
    assert_eq!(summary.status, "rolling_back");
    assert_eq!(summary.rollback_attempts, 2);
    assert_eq!(
        summary.rollback_last_error.as_deref(),
        Some("metadata store error: read the route of table 1024: unavailable")
    );
    // Still Downgrading: the pause runs to the last event.
    assert_eq!(summary.write_pause_ms, Some(11_000));
    let show = render_show(&detail(Uuid::nil(), &events).expect("detail"));
    assert!(
        show.contains(
            "rolling back:    2 retries so far, last error: metadata store error: read the \
             route of table 1024: unavailable\n"
        ),
        "{show}"
    );
    assert!(show.contains("write pause:     11.000s"), "{show}");
}

#[test]
fn the_write_pause_ends_at_the_route_write_that_ends_it() {
    let mut events = rolling_back();
    events.truncate(3);
    assert_eq!(write_pause_ms(&events), Some(0));
    events.push(at(
        2_600,
        MigrationEvent::RouteCasApplied {
            table_id: 1024,
            change: RouteChange::Upgrade,
            from_version: 1,
            to_version: 2,
        },
    ));
    events.push(at(
        3_000,
        MigrationEvent::StateEntered {
            state: StateName::End,
            reason: None,
        },
    ));
    assert_eq!(write_pause_ms(&events), Some(2_500));
    // No downgrade sent: no pause.
    assert_eq!(write_pause_ms(&events[..2]), None);
}
