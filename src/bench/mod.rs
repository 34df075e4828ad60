//! Benchmarks: every figure of issue 7, each measured beside its baseline in the same run,
//! shared by `regmig bench` and `cargo bench --bench engine`. `BENCHMARKS.md` holds a full
//! run's table and what limits each figure.
//!
//! # Layout
//! - [`table`]: figures, targets, and the one table they print as.
//! - [`appends`]: figure 1, durable appends beside the raw write + fdatasync loop.
//! - [`pg`]: issue 16, durable appends on the PostgreSQL store beside a raw `INSERT` +
//!   `COMMIT` loop on the same server.
//! - [`batch`]: issue 12, evacuating a datanode as single migrations and as one batch.
//! - [`world`]: the zero-latency cluster: a mailbox that answers at once, one table per
//!   region in a metadata store.
//! - [`driver`]: runs a migration through the engine's own `ProcedureDriver` on that cluster,
//!   with the benchmark's persistence policy instead of the event log.
//! - [`snapshot`]: the two snapshot baselines of figure 2 and their durable JSON store.
//! - [`migrations`]: figure 2, migrations per second, the event log against the baselines.
//! - [`fixture`]: recovery data directories of exact sizes, built once and cached.
//! - [`recovery`]: figures 3 and 4, resume time and memory, region query latency.
//! - [`replay`]: figure 5, fold rate beside decode rate.
//! - [`campaign`]: figure 6, bytes per event and memory during and after many migrations.
//! - [`instructions`]: CPU per migration in instructions, counted by callgrind in a child.
//! - [`child`]: running a measurement in a process of its own (for peak RSS).
//! - [`memory`]: reading RSS and disk usage.
//! - `report`: runs the sections in order and turns them into figures ([`run`], [`Report`]).
//! - [`runtime`]: the tokio runtimes measurements run on.

pub mod appends;
pub mod batch;
pub mod campaign;
pub mod child;
pub mod driver;
mod error;
pub mod fixture;
pub mod instructions;
pub mod memory;
pub mod migrations;
pub mod pg;
pub mod recovery;
pub mod replay;
mod report;
pub mod runtime;
pub mod snapshot;
pub mod table;
pub mod takeover;
pub mod world;

pub use error::BenchError;
pub use report::{run, Report, RunOptions, Section, Sizes, Step};
