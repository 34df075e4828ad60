//! Fuzz targets for the two parsers of outside input: scenario files and bundles. Each
//! input must give `Ok` or an error that names the file; nothing may panic.
//!
//! A few hundred cases run with every `cargo test`; the long runs are opt-in:
//! `cargo test --release --test fuzz_inputs -- --ignored` (REGMIG_FUZZ_CASES sets how many
//! cases, default 100,000 each).

mod cli_support;

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use regmig::engine::store::decode_record;
use regmig::log::bundle::{decode_bundle, encode_bundle};
use regmig::log::Record;
use regmig_tools::sim::scenario::parse_scenario;

/// Cases of a short run (every `cargo test`).
const SHORT_CASES: u32 = 300;

fn long_cases() -> u32 {
    std::env::var("REGMIG_FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(100_000)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario files.
// ---------------------------------------------------------------------------------------------

/// Every scenario file of the repository: the seeds the mutations start from.
fn scenario_seeds() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut texts: Vec<String> = std::fs::read_dir(&dir)
        .expect("read tests/scenarios")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .map(|path| std::fs::read_to_string(path).expect("read a scenario"))
        .collect();
    texts.sort();
    assert!(texts.len() > 20, "the scenarios are missing");
    texts
}

/// Values an operator (or an attacker) might type in place of any value.
const HOSTILE_VALUES: &[&str] = &[
    "0",
    "-1",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999",
    "-9223372036854775809",
    "1e400",
    "nan",
    "inf",
    "\"\"",
    "\"0s\"",
    "\"100000y\"",
    "\"18446744073709551615ms\"",
    "\"1ns\"",
    "\"1024:4294967296\"",
    "\"4294967296:1\"",
    "\"a\\nb\\u001b[31m\"",
    "\"\\u0000\"",
    "[]",
    "[[[[[[[[[[]]]]]]]]]]",
    "{}",
    "{ a = 1 }",
    "true",
    "1979-05-27T07:32:00Z",
    "\"error:\"",
    "\"ok(last_entry_id=99999999999999999999)\"",
];

/// Checks one scenario text: Ok, or an error that names the file.
fn check_scenario(text: &str) -> Result<(), TestCaseError> {
    if let Err(error) = parse_scenario(text, "fuzz.toml") {
        let message = error.to_string();
        prop_assert!(message.starts_with("fuzz.toml"), "{message}");
        prop_assert!(
            !message.contains('\n'),
            "a message on one line: {message:?}"
        );
    }
    Ok(())
}

/// A scenario from the repository with one value, one line or a few bytes changed.
fn mutated_scenario() -> impl Strategy<Value = String> {
    let seeds = scenario_seeds();
    let count = seeds.len();
    (
        0..count,
        any::<prop::sample::Index>(),
        0..4u8,
        prop::sample::select(HOSTILE_VALUES),
        "\\PC{0,12}",
    )
        .prop_map(move |(seed, place, how, hostile, noise)| {
            let text = &seeds[seed];
            let lines: Vec<&str> = text.lines().collect();
            let line = place.index(lines.len());
            let mut out: Vec<String> = lines.iter().map(|line| line.to_string()).collect();
            match how {
                // A value replaced by a hostile one.
                0 => {
                    if let Some((key, _)) = lines[line].split_once('=') {
                        out[line] = format!("{key}= {hostile}");
                    }
                }
                // A line dropped.
                1 => {
                    out.remove(line);
                }
                // A line duplicated.
                2 => out.insert(line, lines[line].to_string()),
                // Noise inserted into a line.
                _ => {
                    let at = place.index(lines[line].len() + 1);
                    let mut changed = lines[line].to_string();
                    let at = (0..=at)
                        .rev()
                        .find(|at| changed.is_char_boundary(*at))
                        .unwrap_or(0);
                    changed.insert_str(at, &noise);
                    out[line] = changed;
                }
            }
            out.join("\n")
        })
}

fn fuzz_scenarios(cases: u32) {
    let mut runner = runner(cases);
    runner
        .run(&mutated_scenario(), |text| check_scenario(&text))
        .expect("a mutated scenario");
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..600), |bytes| {
            check_scenario(&String::from_utf8_lossy(&bytes))
        })
        .expect("random bytes as a scenario");
}

#[test]
fn the_scenario_parser_never_panics_on_mutated_files() {
    fuzz_scenarios(SHORT_CASES);
}

#[test]
#[ignore = "long fuzz run: cargo test --release --test fuzz_inputs -- --ignored"]
fn the_scenario_parser_never_panics_on_mutated_files_long() {
    fuzz_scenarios(long_cases());
}

// ---------------------------------------------------------------------------------------------
// Bundles.
// ---------------------------------------------------------------------------------------------

/// The records of every migration of the CLI fixture: real bundles to mutate.
fn fixture_records() -> Vec<(uuid::Uuid, Vec<Record>)> {
    let copy = cli_support::fixture_copy();
    let log = regmig::log::EventLog::open(&copy.data_dir(), regmig::log::LogOptions::default())
        .expect("open the fixture copy");
    cli_support::ALL_IDS
        .iter()
        .map(|id| {
            let id: uuid::Uuid = id.parse().expect("an id");
            (id, log.procedure_events(id, 1).expect("read the events"))
        })
        .collect()
}

/// Offset of the header checksum in a bundle (after the fixed header and the writer).
fn header_end(bytes: &[u8]) -> Option<usize> {
    let writer_len = usize::from(u16::from_be_bytes([*bytes.get(32)?, *bytes.get(33)?]));
    Some(34 + writer_len)
}

/// Decodes bundle bytes and, when they decode, every event, and folds them: Ok or errors,
/// never a panic.
fn check_bundle(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode_bundle(Path::new("fuzz.bundle"), bytes) {
        Ok(bundle) => {
            let events: Vec<_> = bundle
                .records
                .iter()
                .filter_map(|record| decode_record(record).ok())
                .collect();
            let _ = regmig::migration::fold(&events);
        }
        Err(error) => {
            let message = error.to_string();
            prop_assert!(
                message.starts_with("bundle fuzz.bundle") || message.starts_with("fuzz.bundle"),
                "{message}"
            );
        }
    }
    Ok(())
}

/// A real bundle with bytes changed, cut or added; half the time the header checksum is
/// fixed up so the change reaches the records.
fn mutated_bundle() -> impl Strategy<Value = Vec<u8>> {
    let bundles: Vec<Vec<u8>> = fixture_records()
        .into_iter()
        .map(|(id, records)| encode_bundle(id, &records))
        .collect();
    let count = bundles.len();
    (
        0..count,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        any::<prop::sample::Index>(),
        0..4u8,
        any::<bool>(),
    )
        .prop_map(move |(which, flips, cut, how, fix_crc)| {
            let mut bytes = bundles[which].clone();
            match how {
                0 => {
                    for (at, value) in &flips {
                        let at = at.index(bytes.len());
                        bytes[at] = *value;
                    }
                }
                1 => bytes.truncate(cut.index(bytes.len() + 1)),
                2 => {
                    let at = cut.index(bytes.len() + 1);
                    let extra: Vec<u8> = flips.iter().map(|(_, value)| *value).collect();
                    bytes.splice(at..at, extra);
                }
                // A length or count field set to something huge.
                _ => {
                    let at = cut.index(bytes.len().saturating_sub(4).max(1));
                    if bytes.len() >= at + 4 {
                        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
                    }
                }
            }
            if fix_crc {
                if let Some(end) = header_end(&bytes).filter(|end| bytes.len() >= end + 4) {
                    let crc = crc32fast::hash(&bytes[..end]);
                    bytes[end..end + 4].copy_from_slice(&crc.to_be_bytes());
                }
            }
            bytes
        })
}

fn fuzz_bundles(cases: u32) {
    let mut runner = runner(cases);
    runner
        .run(&mutated_bundle(), |bytes| check_bundle(&bytes))
        .expect("a mutated bundle");
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..600), |mut bytes| {
            // Past the magic most of the time, so the header is read.
            if bytes.len() >= 8 && bytes[0] % 4 != 0 {
                bytes[..8].copy_from_slice(b"RGMGBNDL");
            }
            check_bundle(&bytes)
        })
        .expect("random bytes as a bundle");
}

#[test]
fn bundle_decoding_never_panics_on_mutated_bundles() {
    fuzz_bundles(SHORT_CASES);
}

#[test]
#[ignore = "long fuzz run: cargo test --release --test fuzz_inputs -- --ignored"]
fn bundle_decoding_never_panics_on_mutated_bundles_long() {
    fuzz_bundles(long_cases());
}
