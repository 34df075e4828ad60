//! `regmig replay` and `regmig export`.
//!
//! `replay ID` folds a migration's events one by one and prints, after each, what changed in
//! the derived state; `--until SEQ` stops there. `--check` re-runs today's `decide` on the
//! recorded inputs ([`regmig::migration::replay::check`]) and reports the first event where
//! it decides differently (exit 1), or that they agree. `export ID -o FILE` writes a bundle
//! ([`regmig::log::bundle`]) that `replay --file FILE` replays with no data directory.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use uuid::Uuid;

use super::batch::{member_heading, migration_or_batch, Batch, BatchMember, Found};
use super::common::LogSource;
use super::common::{
    counted, finish, format_duration, format_offset, open_log, or_dash, print_json, print_text,
    CliError, Table,
};
use super::inspect::OutputArgs;
use super::summary::payload_json;
use super::EXIT_FAILED;
use regmig::engine::store::{decode_record, UndecodableEvent};
use regmig::log::bundle::{read_bundle, write_bundle};
use regmig::migration::replay::{check, Divergence};
use regmig::migration::{EventRole, MigrationEvent, MigrationState, TimedEvent};

/// Arguments of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The migration's id (see `regmig list`); not with `--file`.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub id: Option<String>,
    /// Replay a bundle written by `regmig export` instead of a data directory's migration.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Stop after the event with this sequence number (events count from 1).
    #[arg(long, value_name = "SEQ")]
    pub until: Option<u64>,
    /// Re-run today's decision logic on the recorded inputs and report the first event
    /// where it decides differently (exit 1), or that they agree. With `--until SEQ`, checks
    /// the decisions on inputs up to SEQ (each with all the events it produced).
    #[arg(long)]
    pub check: bool,
    /// What if: re-run today's logic over the recorded answers with a policy knob changed
    /// (timeout=DURATION, retries=N, attempts=N, interval=DURATION, backoff=DURATION;
    /// repeatable) and report where the outcome diverges. Not with --check or --until.
    #[arg(long = "with", value_name = "KNOB=VALUE", value_parser = super::what_if::parse_knob, conflicts_with_all = ["check", "until"])]
    pub with: Vec<super::what_if::Knob>,
    /// Where the log is (not with `--file`), and how to print.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The migration's id (see `regmig list`).
    pub id: String,
    /// The bundle file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output_file: PathBuf,
    /// Where the log is: a data directory or a PostgreSQL store.
    #[command(flatten)]
    pub source: LogSource,
    /// Print one JSON document instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------------------------------------
// The derived state, as replay shows it.
// ---------------------------------------------------------------------------------------------

/// What `replay` follows of the derived state after each event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayView {
    /// The current state.
    pub state: &'static str,
    /// running, waiting, retrying, rolling_back, completed, aborted or failed.
    pub status: &'static str,
    /// While waiting or backing off: until when (ms since the epoch).
    pub wait_until_ms: Option<u64>,
    /// The old leader's lease deadline, while one is set (ms since the epoch).
    pub lease_deadline_ms: Option<u64>,
    /// What is left of the downgrade and upgrade budget.
    pub budget_left_ms: u64,
    /// Instructions sent in the current state visit (re-sends not counted).
    pub attempts: u32,
    /// Framework retries left.
    pub retries_left: u32,
    /// The old leader's last entry id, once its downgrade reported one.
    pub last_entry_id: Option<u64>,
    /// The instruction awaiting an answer, as "PEER.instruction".
    pub outstanding: Option<String>,
    /// completed, aborted or failed, once finished.
    pub outcome: Option<&'static str>,
}

/// The names of [`ReplayView`]'s fields, in order (the `changed` lists use them).
pub const REPLAY_FIELDS: [&str; 10] = [
    "state",
    "status",
    "wait_until_ms",
    "lease_deadline_ms",
    "budget_left_ms",
    "attempts",
    "retries_left",
    "last_entry_id",
    "outstanding",
    "outcome",
];

/// The same fields as people read them (times and durations, not ms).
const REPLAY_LABELS: [&str; 10] = [
    "state",
    "status",
    "wait_until",
    "lease_deadline",
    "budget_left",
    "attempts",
    "retries_left",
    "last_entry_id",
    "outstanding",
    "outcome",
];

impl ReplayView {
    /// The view of a folded state.
    pub fn of(state: &MigrationState) -> Self {
        let status = state.status();
        let wait_until_ms = match status {
            regmig::migration::Status::Waiting { until_ms, .. }
            | regmig::migration::Status::Retrying { until_ms } => Some(until_ms),
            _ => state.waiting.map(|(until_ms, _)| until_ms),
        };
        ReplayView {
            state: state.state.name(),
            status: status.name(),
            wait_until_ms,
            lease_deadline_ms: state.lease_deadline_ms,
            budget_left_ms: state.remaining_budget_ms(),
            attempts: state.step.attempts,
            retries_left: state.retries_left(),
            last_entry_id: state.last_entry_id,
            outstanding: state
                .outstanding
                .as_ref()
                .map(|sent| format!("{}.{}", sent.peer.id, sent.instruction.kind().name())),
            outcome: state.outcome.map(|outcome| outcome.name()),
        }
    }

    /// Each field as text for people (times relative to `start_ms`), in [`REPLAY_FIELDS`] order.
    fn texts(&self, start_ms: u64) -> [String; 10] {
        let time = |at_ms: Option<u64>| or_dash(at_ms.map(|at_ms| format_offset(at_ms, start_ms)));
        [
            self.state.to_string(),
            self.status.to_string(),
            time(self.wait_until_ms),
            time(self.lease_deadline_ms),
            format_duration(self.budget_left_ms),
            self.attempts.to_string(),
            self.retries_left.to_string(),
            or_dash(self.last_entry_id),
            or_dash(self.outstanding.as_ref()),
            or_dash(self.outcome),
        ]
    }
}

/// One event of a replay and what it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayStep {
    /// The event's sequence number.
    pub seq: u64,
    /// When it was recorded (ms since the epoch).
    pub recorded_at_ms: u64,
    /// Since submit.
    pub offset_ms: u64,
    /// The event's kind.
    pub kind: &'static str,
    /// The fields of `after` this event changed.
    pub changed: Vec<&'static str>,
    /// The derived state after it.
    pub after: ReplayView,
    /// Set when this version cannot read the event (a kind or variant a newer regmig
    /// wrote): what it is. Such an event is shown but not applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_understood: Option<String>,
}

/// An event of a bundle this version cannot read (its kind, or a variant inside a known
/// kind, is a newer regmig's): shown by `replay --file`, not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadEvent {
    /// Its sequence number.
    pub seq: u64,
    /// When it was recorded (ms since the epoch).
    pub recorded_at_ms: u64,
    /// What it is, for people: "kind 27, written by a newer regmig".
    pub note: String,
}

impl UnreadEvent {
    fn of(recorded_at_ms: u64, error: &UndecodableEvent) -> Self {
        let note = match error.error.kind_name {
            None => format!(
                "kind {}, written by a newer regmig: not applied",
                error.error.kind
            ),
            Some(name) => format!(
                "{name} (kind {}) this regmig cannot decode, written by a newer regmig: not applied",
                error.error.kind
            ),
        };
        UnreadEvent {
            seq: error.seq,
            recorded_at_ms,
            note,
        }
    }
}

/// Folds `events` one by one (stopping after seq `until_seq`) and records what each changed.
/// `unread` are the events between them this version cannot read, by seq: each is a step
/// that changes nothing.
pub fn replay_steps(
    events: &[TimedEvent],
    unread: &[UnreadEvent],
    until_seq: Option<u64>,
) -> Vec<ReplayStep> {
    let start_ms = events.first().map_or(0, |timed| timed.at_ms);
    let mut state = MigrationState::default();
    let mut before = ReplayView::of(&state);
    let mut steps = Vec::with_capacity(events.len() + unread.len());
    let mut known = events.iter();
    let mut unread = unread.iter().peekable();
    for seq in 1.. {
        if until_seq.is_some_and(|until| seq > until) {
            break;
        }
        if let Some(event) = unread.next_if(|event| event.seq == seq) {
            steps.push(ReplayStep {
                seq,
                recorded_at_ms: event.recorded_at_ms,
                offset_ms: event.recorded_at_ms.saturating_sub(start_ms),
                kind: "Unknown",
                changed: Vec::new(),
                after: before.clone(),
                not_understood: Some(event.note.clone()),
            });
            continue;
        }
        let Some(timed) = known.next() else {
            break;
        };
        state.apply(timed.at_ms, &timed.event);
        let after = ReplayView::of(&state);
        let changed = changed_fields(&before, &after);
        steps.push(ReplayStep {
            seq,
            recorded_at_ms: timed.at_ms,
            offset_ms: timed.at_ms.saturating_sub(start_ms),
            kind: timed.event.name(),
            changed,
            after: after.clone(),
            not_understood: None,
        });
        before = after;
    }
    steps
}

fn changed_fields(before: &ReplayView, after: &ReplayView) -> Vec<&'static str> {
    // Compare through the texts with a fixed origin: equal values give equal texts.
    let old = before.texts(0);
    let new = after.texts(0);
    REPLAY_FIELDS
        .iter()
        .zip(old.iter().zip(new.iter()))
        .filter(|(_, (old, new))| old != new)
        .map(|(name, _)| *name)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// replay
// ---------------------------------------------------------------------------------------------

/// `regmig replay`.
pub fn replay(args: ReplayArgs) -> u8 {
    let json = args.output.json;
    finish(run_replay(&args), json)
}

/// A migration's history as `replay` reads it.
struct Loaded {
    procedure_id: Uuid,
    /// The events this version reads, in order.
    events: Vec<TimedEvent>,
    /// The events of a bundle it cannot read (always empty from a data directory, where
    /// such an event is an error), and the first one's error.
    unread: Vec<UnreadEvent>,
    first_unread_error: Option<UndecodableEvent>,
}

/// What `replay` replays: one migration, or each region's of a batch.
enum Replayed {
    Migration(Loaded),
    Batch(Batch),
}

/// The migration's events, from the data directory or a bundle; or the batch the id
/// names when no migration has it.
fn load_events(args: &ReplayArgs) -> Result<Replayed, CliError> {
    if let Some(file) = &args.file {
        if let Some(option) = ["--store", "--data-dir"]
            .into_iter()
            .find(|option| super::given_on_command_line(option))
        {
            return Err(CliError::Usage(format!(
                "--file and {option} exclude each other: a bundle is replayed from its file alone, never from a log"
            )));
        }
        let bundle = read_bundle(file)?;
        let mut loaded = Loaded {
            procedure_id: bundle.procedure_id,
            events: Vec::with_capacity(bundle.records.len()),
            unread: Vec::new(),
            first_unread_error: None,
        };
        for record in &bundle.records {
            match decode_record(record) {
                Ok(timed) => loaded.events.push(timed),
                Err(error) => {
                    loaded
                        .unread
                        .push(UnreadEvent::of(record.recorded_at_ms, &error));
                    loaded.first_unread_error.get_or_insert(error);
                }
            }
        }
        return Ok(Replayed::Migration(loaded));
    }
    let Some(id) = &args.id else {
        return Err(CliError::Usage(
            "replay needs a migration id or --file FILE".to_string(),
        ));
    };
    let id = super::common::parse_id_arg(id)?;
    let log = open_log(&args.output.source)?;
    let procedure_id = id.resolve(&log)?;
    Ok(match migration_or_batch(&log, procedure_id)? {
        Found::Migration(history) => Replayed::Migration(Loaded {
            procedure_id,
            events: history.events,
            unread: Vec::new(),
            first_unread_error: None,
        }),
        Found::Batch(batch) => Replayed::Batch(batch),
    })
}

/// The `replay BATCH_ID --json` document: each region's migration's replay (or check).
#[derive(Debug, Serialize)]
struct BatchReplayDocument<T> {
    batch_id: String,
    regions: Vec<String>,
    /// With `--check`: whether today's logic agrees with every region's log.
    #[serde(skip_serializing_if = "Option::is_none")]
    agrees: Option<bool>,
    migrations: Vec<T>,
}

/// `replay BATCH_ID`: replays (or checks) each region's migration in turn; with `--check`
/// exit 1 when any diverges.
fn run_batch_replay(args: &ReplayArgs, batch: &Batch) -> Result<u8, CliError> {
    let regions = batch.regions.iter().map(ToString::to_string).collect();
    let mut out = String::new();
    let heading = |out: &mut String, member: &BatchMember| {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&member_heading(batch.batch_id, member));
    };
    if args.check {
        let mut documents = Vec::with_capacity(batch.members.len());
        for member in &batch.members {
            let (document, text) =
                check_report(args.until, member.procedure_id, &member.history.events);
            heading(&mut out, member);
            out.push_str(&text);
            documents.push(document);
        }
        let agrees = documents.iter().all(|document| document.agrees);
        if args.output.json {
            print_json(&BatchReplayDocument {
                batch_id: batch.batch_id.to_string(),
                regions,
                agrees: Some(agrees),
                migrations: documents,
            });
        } else {
            print_text(&out);
        }
        return Ok(if agrees { 0 } else { EXIT_FAILED });
    }
    let mut documents = Vec::with_capacity(batch.members.len());
    for member in &batch.members {
        let steps = replay_steps(&member.history.events, &[], args.until);
        heading(&mut out, member);
        out.push_str(&render_replay(
            member.procedure_id,
            &member.history.events,
            0,
            &steps,
            args.until,
        ));
        documents.push(ReplayDocument {
            procedure_id: member.procedure_id.to_string(),
            events: member.history.events.len(),
            until_seq: args.until,
            steps,
        });
    }
    if args.output.json {
        print_json(&BatchReplayDocument {
            batch_id: batch.batch_id.to_string(),
            regions,
            agrees: None,
            migrations: documents,
        });
    } else {
        print_text(&out);
    }
    Ok(0)
}

/// The `replay --json` document.
#[derive(Debug, Serialize)]
struct ReplayDocument {
    procedure_id: String,
    events: usize,
    until_seq: Option<u64>,
    steps: Vec<ReplayStep>,
}

fn run_replay(args: &ReplayArgs) -> Result<u8, CliError> {
    if args.until == Some(0) {
        return Err(CliError::Usage(
            "--until 0: events count from 1".to_string(),
        ));
    }
    let Loaded {
        procedure_id,
        events,
        unread,
        first_unread_error,
    } = match load_events(args)? {
        Replayed::Migration(loaded) => loaded,
        Replayed::Batch(batch) => return run_batch_replay(args, &batch),
    };
    if args.check {
        // Today's logic cannot be checked against decisions on inputs it cannot read.
        if let Some(error) = first_unread_error {
            return Err(CliError::Undecodable(error));
        }
        return run_check(args, procedure_id, &events);
    }
    if !args.with.is_empty() {
        return super::what_if::run(procedure_id, &events, &args.with, args.output.json);
    }
    let steps = replay_steps(&events, &unread, args.until);
    let total = events.len() + unread.len();
    if args.output.json {
        print_json(&ReplayDocument {
            procedure_id: procedure_id.to_string(),
            events: total,
            until_seq: args.until,
            steps,
        });
        return Ok(0);
    }
    print_text(&render_replay(
        procedure_id,
        &events,
        unread.len(),
        &steps,
        args.until,
    ));
    Ok(0)
}

fn render_replay(
    procedure_id: Uuid,
    events: &[TimedEvent],
    unread_count: usize,
    steps: &[ReplayStep],
    until_seq: Option<u64>,
) -> String {
    let start_ms = events.first().map_or(0, |timed| timed.at_ms);
    let total = events.len() + unread_count;
    let mut out = format!(
        "replay of migration {procedure_id}: {}\n",
        counted(total as u64, "event")
    );
    if unread_count > 0 {
        out.push_str(&format!(
            "{unread_count} of them written by a newer regmig and not understood here: shown, not applied (the state after them may differ from what that regmig derives)\n"
        ));
    }
    let mut table = Table::new(&["SEQ", "OFFSET", "EVENT", "CHANGES"]);
    let mut before = ReplayView::of(&MigrationState::default()).texts(start_ms);
    for step in steps {
        let after = step.after.texts(start_ms);
        let changes: Vec<String> = REPLAY_FIELDS
            .iter()
            .enumerate()
            .filter(|(_, name)| step.changed.contains(name))
            .map(|(index, _)| {
                format!(
                    "{} {} → {}",
                    REPLAY_LABELS[index], before[index], after[index]
                )
            })
            .collect();
        table.row(vec![
            step.seq.to_string(),
            format_offset(step.recorded_at_ms, start_ms),
            step.kind.to_string(),
            match &step.not_understood {
                Some(note) => note.clone(),
                None if changes.is_empty() => "-".to_string(),
                None => changes.join(", "),
            },
        ]);
        before = after;
    }
    out.push_str(&table.render());
    if let Some(until) = until_seq {
        if until < total as u64 {
            out.push_str(&format!(
                "stopped after event {until} of {total} (--until)\n"
            ));
        } else {
            out.push_str(&format!(
                "--until {until}: the migration has {}, all replayed\n",
                counted(total as u64, "event")
            ));
        }
    }
    if let Some(last) = steps.last() {
        let texts = last.after.texts(start_ms);
        let fields: Vec<String> = REPLAY_LABELS
            .iter()
            .zip(texts.iter())
            .map(|(name, text)| format!("{name} {text}"))
            .collect();
        out.push_str(&format!(
            "derived state after event {}: {}\n",
            last.seq,
            super::escape::escape_text(&fields.join(", "))
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// replay --check
// ---------------------------------------------------------------------------------------------

/// An event in a divergence report.
#[derive(Debug, Serialize)]
struct EventJson {
    kind: &'static str,
    payload: serde_json::Value,
}

impl EventJson {
    fn of(event: &MigrationEvent) -> Self {
        EventJson {
            kind: event.name(),
            payload: payload_json(event),
        }
    }

    fn text(event: Option<&MigrationEvent>) -> String {
        match event {
            Some(event) => format!(
                "{} {}",
                event.name(),
                serde_json::to_string(&payload_json(event)).unwrap_or_default()
            ),
            None => "nothing".to_string(),
        }
    }
}

/// Where today's logic and the log part ways, as `replay --check --json` prints it.
#[derive(Debug, Serialize)]
struct DivergenceJson {
    /// The first event that differs (or where one is missing).
    seq: u64,
    /// The input event whose decision differs.
    input_seq: u64,
    /// Its kind.
    input_kind: &'static str,
    /// What the log holds at `seq`; null when the log has nothing there.
    recorded: Option<EventJson>,
    /// What today's decide produces at `seq`; null when it produces nothing there.
    decided: Option<EventJson>,
    /// A sentence for operators.
    message: String,
    /// When both events are of one kind: each field that differs, by its path in the
    /// payload (`peer.id`, `lock_keys[1]`), with the recorded and the decided value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    differences: Vec<FieldDifference>,
}

/// One field that differs between the recorded and the decided event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDifference {
    /// Its path in the payload: `delay_ms`, `peer.id`, `lock_keys[1]`.
    pub field: String,
    /// The log's value; null when the log's event has no such field.
    pub recorded: serde_json::Value,
    /// Today's logic's value; null when its event has no such field.
    pub decided: serde_json::Value,
}

/// The fields in which two payloads differ, depth first in the order of `recorded`'s keys
/// (then the keys only `decided` has). Objects and arrays of one length are compared
/// inside; anything else that differs is one difference.
pub fn field_differences(
    recorded: &serde_json::Value,
    decided: &serde_json::Value,
) -> Vec<FieldDifference> {
    let mut out = Vec::new();
    collect_differences(String::new(), recorded, decided, &mut out);
    out
}

fn collect_differences(
    path: String,
    recorded: &serde_json::Value,
    decided: &serde_json::Value,
    out: &mut Vec<FieldDifference>,
) {
    use serde_json::Value;
    if recorded == decided {
        return;
    }
    let child = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (recorded, decided) {
        (Value::Object(left), Value::Object(right)) => {
            for (key, value) in left {
                collect_differences(
                    child(key),
                    value,
                    right.get(key).unwrap_or(&Value::Null),
                    out,
                );
            }
            for (key, value) in right.iter().filter(|(key, _)| !left.contains_key(*key)) {
                collect_differences(child(key), &Value::Null, value, out);
            }
        }
        (Value::Array(left), Value::Array(right)) if left.len() == right.len() => {
            for (index, (a, b)) in left.iter().zip(right).enumerate() {
                collect_differences(format!("{path}[{index}]"), a, b, out);
            }
        }
        _ => out.push(FieldDifference {
            field: if path.is_empty() {
                "payload".to_string()
            } else {
                path
            },
            recorded: recorded.clone(),
            decided: decided.clone(),
        }),
    }
}

/// Values longer than this are cut in the text report (the JSON has them whole).
const VALUE_TEXT_MAX_CHARS: usize = 60;

/// A value in a difference line: JSON, cut to [`VALUE_TEXT_MAX_CHARS`].
fn value_text(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= VALUE_TEXT_MAX_CHARS {
        return text;
    }
    let cut: String = text.chars().take(VALUE_TEXT_MAX_CHARS - 1).collect();
    format!("{cut}…")
}

/// The `replay --check --json` document.
#[derive(Debug, Serialize)]
struct CheckDocument {
    procedure_id: String,
    events: usize,
    until_seq: Option<u64>,
    agrees: bool,
    decisions_checked: Option<usize>,
    divergence: Option<DivergenceJson>,
}

fn run_check(args: &ReplayArgs, procedure_id: Uuid, events: &[TimedEvent]) -> Result<u8, CliError> {
    let (document, text) = check_report(args.until, procedure_id, events);
    let agrees = document.agrees;
    if args.output.json {
        print_json(&document);
    } else {
        print_text(&text);
    }
    Ok(if agrees { 0 } else { EXIT_FAILED })
}

/// Checks one migration's decisions (up to `until` when given): the `--json` document and
/// the text.
fn check_report(
    until: Option<u64>,
    procedure_id: Uuid,
    events: &[TimedEvent],
) -> (CheckDocument, String) {
    // A decision is the input event and the events decide produced after it: a check
    // stopped inside one would report the cut-off events as missing. So --until SEQ checks
    // every decision whose input is at or before SEQ, whole.
    let mut end = until.map_or(events.len(), |until| (until as usize).min(events.len()));
    while end < events.len() && events[end].event.role() == EventRole::Decision {
        end += 1;
    }
    let checked = &events[..end];
    let result = check(checked);
    let (agrees, decisions_checked, divergence) = match &result {
        Ok(decisions) => (true, Some(*decisions), None),
        Err(divergence) => (false, None, Some(divergence_json(checked, divergence))),
    };
    let mut out = String::new();
    match &result {
        Ok(decisions) => out.push_str(&format!(
            "replay check of migration {procedure_id}: today's logic agrees with the log ({} checked over {})\n",
            counted(*decisions as u64, "decision"),
            counted(end as u64, "event")
        )),
        Err(divergence) => {
            let report = divergence_json(checked, divergence);
            out.push_str(&format!(
                "replay check of migration {procedure_id}: today's logic DIVERGES from the log at event {} (deciding on input event {}, {})\n",
                report.seq, report.input_seq, report.input_kind
            ));
            if let (Some(recorded), false) = (&divergence.recorded, report.differences.is_empty())
            {
                out.push_str(&format!(
                    "  both are {}; {} (the log → today's logic):\n",
                    recorded.name(),
                    plural_fields(report.differences.len())
                ));
                for difference in &report.differences {
                    out.push_str(&format!(
                        "    {} {} → {}\n",
                        difference.field,
                        value_text(&difference.recorded),
                        value_text(&difference.decided)
                    ));
                }
            } else {
                let (recorded_time, decided_time) = divergent_times(checked, divergence);
                out.push_str(&format!(
                    "  the log has:           {}{recorded_time}\n",
                    EventJson::text(divergence.recorded.as_ref())
                ));
                out.push_str(&format!(
                    "  today's logic decides: {}{decided_time}\n",
                    EventJson::text(divergence.decided.as_ref())
                ));
            }
        }
    }
    let document = CheckDocument {
        procedure_id: procedure_id.to_string(),
        events: end,
        until_seq: until,
        agrees,
        decisions_checked,
        divergence,
    };
    (document, out)
}

/// When the two events of a divergence are equal, what differs is when the log recorded
/// it: a decision's events take its input's time. Returns the texts that show both times
/// then (empty otherwise).
fn divergent_times(events: &[TimedEvent], divergence: &Divergence) -> (String, String) {
    let same_event = divergence.recorded.is_some() && divergence.recorded == divergence.decided;
    match (
        same_event,
        events.get(divergence.event_index),
        events.get(divergence.input_index),
    ) {
        (true, Some(recorded), Some(input)) => (
            format!(" at recorded_at_ms {}", recorded.at_ms),
            format!(
                " at recorded_at_ms {} (the time of input event {})",
                input.at_ms,
                divergence.input_index + 1
            ),
        ),
        _ => (String::new(), String::new()),
    }
}

fn divergence_json(events: &[TimedEvent], divergence: &Divergence) -> DivergenceJson {
    DivergenceJson {
        seq: divergence.event_index as u64 + 1,
        input_seq: divergence.input_index as u64 + 1,
        input_kind: events
            .get(divergence.input_index)
            .map_or("Unknown", |timed| timed.event.name()),
        recorded: divergence.recorded.as_ref().map(EventJson::of),
        decided: divergence.decided.as_ref().map(EventJson::of),
        message: divergence.message.clone(),
        differences: match (&divergence.recorded, &divergence.decided) {
            (Some(recorded), Some(decided)) if recorded.name() == decided.name() => {
                field_differences(&payload_json(recorded), &payload_json(decided))
            }
            _ => Vec::new(),
        },
    }
}

fn plural_fields(count: usize) -> String {
    if count == 1 {
        "1 field differs".to_string()
    } else {
        format!("{count} fields differ")
    }
}

// ---------------------------------------------------------------------------------------------
// export
// ---------------------------------------------------------------------------------------------

/// `regmig export`.
pub fn export(args: ExportArgs) -> u8 {
    let json = args.json;
    finish(run_export(&args), json)
}

/// The `export --json` document.
#[derive(Debug, Serialize)]
struct ExportDocument {
    procedure_id: String,
    output: String,
    events: usize,
    bytes: u64,
}

fn run_export(args: &ExportArgs) -> Result<u8, CliError> {
    let id = super::common::parse_id_arg(&args.id)?;
    super::common::refuse_output_in_data_dir(&args.source, &args.output_file, "the bundle")?;
    let log = open_log(&args.source)?;
    let procedure_id = id.resolve(&log)?;
    let records = log.procedure_events(procedure_id, 1)?;
    if records.is_empty() {
        return Err(CliError::UnknownMigration { procedure_id });
    }
    write_bundle(&args.output_file, procedure_id, &records)?;
    let bytes = std::fs::metadata(&args.output_file)
        .map(|metadata| metadata.len())
        .unwrap_or(0);
    if args.json {
        print_json(&ExportDocument {
            procedure_id: procedure_id.to_string(),
            output: args.output_file.display().to_string(),
            events: records.len(),
            bytes,
        });
    } else {
        print_text(&format!(
            "exported migration {procedure_id} ({}, {}) to {}\nreplay it anywhere with: regmig replay --file {}\n",
            counted(records.len() as u64, "event"),
            counted(bytes as u64, "byte"),
            args.output_file.display(),
            args.output_file.display()
        ));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_each_field_by_its_path() {
        let recorded = json!({"peer": {"id": 3, "addr": "a"}, "keys": ["x", "y"], "n": 1});
        let decided = json!({"peer": {"id": 2, "addr": "a"}, "keys": ["x", "z"], "m": true});
        let named: Vec<(String, serde_json::Value, serde_json::Value)> =
            field_differences(&recorded, &decided)
                .into_iter()
                .map(|d| (d.field, d.recorded, d.decided))
                .collect();
        assert_eq!(
            named,
            [
                ("keys[1]".to_string(), json!("y"), json!("z")),
                ("n".to_string(), json!(1), json!(null)),
                ("peer.id".to_string(), json!(3), json!(2)),
                ("m".to_string(), json!(null), json!(true)),
            ]
        );
        // Arrays of other lengths are one difference; equal payloads none.
        assert_eq!(
            field_differences(&json!({"a": [1]}), &json!({"a": [1, 2]}))[0].field,
            "a"
        );
        assert!(field_differences(&recorded, &recorded).is_empty());
    }

    #[test]
    fn long_values_are_cut_in_text() {
        let long = json!("x".repeat(100));
        let text = value_text(&long);
        assert_eq!(text.chars().count(), VALUE_TEXT_MAX_CHARS);
        assert!(text.ends_with('…'));
        assert_eq!(value_text(&json!(611)), "611");
    }
}
