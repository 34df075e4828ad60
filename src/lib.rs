//! regmig-tools: everything around the regmig core (`crates/regmig`), using only its public
//! API.
//!
//! # Layout
//! - [`sim`]: a deterministic simulated cluster, scenario files and the fuzzer.
//! - [`bench`](mod@bench): the benchmarks' measurements and their table, shared by `regmig bench` and
//!   `cargo bench --bench engine`; results in `BENCHMARKS.md`.
//! - [`cli`]: the `regmig` command: demo, inspect, replay, audit; `src/main.rs` only calls it.

pub mod bench;
pub mod cli;
pub mod sim;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
