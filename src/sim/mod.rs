//! The deterministic simulator: a simulated cluster driven in virtual time by scenario files.
//!
//! - [`datanode`]: the simulated datanodes, pure: region replicas, roles, leases, WALs, and
//!   how each instruction (or scripted reply) changes them. No clock, no tokio.
//! - [`cluster`]: the simulated cluster: datanodes, heartbeats, workload, faults, and the
//!   engine's ports (mailbox, metadata store, hooks, clock, entropy) on tokio virtual time.
//! - [`invariants`]: the safety checks every run is held to (one writer per region, no lost
//!   acknowledged write) and the violations they report.
//! - [`scenario`]: the scenario file format (`scenario-format.md`): its parser and validated
//!   model, the expectations check, and the result a run reports (text and `--json`).

pub mod campaign;
pub mod cluster;
pub mod datanode;
pub mod fuzz;
pub mod invariants;
pub mod runner;
pub mod scenario;
