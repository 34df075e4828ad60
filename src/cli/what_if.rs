//! `regmig replay ID --with KNOB=VALUE`: would another policy have changed the outcome?
//!
//! The recorded submit is given the changed policy, then today's [`decide`] is re-run at
//! every recorded input, as `replay --check` does, but comparing behaviour rather than
//! bytes: an instruction's timeout and deadline may differ (they follow the changed
//! budget), nothing else may. The first place where the changed policy behaves otherwise
//! is reported, with what it would have done next for as long as that needs no answer
//! from outside (waits elapse by themselves): "would have sent a 4th upgrade_region to
//! peer 2 at +2.050s; no recorded answer from here on". A recorded mailbox timeout that
//! the changed policy's deadline would not yet have reached, or a reply that came after
//! it, is such a place too.

use serde::Serialize;

use super::common::{counted, format_duration, format_offset, CliError};
use super::summary::snake_name;
use regmig::domain::MailboxOutcome;
use regmig::migration::replay::{decision_end, observation_of, recorded_jitter};
use regmig::migration::{
    decide, Action, EventRole, Input, MigrationEvent, MigrationState, Observation, TimedEvent,
};

/// A policy knob changed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knob {
    /// The downgrade and upgrade budget (`timeout=60s`).
    TimeoutMs(u64),
    /// Framework retries (`retries=5`).
    Retries(u32),
    /// Attempts per downgrade or upgrade visit (`attempts=5`).
    Attempts(u32),
    /// Pause between two such attempts (`interval=1s`).
    IntervalMs(u64),
    /// The first framework backoff (`backoff=1s`).
    BackoffMs(u64),
}

/// The knobs `--with` accepts, for messages.
pub const KNOBS: &str =
    "timeout=DURATION, retries=N, attempts=N, interval=DURATION, backoff=DURATION";

/// Parses one `--with` value: `KNOB=VALUE`, durations as "60s", "500ms", "2m".
pub fn parse_knob(text: &str) -> Result<Knob, String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!(
            "invalid --with {text:?}: expected KNOB=VALUE, one of {KNOBS}"
        ));
    };
    let value = value.trim();
    let duration_ms = || -> Result<u64, String> {
        let duration = humantime::parse_duration(value).map_err(|error| {
            format!("invalid --with {text:?}: {value:?} is not a duration ({error})")
        })?;
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return Err(format!("invalid --with {text:?}: must be at least 1ms"));
        }
        Ok(millis)
    };
    let count = || -> Result<u32, String> {
        value
            .parse::<u32>()
            .map_err(|_| format!("invalid --with {text:?}: {value:?} is not a count"))
    };
    match name.trim() {
        "timeout" => duration_ms().map(Knob::TimeoutMs),
        "retries" => count().map(Knob::Retries),
        "attempts" => match count()? {
            0 => Err(format!("invalid --with {text:?}: at least 1 attempt")),
            attempts => Ok(Knob::Attempts(attempts)),
        },
        "interval" => duration_ms().map(Knob::IntervalMs),
        "backoff" => duration_ms().map(Knob::BackoffMs),
        other => Err(format!(
            "invalid --with {text:?}: unknown knob {other:?}, expected one of {KNOBS}"
        )),
    }
}

impl Knob {
    /// The knob as given ("timeout=1m 00.000s" reads badly: durations as `format_duration`).
    pub fn text(&self) -> String {
        match self {
            Knob::TimeoutMs(ms) => format!("timeout={}", format_duration(*ms)),
            Knob::Retries(count) => format!("retries={count}"),
            Knob::Attempts(count) => format!("attempts={count}"),
            Knob::IntervalMs(ms) => format!("interval={}", format_duration(*ms)),
            Knob::BackoffMs(ms) => format!("backoff={}", format_duration(*ms)),
        }
    }
}

/// What the changed policy comes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WhatIf {
    /// The knobs, as `Knob::text` writes them.
    pub with: Vec<String>,
    /// Decisions re-run that behaved as recorded.
    pub decisions_agreeing: usize,
    /// The recorded outcome (null while the migration runs).
    pub recorded_outcome: Option<&'static str>,
    /// Whether the changed policy behaves otherwise somewhere.
    pub diverges: bool,
    /// Where (1-based event number), when it diverges.
    pub diverges_at_seq: Option<u64>,
    /// The offset from submit ("+3.000s"), when it diverges.
    pub diverges_at: Option<String>,
    /// What the log holds there.
    pub recorded: Option<String>,
    /// What the changed policy does there, and after, until it needs an answer.
    pub changed: Option<String>,
    /// One sentence for the operator.
    pub verdict: String,
}

/// Replays `events` under the policy changed by `knobs`.
pub fn what_if(events: &[TimedEvent], knobs: &[Knob]) -> Result<WhatIf, CliError> {
    let mut changed = events.to_vec();
    let Some(MigrationEvent::Submitted { task, policy, .. }) =
        changed.first_mut().map(|timed| &mut timed.event)
    else {
        return Err(CliError::Usage(
            "--with: the history does not start with its submit".to_string(),
        ));
    };
    for knob in knobs {
        match *knob {
            Knob::TimeoutMs(ms) => task.timeout_ms = ms,
            Knob::Retries(count) => policy.retries_max = count,
            Knob::Attempts(count) => policy.in_state_attempts_max = count,
            Knob::IntervalMs(ms) => policy.in_state_retry_interval_ms = ms,
            Knob::BackoffMs(ms) => policy.initial_backoff_ms = ms,
        }
    }
    let start_ms = changed[0].at_ms;
    let recorded_outcome = regmig::migration::fold(events).outcome.map(|o| o.name());
    let mut result = WhatIf {
        with: knobs.iter().map(Knob::text).collect(),
        decisions_agreeing: 0,
        recorded_outcome,
        diverges: false,
        diverges_at_seq: None,
        diverges_at: None,
        recorded: None,
        changed: None,
        verdict: String::new(),
    };
    let mut state = MigrationState::default();
    let mut index = 0;
    while index < changed.len() {
        let timed = &changed[index];
        let Some(observation) = (timed.event.role() == EventRole::Input)
            .then(|| observation_of(&timed.event))
            .flatten()
        else {
            state.apply(timed.at_ms, &timed.event);
            index += 1;
            continue;
        };
        let end = decision_end(&changed, index);
        let recorded = &changed[index..end];
        let offset = |at_ms: u64| format_offset(at_ms, start_ms);
        // An answer whose timing the changed deadline makes impossible.
        if let (Some(outstanding), Observation::Mailbox(outcome)) =
            (&state.outstanding, &observation)
        {
            let instruction = outstanding.instruction.kind().name();
            let peer = outstanding.peer.id;
            let timing = match outcome {
                MailboxOutcome::Timeout if outstanding.deadline_ms > timed.at_ms => Some((
                    format!("{instruction} to peer {peer} timed out"),
                    format!(
                        "would still have waited for {instruction} to peer {peer} until {}; no recorded answer from here on (the log knows only that none came by {})",
                        offset(outstanding.deadline_ms),
                        offset(timed.at_ms)
                    ),
                )),
                MailboxOutcome::Reply(_) if timed.at_ms > outstanding.deadline_ms => Some((
                    format!("a reply to {instruction} from peer {peer}"),
                    format!(
                        "would have timed out {instruction} to peer {peer} at {}, before this reply came; the recorded answers after it do not apply",
                        offset(outstanding.deadline_ms)
                    ),
                )),
                _ => None,
            };
            if let Some((recorded_text, changed_text)) = timing {
                return Ok(diverged(
                    result,
                    index,
                    timed.at_ms,
                    start_ms,
                    recorded_text,
                    changed_text,
                ));
            }
        }
        if let (Some((until_ms, reason)), Observation::WaitElapsed) = (&state.waiting, &observation)
        {
            if *until_ms != timed.at_ms {
                let recorded_text = format!("the wait ended at {}", offset(timed.at_ms));
                let changed_text = format!(
                    "would have waited ({}) until {}; the recorded answers after it came at other times",
                    snake_name(reason),
                    offset(*until_ms)
                );
                return Ok(diverged(
                    result,
                    index,
                    timed.at_ms,
                    start_ms,
                    recorded_text,
                    changed_text,
                ));
            }
        }
        let input = Input {
            observation,
            jitter_random: recorded_jitter(recorded),
        };
        let decision = match decide(&state, timed.at_ms, input) {
            Ok(decision) => decision,
            Err(error) => {
                let recorded_text = describe(&timed.event, start_ms);
                let changed_text = format!("today's logic refuses this input: {error}");
                return Ok(diverged(
                    result,
                    index,
                    timed.at_ms,
                    start_ms,
                    recorded_text,
                    changed_text,
                ));
            }
        };
        let longest = decision.events.len().max(recorded.len());
        for offset_in_batch in 0..longest {
            let logged = recorded.get(offset_in_batch).map(|timed| &timed.event);
            let today = decision.events.get(offset_in_batch);
            if !same_behaviour(logged, today) {
                let recorded_text =
                    logged.map_or_else(|| "nothing more".to_string(), |e| describe(e, start_ms));
                let mut sequel = state.clone();
                for event in &decision.events {
                    sequel.apply(timed.at_ms, event);
                }
                let today_text =
                    today.map_or_else(|| "nothing more".to_string(), |e| describe(e, start_ms));
                let next = follow(sequel, timed.at_ms, decision.action.clone(), start_ms);
                // A diverging wait is the first step `follow` tells.
                let changed_text = if matches!(today, Some(MigrationEvent::WaitStarted { .. })) {
                    next
                } else {
                    format!("{today_text}; then {next}")
                };
                return Ok(diverged(
                    result,
                    index + offset_in_batch,
                    timed.at_ms,
                    start_ms,
                    recorded_text,
                    changed_text,
                ));
            }
        }
        for event in &decision.events {
            state.apply(timed.at_ms, event);
        }
        result.decisions_agreeing += 1;
        index = end;
    }
    result.verdict = format!(
        "same {}: with {} today's logic behaves as recorded at all {}; this change would not have changed it",
        result.recorded_outcome.map_or_else(|| "course so far".to_string(), |o| format!("outcome ({o})")),
        result.with.join(", "),
        counted(result.decisions_agreeing as u64, "decision")
    );
    Ok(result)
}

fn diverged(
    mut result: WhatIf,
    index: usize,
    at_ms: u64,
    start_ms: u64,
    recorded: String,
    changed: String,
) -> WhatIf {
    let at = format_offset(at_ms, start_ms);
    result.verdict = format!(
        "diverges at event {} ({at}): the log has {recorded}; with {} today's logic {changed}",
        index + 1,
        result.with.join(", ")
    );
    result.diverges = true;
    result.diverges_at_seq = Some(index as u64 + 1);
    result.diverges_at = Some(at);
    result.recorded = Some(recorded);
    result.changed = Some(changed);
    result
}

/// What the changed policy does after a divergence, for as long as it needs no answer from
/// outside: waits elapse at their time; a send, a read or a write ends the story.
fn follow(mut state: MigrationState, mut now_ms: u64, mut action: Action, start_ms: u64) -> String {
    let mut steps = Vec::new();
    // A bound: a bug must not loop forever.
    for _ in 0..16 {
        match action {
            Action::WaitUntil { until_ms, reason } => {
                steps.push(format!(
                    "wait ({}) until {}",
                    snake_name(&reason),
                    format_offset(until_ms, start_ms)
                ));
                now_ms = until_ms.max(now_ms);
                let Ok(decision) = decide(&state, now_ms, Input::new(Observation::WaitElapsed))
                else {
                    break;
                };
                for event in &decision.events {
                    state.apply(now_ms, event);
                }
                action = decision.action;
            }
            Action::Send {
                peer, instruction, ..
            } => {
                let attempt = state.outstanding.as_ref().map_or(1, |sent| sent.attempt);
                steps.push(format!(
                    "would have sent a {} {} to peer {} at {}; no recorded answer from here on",
                    ordinal(attempt),
                    instruction.kind().name(),
                    peer.id,
                    format_offset(now_ms, start_ms)
                ));
                break;
            }
            Action::Finish { outcome } => {
                steps.push(format!(
                    "would have finished {} at {}",
                    outcome.name(),
                    format_offset(now_ms, start_ms)
                ));
                break;
            }
            other => {
                steps.push(format!(
                    "would have gone on with {} at {}; no recorded answer from here on",
                    action_name(&other),
                    format_offset(now_ms, start_ms)
                ));
                break;
            }
        }
    }
    steps.join(", then ")
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::AcquireLocks { .. } => "taking its locks",
        Action::ReadRoute { .. } => "reading the route",
        Action::ReadDatanodeTable { .. } => "reading the datanode table",
        Action::CasRoute { .. } => "writing the route",
        Action::ReadLastHeartbeat { .. } => "reading the old leader's last heartbeat",
        Action::Send { .. } => "sending an instruction",
        Action::WaitUntil { .. } => "waiting",
        Action::Finish { .. } => "finishing",
    }
}

fn ordinal(number: u32) -> String {
    let suffix = match (number % 10, number % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{number}{suffix}")
}

/// One event in words, for the divergence line.
fn describe(event: &MigrationEvent, start_ms: u64) -> String {
    match event {
        MigrationEvent::InstructionSent {
            peer,
            instruction,
            attempt,
            ..
        } => format!(
            "{} {} sent to peer {}",
            ordinal(*attempt),
            instruction.kind().name(),
            peer.id
        ),
        MigrationEvent::WaitStarted { until_ms, reason } => format!(
            "a wait ({}) until {}",
            snake_name(reason),
            format_offset(*until_ms, start_ms)
        ),
        MigrationEvent::RetryScheduled {
            attempt, delay_ms, ..
        } => format!("retry {attempt} after {}", format_duration(*delay_ms)),
        MigrationEvent::StateEntered { state, .. } => format!("state {}", state.name()),
        MigrationEvent::RollbackStarted { error } => format!("a rollback ({})", error.message),
        MigrationEvent::Finished { outcome, .. } => format!("the finish ({})", outcome.name()),
        other => other.name().to_string(),
    }
}

/// Whether two events are the same behaviour: equal once the fields that follow the
/// budget (an instruction's timeouts and deadline) are set aside.
fn same_behaviour(recorded: Option<&MigrationEvent>, decided: Option<&MigrationEvent>) -> bool {
    match (recorded, decided) {
        (Some(recorded), Some(decided)) => without_timeouts(recorded) == without_timeouts(decided),
        (None, None) => true,
        _ => false,
    }
}

fn without_timeouts(event: &MigrationEvent) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.retain(|key, _| !key.ends_with("timeout_ms") && key != "deadline_ms");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
    strip(&mut value);
    value
}

/// The text `replay --with` prints (outside text, such as a datanode's error, escaped).
pub fn render(procedure_id: &str, what_if: &WhatIf) -> String {
    let escape = |text: &str| super::escape::escape_text(text).into_owned();
    let mut out = format!(
        "migration {procedure_id} replayed with {}\n",
        what_if.with.join(", ")
    );
    out.push_str(&format!(
        "recorded outcome: {}\n",
        what_if.recorded_outcome.unwrap_or("- (still running)")
    ));
    if what_if.diverges {
        out.push_str(&format!(
            "diverges at:      event {} ({})\n",
            what_if.diverges_at_seq.unwrap_or(0),
            what_if.diverges_at.as_deref().unwrap_or("-")
        ));
        out.push_str(&format!(
            "the log has:      {}\n",
            escape(what_if.recorded.as_deref().unwrap_or("-"))
        ));
        out.push_str(&format!(
            "changed policy:   {}\n",
            escape(what_if.changed.as_deref().unwrap_or("-"))
        ));
        out.push_str(&format!(
            "agreed before:    {}\n",
            counted(what_if.decisions_agreeing as u64, "decision")
        ));
    } else {
        out.push_str(&format!("{}\n", escape(&what_if.verdict)));
    }
    out
}

/// `regmig replay ID --with ...`: prints the what-if; exit 0 whether or not it diverges.
pub fn run(
    procedure_id: uuid::Uuid,
    events: &[TimedEvent],
    knobs: &[Knob],
    json: bool,
) -> Result<u8, CliError> {
    let what_if = what_if(events, knobs)?;
    if json {
        super::common::print_json(&what_if);
    } else {
        super::common::print_text(&render(&procedure_id.to_string(), &what_if));
    }
    Ok(0)
}
