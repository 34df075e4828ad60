//! A batch (spec R2.5) as the inspect commands find it. A batch has no record of its own:
//! each of its regions is a migration whose `BatchJoined` event names the batch's id and
//! every region. So `show`, `events`, `replay` and `timeline` given an id that no
//! migration has look for the batch of that id: the first migration that joined it
//! (created in the same millisecond as the batch or later, so only those are read), then
//! the others through the region index of each of its regions.

use serde::Serialize;
use uuid::Uuid;

use super::common::{format_duration, load_history, CliError, Table};
use super::summary::{summarize, Summary};
use regmig::domain::RegionId;
use regmig::engine::store::History;
use regmig::log::EventLog;
use regmig::migration::{fold, BatchMembership, BatchOutcome};

/// One region of a batch: its migration and that migration's history.
#[derive(Debug, Clone)]
pub struct BatchMember {
    /// The region.
    pub region: RegionId,
    /// Its migration.
    pub procedure_id: Uuid,
    /// The migration's history.
    pub history: History,
}

/// A batch and the migrations of its regions, in the batch's region order.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The batch's id.
    pub batch_id: Uuid,
    /// Every region the batch was asked to move.
    pub regions: Vec<RegionId>,
    /// The migration of each region that started one (a refused region has none).
    pub members: Vec<BatchMember>,
}

/// The migrations that joined `membership`'s batch, found through the region index, in
/// the order of the batch's regions (a region migrated again later is not in the batch).
pub fn batch_members(
    log: &EventLog,
    membership: &BatchMembership,
) -> Result<Vec<BatchMember>, CliError> {
    let mut members = Vec::new();
    for region in &membership.regions {
        for (_, procedure_id) in log.procedures_by_region(region.as_u64(), 0, u64::MAX)? {
            let history = load_history(log, procedure_id)?;
            let joined = fold(&history.events)
                .report
                .batch
                .is_some_and(|of| of.batch_id == membership.batch_id);
            if joined {
                members.push(BatchMember {
                    region: *region,
                    procedure_id,
                    history,
                });
            }
        }
    }
    Ok(members)
}

/// The batch whose id is `batch_id`, or `None` when no migration in the log joined one
/// of that id.
pub fn find_batch(log: &EventLog, batch_id: Uuid) -> Result<Option<Batch>, CliError> {
    let since_ms = uuid_v7_ms(batch_id);
    for procedure_id in log.procedures()? {
        if since_ms.is_some_and(|since_ms| uuid_v7_ms(procedure_id) < Some(since_ms)) {
            continue;
        }
        let history = load_history(log, procedure_id)?;
        if let Some(membership) = fold(&history.events).report.batch {
            if membership.batch_id == batch_id {
                return Ok(Some(Batch {
                    batch_id,
                    members: batch_members(log, &membership)?,
                    regions: membership.regions,
                }));
            }
        }
    }
    Ok(None)
}

/// The millisecond a uuid v7 was made in (`None` for another version).
fn uuid_v7_ms(id: Uuid) -> Option<u64> {
    if id.get_version_num() != 7 {
        return None;
    }
    id.get_timestamp().map(|timestamp| {
        let (seconds, nanos) = timestamp.to_unix();
        seconds * 1000 + u64::from(nanos) / 1_000_000
    })
}

/// What `show BATCH_ID --json` prints: the batch, its outcome, and each region's summary.
#[derive(Debug, Serialize)]
pub struct BatchDocument {
    /// The batch's id.
    pub batch_id: String,
    /// Every region the batch was asked to move, "TABLE:NUMBER".
    pub regions: Vec<String>,
    /// completed, partial, aborted or failed once every region's migration finished;
    /// null while one runs (or a region has no migration).
    pub outcome: Option<&'static str>,
    /// The migration of each region, as `list` summarizes it.
    pub migrations: Vec<Summary>,
}

impl BatchDocument {
    /// Summarizes `batch`.
    pub fn of(batch: &Batch) -> Result<Self, CliError> {
        let migrations = batch
            .members
            .iter()
            .map(|member| summarize(member.procedure_id, &member.history))
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes: Vec<_> = batch
            .regions
            .iter()
            .map(|region| {
                batch
                    .members
                    .iter()
                    .rev()
                    .find(|member| member.region == *region)
                    .and_then(|member| fold(&member.history.events).outcome)
            })
            .collect();
        Ok(BatchDocument {
            batch_id: batch.batch_id.to_string(),
            regions: batch.regions.iter().map(ToString::to_string).collect(),
            outcome: BatchOutcome::of(&outcomes).map(BatchOutcome::name),
            migrations,
        })
    }

    /// The text `show BATCH_ID` prints: the batch, then one row per region.
    pub fn render(&self) -> String {
        let mut out = format!("batch:           {}\n", self.batch_id);
        out.push_str(&format!(
            "regions:         {} ({})\n",
            self.regions.len(),
            self.regions.join(", ")
        ));
        out.push_str(&format!(
            "outcome:         {}\n",
            self.outcome
                .unwrap_or("- (a region's migration has not finished)")
        ));
        let mut table = Table::new(&[
            "REGION",
            "MIGRATION",
            "FROM→TO",
            "STATE",
            "STATUS",
            "DURATION",
        ]);
        for summary in &self.migrations {
            table.row(vec![
                summary.region.clone(),
                summary.procedure_id.clone(),
                format!("{}→{}", summary.from_peer, summary.to_peer),
                summary.state.to_string(),
                summary.status.to_string(),
                format_duration(summary.duration_ms),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
        out
    }
}

/// The line that opens one region's part of a batch's output.
pub fn member_heading(batch_id: Uuid, member: &BatchMember) -> String {
    format!(
        "== region {} of batch {batch_id}: migration {}\n",
        member.region, member.procedure_id
    )
}

/// What an id given to an inspect command names.
#[derive(Debug)]
pub enum Found {
    /// A migration, with its history.
    Migration(History),
    /// A batch.
    Batch(Batch),
}

/// The migration of id `id`, else the batch of that id, else
/// [`CliError::UnknownMigration`].
pub fn migration_or_batch(log: &EventLog, id: Uuid) -> Result<Found, CliError> {
    match load_history(log, id) {
        Ok(history) => Ok(Found::Migration(history)),
        Err(CliError::UnknownMigration { procedure_id }) => match find_batch(log, id)? {
            Some(batch) => Ok(Found::Batch(batch)),
            None => Err(CliError::UnknownMigration { procedure_id }),
        },
        Err(error) => Err(error),
    }
}
