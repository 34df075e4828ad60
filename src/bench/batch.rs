//! Issue 12's measurement: evacuating a datanode that leads many regions of one table, as
//! one migration per region and as one batch (spec R2.5), on the same simulated cluster in
//! the same run, beside a single migration's time.
//!
//! The evacuated datanode is failing: it does not answer downgrades, so every region takes
//! the slow path (a wait for the old leader's lease, about 10 s of virtual time). That is
//! the case that made evacuations slow, because each migration waits the lease out.
//! Times are the simulator's virtual time from the first submit to the last region's end
//! (exact and reproducible); the wall-clock time of each run is reported beside it.

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use crate::sim::runner::{run_scenario, RunError, RunOptions};
use crate::sim::scenario::{parse_scenario, ScenarioError, ScenarioOutcome};

/// Why the measurement could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchBenchError {
    /// The generated scenario was refused (a bug in this module).
    #[error("the generated {shape} scenario is invalid: {source}")]
    Scenario {
        /// Which run.
        shape: &'static str,
        /// The parser's error.
        source: ScenarioError,
    },
    /// The simulator could not run it.
    #[error("the {shape} run failed: {source}")]
    Run {
        /// Which run.
        shape: &'static str,
        /// The runner's error.
        source: RunError,
    },
    /// A run ended without every region moved.
    #[error("the {shape} run did not move every region: {failures}")]
    NotMoved {
        /// Which run.
        shape: &'static str,
        /// Its failures.
        failures: String,
    },
}

/// The figures of one evacuation measurement.
#[derive(Debug, Clone, Serialize)]
pub struct EvacuationFigures {
    /// Regions the evacuated datanode led.
    pub regions: u32,
    /// One migration of one region (virtual ms).
    pub single_migration_ms: u64,
    /// Every region as its own migration, all submitted at once (virtual ms).
    pub single_migrations_ms: u64,
    /// Every region in one batch (virtual ms).
    pub batch_ms: u64,
    /// `batch_ms / single_migration_ms`; the target is at most 2.
    pub batch_to_single_ratio: f64,
    /// Wall-clock time of each run (single, singles, batch), in ms.
    pub wall_ms: [u64; 3],
    /// Instructions sent to datanodes by each run (single, singles, batch): a batch's step
    /// is one instruction per datanode carrying every region (spec R2.5).
    pub instructions: [u64; 3],
}

fn scenario_text(name: &str, regions: u32, moved: u32, batch: bool) -> String {
    let mut text = format!(
        "name = \"{name}\"\nseed = 12\n\n[cluster]\npeers = [1, 2, 3]\n\n[[cluster.tables]]\n\
         id = 1024\nregions = [\n"
    );
    for number in 1..=regions {
        let _ = writeln!(
            text,
            "  {{ number = {number}, leader = 1, followers = [], last_entry_id = 100 }},"
        );
    }
    text.push_str("]\n\n[workload]\nwrites_per_second = 10\n\n");
    if batch {
        let names: Vec<String> = (1..=moved).map(|n| format!("\"1024:{n}\"")).collect();
        let _ = writeln!(
            text,
            "[[migrations]]\nregions = [{}]\nfrom = 1\nto = 2\n",
            names.join(", ")
        );
    } else {
        for number in 1..=moved {
            let _ = writeln!(
                text,
                "[[migrations]]\nregion = \"1024:{number}\"\nfrom = 1\nto = 2\n"
            );
        }
    }
    let replies: Vec<&str> = (0..moved).map(|_| "\"unreachable\"").collect();
    let _ = writeln!(
        text,
        "[[script]]\npeer = 1\ninstruction = \"downgrade_region\"\nreplies = [{}]",
        replies.join(", ")
    );
    text
}

/// Runs one shape; returns (virtual ms from the first submit to the last end, wall ms,
/// instructions sent).
fn measure(
    shape: &'static str,
    regions: u32,
    moved: u32,
    batch: bool,
) -> Result<(u64, u64, u64), BatchBenchError> {
    let text = scenario_text(shape, regions, moved, batch);
    let scenario = parse_scenario(&text, shape)
        .map_err(|source| BatchBenchError::Scenario { shape, source })?;
    let started = Instant::now();
    let run = run_scenario(
        &scenario,
        &RunOptions {
            discard_data_dir: true,
            unsynced_log: true,
            ..RunOptions::default()
        },
    )
    .map_err(|source| BatchBenchError::Run { shape, source })?;
    let wall_ms = started.elapsed().as_millis() as u64;
    let outcome: &ScenarioOutcome = &run.outcome;
    let everything_completed = outcome
        .migrations
        .iter()
        .all(|migration| migration.outcome == "completed");
    if !outcome.ok || !everything_completed {
        return Err(BatchBenchError::NotMoved {
            shape,
            failures: outcome
                .failures
                .iter()
                .chain(&outcome.invariants.violations)
                .cloned()
                .chain(
                    outcome
                        .migrations
                        .iter()
                        .filter(|migration| migration.outcome != "completed")
                        .map(|migration| format!("{}: {}", migration.region, migration.outcome)),
                )
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    // Every migration is submitted at virtual time 0.
    let virtual_ms = outcome
        .migrations
        .iter()
        .map(|migration| migration.virtual_time_ms)
        .max()
        .unwrap_or(0);
    let instructions = outcome
        .migrations
        .iter()
        .flat_map(|migration| migration.sent.values())
        .sum();
    Ok((virtual_ms, wall_ms, instructions))
}

/// Evacuates a datanode leading `regions` regions of one table three ways: one region alone,
/// every region as its own migration, every region in one batch.
pub fn evacuation(regions: u32) -> Result<EvacuationFigures, BatchBenchError> {
    let (single_migration_ms, single_wall_ms, single_sent) =
        measure("single migration", regions, 1, false)?;
    let (single_migrations_ms, singles_wall_ms, singles_sent) =
        measure("single migrations", regions, regions, false)?;
    let (batch_ms, batch_wall_ms, batch_sent) = measure("batch", regions, regions, true)?;
    Ok(EvacuationFigures {
        regions,
        single_migration_ms,
        single_migrations_ms,
        batch_ms,
        batch_to_single_ratio: batch_ms as f64 / single_migration_ms.max(1) as f64,
        wall_ms: [single_wall_ms, singles_wall_ms, batch_wall_ms],
        instructions: [single_sent, singles_sent, batch_sent],
    })
}

/// The figures as a few lines for a terminal.
pub fn render(figures: &EvacuationFigures) -> String {
    let regions = figures.regions;
    let rows = [
        (
            "one migration of one region".to_string(),
            figures.single_migration_ms,
            figures.wall_ms[0],
            figures.instructions[0],
        ),
        (
            format!("{regions} migrations, submitted at once"),
            figures.single_migrations_ms,
            figures.wall_ms[1],
            figures.instructions[1],
        ),
        (
            format!("one batch of {regions} regions"),
            figures.batch_ms,
            figures.wall_ms[2],
            figures.instructions[2],
        ),
    ];
    let mut text = format!(
        "evacuating a failing datanode that leads {regions} regions of one table (virtual time; \
         slow path: the old leader answers no downgrade)\n"
    );
    for (label, virtual_ms, wall_ms, instructions) in rows {
        let _ = writeln!(
            text,
            "  {label:<36} {virtual_ms:>7} ms   (wall {wall_ms} ms, {instructions} instructions)"
        );
    }
    let _ = writeln!(
        text,
        "  batch / one migration: {:.2} (target: at most 2)",
        figures.batch_to_single_ratio
    );
    text
}
