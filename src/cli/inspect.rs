//! `regmig list`, `show`, `events` and `audit`: read a data directory's event log and say
//! what each migration did. Region, peer and table filters are answered from the log's
//! audit indexes, so a region's history costs the same however long the log grows.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::batch::{member_heading, migration_or_batch, Batch, BatchDocument, Found};
use super::common::LogSource;
use super::common::{
    counted, finish, format_duration, format_offset, format_time, note_archived_history, open_log,
    or_dash, parse_id_arg, parse_range_time_ms, parse_since_ms, print_json, print_text,
    wall_clock_now_ms, CliError, ParseRangeTimeError, RangeEnd, Table,
};
use super::summary::{
    detail, kind_label, payload_json, select_summaries_with_archive, Detail, QueuedForLock,
    RouteView, Selection, Summary,
};
use super::verdict::{attempts_line, forward_retries, policy_line, verdict, why};
use regmig::domain::{ParseRegionIdError, PeerId, RegionId, TableId};
use regmig::engine::store::decode_record;
use regmig::migration::{MigrationState, StateName};

/// Where the log is, and how to print.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Where the log is: a data directory or a PostgreSQL store.
    #[command(flatten)]
    pub source: LogSource,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which migrations: by region, peer, table, submit time and outcome.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Only this region ("TABLE:NUMBER" or the packed u64); uses the region index.
    #[arg(long, value_parser = parse_region, value_name = "REGION")]
    pub region: Option<RegionId>,
    /// Only migrations from or to this datanode; uses the peer index.
    #[arg(long, value_name = "PEER_ID")]
    pub peer: Option<PeerId>,
    /// Only migrations off this datanode (it was the old leader); uses the peer index.
    #[arg(long, value_name = "PEER_ID")]
    pub from: Option<PeerId>,
    /// Only migrations onto this datanode (it is the new leader); uses the peer index.
    #[arg(long, value_name = "PEER_ID")]
    pub to: Option<PeerId>,
    /// Only regions of this table; uses the region index (one range over the table's regions).
    #[arg(long, value_name = "TABLE_ID")]
    pub table: Option<TableId>,
    /// Submitted at or after this time: RFC 3339, a date (from its start), an age such as
    /// 7d or 24h (that long before now), or ms since the Unix epoch.
    #[arg(long, value_parser = parse_since_ms, value_name = "TIME")]
    pub since: Option<u64>,
    /// Submitted at or before this time: RFC 3339, a date (through its end), an age such as
    /// 7d or 24h (that long before now), or ms since the Unix epoch.
    #[arg(long, value_parser = parse_until, value_name = "TIME")]
    pub until: Option<u64>,
    /// Only migrations that ended so.
    #[arg(long, value_enum, value_name = "OUTCOME")]
    pub outcome: Option<OutcomeFilter>,
}

impl FilterArgs {
    /// The selection; `--since` after `--until` selects nothing ever, so it is bad usage.
    fn selection(&self) -> Result<Selection, CliError> {
        if let (Some(since_ms), Some(until_ms)) = (self.since, self.until) {
            if since_ms > until_ms {
                return Err(CliError::Usage(format!(
                    "--since {} is later than --until {}: no migration can match",
                    format_time(since_ms),
                    format_time(until_ms)
                )));
            }
        }
        Ok(Selection {
            region: self.region,
            peer: self.peer,
            from_peer: self.from,
            to_peer: self.to,
            table: self.table,
            since_ms: self.since,
            until_ms: self.until,
        })
    }

    fn keeps(&self, summary: &Summary) -> bool {
        self.outcome
            .is_none_or(|outcome| summary.outcome == Some(outcome.name()))
    }
}

/// A terminal outcome to filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutcomeFilter {
    /// Ended in End.
    Completed,
    /// Chose Abort (or was cancelled) and rolled back.
    Aborted,
    /// Failed.
    Failed,
}

impl OutcomeFilter {
    fn name(self) -> &'static str {
        match self {
            OutcomeFilter::Completed => "completed",
            OutcomeFilter::Aborted => "aborted",
            OutcomeFilter::Failed => "failed",
        }
    }
}

/// What `list --state` matches: a state, a status, or open/finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    /// The current state (e.g. `UpgradeCandidateRegion`, `UpdateMetadata::Upgrade`).
    State(StateName),
    /// The status (running, queued, waiting, retrying, rolling_back, completed, aborted,
    /// failed, history_missing).
    Status(&'static str),
    /// Not finished, and not closed by salvage.
    Open,
    /// Finished, whatever the outcome.
    Finished,
}

const STATUS_NAMES: [&str; 9] = [
    "running",
    super::summary::QUEUED_STATUS,
    "waiting",
    "retrying",
    "rolling_back",
    "completed",
    "aborted",
    "failed",
    regmig::migration::HISTORY_MISSING_STATUS,
];

/// Why a `--state` value is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {text:?}: expected open, finished, a status ({}) or a state ({})", STATUS_NAMES.join(", "), StateName::ALL.map(StateName::name).join(", "))]
pub struct ParseStateFilterError {
    /// The text given.
    pub text: String,
}

/// Parses a `--state` value; state names are matched ignoring case and `::`.
pub fn parse_state_filter(text: &str) -> Result<StateFilter, ParseStateFilterError> {
    let wanted = text.trim().to_ascii_lowercase().replace("::", "");
    match wanted.as_str() {
        "open" => return Ok(StateFilter::Open),
        "finished" => return Ok(StateFilter::Finished),
        _ => {}
    }
    if let Some(status) = STATUS_NAMES.iter().find(|name| **name == wanted) {
        return Ok(StateFilter::Status(status));
    }
    StateName::ALL
        .into_iter()
        .find(|state| state.name().to_ascii_lowercase().replace("::", "") == wanted)
        .map(StateFilter::State)
        .ok_or_else(|| ParseStateFilterError {
            text: text.to_string(),
        })
}

impl StateFilter {
    /// Whether a migration, folded (`state`) and summarized (`summary`: its status knows
    /// when it is queued for a lock), passes.
    fn keeps(&self, state: &MigrationState, summary: &Summary) -> bool {
        match self {
            StateFilter::State(name) => state.state == *name,
            StateFilter::Status(status) => summary.status == *status,
            StateFilter::Open => summary.is_open(),
            StateFilter::Finished => state.is_finished(),
        }
    }
}

fn parse_region(text: &str) -> Result<RegionId, ParseRegionIdError> {
    text.parse()
}

fn parse_until(text: &str) -> Result<u64, ParseRangeTimeError> {
    parse_range_time_ms(text, RangeEnd::End, wall_clock_now_ms())
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Where the log is, and how to print.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Which migrations.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only migrations in this state or status: a state name (e.g. UpgradeCandidateRegion),
    /// a status (running, queued, waiting, retrying, rolling_back, completed, aborted, failed,
    /// history_missing), open (not finished, not closed by salvage) or finished.
    #[arg(long, value_parser = parse_state_filter, value_name = "STATE")]
    pub state: Option<StateFilter>,
    /// Only the regions of this batch (its id, as `show` prints it): one row per region.
    #[arg(long, value_name = "BATCH_ID")]
    pub batch: Option<uuid::Uuid>,
    /// Also the archived migrations in this directory (`regmig log archive`), after
    /// proving that it joins the live log.
    #[arg(long, value_name = "ARCHIVE_DIR")]
    pub archive: Option<PathBuf>,
    /// Row order: by submit time (the default) or longest first.
    #[arg(long, value_enum, default_value_t = ListSort::Submitted)]
    pub sort: ListSort,
    /// Only migrations that took (or, running, have taken) at least this long ("30s",
    /// "500ms", "2m").
    #[arg(long, value_parser = parse_min_duration, value_name = "DURATION")]
    pub min_duration: Option<u64>,
}

/// The row order of `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListSort {
    /// By submit time, then id.
    Submitted,
    /// Longest first (submit to finish, or to the last event while it runs).
    Duration,
}

/// A `--min-duration` value in ms.
fn parse_min_duration(text: &str) -> Result<u64, String> {
    humantime::parse_duration(text.trim())
        .map(|duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
        .map_err(|error| {
            format!("invalid duration {text:?} ({error}): expected e.g. 500ms, 30s, 2m")
        })
}

/// Arguments of `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The migration's id (see `regmig list`).
    pub id: String,
    /// Where the log is, and how to print.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The migration's id (see `regmig list`).
    pub id: String,
    /// Where the log is, and how to print.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Print each payload whole (the table otherwise shows it compact: no nulls, long lists
    /// counted, lines cut). Either way, and in `--json`, regions read TABLE:NUMBER, states as
    /// the spec names them and instruction kinds in snake_case.
    #[arg(long)]
    pub full: bool,
    /// Only events of this kind (e.g. RetryScheduled; case ignored); may be repeated.
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,
}

/// Arguments of `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Where the log is: a data directory or a PostgreSQL store.
    #[command(flatten)]
    pub source: LogSource,
    /// Which migrations.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// How to print.
    #[arg(long, value_enum, default_value_t = AuditFormat::Table)]
    pub format: AuditFormat,
    /// Same as `--format json`.
    #[arg(long)]
    pub json: bool,
    /// Also the archived migrations in this directory (`regmig log archive`), after
    /// proving that it joins the live log.
    #[arg(long, value_name = "ARCHIVE_DIR")]
    pub archive: Option<PathBuf>,
}

/// How `audit` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    /// A table for people.
    Table,
    /// One JSON document.
    Json,
    /// CSV with a header row (RFC 4180 quoting, LF line ends).
    Csv,
}

// ---------------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------------

/// `regmig list`.
pub fn list(args: ListArgs) -> u8 {
    let json = args.output.json;
    finish(run_list(&args), json)
}

/// The `list --json` document.
#[derive(Debug, Serialize)]
struct ListDocument<'a> {
    count: usize,
    migrations: Vec<&'a Summary>,
}

fn run_list(args: &ListArgs) -> Result<u8, CliError> {
    let selection = args.filter.selection()?;
    let log = open_log(&args.output.source)?;
    note_archived_history(&log, args.archive.is_some())?;
    let selected: Vec<(Summary, MigrationState)> =
        select_summaries_with_archive(&log, &selection, args.archive.as_deref())?
            .into_iter()
            .filter(|(summary, state)| {
                args.filter.keeps(summary)
                    && args.state.is_none_or(|filter| filter.keeps(state, summary))
                    && args.batch.is_none_or(|batch_id| {
                        state
                            .report
                            .batch
                            .as_ref()
                            .is_some_and(|batch| batch.batch_id == batch_id)
                    })
            })
            .collect();
    let mut selected = selected;
    for (summary, _) in &mut selected {
        fill_lock_holders(&log, summary)?;
    }
    let mut summaries: Vec<&Summary> = selected
        .iter()
        .map(|(summary, _)| summary)
        .filter(|summary| {
            args.min_duration
                .is_none_or(|min_ms| summary.duration_ms >= min_ms)
        })
        .collect();
    if args.sort == ListSort::Duration {
        // Stable: equal durations keep their submit order.
        summaries.sort_by_key(|summary| std::cmp::Reverse(summary.duration_ms));
    }
    if args.output.json {
        print_json(&ListDocument {
            count: summaries.len(),
            migrations: summaries,
        });
        return Ok(0);
    }
    print_text(&render_list(&summaries));
    Ok(0)
}

/// The `list` table of these migrations, with a count line.
pub fn render_list(summaries: &[&Summary]) -> String {
    if summaries.is_empty() {
        return "no migrations match\n".to_string();
    }
    let mut table = Table::new(&[
        "ID",
        "REGION",
        "FROM→TO",
        "STATE",
        "STATUS",
        "SUBMITTED",
        "DURATION",
    ]);
    for summary in summaries {
        table.row(vec![
            summary.procedure_id.clone(),
            summary.region.clone(),
            format!("{}→{}", summary.from_peer, summary.to_peer),
            summary.state.to_string(),
            status_text(summary),
            summary.submitted_at.clone(),
            format_duration(summary.duration_ms),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!(
        "{}\n",
        counted(summaries.len() as u64, "migration")
    ));
    out
}

/// Names who holds the lock a queued migration waits for.
pub fn fill_lock_holders(
    log: &regmig::log::EventLog,
    summary: &mut Summary,
) -> Result<(), CliError> {
    if let Some(queued) = &summary.waiting_for_lock {
        summary.lock_held_by = super::region::lock_holders(
            log,
            &summary.procedure_id,
            &queued.lock_key,
            queued.since_ms,
        )?;
    }
    Ok(())
}

/// Names who held each lock a migration waited for (and the one it is queued for), as
/// `show` and `timeline` print them.
pub fn fill_all_lock_holders(
    log: &regmig::log::EventLog,
    detail: &mut Detail,
) -> Result<(), CliError> {
    fill_lock_holders(log, &mut detail.summary)?;
    for wait in &mut detail.lock_waits {
        wait.held_by = super::region::lock_holders(
            log,
            &detail.summary.procedure_id,
            &wait.lock_key,
            wait.at_ms,
        )?;
    }
    Ok(())
}

/// The status column: a queued migration names its lock and who holds it; a rollback being
/// retried shows its attempts and last error.
fn status_text(summary: &Summary) -> String {
    if let Some(QueuedForLock { lock_key, .. }) = &summary.waiting_for_lock {
        return format!(
            "{} (lock {lock_key}{}, {} so far)",
            summary.status,
            if summary.lock_held_by.is_empty() {
                String::new()
            } else {
                format!(", held by {}", summary.lock_held_by.join(" and "))
            },
            format_duration(summary.lock_wait_ms)
        );
    }
    if let Some(missing_from_seq) = summary.history_missing_from_seq {
        return format!(
            "{} (from event {missing_from_seq} on; closed by salvage)",
            summary.status
        );
    }
    match &summary.rollback_last_error {
        Some(error) if summary.status == "rolling_back" => format!(
            "rolling_back ({}, last error: {error})",
            counted(u64::from(summary.rollback_attempts), "attempt")
        ),
        _ => summary.status.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// show
// ---------------------------------------------------------------------------------------------

/// `regmig show`.
pub fn show(args: ShowArgs) -> u8 {
    let json = args.output.json;
    finish(run_show(&args), json)
}

/// The `show --json` document: the verdict, then every field of the detail.
#[derive(Debug, Serialize)]
struct ShowDocument<'a> {
    verdict: super::verdict::Verdict,
    #[serde(flatten)]
    detail: &'a Detail,
}

fn run_show(args: &ShowArgs) -> Result<u8, CliError> {
    let id = parse_id_arg(&args.id)?;
    let log = open_log(&args.output.source)?;
    let procedure_id = id.resolve(&log)?;
    let history = match migration_or_batch(&log, procedure_id)? {
        Found::Migration(history) => history,
        Found::Batch(batch) => return show_batch(&batch, args.output.json),
    };
    let mut detail = detail(procedure_id, &history)?;
    fill_all_lock_holders(&log, &mut detail)?;
    if args.output.json {
        print_json(&ShowDocument {
            verdict: verdict(&detail),
            detail: &detail,
        });
    } else {
        print_text(&render_show(&detail));
    }
    Ok(0)
}

/// `show BATCH_ID`: the batch and one row per region (`show` a region's migration for
/// its details).
fn show_batch(batch: &Batch, json: bool) -> Result<u8, CliError> {
    let document = BatchDocument::of(batch)?;
    if json {
        print_json(&document);
    } else {
        print_text(&document.render());
    }
    Ok(0)
}

/// A route in one line: leader, followers, leader state, version and where it came from.
pub fn render_route(route: &Option<RouteView>) -> String {
    let Some(route) = route else {
        return "not read".to_string();
    };
    let followers: Vec<String> = route.follower_peers.iter().map(u64::to_string).collect();
    format!(
        "leader {}, followers [{}], leader state {} (version {}, {} at event {})",
        or_dash(route.leader_peer),
        followers.join(", "),
        route.leader_state.unwrap_or("none"),
        route.version,
        if route.source == "read" {
            "read"
        } else {
            "derived from the route changes"
        },
        route.seq
    )
}

/// The text of `show`.
pub fn render_show(detail: &Detail) -> String {
    let summary = &detail.summary;
    let start_ms = summary.submitted_at_ms;
    let mut out = String::new();
    let verdict = verdict(detail);
    out.push_str(&format!(
        "{}\nnext: {}\n\n",
        super::escape::escape_text(&verdict.line),
        super::escape::escape_text(&verdict.next)
    ));
    let mut field = |name: &str, value: String| {
        let value = super::escape::escape_text(&value);
        out.push_str(&format!("{:<17}{value}\n", format!("{name}:")));
    };
    field("migration", summary.procedure_id.clone());
    field(
        "region",
        format!("{} (table {})", summary.region, summary.table_id),
    );
    field(
        "move",
        format!(
            "peer {} ({}) → peer {} ({})",
            summary.from_peer, detail.from_addr, summary.to_peer, detail.to_addr
        ),
    );
    field("trigger", summary.trigger.clone());
    if let Some(actor) = &summary.actor {
        field("actor", actor.clone());
    }
    field("reason", or_dash(summary.reason.as_ref()));
    if let Some(batch) = &summary.batch {
        field(
            "batch",
            format!(
                "{} ({}: {})",
                batch.batch_id,
                counted(batch.regions.len() as u64, "region"),
                batch.regions.join(", ")
            ),
        );
    }
    field("submitted", summary.submitted_at.clone());
    field("finished", or_dash(summary.finished_at.as_ref()));
    field("duration", format_duration(summary.duration_ms));
    field("state", summary.state.to_string());
    field(
        "outcome",
        summary
            .outcome
            .map_or_else(|| format!("- ({})", summary.status), str::to_string),
    );
    field("final error", or_dash(summary.final_error.as_ref()));
    if let Some(missing_from_seq) = summary.history_missing_from_seq {
        field(
            "history",
            format!(
                "MISSING from event {missing_from_seq} on: `regmig log salvage` cut it there and closed the migration, so how it ended is unknown"
            ),
        );
    }
    if let Some(error) = &summary.rollback_last_error {
        field(
            "rolling back",
            format!(
                "{} {} so far, last error: {error}",
                summary.rollback_attempts,
                if summary.rollback_attempts == 1 {
                    "retry"
                } else {
                    "retries"
                }
            ),
        );
    }
    if let Some(reason) = &detail.abort_reason {
        field("abort reason", reason.clone());
    }
    if let Some(cancelled_by) = &detail.cancelled_by {
        field("cancelled by", cancelled_by.clone());
    }
    if let Some(why) = why(detail, &detail.policy) {
        field("why", why);
    }
    for refused in &detail.cancels_refused {
        field("cancel refused", refused.clone());
    }
    field("retry policy", policy_line(&detail.policy));
    field(
        "retries",
        format!(
            "{} of {} framework retries used ({} left){}",
            forward_retries(detail),
            detail.policy.retries_max,
            summary.retries_left,
            match summary.retries as usize - forward_retries(detail).min(summary.retries as usize) {
                0 => String::new(),
                rollback_retries => format!(", and {rollback_retries} of the rollback"),
            }
        ),
    );
    field("attempts", attempts_line(detail, &detail.policy));
    field("slow-path waits", summary.slow_path_waits.to_string());
    field("resumes", summary.resumes.to_string());
    let lock_keys: Vec<String> = detail
        .lock_waits
        .iter()
        .map(|wait| {
            if wait.held_by.is_empty() {
                wait.lock_key.clone()
            } else {
                format!("{}, held by {}", wait.lock_key, wait.held_by.join(" and "))
            }
        })
        .collect();
    field(
        "lock wait",
        if lock_keys.is_empty() {
            format_duration(summary.lock_wait_ms)
        } else {
            format!(
                "{} (for {})",
                format_duration(summary.lock_wait_ms),
                lock_keys.join(", ")
            )
        },
    );
    field(
        "budget",
        format!(
            "{} used, {} left of {}",
            format_duration(summary.budget_used_ms),
            format_duration(summary.budget_left_ms),
            format_duration(summary.timeout_ms)
        ),
    );
    field("last_entry_id", or_dash(summary.last_entry_id));
    field(
        "write pause",
        summary.write_pause_ms.map_or_else(
            || "-".to_string(),
            |pause_ms| {
                format!(
                    "{} (downgrade sent to route switch or rollback, from the log)",
                    format_duration(pause_ms)
                )
            },
        ),
    );
    field("events", summary.events.to_string());
    field("route before", render_route(&detail.route_before));
    field("route after", render_route(&detail.route_after));

    out.push_str("\nstates:\n");
    let mut states = Table::new(&["  OFFSET", "STATE", "DURATION", "EVENT"]);
    for span in &detail.states {
        states.row(vec![
            format!("  {}", format_offset(span.entered_at_ms, start_ms)),
            span.state.to_string(),
            format_duration(span.duration_ms),
            format!("#{}", span.seq),
        ]);
    }
    out.push_str(&states.render());

    out.push_str("\ninstructions and replies:\n");
    if detail.instructions.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut table = Table::new(&[
            "  OFFSET",
            "EVENT",
            "PEER",
            "INSTRUCTION",
            "ATTEMPT",
            "ANSWER",
            "AFTER",
            "DETAIL",
        ]);
        for sent in &detail.instructions {
            let (answer, after, detail_text) = match &sent.answer {
                Some(answer) => (
                    format!("{} (#{})", answer.result, answer.seq),
                    format_duration(answer.at_ms.saturating_sub(sent.at_ms)),
                    answer.detail.clone().unwrap_or_default(),
                ),
                None => ("none".to_string(), "-".to_string(), String::new()),
            };
            table.row(vec![
                format!("  {}", format_offset(sent.at_ms, start_ms)),
                format!("#{}", sent.seq),
                sent.peer.to_string(),
                sent.instruction.to_string(),
                if sent.resend {
                    format!("{} (resent)", sent.attempt)
                } else {
                    sent.attempt.to_string()
                },
                answer,
                after,
                detail_text,
            ]);
        }
        out.push_str(&table.render());
    }

    out.push_str("\nretries:\n");
    if detail.retries_scheduled.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut table = Table::new(&["  OFFSET", "EVENT", "RETRY", "DELAY", "ERROR"]);
        for retry in &detail.retries_scheduled {
            table.row(vec![
                format!("  {}", format_offset(retry.at_ms, start_ms)),
                format!("#{}", retry.seq),
                if retry.rollback {
                    format!("{} (rollback)", retry.attempt)
                } else {
                    retry.attempt.to_string()
                },
                format_duration(retry.delay_ms),
                format!("{}: {}", retry.error_kind, retry.error),
            ]);
        }
        out.push_str(&table.render());
    }

    out.push_str("\nwaits:\n");
    if detail.waits.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut table = Table::new(&["  OFFSET", "EVENT", "REASON", "LENGTH", "UNTIL"]);
        for wait in &detail.waits {
            table.row(vec![
                format!("  {}", format_offset(wait.at_ms, start_ms)),
                format!("#{}", wait.seq),
                wait.reason.clone(),
                format_duration(wait.until_ms.saturating_sub(wait.at_ms)),
                format_offset(wait.until_ms, start_ms),
            ]);
        }
        out.push_str(&table.render());
    }

    out.push_str("\nroute changes:\n");
    if detail.route_changes.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut table = Table::new(&["  OFFSET", "EVENT", "CHANGE", "RESULT"]);
        for change in &detail.route_changes {
            table.row(vec![
                format!("  {}", format_offset(change.at_ms, start_ms)),
                format!("#{}", change.seq),
                change.change.clone(),
                if change.applied {
                    format!(
                        "applied: version {} → {}",
                        change.from_version,
                        or_dash(change.to_version)
                    )
                } else {
                    format!(
                        "refused: expected version {}, found {}",
                        change.from_version,
                        or_dash(change.to_version)
                    )
                },
            ]);
        }
        out.push_str(&table.render());
    }

    if let Some(rollback) = &detail.rollback {
        out.push_str("\nrollback:\n");
        out.push_str(&format!(
            "  started {} (#{}): {}\n",
            format_offset(rollback.started_at_ms, start_ms),
            rollback.seq,
            super::escape::escape_text(&rollback.error)
        ));
        match (rollback.finished_at_ms, rollback.succeeded) {
            (Some(at_ms), Some(succeeded)) => out.push_str(&format!(
                "  finished {}: {}\n",
                format_offset(at_ms, start_ms),
                if succeeded { "succeeded" } else { "FAILED" }
            )),
            _ => out.push_str("  not finished\n"),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------------------------

/// `regmig events`.
pub fn events(args: EventsArgs) -> u8 {
    let json = args.output.json;
    finish(run_events(&args), json)
}

/// One raw event, as `events --json` prints it.
#[derive(Debug, Serialize)]
struct EventRow {
    seq: u64,
    global_seq: u64,
    recorded_at_ms: u64,
    recorded_at: String,
    offset_ms: u64,
    kind: &'static str,
    kind_code: u16,
    /// The event's fields; null when this version cannot decode it.
    payload: serde_json::Value,
    /// Why the payload could not be decoded (present only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    decode_error: Option<String>,
    /// For a LockWaitStarted: the migrations that held the lock then (left out of JSON
    /// when none was found, and for other kinds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    held_by: Vec<String>,
}

/// The `events --json` document.
#[derive(Debug, Serialize)]
struct EventsDocument {
    procedure_id: String,
    count: usize,
    events: Vec<EventRow>,
}

/// The `events BATCH_ID --json` document: each region's migration's events.
#[derive(Debug, Serialize)]
struct BatchEventsDocument {
    batch_id: String,
    regions: Vec<String>,
    migrations: Vec<EventsDocument>,
}

fn run_events(args: &EventsArgs) -> Result<u8, CliError> {
    let id = parse_id_arg(&args.id)?;
    let log = open_log(&args.output.source)?;
    let wanted = wanted_kinds(&args.kind)?;
    let procedure_id = id.resolve(&log)?;
    let records = log.procedure_events(procedure_id, 1)?;
    if records.is_empty() {
        let Some(batch) = super::batch::find_batch(&log, procedure_id)? else {
            return Err(CliError::UnknownMigration { procedure_id });
        };
        let mut documents = Vec::with_capacity(batch.members.len());
        let mut out = String::new();
        for member in &batch.members {
            let records = log.procedure_events(member.procedure_id, 1)?;
            let document = events_document(&log, member.procedure_id, &records, &wanted)?;
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&member_heading(batch.batch_id, member));
            out.push_str(&render_events(&document, args.full));
            documents.push(document);
        }
        if args.output.json {
            print_json(&BatchEventsDocument {
                batch_id: batch.batch_id.to_string(),
                regions: batch.regions.iter().map(ToString::to_string).collect(),
                migrations: documents,
            });
        } else {
            print_text(&out);
        }
        return Ok(0);
    }
    let document = events_document(&log, procedure_id, &records, &wanted)?;
    if args.output.json {
        print_json(&document);
    } else {
        print_text(&render_events(&document, args.full));
    }
    Ok(0)
}

/// The `--kind` names asked for, lowercased; bad usage when one names no kind.
fn wanted_kinds(kinds: &[String]) -> Result<Vec<String>, CliError> {
    let wanted: Vec<String> = kinds.iter().map(|kind| kind.to_ascii_lowercase()).collect();
    let known: Vec<String> = (0..=u16::from(u8::MAX))
        .filter_map(regmig::migration::events::kind_name)
        .chain([
            kind_label(regmig::log::salvage::HISTORY_GAP_KIND),
            "Unknown",
        ])
        .map(str::to_string)
        .collect();
    if let Some(bad) = wanted
        .iter()
        .find(|kind| !known.iter().any(|name| name.to_ascii_lowercase() == **kind))
    {
        return Err(CliError::Usage(format!(
            "--kind {bad}: no event has that kind; the kinds are {}",
            known.join(", ")
        )));
    }
    Ok(wanted)
}

/// One migration's events (`records`, not empty) as `events` prints them, only the kinds
/// `wanted` (all when empty); a lock wait names who held the lock (from `log`).
fn events_document(
    log: &regmig::log::EventLog,
    procedure_id: uuid::Uuid,
    records: &[regmig::log::Record],
    wanted: &[String],
) -> Result<EventsDocument, CliError> {
    let start_ms = records.first().map_or(0, |record| record.recorded_at_ms);
    let rows: Vec<EventRow> = records
        .iter()
        .filter(|record| {
            wanted.is_empty() || wanted.contains(&kind_label(record.kind).to_ascii_lowercase())
        })
        .map(|record| {
            // `regmig log salvage`'s marker: the log's own record, not a migration event.
            let gap = (record.kind == regmig::log::salvage::HISTORY_GAP_KIND)
                .then(|| regmig::log::salvage::HistoryGap::decode(&record.payload))
                .flatten();
            let (payload, decode_error, held_by) = match gap.map(|gap| serde_json::to_value(&gap)) {
                Some(Ok(gap)) => (gap, None, Vec::new()),
                _ => match decode_record(record) {
                    Err(error) => (serde_json::Value::Null, Some(error.to_string()), Vec::new()),
                    Ok(timed) => {
                        let held_by = match &timed.event {
                            regmig::migration::MigrationEvent::LockWaitStarted { lock_key } => {
                                super::region::lock_holders(
                                    log,
                                    &procedure_id.to_string(),
                                    lock_key,
                                    timed.at_ms,
                                )?
                            }
                            _ => Vec::new(),
                        };
                        (payload_json(&timed.event), None, held_by)
                    }
                },
            };
            Ok(EventRow {
                seq: record.seq,
                global_seq: record.global_seq,
                recorded_at_ms: record.recorded_at_ms,
                recorded_at: format_time(record.recorded_at_ms),
                offset_ms: record.recorded_at_ms.saturating_sub(start_ms),
                kind: kind_label(record.kind),
                kind_code: record.kind,
                payload,
                decode_error,
                held_by,
            })
        })
        .collect::<Result<_, CliError>>()?;
    Ok(EventsDocument {
        procedure_id: procedure_id.to_string(),
        count: rows.len(),
        events: rows,
    })
}

fn render_events(document: &EventsDocument, full: bool) -> String {
    let start_ms = document.events.first().map_or(0, |row| row.recorded_at_ms);
    let mut out = format!(
        "events of migration {} (submitted {}):\n",
        document.procedure_id,
        format_time(start_ms)
    );
    let mut table = Table::new(&["SEQ", "OFFSET", "KIND", "PAYLOAD"]);
    for row in &document.events {
        let payload = match &row.decode_error {
            Some(error) => format!("<undecodable: {error}>"),
            None if full => serde_json::to_string(&row.payload).unwrap_or_default(),
            None => compact_payload(&row.payload),
        };
        let payload = if row.held_by.is_empty() {
            payload
        } else {
            format!("{payload} held by {}", row.held_by.join(" and "))
        };
        table.row(vec![
            row.seq.to_string(),
            format_offset(row.recorded_at_ms, start_ms),
            row.kind.to_string(),
            payload,
        ]);
    }
    out.push_str(&table.render());
    out
}

/// Lists longer than this are shown as their length in a compact payload.
const COMPACT_LIST_MAX_ITEMS: usize = 4;
/// A compact payload is cut to this many characters.
const COMPACT_PAYLOAD_MAX_CHARS: usize = 160;

/// A payload (already in the spellings of every output: [`super::summary::payload_json`]) as
/// the `events` table shows it by default: no null fields, lists of more than
/// [`COMPACT_LIST_MAX_ITEMS`] counted, cut to [`COMPACT_PAYLOAD_MAX_CHARS`].
pub fn compact_payload(payload: &serde_json::Value) -> String {
    let text = compact_value(payload).to_string();
    if text.chars().count() <= COMPACT_PAYLOAD_MAX_CHARS {
        return text;
    }
    let cut: String = text.chars().take(COMPACT_PAYLOAD_MAX_CHARS - 1).collect();
    format!("{cut}…")
}

fn compact_value(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(_, field)| !field.is_null())
                .map(|(name, field)| (name.clone(), compact_value(field)))
                .collect(),
        ),
        Value::Array(items) if items.len() > COMPACT_LIST_MAX_ITEMS => {
            Value::String(format!("[{} items]", items.len()))
        }
        Value::Array(items) => Value::Array(items.iter().map(compact_value).collect()),
        _ => value.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// audit
// ---------------------------------------------------------------------------------------------

/// `regmig audit`.
pub fn audit(args: AuditArgs) -> u8 {
    let format = if args.json {
        AuditFormat::Json
    } else {
        args.format
    };
    finish(run_audit(&args, format), format == AuditFormat::Json)
}

/// One migration as an auditor reads it: what, when, why, outcome, how long.
#[derive(Debug, Serialize)]
pub struct AuditRow {
    /// The migration's id.
    pub procedure_id: String,
    /// What: the region.
    pub region: String,
    /// What: the old leader.
    pub from_peer: PeerId,
    /// What: the new leader.
    pub to_peer: PeerId,
    /// When: submitted (RFC 3339 UTC).
    pub submitted_at: String,
    /// When: submitted (ms since the Unix epoch).
    pub submitted_at_ms: u64,
    /// When: finished (RFC 3339 UTC); null while it runs.
    pub finished_at: Option<String>,
    /// When: finished (ms since the Unix epoch); null while it runs.
    pub finished_at_ms: Option<u64>,
    /// How long: submit to finish (to the last event while it runs).
    pub duration_ms: u64,
    /// Who asked for it; null when the log does not say (logs written before actors were
    /// recorded, or a submit that named none).
    pub actor: Option<String>,
    /// Why: what asked for it.
    pub trigger: String,
    /// Why: the operator's reason, if any.
    pub reason: Option<String>,
    /// Who cancelled it, if an operator did.
    pub cancelled_by: Option<String>,
    /// Why they cancelled it.
    pub cancel_reason: Option<String>,
    /// Why the procedure chose to abort, if it did.
    pub abort_reason: Option<String>,
    /// completed, aborted or failed; null while it runs.
    pub outcome: Option<&'static str>,
    /// The status (the outcome, or running, queued, waiting, retrying, rolling_back,
    /// history_missing).
    pub status: &'static str,
    /// The final error, if any.
    pub final_error: Option<String>,
    /// The batch the migration belongs to (spec R2.5); absent for a single migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
}

impl AuditRow {
    fn of(summary: &Summary, state: &MigrationState) -> Self {
        let (cancelled_by, cancel_reason) = match &state.cancelled_by {
            Some((actor, reason)) => (Some(actor.clone()), Some(reason.clone())),
            None => (None, None),
        };
        AuditRow {
            procedure_id: summary.procedure_id.clone(),
            region: summary.region.clone(),
            from_peer: summary.from_peer,
            to_peer: summary.to_peer,
            submitted_at: summary.submitted_at.clone(),
            submitted_at_ms: summary.submitted_at_ms,
            finished_at: summary.finished_at.clone(),
            finished_at_ms: summary.finished_at_ms,
            duration_ms: summary.duration_ms,
            actor: state.report.actor.clone(),
            trigger: summary.trigger.clone(),
            reason: summary.reason.clone(),
            cancelled_by,
            cancel_reason,
            abort_reason: state.abort_reason.clone(),
            outcome: summary.outcome,
            status: summary.status,
            final_error: summary.final_error.clone(),
            batch_id: summary.batch.as_ref().map(|batch| batch.batch_id.clone()),
        }
    }
}

/// The `audit --format json` document.
#[derive(Debug, Serialize)]
struct AuditDocument {
    count: usize,
    migrations: Vec<AuditRow>,
}

fn run_audit(args: &AuditArgs, format: AuditFormat) -> Result<u8, CliError> {
    let selection = args.filter.selection()?;
    let log = open_log(&args.source)?;
    note_archived_history(&log, args.archive.is_some())?;
    let rows: Vec<AuditRow> =
        select_summaries_with_archive(&log, &selection, args.archive.as_deref())?
            .iter()
            .filter(|(summary, _)| args.filter.keeps(summary))
            .map(|(summary, state)| AuditRow::of(summary, state))
            .collect();
    match format {
        AuditFormat::Json => print_json(&AuditDocument {
            count: rows.len(),
            migrations: rows,
        }),
        AuditFormat::Csv => print_text(&render_audit_csv(&rows)),
        AuditFormat::Table => print_text(&render_audit_table(&rows)),
    }
    Ok(0)
}

/// The CSV header; each row of [`render_audit_csv`] has these cells, in this order.
pub const AUDIT_CSV_COLUMNS: [&str; 16] = [
    "procedure_id",
    "region",
    "from_peer",
    "to_peer",
    "submitted_at",
    "finished_at",
    "duration_ms",
    "actor",
    "trigger",
    "reason",
    "cancelled_by",
    "cancel_reason",
    "abort_reason",
    "outcome",
    "status",
    "final_error",
];

fn render_audit_csv(rows: &[AuditRow]) -> String {
    let mut out = AUDIT_CSV_COLUMNS.join(",");
    out.push('\n');
    for row in rows {
        let cells = [
            row.procedure_id.clone(),
            row.region.clone(),
            row.from_peer.to_string(),
            row.to_peer.to_string(),
            row.submitted_at.clone(),
            row.finished_at.clone().unwrap_or_default(),
            row.duration_ms.to_string(),
            row.actor.clone().unwrap_or_default(),
            row.trigger.clone(),
            row.reason.clone().unwrap_or_default(),
            row.cancelled_by.clone().unwrap_or_default(),
            row.cancel_reason.clone().unwrap_or_default(),
            row.abort_reason.clone().unwrap_or_default(),
            row.outcome.unwrap_or_default().to_string(),
            row.status.to_string(),
            row.final_error.clone().unwrap_or_default(),
        ];
        let cells: Vec<String> = cells.iter().map(|cell| csv_cell(cell)).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// A CSV cell, quoted when it holds a comma, a quote, a line break or edge spaces.
fn csv_cell(text: &str) -> String {
    let needs_quotes =
        text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn render_audit_table(rows: &[AuditRow]) -> String {
    if rows.is_empty() {
        return "no migrations match\n".to_string();
    }
    let mut table = Table::new(&[
        "SUBMITTED",
        "FINISHED",
        "REGION",
        "FROM→TO",
        "ACTOR",
        "WHY",
        "OUTCOME",
        "DURATION",
        "ID",
        "CANCELLED BY",
        "ABORT REASON",
    ]);
    for row in rows {
        let why = match &row.reason {
            Some(reason) => format!("{}: {reason}", row.trigger),
            None => row.trigger.clone(),
        };
        table.row(vec![
            row.submitted_at.clone(),
            or_dash(row.finished_at.as_ref()),
            row.region.clone(),
            format!("{}→{}", row.from_peer, row.to_peer),
            or_dash(row.actor.as_ref()),
            why,
            row.outcome.unwrap_or(row.status).to_string(),
            format_duration(row.duration_ms),
            row.procedure_id.clone(),
            match (&row.cancelled_by, &row.cancel_reason) {
                (Some(actor), Some(reason)) => format!("{actor}: {reason}"),
                _ => "-".to_string(),
            },
            or_dash(row.abort_reason.as_ref()),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!("{}\n", counted(rows.len() as u64, "migration")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_filters_accept_states_statuses_and_open() {
        assert_eq!(
            parse_state_filter("updatemetadata::upgrade"),
            Ok(StateFilter::State(StateName::UpdateMetadataUpgrade))
        );
        assert_eq!(
            parse_state_filter("End"),
            Ok(StateFilter::State(StateName::End))
        );
        assert_eq!(
            parse_state_filter("rolling_back"),
            Ok(StateFilter::Status("rolling_back"))
        );
        assert_eq!(parse_state_filter("open"), Ok(StateFilter::Open));
        assert!(parse_state_filter("sleeping").is_err());
    }

    #[test]
    fn compact_payloads_use_one_spelling_and_stay_short() {
        let payload = crate::cli::summary::display_spellings(serde_json::json!({
            "state": "UpdateMetadataDowngrade",
            "reason": null,
            "region_id": 30064771075u64,
            "keys": [1, 2, 3, 4, 5],
            "few": [{"region_id": 4398046511105u64}],
            "regions": [4398046511105u64, 30064771075u64],
        }));
        assert_eq!(
            compact_payload(&payload),
            r#"{"few":[{"region":"1024:1"}],"keys":"[5 items]","region":"7:3","regions":["1024:1","7:3"],"state":"UpdateMetadata::Downgrade"}"#
        );
        // Enum tags become snake_case; map keys that are numbers are data, kept.
        let nested = crate::cli::summary::display_spellings(serde_json::json!({
            "instruction": {"OpenRegion": {"region_wal_options": {"1": "x"}}},
        }));
        assert_eq!(
            compact_payload(&nested),
            r#"{"instruction":{"open_region":{"region_wal_options":{"1":"x"}}}}"#
        );
        let long = serde_json::json!({ "message": "x".repeat(300) });
        let text = compact_payload(&long);
        assert_eq!(text.chars().count(), COMPACT_PAYLOAD_MAX_CHARS);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn csv_cells_are_quoted_when_needed() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a, b"), "\"a, b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
