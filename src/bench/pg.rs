//! Issue 16's measurement: durable appends per second on the PostgreSQL store with 1, 16 and
//! 256 procedures appending 1-event batches concurrently, beside a raw single-writer loop of
//! `INSERT` + `COMMIT` on the same server in the same run. Target: 256-way at least 5× the
//! raw commit rate (group commit shares one transaction among every queued append).
//!
//! Each measurement runs in a PostgreSQL schema of its own (`regmig_bench_<pid>_<n>`),
//! created empty and dropped afterwards; nothing else of the database is touched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::appends::{throughput_on, PAYLOAD_BYTES};
use super::error::BenchError;
use super::runtime;
use regmig::log::{EventLog, LogOptions, PgStore};
use regmig::pg::schema::database;
use regmig::pg::{connect_session, PgConfig};

/// The ratio of the 256-way rate to the raw commit rate the issue asks for.
pub const TARGET_RATIO_256: f64 = 5.0;

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct PgBenchReport {
    /// The store, without its password.
    pub store: String,
    /// The server's `server_version`.
    pub server_version: String,
    /// How long each measurement ran, in seconds.
    pub run_seconds: f64,
    /// Single-writer `INSERT` (one row of [`PAYLOAD_BYTES`]) + `COMMIT` per second.
    pub raw_commits_per_second: f64,
    /// (concurrent procedures, durable events per second), in the order run.
    pub appends: Vec<PgAppendRate>,
}

/// Durable appends per second at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct PgAppendRate {
    /// Procedures appending at once.
    pub procedures: usize,
    /// Durable events per second.
    pub events_per_second: f64,
    /// Against the raw commit rate.
    pub ratio_to_raw: f64,
}

impl PgBenchReport {
    /// Whether the largest concurrency (256 in a full run) reached [`TARGET_RATIO_256`].
    pub fn target_met(&self) -> Option<bool> {
        self.appends
            .iter()
            .find(|rate| rate.procedures == 256)
            .map(|rate| rate.ratio_to_raw >= TARGET_RATIO_256)
    }
}

/// Measures the raw commit loop, then durable appends at each of `concurrency`, each for
/// `run`, on the server of `config` (durable: `synchronous_commit` as the server sets it).
pub fn run(
    config: &PgConfig,
    concurrency: &[usize],
    run: Duration,
) -> Result<PgBenchReport, BenchError> {
    let runtime = runtime::multi_thread()?;
    let scratch = |index: usize| {
        config
            .clone()
            .with_schema(&format!("regmig_bench_{}_{index}", std::process::id()))
    };
    let raw_config = scratch(0)?;
    let (server_version, raw_commits_per_second) =
        runtime.block_on(raw_commit_loop(&raw_config, run))?;
    let mut appends = Vec::with_capacity(concurrency.len());
    for (index, procedures) in concurrency.iter().copied().enumerate() {
        let config = scratch(index + 1)?;
        let store = runtime.block_on(PgStore::open_async(
            config.clone(),
            LogOptions::default(),
            None,
        ))?;
        let measured = throughput_on(
            &runtime,
            EventLog::with_store(Arc::new(store)),
            procedures,
            run,
        );
        let dropped = runtime.block_on(drop_schema(&config));
        let events_per_second = measured?;
        dropped?;
        appends.push(PgAppendRate {
            procedures,
            events_per_second,
            ratio_to_raw: events_per_second / raw_commits_per_second.max(1e-9),
        });
    }
    Ok(PgBenchReport {
        store: config.redacted(),
        server_version,
        run_seconds: run.as_secs_f64(),
        raw_commits_per_second,
        appends,
    })
}

/// One session inserting one row per transaction (autocommit) for `run`: commits per second.
async fn raw_commit_loop(config: &PgConfig, run: Duration) -> Result<(String, f64), BenchError> {
    let schema = config.schema();
    let failed = |action| move |error| BenchError::Log(database(config, action, error));
    let client = connect_session(config).await?;
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(failed("read the server version"))?
        .get(0);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.raw (id bigserial PRIMARY KEY, payload bytea NOT NULL)"
        ))
        .await
        .map_err(failed("create the raw loop's table"))?;
    let insert = client
        .prepare(&format!("INSERT INTO {schema}.raw (payload) VALUES ($1)"))
        .await
        .map_err(failed("prepare the raw loop's insert"))?;
    let payload = vec![0xa5u8; PAYLOAD_BYTES];
    let started = Instant::now();
    let mut commits = 0u64;
    let looped = async {
        while started.elapsed() < run {
            client.execute(&insert, &[&payload]).await?;
            commits += 1;
        }
        Ok::<_, regmig::pg::tokio_postgres::Error>(())
    }
    .await;
    let elapsed = started.elapsed();
    let dropped = drop_schema(config).await;
    looped.map_err(failed("insert and commit a row"))?;
    dropped?;
    Ok((version, commits as f64 / elapsed.as_secs_f64()))
}

async fn drop_schema(config: &PgConfig) -> Result<(), BenchError> {
    let client = connect_session(config).await?;
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            config.schema()
        ))
        .await
        .map_err(|error| BenchError::Log(database(config, "drop the scratch schema", error)))
}

/// The report as a table.
pub fn table(report: &PgBenchReport) -> String {
    let mut text = format!(
        "PostgreSQL {} at {}: durable appends, 1-event batches of {PAYLOAD_BYTES} B, {:.1} s each\n",
        report.server_version, report.store, report.run_seconds
    );
    text.push_str(&format!(
        "  raw INSERT + COMMIT, 1 writer    {:>10.0} commits/s\n",
        report.raw_commits_per_second
    ));
    for rate in &report.appends {
        text.push_str(&format!(
            "  durable appends, {:>3} procedure{} {:>10.0} events/s  {:>6.2}× raw\n",
            rate.procedures,
            if rate.procedures == 1 { " " } else { "s" },
            rate.events_per_second,
            rate.ratio_to_raw
        ));
    }
    match report.target_met() {
        Some(true) => text.push_str(&format!(
            "  target: 256-way ≥ {TARGET_RATIO_256}× raw: met\n"
        )),
        Some(false) => text.push_str(&format!(
            "  target: 256-way ≥ {TARGET_RATIO_256}× raw: MISSED\n"
        )),
        None => text.push_str("  target: 256-way ≥ 5× raw: not measured (no 256-way run)\n"),
    }
    text
}
