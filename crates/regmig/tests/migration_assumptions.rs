//! The model asserts what it assumes of a log: a log that breaks an assumption gets a typed
//! error naming the event at fault, never a silent default.

mod common;

use common::world::{batch_ends, Setup, World, START_MS, TO};
use regmig::domain::{InstructionKind, Reply};
use regmig::migration::{
    decide, fold, fold_decision, try_fold, DecideError, Decision, DecisionState, EncodeError,
    FoldError, Input, MigrationEvent, Observation, SentKey, TimedEvent,
};

fn timed(events: Vec<MigrationEvent>) -> Vec<TimedEvent> {
    events
        .into_iter()
        .enumerate()
        .map(|(offset, event)| TimedEvent {
            at_ms: START_MS + offset as u64,
            event,
        })
        .collect()
}

/// Folds `events`, checks the fold names `expected`, and that decide refuses the state
/// with it.
fn assert_broken(events: Vec<MigrationEvent>, expected: FoldError) {
    let log = timed(events);
    let state = fold(&log);
    assert_eq!(state.broken, Some(expected.clone()));
    assert_eq!(try_fold(&log), Err(expected.clone()));
    let refused = decide(&state, START_MS + 100, Input::new(Observation::Resumed))
        .expect_err("decide refuses a broken log");
    assert_eq!(refused, DecideError::BrokenLog(expected));
}

#[test]
fn a_log_that_does_not_start_with_submitted_is_broken() {
    let expected = FoldError::NotStartedBySubmitted {
        kind: "WaitElapsed",
    };
    assert_eq!(
        expected.to_string(),
        "event 1 is WaitElapsed, but a procedure's log starts with Submitted"
    );
    assert_broken(
        vec![MigrationEvent::WaitElapsed, Setup::default().submitted()],
        expected,
    );
}

#[test]
fn a_second_submitted_is_broken() {
    let submitted = Setup::default().submitted();
    let expected = FoldError::SubmittedTwice { event_number: 2 };
    assert_eq!(expected.to_string(), "event 2 is a second Submitted");
    assert_broken(vec![submitted.clone(), submitted], expected);
}

#[test]
fn an_answer_with_no_instruction_outstanding_is_broken_and_nothing_is_invented() {
    let expected = FoldError::AnswerWithoutInstruction {
        event_number: 2,
        kind: "ReplyReceived",
        peer: TO,
    };
    assert_eq!(
        expected.to_string(),
        "event 2 (ReplyReceived) answers peer 2, but no instruction is outstanding"
    );
    let events = vec![
        Setup::default().submitted(),
        MigrationEvent::ReplyReceived {
            peer: TO,
            reply: Reply::OpenRegion {
                result: true,
                error: None,
            },
        },
    ];
    let state = fold(&timed(events.clone()));
    assert_eq!(state.step.answered, None, "no answer is made up");
    assert_broken(events, expected);
}

#[test]
fn a_timeout_with_no_instruction_outstanding_is_broken() {
    assert_broken(
        vec![
            Setup::default().submitted(),
            MigrationEvent::MailboxTimedOut {
                peer: TO,
                instruction: InstructionKind::UpgradeRegion,
            },
        ],
        FoldError::AnswerWithoutInstruction {
            event_number: 2,
            kind: "MailboxTimedOut",
            peer: TO,
        },
    );
}

#[test]
fn only_the_first_broken_assumption_is_kept() {
    let submitted = Setup::default().submitted();
    let log = timed(vec![MigrationEvent::Resumed, submitted.clone(), submitted]);
    assert_eq!(
        try_fold(&log),
        Err(FoldError::NotStartedBySubmitted { kind: "Resumed" })
    );
}

#[test]
fn a_well_formed_log_folds_and_decides() {
    let log = timed(vec![Setup::default().submitted()]);
    let state = try_fold(&log).expect("a submitted procedure folds");
    assert_eq!(state.broken, None);
    decide(&state, START_MS + 100, Input::new(Observation::Begin)).expect("decides");
}

#[test]
fn every_event_encodes_and_an_encode_error_names_its_event() {
    let payload = Setup::default().submitted().encode().expect("encodes");
    assert!(!payload.is_empty());
    let error = EncodeError {
        kind: 1,
        kind_name: "Submitted",
        message: "boom".to_string(),
    };
    assert_eq!(
        error.to_string(),
        "cannot encode event of kind 1 (Submitted): boom"
    );
}

/// `decide` is given only the decision part of a folded state: the report (counters, path,
/// times, who asked) cannot reach a decision. This stops compiling if `decide` is handed
/// the whole state again.
const _DECIDE_SEES_ONLY_THE_DECISION_PART: fn(
    &DecisionState,
    u64,
    Input,
) -> Result<Decision, DecideError> = decide;

#[test]
fn the_decision_part_folds_alone_as_it_does_beside_the_report() {
    let mut world = World::default();
    let run = world.run_submitted(&Setup::default());
    let mut compared = 0;
    for end in batch_ends(&run.log) {
        let state = fold(&run.log[..end]);
        assert_eq!(
            state.decision,
            fold_decision(&run.log[..end]),
            "after event {end}"
        );
        assert_eq!(state.report.counters.events, end as u64);
        compared += 1;
    }
    assert!(
        compared > 5,
        "only {compared} points of the run were compared"
    );
}

#[test]
fn instructions_sent_are_counted_by_datanode_and_kind_and_spelled_peer_dot_kind() {
    let mut world = World::default();
    let run = world.run_submitted(&Setup::default());
    let sent = run.state().report.counters.sent;
    assert_eq!(
        sent.get(&SentKey::new(TO, InstructionKind::OpenRegion)),
        Some(&1)
    );
    assert_eq!(
        serde_json::to_value(&sent).expect("serializes"),
        serde_json::json!({
            "1.close_region": 1,
            "1.downgrade_region": 1,
            "1.flush_region": 1,
            "2.open_region": 1,
            "2.upgrade_region": 1,
        })
    );
    assert_eq!(
        SentKey::new(TO, InstructionKind::UpgradeRegion).to_string(),
        "2.upgrade_region"
    );
}

/// A log is outside input (a bundle can come from anywhere): an event stamped at the end of
/// time makes every deadline computed from it saturate, and the replay check reports the
/// divergence instead of overflowing (found by feeding `replay --check` a crafted bundle).
#[test]
fn times_at_the_end_of_u64_saturate_instead_of_overflowing() {
    let mut world = World::default();
    let run = world.run_submitted(&Setup::default());
    assert!(run.log.len() > 12, "a whole migration: {}", run.log.len());
    for stamped_from in 1..run.log.len() {
        let mut log = run.log.clone();
        for timed in &mut log[stamped_from..] {
            timed.at_ms = u64::MAX;
        }
        // Every input is decided at u64::MAX; whatever the outcome, it is an answer.
        let _ = regmig::migration::replay::check(&log);
        let state = fold(&log);
        if !state.is_finished() && state.broken.is_none() {
            let _ = decide(&state, u64::MAX, Input::new(Observation::Resumed));
        }
    }
}
