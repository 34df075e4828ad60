//! The deterministic simulator: a simulated cluster driven in virtual time by scenario files.
//!
//! - [`scenario`]: the scenario file format (`scenario-format.md`): its parser and validated
//!   model, the expectations check, and the result a run reports (text and `--json`).

pub mod scenario;
