//! The fuzzer (`regmig sim fuzz`): a few hundred seeds on every `cargo test`, a long run of
//! 10,000 seeds on demand, and the report a failing seed prints.
//!
//! The long run is opt-in (it takes minutes):
//!
//! ```text
//! cargo test --release --test sim_fuzz -- --ignored long_fuzz
//! ```
//!
//! A failing seed prints the command that reproduces it (`regmig sim fuzz --seeds S..S+1`)
//! and how to turn it into a scenario file.

use std::ops::Range;
use std::sync::Mutex;

use regmig_tools::sim::fuzz::{fuzz_seed, parse_seed_range, scenario_text, FuzzFailure};
use regmig_tools::sim::scenario::parse_scenario;

/// Seeds every `cargo test` runs: about 7 s in a debug build on two cores.
const CI_SEEDS: Range<u64> = 0..300;

/// Seeds of the opt-in long run.
const LONG_SEEDS: Range<u64> = 0..10_000;

/// Runs the seeds on two threads; returns every failure, by seed.
fn fuzz(seeds: Range<u64>) -> Vec<FuzzFailure> {
    let next = Mutex::new(seeds.start);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let seed = {
                    let mut next = next.lock().expect("not poisoned");
                    let seed = *next;
                    *next += 1;
                    seed
                };
                if seed >= seeds.end {
                    return;
                }
                if let Err(failure) = fuzz_seed(seed) {
                    failures.lock().expect("not poisoned").push(failure);
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("not poisoned");
    failures.sort_by_key(|failure| failure.seed);
    failures
}

fn report(failures: &[FuzzFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn fuzz_a_few_hundred_seeds_finds_no_failure() {
    let failures = fuzz(CI_SEEDS);
    assert!(failures.is_empty(), "{}", report(&failures));
}

/// 10,000 seeds; run with `cargo test --release --test sim_fuzz -- --ignored long_fuzz`.
#[test]
#[ignore = "long: 10,000 seeds; cargo test --release --test sim_fuzz -- --ignored long_fuzz"]
fn long_fuzz() {
    let failures = fuzz(LONG_SEEDS);
    assert!(failures.is_empty(), "{}", report(&failures));
}

#[test]
fn a_fuzz_failure_prints_its_seed_and_the_commands_that_reproduce_it() {
    let failure = FuzzFailure {
        seed: 437,
        problems: vec![
            "migration 0 (100:1): did not finish (status running)".to_string(),
            "invariant violated at 1500 ms, region 100:1: 2 datanodes accept writes".to_string(),
        ],
    };
    assert_eq!(
        failure.to_string(),
        "seed 437 FAILED:\n\
         \x20 migration 0 (100:1): did not finish (status running)\n\
         \x20 invariant violated at 1500 ms, region 100:1: 2 datanodes accept writes\n\
         \x20 reproduce: regmig sim fuzz --seeds 437..438\n\
         \x20 as a file: regmig sim fuzz --seeds 437..438 --print-scenario > seed-437.toml && \
         regmig sim run seed-437.toml"
    );
}

#[test]
fn generated_scenarios_are_valid_files_and_depend_only_on_the_seed() {
    let mut distinct = std::collections::BTreeSet::new();
    for seed in 0..100 {
        let text = scenario_text(seed);
        assert_eq!(
            text,
            scenario_text(seed),
            "seed {seed} is not deterministic"
        );
        let scenario = parse_scenario(&text, &format!("seed-{seed}.toml"))
            .unwrap_or_else(|error| panic!("seed {seed}: {error}\n{text}"));
        assert_eq!(scenario.seed, seed);
        assert!(!scenario.migrations.is_empty());
        distinct.insert(text);
    }
    assert_eq!(distinct.len(), 100);
}

#[test]
fn seed_ranges_are_half_open_and_checked() {
    assert_eq!(parse_seed_range("0..200"), Ok(0..200));
    assert_eq!(parse_seed_range(" 5 .. 6 "), Ok(5..6));
    assert_eq!(
        parse_seed_range("7..7"),
        Err("the range \"7..7\" is empty".to_string())
    );
    assert!(parse_seed_range("10").is_err());
    assert!(parse_seed_range("a..b").is_err());
}
