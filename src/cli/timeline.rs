//! `regmig timeline ID -o timeline.svg`: a hand-written SVG of a migration over time.
//!
//! Each migration is one row on an axis of time since its submit, with three lanes: its
//! states as coloured bars (a rollback hatched over them), its instructions (a triangle when
//! sent, a line to the answer, a dot coloured by the answer), and its waits (attempt
//! intervals, the slow path's lease wait, backoffs) with each retry as a red line across
//! the row and each resume after a restart as a dashed one. A band behind the lanes marks
//! when the region took no writes (the write pause: from the downgrade to the route write
//! of the upgrade or the rollback); badges under the row's labels count its retries,
//! timeouts, failed answers, re-sends and lock waits, and "×N" marks N instructions,
//! answers or retries drawn on one spot. A legend explains the colours.
//!
//! The id of a region's migration inside a batch draws the batch: one row per region.
//!
//! `--region R` draws the region's whole history, one row per migration, all on the same
//! relative axis so their durations compare at a glance (each row's label gives its
//! submit time).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use uuid::Uuid;

use super::batch::{batch_members, migration_or_batch, Found};
use super::common::LogSource;
use super::common::{
    counted, finish, format_duration, load_history, open_log, parse_id_arg, print_json, print_text,
    refuse_output_in_data_dir, CliError,
};
use super::summary::{detail, Detail};
use regmig::domain::{ParseRegionIdError, RegionId};
use regmig::engine::store::History;
use regmig::migration::{MigrationEvent, StateName, TimedEvent, WritePause};

/// The most migrations one picture draws (the most recent ones of a long history).
pub const TIMELINE_ROWS_MAX: usize = 200;

/// Arguments of this command.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The migration's id (see `regmig list`); not with `--region`.
    #[arg(required_unless_present = "region", conflicts_with = "region")]
    pub id: Option<String>,
    /// Draw this region's whole history instead ("TABLE:NUMBER" or the packed u64).
    #[arg(long, value_parser = parse_region, value_name = "REGION")]
    pub region: Option<RegionId>,
    /// The SVG file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output_file: PathBuf,
    /// Where the log is: a data directory or a PostgreSQL store.
    #[command(flatten)]
    pub source: LogSource,
    /// Print one JSON document instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

fn parse_region(text: &str) -> Result<RegionId, ParseRegionIdError> {
    text.parse()
}

/// Runs the command; returns the exit code.
pub fn run(args: TimelineArgs) -> u8 {
    let json = args.json;
    finish(run_timeline(&args), json)
}

/// The `timeline --json` document.
#[derive(Debug, Serialize)]
struct TimelineDocument {
    output: String,
    procedure_ids: Vec<String>,
    rows: usize,
    rows_omitted: usize,
    width: u32,
    height: u32,
}

/// One migration to draw.
struct Row {
    detail: Detail,
    resumed_at_ms: Vec<u64>,
    unwritable: Option<Unwritable>,
}

/// When the region could take no writes: the write pause (one definition,
/// `regmig::migration::WritePause`: from the first downgrade sent with `reject_write` to the
/// route write of the upgrade or of the rollback's clearing, or to `Finished`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unwritable {
    /// Since the submit.
    from_offset_ms: u64,
    /// Since the submit.
    to_offset_ms: u64,
    /// False while the pause still runs at the last event (a stuck rollback).
    ended: bool,
}

/// The write pause of a history, as a stretch of its timeline.
fn unwritable(events: &[TimedEvent]) -> Option<Unwritable> {
    let first_ms = events.first()?.at_ms;
    let last_ms = events.last()?.at_ms;
    let mut pause = WritePause::default();
    for timed in events {
        if let Some(pause_ms) = pause.observe(timed.at_ms, &timed.event) {
            return Some(Unwritable {
                from_offset_ms: timed
                    .at_ms
                    .saturating_sub(pause_ms)
                    .saturating_sub(first_ms),
                to_offset_ms: timed.at_ms.saturating_sub(first_ms),
                ended: true,
            });
        }
    }
    let pause_ms = pause.pause_ms(last_ms)?;
    Some(Unwritable {
        from_offset_ms: last_ms.saturating_sub(pause_ms).saturating_sub(first_ms),
        to_offset_ms: last_ms.saturating_sub(first_ms),
        ended: false,
    })
}

/// A migration's row; its lock waits name who held each lock (from `log`).
fn row_of(
    log: &regmig::log::EventLog,
    procedure_id: Uuid,
    history: &History,
) -> Result<Row, CliError> {
    let events = &history.events;
    let mut detail = detail(procedure_id, history)?;
    super::inspect::fill_all_lock_holders(log, &mut detail)?;
    Ok(Row {
        detail,
        resumed_at_ms: events
            .iter()
            .filter(|timed| matches!(timed.event, MigrationEvent::Resumed))
            .map(|timed| timed.at_ms)
            .collect(),
        unwritable: unwritable(events),
    })
}

fn run_timeline(args: &TimelineArgs) -> Result<u8, CliError> {
    // A bad id is bad usage, whatever the data directory holds: checked before it is opened.
    let id = args.id.as_deref().map(parse_id_arg).transpose()?;
    refuse_output_in_data_dir(&args.source, &args.output_file, "the timeline")?;
    let log = open_log(&args.source)?;
    let procedure_id = id.map(|id| id.resolve(&log)).transpose()?;
    let mut rows = Vec::new();
    let mut rows_omitted = 0;
    let title;
    if let Some(region) = args.region {
        let found = log.procedures_by_region(region.as_u64(), 0, u64::MAX)?;
        if found.is_empty() {
            return Err(CliError::RegionWithoutMigrations {
                region: region.to_string(),
                log: args.source.describe(),
            });
        }
        rows_omitted = found.len().saturating_sub(TIMELINE_ROWS_MAX);
        for (_, procedure_id) in &found[rows_omitted..] {
            let history = load_history(&log, *procedure_id)?;
            rows.push(row_of(&log, *procedure_id, &history)?);
        }
        title = format!(
            "region {region}: {}",
            counted(found.len() as u64, "migration")
        );
    } else {
        let Some(procedure_id) = procedure_id else {
            return Err(CliError::Usage(
                "timeline needs a migration id or --region REGION".to_string(),
            ));
        };
        // A batch's id, or the id of a region's migration inside a batch: one row per
        // region of the batch (spec R2.5).
        let (history, batch) = match migration_or_batch(&log, procedure_id)? {
            Found::Migration(history) => {
                let batch = match regmig::migration::fold(&history.events).report.batch {
                    Some(membership) => Some((
                        membership.batch_id,
                        membership.regions.len(),
                        batch_members(&log, &membership)?,
                    )),
                    None => None,
                };
                (history, batch)
            }
            Found::Batch(batch) => (
                History::default(),
                Some((batch.batch_id, batch.regions.len(), batch.members)),
            ),
        };
        match batch {
            Some((batch_id, regions, members)) => {
                for member in &members {
                    rows.push(row_of(&log, member.procedure_id, &member.history)?);
                }
                title = format!(
                    "batch {batch_id}: {} ({} drawn)",
                    counted(regions as u64, "region"),
                    counted(rows.len() as u64, "migration")
                );
            }
            None => {
                rows.push(row_of(&log, procedure_id, &history)?);
                title = format!("migration {procedure_id}");
            }
        }
    }
    let picture = render_svg(&title, &rows, rows_omitted);
    std::fs::write(&args.output_file, &picture.svg).map_err(|source| CliError::Write {
        path: args.output_file.clone(),
        source,
    })?;
    let procedure_ids: Vec<String> = rows
        .iter()
        .map(|row| row.detail.summary.procedure_id.clone())
        .collect();
    if args.json {
        print_json(&TimelineDocument {
            output: args.output_file.display().to_string(),
            procedure_ids,
            rows: rows.len(),
            rows_omitted,
            width: picture.width,
            height: picture.height,
        });
    } else {
        print_text(&format!(
            "wrote the timeline of {title} to {}\n",
            args.output_file.display()
        ));
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Drawing.
// ---------------------------------------------------------------------------------------------

const WIDTH: u32 = 1100;
const LEFT: f64 = 210.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 92.0;
const ROW_HEIGHT: f64 = 96.0;
const STATE_LANE_Y: f64 = 8.0;
const STATE_LANE_HEIGHT: f64 = 22.0;
const INSTRUCTION_LANE_Y: f64 = 46.0;
const WAIT_LANE_Y: f64 = 62.0;
/// Where the labels of retry and resume lines go, below the wait lane.
const LINE_LABEL_Y: f64 = 88.0;
const WAIT_LANE_HEIGHT: f64 = 14.0;
/// A character's width at font-size 11, roughly: to decide whether a label fits.
const CHAR_WIDTH: f64 = 6.4;
/// A bold character's width at font-size 11, generously (labels must never be clipped).
const BOLD_CHAR_WIDTH: f64 = 7.6;

/// Where a row's outcome label starts: just after its last bar, but never so far right that
/// the label runs past the canvas (a migration that ends at the right edge of the plot).
fn outcome_label_x(end_x: f64, label: &str) -> f64 {
    let label_width = label.chars().count() as f64 * BOLD_CHAR_WIDTH;
    (end_x + 6.0).min(f64::from(WIDTH) - label_width - 4.0)
}

/// A drawn picture.
struct Picture {
    svg: String,
    width: u32,
    height: u32,
}

fn state_color(state: &str) -> &'static str {
    match StateName::from_name(state) {
        Some(StateName::Start) => "#9e9e9e",
        Some(StateName::OpenCandidateRegion) => "#4e79a7",
        Some(StateName::FlushLeaderRegion) => "#9c755f",
        Some(StateName::UpdateMetadataDowngrade) => "#f28e2b",
        Some(StateName::DowngradeLeaderRegion) => "#e15759",
        Some(StateName::UpgradeCandidateRegion) => "#76b7b2",
        Some(StateName::UpdateMetadataUpgrade) => "#59a14f",
        Some(StateName::UpdateMetadataRollback) => "#edc948",
        Some(StateName::CloseDowngradedRegion) => "#b07aa1",
        Some(StateName::End) => "#1b5e20",
        Some(StateName::Abort) => "#7f0000",
        None => "#000000",
    }
}

fn instruction_color(instruction: &str) -> &'static str {
    match instruction {
        "open_region" => "#4e79a7",
        "downgrade_region" => "#e15759",
        "upgrade_region" => "#76b7b2",
        "close_region" => "#b07aa1",
        "flush_region" => "#9c755f",
        _ => "#000000",
    }
}

// Each colour below means one thing: an instruction has the colour of the state that sends
// it; answers, waits and states otherwise share none (a timeout was once the orange of
// UpdateMetadata::Downgrade, and a backoff nearly so).
fn answer_color(result: &str) -> &'static str {
    match result {
        "ok" => "#2e7d32",
        "timeout" | "expired" => "#ad1457",
        "not_ready" => "#edc948",
        _ => "#c62828",
    }
}

fn wait_color(reason: &str) -> &'static str {
    match reason {
        "attempt_interval" => "#90caf9",
        "lease_expiry" => "#7e57c2",
        "backoff" => "#bcaaa4",
        "rollback_backoff" => "#ef9a9a",
        _ => "#bdbdbd",
    }
}

fn wait_label(reason: &str) -> &'static str {
    match reason {
        "attempt_interval" => "attempt interval",
        "lease_expiry" => "slow path: lease wait",
        "backoff" => "retry backoff",
        "rollback_backoff" => "rollback backoff",
        _ => "wait",
    }
}

/// Escapes text for SVG content and attribute values; control characters (which XML 1.0
/// does not allow, and which would break a label) are written as `\n`, `\u{1b}`, as on a
/// terminal.
fn escape(text: &str) -> String {
    let text = super::escape::escape_text(text);
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(character),
        }
    }
    out
}

/// A tick step of 1, 2 or 5 times a power of ten ms, giving at most ten ticks.
fn tick_step_ms(span_ms: u64) -> u64 {
    let mut magnitude = 1u64;
    loop {
        for factor in [1u64, 2, 5] {
            match factor.checked_mul(magnitude) {
                Some(step) if span_ms / step <= 10 => return step,
                Some(_) => {}
                None => return span_ms.max(1),
            }
        }
        match magnitude.checked_mul(10) {
            Some(next) => magnitude = next,
            None => return span_ms.max(1),
        }
    }
}

/// Maps ms since a row's submit to x.
struct Scale {
    span_ms: u64,
    plot_width: f64,
}

impl Scale {
    fn x(&self, offset_ms: u64) -> f64 {
        LEFT + self.plot_width * (offset_ms.min(self.span_ms) as f64) / (self.span_ms as f64)
    }
}

/// The colour of the unwritable band: a dark slate no marker uses, drawn faint behind
/// the lanes with a dashed edge.
const UNWRITABLE_COLOR: &str = "#263238";
/// A character's width at font-size 9, roughly.
const SMALL_CHAR_WIDTH: f64 = 5.4;
/// Markers closer than this many pixels are one spot.
const SAME_SPOT_PX: f64 = 1.0;

/// How often the things an operator counts happened in a migration: retries, mailbox
/// timeouts, other failed answers, re-sent instructions, lock waits ("3 retries"); what
/// did not happen is left out.
fn count_badges(detail: &Detail) -> Vec<String> {
    let answers = || {
        detail
            .instructions
            .iter()
            .filter_map(|sent| sent.answer.as_ref())
    };
    let counted = [
        (detail.retries_scheduled.len(), "retry", "retries"),
        (
            answers()
                .filter(|answer| matches!(answer.result, "timeout" | "expired"))
                .count(),
            "timeout",
            "timeouts",
        ),
        (
            answers()
                .filter(|answer| !matches!(answer.result, "ok" | "timeout" | "expired"))
                .count(),
            "failed answer",
            "failed answers",
        ),
        (
            detail
                .instructions
                .iter()
                .filter(|sent| sent.resend)
                .count(),
            "re-send",
            "re-sends",
        ),
        (detail.lock_waits.len(), "lock wait", "lock waits"),
    ];
    counted
        .into_iter()
        .filter(|(count, _, _)| *count > 0)
        .map(|(count, one, many)| format!("{count} {}", if count == 1 { one } else { many }))
        .collect()
}

/// Draws "×N" over each spot where N > 1 of `xs` (sorted or not) fall together.
fn stack_badges(svg: &mut String, xs: &[f64], y: f64, what: &str) {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut index = 0;
    while index < sorted.len() {
        let spot = sorted[index];
        let count = sorted[index..]
            .iter()
            .take_while(|x| **x - spot < SAME_SPOT_PX)
            .count();
        if count > 1 {
            let label = format!("×{count}");
            let _ = writeln!(
                svg,
                r##"<g class="stack"><title>{count} {what} at one instant</title><text x="{:.1}" y="{y:.1}" font-size="9" font-weight="bold" fill="#37474f">{label}</text></g>"##,
                (spot + 5.0).min(f64::from(WIDTH) - 24.0),
            );
        }
        index += count;
    }
}

/// ", held by A and B", or nothing when no holder was found.
fn held_by_text(held_by: &[String]) -> String {
    if held_by.is_empty() {
        String::new()
    } else {
        format!(", held by {}", held_by.join(" and "))
    }
}

fn render_svg(title: &str, rows: &[Row], rows_omitted: usize) -> Picture {
    let longest_ms = rows
        .iter()
        .map(|row| row.detail.summary.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let step_ms = tick_step_ms(longest_ms);
    let span_ms = longest_ms.div_ceil(step_ms).saturating_mul(step_ms);
    let scale = Scale {
        span_ms,
        plot_width: f64::from(WIDTH) - LEFT - RIGHT,
    };
    let legend_top = TOP + ROW_HEIGHT * rows.len() as f64 + 16.0;
    let height = (legend_top + 112.0).ceil() as u32;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="11">"#
    );
    svg.push_str(concat!(
        "<defs>\n",
        r##"<pattern id="rollback" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="none"/><line x1="0" y1="0" x2="0" y2="6" stroke="#b71c1c" stroke-width="2.5" stroke-opacity="0.7"/></pattern>"##,
        "\n",
        r##"<pattern id="lockwait" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#eeeeee"/><line x1="0" y1="0" x2="0" y2="6" stroke="#9e9e9e" stroke-width="2"/></pattern>"##,
        "\n</defs>\n"
    ));
    let _ = writeln!(
        svg,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="12" y="24" font-size="15" font-weight="bold">{}</text>"##,
        escape(title)
    );
    let subtitle = match rows {
        [row] => {
            let summary = &row.detail.summary;
            format!(
                "region {}, peer {} → peer {}; submitted {}; {} after {}",
                summary.region,
                summary.from_peer,
                summary.to_peer,
                summary.submitted_at,
                summary.outcome.unwrap_or(summary.status),
                format_duration(summary.duration_ms)
            )
        }
        _ => {
            let mut text =
                "one row per migration, oldest first; time since each migration's submit"
                    .to_string();
            if rows_omitted > 0 {
                let _ = write!(text, " ({rows_omitted} older migrations not drawn)");
            }
            text
        }
    };
    let _ = writeln!(
        svg,
        r##"<text x="12" y="42" fill="#424242">{}</text>"##,
        escape(&subtitle)
    );

    // The time axis, with grid lines through every row.
    let axis_y = TOP - 10.0;
    let grid_bottom = TOP + ROW_HEIGHT * rows.len() as f64;
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" fill="#424242">time since submit</text>"##,
        axis_y - 18.0
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#616161"/>"##,
        scale.x(span_ms)
    );
    let mut tick_ms = 0;
    while tick_ms <= span_ms {
        let x = scale.x(tick_ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{grid_bottom:.1}" stroke="#e0e0e0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#424242">{}</text>"##,
            axis_y,
            axis_y - 4.0,
            escape(&format_duration(tick_ms))
        );
        match tick_ms.checked_add(step_ms) {
            Some(next) => tick_ms = next,
            None => break,
        }
    }

    for (index, row) in rows.iter().enumerate() {
        let top = TOP + ROW_HEIGHT * index as f64;
        draw_row(&mut svg, row, top, &scale, rows.len() > 1);
    }
    draw_legend(&mut svg, rows, legend_top);
    svg.push_str("</svg>\n");
    Picture {
        svg,
        width: WIDTH,
        height,
    }
}

fn draw_row(svg: &mut String, row: &Row, top: f64, scale: &Scale, history: bool) {
    let detail = &row.detail;
    let summary = &detail.summary;
    let start_ms = summary.submitted_at_ms;
    let offset = |at_ms: u64| at_ms.saturating_sub(start_ms);
    let _ = writeln!(
        svg,
        r##"<g><title>{} {} peer {} → {}: {}</title>"##,
        escape(&summary.procedure_id),
        escape(&summary.region),
        summary.from_peer,
        summary.to_peer,
        summary.outcome.unwrap_or(summary.status)
    );
    if top > TOP {
        let _ = writeln!(
            svg,
            r##"<line x1="8" y1="{top:.1}" x2="{:.1}" y2="{top:.1}" stroke="#bdbdbd"/>"##,
            f64::from(WIDTH) - 8.0
        );
    }
    // The labels on the left.
    let labels: [String; 3] = if history {
        [
            format!(
                "{}  {} → {}  {}",
                summary.region,
                summary.from_peer,
                summary.to_peer,
                summary.outcome.unwrap_or(summary.status)
            ),
            summary.submitted_at.clone(),
            // A uuid v7 starts with its time, which ids of one campaign share: its random
            // end tells the rows apart (`regmig show` takes the whole id).
            format!(
                "id …{} · {}",
                &summary.procedure_id[summary.procedure_id.len().saturating_sub(12)..],
                format_duration(summary.duration_ms)
            ),
        ]
    } else {
        [
            "states".to_string(),
            "instructions → answers".to_string(),
            "waits, retries, resumes".to_string(),
        ]
    };
    let label_ys = [
        STATE_LANE_Y + 15.0,
        INSTRUCTION_LANE_Y + 4.0,
        WAIT_LANE_Y + 11.0,
    ];
    for (label, y) in labels.iter().zip(label_ys) {
        let _ = writeln!(
            svg,
            r##"<text x="12" y="{:.1}" fill="#212121">{}</text>"##,
            top + y,
            escape(label)
        );
    }

    // The unwritable band behind the lanes: no datanode took writes for the region.
    if let Some(band) = &row.unwritable {
        let x = scale.x(band.from_offset_ms);
        let width = (scale.x(band.to_offset_ms) - x).max(2.0);
        let length = format_duration(band.to_offset_ms.saturating_sub(band.from_offset_ms));
        let title = if band.ended {
            format!("unwritable for {length}: from the downgrade to the route write that ended it")
        } else {
            format!("unwritable for {length} and counting: the region is still Downgrading")
        };
        let _ = writeln!(
            svg,
            r##"<rect class="unwritable" x="{x:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="{UNWRITABLE_COLOR}" fill-opacity="0.12" stroke="{UNWRITABLE_COLOR}" stroke-dasharray="3,2"><title>{}</title></rect>"##,
            top + 3.0,
            ROW_HEIGHT - 6.0,
            escape(&title)
        );
        let label = format!("unwritable {length}");
        if (label.len() as f64) * SMALL_CHAR_WIDTH + 4.0 < width {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end" fill="{UNWRITABLE_COLOR}">{}</text>"##,
                x + width - 2.0,
                top + STATE_LANE_Y - 1.0,
                escape(&label)
            );
        }
    }
    // What happened how often, as badges under the row's labels.
    let mut badge_x = 12.0;
    for badge in count_badges(detail) {
        let width = badge.len() as f64 * SMALL_CHAR_WIDTH + 8.0;
        let _ = writeln!(
            svg,
            r##"<rect class="badge" x="{badge_x:.1}" y="{:.1}" width="{width:.1}" height="12" rx="6" fill="#eceff1" stroke="#90a4ae"/><text x="{:.1}" y="{:.1}" font-size="9" fill="#37474f">{}</text>"##,
            top + LINE_LABEL_Y - 9.0,
            badge_x + 4.0,
            top + LINE_LABEL_Y,
            escape(&badge)
        );
        badge_x += width + 4.0;
    }

    // States: one bar per visit; a visit of no time gets a sliver.
    let state_y = top + STATE_LANE_Y;
    for span in &detail.states {
        let x = scale.x(span.offset_ms);
        let width = (scale.x(span.offset_ms.saturating_add(span.duration_ms)) - x).max(2.0);
        let color = state_color(span.state);
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{state_y:.1}" width="{width:.1}" height="{STATE_LANE_HEIGHT}" fill="{color}" stroke="#ffffff" stroke-width="0.5"><title>#{} {} at +{} for {}</title></rect>"##,
            span.seq,
            escape(span.state),
            escape(&format_duration(span.offset_ms)),
            escape(&format_duration(span.duration_ms))
        );
        if (span.state.len() as f64) * CHAR_WIDTH + 6.0 < width {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" fill="#ffffff">{}</text>"##,
                x + 3.0,
                state_y + 15.0,
                escape(span.state)
            );
        }
    }
    // Waits for locks other migrations held, before (or between) the states.
    for wait in &detail.lock_waits {
        let end_ms = wait.waited_ms.map_or(summary.duration_ms, |waited_ms| {
            wait.offset_ms.saturating_add(waited_ms)
        });
        let x = scale.x(wait.offset_ms);
        let width = (scale.x(end_ms) - x).max(2.0);
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{state_y:.1}" width="{width:.1}" height="{STATE_LANE_HEIGHT}" fill="url(#lockwait)" stroke="#9e9e9e"><title>#{} waiting for {}{} for {}</title></rect>"##,
            wait.seq,
            escape(&wait.lock_key),
            escape(&held_by_text(&wait.held_by)),
            escape(&format_duration(end_ms.saturating_sub(wait.offset_ms)))
        );
        let label = format!(
            "waiting for {}{}",
            wait.lock_key,
            held_by_text(&wait.held_by)
        );
        if (label.len() as f64) * CHAR_WIDTH + 6.0 < width {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" fill="#424242">{}</text>"##,
                x + 3.0,
                state_y + 15.0,
                escape(&label)
            );
        }
    }
    // The rollback, hatched over the states it ran in.
    if let Some(rollback) = &detail.rollback {
        let end_ms = rollback
            .finished_at_ms
            .unwrap_or(summary.submitted_at_ms.saturating_add(summary.duration_ms));
        let x = scale.x(rollback.offset_ms);
        let width = (scale.x(offset(end_ms)) - x).max(4.0);
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="url(#rollback)" stroke="#b71c1c"><title>#{} rollback: {}</title></rect>"##,
            state_y - 3.0,
            STATE_LANE_HEIGHT + 6.0,
            rollback.seq,
            escape(&rollback.error)
        );
    }
    // The outcome, after the last bar.
    let end_x = scale.x(summary.duration_ms);
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#212121" font-weight="bold">{}</text>"##,
        outcome_label_x(end_x, summary.outcome.unwrap_or(summary.status)),
        state_y + 15.0,
        escape(summary.outcome.unwrap_or(summary.status))
    );

    // Instructions: a triangle when sent, a line to the answer, a dot for the answer.
    let lane_y = top + INSTRUCTION_LANE_Y;
    for sent in &detail.instructions {
        let x = scale.x(sent.offset_ms);
        let color = instruction_color(sent.instruction);
        if let Some(answer) = &sent.answer {
            let answer_x = scale.x(answer.offset_ms);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{lane_y:.1}" x2="{answer_x:.1}" y2="{lane_y:.1}" stroke="{color}" stroke-width="2"/>"##
            );
            let _ = writeln!(
                svg,
                r##"<circle cx="{answer_x:.1}" cy="{lane_y:.1}" r="4.5" fill="{}" stroke="#ffffff" stroke-width="1"><title>#{} {} from peer {}: {}{}</title></circle>"##,
                answer_color(answer.result),
                answer.seq,
                escape(answer.result),
                sent.peer,
                escape(sent.instruction),
                answer
                    .detail
                    .as_ref()
                    .map(|detail| format!(" ({})", escape(detail)))
                    .unwrap_or_default()
            );
        } else {
            let _ = writeln!(
                svg,
                r##"<circle cx="{:.1}" cy="{lane_y:.1}" r="4" fill="#ffffff" stroke="#757575" stroke-dasharray="2,1"><title>#{} no answer to {}</title></circle>"##,
                x + 8.0,
                sent.seq,
                escape(sent.instruction)
            );
        }
        let _ = writeln!(
            svg,
            r##"<path d="M{:.1},{:.1} L{:.1},{:.1} L{x:.1},{:.1} Z" fill="{color}"><title>#{} {} to peer {}, attempt {}{}</title></path>"##,
            x - 5.0,
            lane_y - 11.0,
            x + 5.0,
            lane_y - 11.0,
            lane_y - 2.0,
            sent.seq,
            escape(sent.instruction),
            sent.peer,
            sent.attempt,
            if sent.resend { " (re-sent)" } else { "" }
        );
    }

    // Markers drawn on one spot (instructions sent, or answered, at one instant) carry how
    // many they are.
    let sent_xs: Vec<f64> = detail
        .instructions
        .iter()
        .map(|sent| scale.x(sent.offset_ms))
        .collect();
    stack_badges(svg, &sent_xs, lane_y - 13.0, "instructions sent");
    let answer_xs: Vec<f64> = detail
        .instructions
        .iter()
        .filter_map(|sent| sent.answer.as_ref())
        .map(|answer| scale.x(answer.offset_ms))
        .collect();
    stack_badges(svg, &answer_xs, lane_y + 12.0, "answers");

    // Waits as boxes; retries and resumes as lines across the row.
    let wait_y = top + WAIT_LANE_Y;
    for wait in &detail.waits {
        let x = scale.x(wait.offset_ms);
        let width = (scale.x(offset(wait.until_ms)) - x).max(2.0);
        let label = wait_label(&wait.reason);
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{wait_y:.1}" width="{width:.1}" height="{WAIT_LANE_HEIGHT}" rx="2" fill="{}" fill-opacity="0.85"><title>#{} {} for {}</title></rect>"##,
            wait_color(&wait.reason),
            wait.seq,
            label,
            escape(&format_duration(wait.until_ms.saturating_sub(wait.at_ms)))
        );
        if (label.len() as f64) * CHAR_WIDTH * 0.9 + 6.0 < width {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#212121">{label}</text>"##,
                x + 3.0,
                wait_y + 10.5
            );
        }
    }
    let retry_xs: Vec<f64> = detail
        .retries_scheduled
        .iter()
        .map(|retry| scale.x(retry.offset_ms))
        .collect();
    stack_badges(svg, &retry_xs, top + 4.0, "retries");
    for retry in &detail.retries_scheduled {
        let x = scale.x(retry.offset_ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#c62828" stroke-width="1.5"><title>#{} retry {}{}: {}</title></line><text x="{:.1}" y="{:.1}" font-size="10" fill="#c62828">R{}</text>"##,
            top + 4.0,
            wait_y + WAIT_LANE_HEIGHT + 2.0,
            retry.seq,
            retry.attempt,
            if retry.rollback {
                " of the rollback"
            } else {
                ""
            },
            escape(&retry.error),
            x + 2.0,
            top + LINE_LABEL_Y,
            retry.attempt
        );
    }
    for at_ms in &row.resumed_at_ms {
        let x = scale.x(offset(*at_ms));
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#212121" stroke-width="1.5" stroke-dasharray="4,3"><title>resumed after an engine restart</title></line><text x="{:.1}" y="{:.1}" font-size="10" fill="#212121">resumed</text>"##,
            top + 2.0,
            wait_y + WAIT_LANE_HEIGHT + 2.0,
            x + 3.0,
            top + LINE_LABEL_Y
        );
    }
    svg.push_str("</g>\n");
}

fn draw_legend(svg: &mut String, rows: &[Row], top: f64) {
    let _ = writeln!(
        svg,
        r##"<text x="12" y="{:.1}" font-weight="bold">legend</text>"##,
        top + 10.0
    );
    // States: the ones drawn, in the order of a migration.
    let mut x = 70.0;
    let mut y = top;
    for state in StateName::ALL {
        let drawn = rows.iter().any(|row| {
            row.detail
                .states
                .iter()
                .any(|span| span.state == state.name())
        });
        if !drawn {
            continue;
        }
        let width = state.name().len() as f64 * CHAR_WIDTH + 22.0;
        if x + width > f64::from(WIDTH) - RIGHT {
            x = 70.0;
            y += 18.0;
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            y + 1.0,
            state_color(state.name()),
            x + 16.0,
            y + 11.0,
            escape(state.name())
        );
        x += width;
    }
    // Instructions and answers.
    y += 22.0;
    x = 70.0;
    for instruction in [
        "open_region",
        "downgrade_region",
        "upgrade_region",
        "close_region",
    ] {
        let _ = writeln!(
            svg,
            r##"<path d="M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="{}"/><text x="{:.1}" y="{:.1}">{instruction} sent</text>"##,
            x,
            y + 2.0,
            x + 10.0,
            y + 2.0,
            x + 5.0,
            y + 11.0,
            instruction_color(instruction),
            x + 14.0,
            y + 11.0
        );
        x += instruction.len() as f64 * CHAR_WIDTH + 52.0;
    }
    y += 18.0;
    x = 70.0;
    for (result, label) in [
        ("ok", "answer ok"),
        ("timeout", "mailbox timeout"),
        ("not_ready", "not ready"),
        ("error", "error / unreachable"),
    ] {
        let _ = writeln!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="{}"/><text x="{:.1}" y="{:.1}">{label}</text>"##,
            x + 5.0,
            y + 7.0,
            answer_color(result),
            x + 14.0,
            y + 11.0
        );
        x += label.len() as f64 * CHAR_WIDTH + 36.0;
    }
    let _ = writeln!(
        svg,
        r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#ffffff" stroke="#757575" stroke-dasharray="2,1"/><text x="{:.1}" y="{:.1}">no answer</text>"##,
        x + 5.0,
        y + 7.0,
        x + 14.0,
        y + 11.0
    );
    // Waits, retries, resumes, rollback.
    y += 18.0;
    x = 70.0;
    for reason in [
        "attempt_interval",
        "lease_expiry",
        "backoff",
        "rollback_backoff",
    ] {
        let label = wait_label(reason);
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="18" height="10" rx="2" fill="{}" fill-opacity="0.85"/><text x="{:.1}" y="{:.1}">{label}</text>"##,
            y + 2.0,
            wait_color(reason),
            x + 22.0,
            y + 11.0
        );
        x += label.len() as f64 * CHAR_WIDTH + 40.0;
    }
    y += 18.0;
    x = 70.0;
    let _ = writeln!(
        svg,
        r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#c62828" stroke-width="1.5"/><text x="{:.1}" y="{:.1}">retry (R1, R2...)</text>"##,
        y,
        y + 13.0,
        x + 6.0,
        y + 11.0
    );
    x += 130.0;
    let _ = writeln!(
        svg,
        r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#212121" stroke-width="1.5" stroke-dasharray="4,3"/><text x="{:.1}" y="{:.1}">resumed after an engine restart</text>"##,
        y,
        y + 13.0,
        x + 6.0,
        y + 11.0
    );
    x += 220.0;
    let _ = writeln!(
        svg,
        r##"<rect x="{x:.1}" y="{:.1}" width="24" height="12" fill="url(#rollback)" stroke="#b71c1c"/><text x="{:.1}" y="{:.1}">rollback</text>"##,
        y + 1.0,
        x + 30.0,
        y + 11.0
    );
    x += 100.0;
    let _ = writeln!(
        svg,
        r##"<rect x="{x:.1}" y="{:.1}" width="24" height="12" fill="url(#lockwait)" stroke="#9e9e9e"/><text x="{:.1}" y="{:.1}">waiting for a lock</text>"##,
        y + 1.0,
        x + 30.0,
        y + 11.0
    );
    x += 150.0;
    let _ = writeln!(
        svg,
        r##"<rect x="{x:.1}" y="{:.1}" width="24" height="12" fill="{UNWRITABLE_COLOR}" fill-opacity="0.12" stroke="{UNWRITABLE_COLOR}" stroke-dasharray="3,2"/><text x="{:.1}" y="{:.1}">unwritable (write pause)</text>"##,
        y + 1.0,
        x + 30.0,
        y + 11.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_text_escapes_markup_and_control_characters() {
        assert_eq!(
            escape("r1\nr2\u{7} <script> & \u{1b}[31m\"x\""),
            "r1\\nr2\\u{7} &lt;script&gt; &amp; \\u{1b}[31m&quot;x&quot;"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn ticks_are_round_and_at_most_ten() {
        assert_eq!(tick_step_ms(1), 1);
        assert_eq!(tick_step_ms(12_177), 2000);
        assert_eq!(tick_step_ms(1_500), 200);
        assert_eq!(tick_step_ms(100), 10);
        assert!(12_177 / tick_step_ms(12_177) <= 10);
        assert!(u64::MAX / tick_step_ms(u64::MAX) <= 10);
    }

    #[test]
    fn an_outcome_label_at_the_right_edge_stays_on_the_canvas() {
        let right_edge = f64::from(WIDTH) - RIGHT;
        for label in ["completed", "aborted", "failed", "rolling_back", "retrying"] {
            let x = outcome_label_x(right_edge, label);
            let end = x + label.len() as f64 * BOLD_CHAR_WIDTH;
            assert!(end <= f64::from(WIDTH), "{label}: ends at {end}");
            assert!(x > right_edge - label.len() as f64 * BOLD_CHAR_WIDTH);
        }
        // Away from the edge, the label follows its bar.
        assert_eq!(outcome_label_x(500.0, "completed"), 506.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
