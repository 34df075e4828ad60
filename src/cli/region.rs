//! `regmig region R`: a region's state as the log last saw it — whether it takes writes,
//! its route (the latest one any of its migrations saw), the migration still open on it —
//! and its recent migrations, newest first. Read from the region audit index.

use clap::Args;
use serde::Serialize;

use super::common::{
    finish, format_time, load_history, open_log, print_json, print_text, CliError,
};
use super::inspect::{render_list, render_route, OutputArgs};
use super::summary::{candidates, detail, Detail, RouteView, Selection, Summary};
use super::verdict::{verdict, Verdict};
use regmig::domain::RegionId;
use regmig::migration::{EventRole, MigrationEvent};

/// Arguments of `region`.
#[derive(Debug, Args)]
pub struct RegionArgs {
    /// The region: "TABLE:NUMBER" or the packed u64.
    #[arg(value_parser = parse_region, value_name = "REGION")]
    pub region: RegionId,
    /// How many recent migrations to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub recent: usize,
    /// Where the log is, and how to print.
    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_region(text: &str) -> Result<RegionId, regmig::domain::ParseRegionIdError> {
    text.trim().parse()
}

/// The `region --json` document.
#[derive(Debug, Serialize)]
struct RegionDocument<'a> {
    region: String,
    verdict: Verdict,
    /// The latest route a migration of the region saw.
    route: Option<&'a RouteView>,
    /// The migration that saw it.
    route_seen_by: String,
    /// When (the time of the event that read or changed it), RFC 3339.
    route_seen_at: Option<String>,
    /// The migration not yet finished (nor closed by salvage) on the region, if any.
    open_migration: Option<String>,
    /// Every migration of the region.
    count: usize,
    /// The most recent ones, newest first.
    recent: Vec<&'a Summary>,
}

/// `regmig region`.
pub fn run(args: RegionArgs) -> u8 {
    let json = args.output.json;
    finish(run_region(&args), json)
}

fn run_region(args: &RegionArgs) -> Result<u8, CliError> {
    let log = open_log(&args.output.source)?;
    let selection = Selection {
        region: Some(args.region),
        peer: None,
        from_peer: None,
        to_peer: None,
        table: None,
        since_ms: None,
        until_ms: None,
    };
    // (detail, time the latest route was seen)
    let mut details: Vec<(Detail, Option<u64>)> = Vec::new();
    for procedure_id in candidates(&log, &selection)? {
        let history = load_history(&log, procedure_id)?;
        let detail = detail(procedure_id, &history)?;
        let seen_at_ms = detail.route_after.as_ref().and_then(|route| {
            usize::try_from(route.seq)
                .ok()
                .and_then(|seq| history.events.get(seq.checked_sub(1)?))
                .map(|timed| timed.at_ms)
        });
        details.push((detail, seen_at_ms));
    }
    for (detail, _) in &mut details {
        super::inspect::fill_lock_holders(&log, &mut detail.summary)?;
    }
    if details.is_empty() {
        return Err(CliError::RegionWithoutMigrations {
            region: args.region.to_string(),
            log: args.output.source.describe(),
        });
    }
    details.sort_by(|(a, _), (b, _)| {
        (a.summary.submitted_at_ms, &a.summary.procedure_id)
            .cmp(&(b.summary.submitted_at_ms, &b.summary.procedure_id))
    });
    // The latest route seen; on a tie, the later migration's.
    let latest = details
        .iter()
        .enumerate()
        .filter_map(|(index, (_, seen))| seen.map(|at_ms| (at_ms, index)))
        .max()
        .map_or(details.len() - 1, |(_, index)| index);
    let (latest_detail, seen_at_ms) = &details[latest];
    let open_migration = details
        .iter()
        .rev()
        .find(|(detail, _)| detail.summary.is_open())
        .map(|(detail, _)| {
            format!(
                "{} ({}, state {})",
                detail.summary.procedure_id, detail.summary.status, detail.summary.state
            )
        });
    let recent: Vec<&Summary> = details
        .iter()
        .rev()
        .take(args.recent)
        .map(|(detail, _)| &detail.summary)
        .collect();
    let verdict = verdict(latest_detail);
    if args.output.json {
        print_json(&RegionDocument {
            region: args.region.to_string(),
            verdict,
            route: latest_detail.route_after.as_ref(),
            route_seen_by: latest_detail.summary.procedure_id.clone(),
            route_seen_at: seen_at_ms.map(format_time),
            open_migration,
            count: details.len(),
            recent,
        });
        return Ok(0);
    }
    let escape = super::escape::escape_text;
    let mut out = format!(
        "{}\nnext: {}\n\n",
        escape(&verdict.line),
        escape(&verdict.next)
    );
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("{:<17}{}\n", format!("{name}:"), escape(&value)));
    };
    field("route", render_route(&latest_detail.route_after));
    field(
        "seen",
        format!(
            "{} by migration {} (the latest route of the region in this log)",
            seen_at_ms.map_or_else(|| "-".to_string(), format_time),
            latest_detail.summary.procedure_id
        ),
    );
    field(
        "open migration",
        open_migration.unwrap_or_else(|| "none".to_string()),
    );
    field("migrations", details.len().to_string());
    out.push_str("\nrecent migrations, newest first:\n");
    out.push_str(&render_list(&recent));
    print_text(&out);
    Ok(0)
}

/// The migrations that held `lock_key` at `at_ms`, other than `waiter`: those whose
/// LocksAcquired named the key at or before then and that had not finished by then, each as
/// "ID (REGION FROM→TO, STATE)"; and, for a table's lock, the revision 2 migrations of the
/// table that held it around a route read or compare-and-swap then (spec R2.6: the table
/// lock is taken for those only and never recorded in LocksAcquired; the log shows it held
/// when the migration's last input at or before `at_ms` is a route read or a route
/// compare-and-swap), each as "ID (REGION FROM→TO, STATE; table lock around a route
/// write, R2.6)". Found through the table's region index (the key names its table); a
/// catalog or schema key (shared, never waited on alone) finds none.
pub fn lock_holders(
    log: &regmig::log::EventLog,
    waiter: &str,
    lock_key: &str,
    at_ms: u64,
) -> Result<Vec<String>, CliError> {
    let table_lock = lock_key.starts_with("table/");
    let Some(table_id) = lock_key
        .strip_prefix("table/")
        .or_else(|| lock_key.strip_prefix("region/"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|table| table.parse().ok())
    else {
        return Ok(Vec::new());
    };
    let selection = Selection {
        region: None,
        peer: None,
        from_peer: None,
        to_peer: None,
        table: Some(table_id),
        since_ms: None,
        until_ms: Some(at_ms),
    };
    let mut holders = Vec::new();
    for procedure_id in candidates(log, &selection)? {
        if procedure_id.to_string() == waiter {
            continue;
        }
        let history = load_history(log, procedure_id)?;
        let events = &history.events;
        let acquired = events.iter().any(|timed| {
            timed.at_ms <= at_ms
                && matches!(&timed.event, MigrationEvent::LocksAcquired { lock_keys, .. }
                    if lock_keys.iter().any(|key| key == lock_key))
        });
        // Its state when the wait began.
        let until_then = || events.iter().filter(|timed| timed.at_ms <= at_ms);
        let state = regmig::migration::fold(until_then());
        if state.is_finished() {
            continue;
        }
        let around_route_write = table_lock
            && state.policy.revision_two()
            && until_then()
                .rev()
                .find(|timed| timed.event.role() == EventRole::Input)
                .is_some_and(|timed| {
                    matches!(
                        timed.event,
                        MigrationEvent::RouteRead { .. }
                            | MigrationEvent::RouteCasApplied { .. }
                            | MigrationEvent::RouteCasRefused { .. }
                    )
                });
        if acquired || around_route_write {
            if let Some(task) = &state.task {
                holders.push(format!(
                    "{procedure_id} ({} {}→{}, {}{})",
                    task.region_id,
                    task.from_peer.id,
                    task.to_peer.id,
                    state.state.name(),
                    if acquired {
                        ""
                    } else {
                        "; table lock around a route write, R2.6"
                    }
                ));
            }
        }
    }
    Ok(holders)
}
