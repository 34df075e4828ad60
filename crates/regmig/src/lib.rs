//! regmig: an embedded, event-sourced workflow engine that migrates regions (table shards)
//! between the datanodes of a distributed database.
//!
//! Every state transition and every datanode reply of a migration is appended to a durable
//! log; a procedure's state, lease deadline, timeout budget and retry budget are derived by
//! folding its events. A crash loses nothing, and replaying a log always gives the same answer.
//!
//! This crate is the core an embedder depends on. The `regmig` command, the simulated cluster
//! and the benchmarks live in the `regmig-tools` package at the repository root and use only
//! this crate's public API.
//!
//! # Layout (bottom to top)
//! - [`domain`]: the shared vocabulary: regions, peers, routes, instructions, replies.
//! - [`migration`]: the migration model, pure: events, `fold` (into the `DecisionState` that
//!   `decide` is given, and a `MigrationReport` it never sees) and `decide`. No I/O, no clock.
//! - [`log`]: the append-only event log: the integrity layer ([`log::EventLog`]: record
//!   envelope, hash chain, checks on every read) over a storage port ([`log::LogStore`]),
//!   with sled its first backend ([`log::SledStore`]: keys and indexes, group commit with
//!   fdatasync, the high-water mark, verification, the archive cut and its checkpoint,
//!   compaction); and the export bundle. Its format is `migrations-log-format.md`.
//! - [`cluster`]: the ports the engine talks through: datanode mailbox, metadata store,
//!   hooks, clock, entropy, lease renewals (heartbeats); with in-memory and sled-backed
//!   metadata stores.
//! - [`engine`]: the async shell (tokio): runs many procedures, appends their events, acts on
//!   their decisions, resumes them after a crash.
//! - [`archive`](mod@archive): archives of finished migrations: bundles and a manifest
//!   written durably before the log's cut, the proof that an archive joins the live log,
//!   and the retention setting for embedders (format: `migrations-log-format.md` 9.6).

pub mod archive;
pub mod cluster;
mod concurrent;
pub mod domain;
pub mod engine;
pub mod files;
pub mod log;
pub mod migration;
#[cfg(feature = "postgres")]
pub mod pg;
