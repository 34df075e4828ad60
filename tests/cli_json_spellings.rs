//! One spelling per concept in every `--json` output (issue #18): each command's JSON is
//! walked, and the test fails on a key that is not snake_case (a map keyed by number, such as
//! region numbers, is allowed), on a region given packed (`table_id << 32 | number`, e.g.
//! 4398046511105) instead of "TABLE:NUMBER", on a duration whose field name does not carry
//! its unit, and on a state named otherwise than the spec names it.

mod cli_support;

use std::path::Path;

use cli_support::{fixture_copy, regmig, regmig_in, ALL_IDS, COMPLETED_ID};
use regmig::migration::StateName;

/// Words that make a numeric field a duration, whose name must then end in `_ms`.
const TIME_WORDS: [&str; 8] = [
    "duration", "elapsed", "timeout", "delay", "wait", "budget", "interval", "backoff",
];

/// Every problem of `value` at `path`.
fn problems(path: &str, key: Option<&str>, value: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                let snake = !name.is_empty()
                    && name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                let numeric = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
                if !snake && !numeric {
                    out.push(format!("{path}.{name}: key is not snake_case"));
                }
                problems(&format!("{path}.{name}"), Some(name), field, out);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                problems(&format!("{path}[{index}]"), key, item, out);
            }
        }
        Value::Number(number) => {
            let Some(key) = key else { return };
            let timed = key.ends_with("_ms");
            if let Some(n) = number.as_u64() {
                // A time in ms since the epoch is above 2^32 too; it says so in its name.
                if n >> 32 != 0 && !timed {
                    out.push(format!("{path}: {n} looks like a packed region id"));
                }
            }
            // A count ("slow_path_waits") is plural; a duration's name has the word itself.
            if key.split('_').any(|part| TIME_WORDS.contains(&part)) && !timed {
                out.push(format!("{path}: a duration without its unit in the name"));
            }
        }
        Value::String(text) => {
            if text.len() >= 10 && text.bytes().all(|b| b.is_ascii_digit()) {
                out.push(format!("{path}: {text:?} looks like a packed region id"));
            }
            let state_key = key.is_some_and(|key| key == "state" || key.ends_with("_state"));
            if state_key && key != Some("leader_state") {
                let spec_names: Vec<&str> = StateName::ALL.iter().map(|s| s.name()).collect();
                if !spec_names.contains(&text.as_str()) {
                    out.push(format!("{path}: state {text:?} is not a spec name"));
                }
            }
        }
        _ => {}
    }
}

/// Runs `regmig ARGS --data-dir DIR` and checks its JSON; returns the problems found.
fn check(dir: &Path, args: &[&str], code: i32) -> Vec<String> {
    let run = regmig_in(dir, args).expect_code(code);
    let document: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|error| panic!("regmig {args:?}: not JSON ({error}):\n{}", run.stdout));
    let mut out = Vec::new();
    problems(
        &format!("regmig {}", args.join(" ")),
        None,
        &document,
        &mut out,
    );
    out
}

#[test]
fn the_walker_catches_each_kind_of_bad_spelling() {
    let document = serde_json::json!({
        "region_id": 4398046511105u64,
        "regions": ["4398046511105"],
        "OpenRegion": {},
        "lock_wait": 3,
        "state": "UpdateMetadataDowngrade",
        "submitted_at_ms": 1767225600000u64,
        "region_wal_options": {"1": "x"},
        "retries_max": 3,
    });
    let mut out = Vec::new();
    problems("doc", None, &document, &mut out);
    assert_eq!(
        out,
        [
            "doc.OpenRegion: key is not snake_case",
            "doc.lock_wait: a duration without its unit in the name",
            "doc.region_id: 4398046511105 looks like a packed region id",
            "doc.regions[0]: \"4398046511105\" looks like a packed region id",
            "doc.state: state \"UpdateMetadataDowngrade\" is not a spec name",
        ]
    );
}

#[test]
fn every_json_output_spells_each_concept_one_way() {
    let copy = fixture_copy();
    let dir = copy.data_dir();
    let mut found = Vec::new();
    found.extend(check(&dir, &["list", "--json"], 0));
    found.extend(check(&dir, &["list", "--json", "--sort", "duration"], 0));
    found.extend(check(&dir, &["audit", "--format", "json"], 0));
    found.extend(check(&dir, &["log", "verify", "--json"], 0));
    for id in ALL_IDS {
        found.extend(check(&dir, &["show", id, "--json"], 0));
        found.extend(check(&dir, &["events", id, "--json"], 0));
        found.extend(check(&dir, &["events", id, "--json", "--full"], 0));
        found.extend(check(&dir, &["replay", id, "--json"], 0));
        found.extend(check(&dir, &["replay", id, "--check", "--json"], 0));
        found.extend(check(
            &dir,
            &["replay", id, "--with", "timeout=60s", "--json"],
            0,
        ));
    }
    for region in ["1024:1", "7:3"] {
        found.extend(check(&dir, &["region", region, "--json"], 0));
    }
    found.extend(check(
        &dir,
        &[
            "cancel",
            COMPLETED_ID,
            "--actor",
            "a",
            "--reason",
            "r",
            "--json",
        ],
        1,
    ));
    // A bundle read back.
    let bundle = copy.path("bundle.rgmb");
    regmig_in(
        &dir,
        &[
            "export",
            COMPLETED_ID,
            "-o",
            bundle.to_str().expect("a UTF-8 path"),
        ],
    )
    .expect_code(0);
    let run = regmig(&[
        "replay",
        "--file",
        bundle.to_str().expect("a UTF-8 path"),
        "--json",
    ])
    .expect_code(0);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    problems("replay --file", None, &document, &mut found);
    assert!(found.is_empty(), "{}", found.join("\n"));
}
