//! The batch keys of the scenario contract (revision 2 additions): `regions` in
//! `[[migrations]]`, `[expect.regions."T:N"]`, `region` in `[[script]]`, outcome `partial`.

use regmig::domain::{InstructionKind, RegionId};
use regmig_tools::sim::scenario::{
    check_expectations, parse_scenario, ExpectedOutcome, LeaderStateExpect, MigrationResult,
    RegionResult,
};

const HEAD: &str = r#"
name = "batch"
seed = 1

[cluster]
peers = [1, 2, 3]

[[cluster.tables]]
id = 1024
regions = [
  { number = 1, leader = 1, followers = [], last_entry_id = 100 },
  { number = 2, leader = 1, followers = [], last_entry_id = 100 },
]
"#;

fn parse(tail: &str) -> Result<regmig_tools::sim::scenario::Scenario, String> {
    parse_scenario(&format!("{HEAD}{tail}"), "batch.toml").map_err(|error| error.to_string())
}

#[test]
fn regions_script_region_and_per_region_expectations_parse() {
    let scenario = parse(
        r#"
[[migrations]]
regions = ["1024:1", "1024:2"]
from = 1
to = 2

[[script]]
peer = 2
instruction = "open_region"
region = "1024:2"
replies = ["error:disk full"]

[[script]]
peer = 2
instruction = "open_region"
replies = ["ok"]

[expect]
outcome = "partial"

[expect.regions."1024:2"]
outcome = "failed"
leader = 1
followers = []
leader_state = "none"
max_unwritable = "2s"
"#,
    )
    .expect("valid");
    let migration = &scenario.migrations[0];
    assert_eq!(migration.region, RegionId::new(1024, 1));
    assert_eq!(
        migration.regions,
        vec![RegionId::new(1024, 1), RegionId::new(1024, 2)]
    );
    assert_eq!(scenario.scripts[0].region, Some(RegionId::new(1024, 2)));
    assert_eq!(scenario.scripts[0].instruction, InstructionKind::OpenRegion);
    assert_eq!(scenario.scripts[1].region, None);
    let expect = &scenario.expects[0];
    assert_eq!(expect.outcome, Some(ExpectedOutcome::Partial));
    let region = &expect.regions[&RegionId::new(1024, 2)];
    assert_eq!(region.outcome, Some(ExpectedOutcome::Failed));
    assert_eq!(region.leader, Some(1));
    assert_eq!(region.followers, Some(vec![]));
    assert_eq!(region.leader_state, Some(LeaderStateExpect::None));
    assert_eq!(region.max_unwritable_ms, Some(2_000));
}

#[test]
fn region_and_regions_together_are_refused() {
    let error = parse(
        r#"
[[migrations]]
region = "1024:1"
regions = ["1024:1", "1024:2"]
from = 1
to = 2
"#,
    )
    .expect_err("both given");
    assert!(error.contains("either region or regions"), "{error}");
}

#[test]
fn a_region_listed_twice_or_an_empty_batch_is_refused() {
    let twice = parse(
        r#"
[[migrations]]
regions = ["1024:1", "1024:1"]
from = 1
to = 2
"#,
    )
    .expect_err("listed twice");
    assert!(twice.contains("region 1024:1 is listed twice"), "{twice}");
    let empty = parse(
        r#"
[[migrations]]
regions = []
from = 1
to = 2
"#,
    )
    .expect_err("empty");
    assert!(empty.contains("at least one region"), "{empty}");
}

#[test]
fn a_per_region_key_outside_the_five_is_refused() {
    let error = parse(
        r#"
[[migrations]]
regions = ["1024:1", "1024:2"]
from = 1
to = 2

[expect.regions."1024:1"]
path = ["Start"]
"#,
    )
    .expect_err("path is not a per-region key");
    assert!(error.contains("path"), "{error}");
}

fn batch_result() -> MigrationResult {
    MigrationResult {
        region: "1024:1,1024:2".to_string(),
        procedure_id: None,
        outcome: "partial".to_string(),
        error: Some("region 1024:2: disk full".to_string()),
        rolled_back: true,
        path: Vec::new(),
        leader: Some(2),
        followers: Vec::new(),
        leader_state: "none".to_string(),
        sent: Default::default(),
        virtual_time_ms: 4_000,
        unwritable_ms: 1_500,
        events: 60,
        regions: vec![
            RegionResult {
                region: "1024:1".to_string(),
                outcome: "completed".to_string(),
                leader: Some(2),
                followers: Vec::new(),
                leader_state: "none".to_string(),
                unwritable_ms: 1_500,
            },
            RegionResult {
                region: "1024:2".to_string(),
                outcome: "failed".to_string(),
                leader: Some(1),
                followers: Vec::new(),
                leader_state: "none".to_string(),
                unwritable_ms: 0,
            },
        ],
    }
}

#[test]
fn per_region_expectations_are_checked_against_that_region_only() {
    let scenario = parse(
        r#"
[[migrations]]
regions = ["1024:1", "1024:2"]
from = 1
to = 2

[expect]
outcome = "partial"

[expect.regions."1024:1"]
outcome = "completed"
leader = 2
max_unwritable = "1s"

[expect.regions."1024:2"]
outcome = "completed"
leader = 1
"#,
    )
    .expect("valid");
    let failures = check_expectations(&scenario.expects[0], &batch_result(), 1);
    assert_eq!(
        failures,
        vec![
            "migration 1 (1024:1,1024:2): regions.\"1024:1\".max_unwritable: expected the region \
             unwritable for at most 1s, it was for 1s 500ms"
                .to_string(),
            "migration 1 (1024:1,1024:2): regions.\"1024:2\".outcome: expected completed, got \
             failed"
                .to_string(),
        ]
    );
}

#[test]
fn the_json_result_of_a_batch_lists_its_regions_and_a_single_migration_has_none() {
    let json = serde_json::to_value(batch_result()).expect("serializes");
    assert_eq!(json["unwritable_ms"], 1_500);
    assert_eq!(json["regions"][1]["region"], "1024:2");
    assert_eq!(json["regions"][1]["outcome"], "failed");
    assert_eq!(json["regions"][1]["leader"], 1);
    assert_eq!(json["regions"][1]["leader_state"], "none");
    assert_eq!(json["regions"][0]["unwritable_ms"], 1_500);
    let single = MigrationResult {
        regions: Vec::new(),
        ..batch_result()
    };
    let json = serde_json::to_value(single).expect("serializes");
    assert!(json.get("regions").is_none());
}

#[test]
fn a_script_or_expectation_naming_a_region_outside_the_batch_is_refused() {
    let script = parse(
        r#"
[[migrations]]
regions = ["1024:1"]
from = 1
to = 2

[[script]]
peer = 2
instruction = "open_region"
region = "1024:2"
replies = ["timeout"]
"#,
    );
    assert_eq!(
        script.unwrap_err(),
        "batch.toml:20: field `script[0]`: region 1024:2 is in no batch (`regions`) of this file: \
         a script's region answers only that region's part of a batch instruction"
    );
    let outside = parse(
        r#"
[[migrations]]
regions = ["1024:1"]
from = 1
to = 2

[expect.regions."1024:2"]
leader = 2
"#,
    );
    assert_eq!(
        outside.unwrap_err(),
        "batch.toml:20: field `expect.regions.\"1024:2\"`: region 1024:2 is not one of this \
         migration's regions"
    );
    let single = parse(
        r#"
[[migrations]]
region = "1024:1"
from = 1
to = 2

[expect.regions."1024:1"]
leader = 2
"#,
    );
    assert_eq!(
        single.unwrap_err(),
        "batch.toml:20: field `expect.regions.\"1024:1\"`: per-region expectations are for a \
         batch: this migration names one region (`region`), not `regions`"
    );
    let twice = parse(
        r#"
[[migrations]]
regions = ["1024:1", "1024:2"]
from = 1
to = 2

[expect.regions."1024:1"]
leader = 2

[expect.regions."4398046511105"]
leader = 2
"#,
    );
    assert_eq!(
        twice.unwrap_err(),
        "batch.toml:23: field `expect.regions.4398046511105`: region 1024:1 is given twice"
    );
}
