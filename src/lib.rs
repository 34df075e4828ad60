//! regmig: an embedded, event-sourced workflow engine that migrates regions (table shards)
//! between the datanodes of a distributed database.
//!
//! Every state transition and every datanode reply of a migration is appended to a durable
//! log; a procedure's state, lease deadline, timeout budget and retry budget are derived by
//! folding its events. A crash loses nothing, and replaying a log always gives the same answer.
//!
//! # Layout
//! - [`domain`]: the shared vocabulary: regions, peers, routes, instructions, replies.
//! - [`log`]: the append-only event log on sled: record envelope, keys and indexes, group
//!   commit with fdatasync, verification, the archive cut and its checkpoint, compaction.
//!   Its format is `migrations-log-format.md`.
//! - [`archive`](mod@archive): archives of finished migrations: bundles and a manifest
//!   written durably before the log's cut, the proof that an archive joins the live log,
//!   and the retention setting for embedders (format: `migrations-log-format.md` 9.6).
//! - [`migration`]: the migration model, pure: events, `fold` and `decide`. No I/O, no clock.
//! - [`cluster`]: the ports the engine talks through: datanode mailbox, metadata store,
//!   hooks, clock, entropy, lease renewals (heartbeats); with in-memory and sled-backed
//!   metadata stores.
//! - [`engine`]: the async shell (tokio): runs many procedures, appends their events, acts on
//!   their decisions, resumes them after a crash.
//! - [`sim`]: a deterministic simulated cluster, scenario files and the fuzzer.
//! - [`bench`](mod@bench): the benchmarks' measurements and their table, shared by `regmig bench` and
//!   `cargo bench --bench engine`; results in `BENCHMARKS.md`.
//! - [`cli`]: the `regmig` command: demo, inspect, replay, audit; `src/main.rs` only calls it.

pub mod archive;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod domain;
pub mod engine;
pub mod log;
pub mod migration;
pub mod sim;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
