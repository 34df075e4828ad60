//! Scenario files (`scenario-format.md`): the spec's examples parse to exactly their values,
//! every invalid file is refused with its file, line and field, expectations are checked with
//! sentences that say what differs, and results serialize to the `--json` schema.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use regmig::domain::{InstructionKind, RegionId, WalKind};
use regmig_tools::sim::scenario::{
    check_expectations, collapse_path, load_scenario, parse_scenario, render_text, ClusterSpec,
    CrashTrigger, Expectations, ExpectedOutcome, FaultSpec, InvariantsResult, LeaderStateExpect,
    MigrationResult, MigrationSpec, RegionSpec, ReplyToken, Scenario, ScenarioError,
    ScenarioOutcome, ScriptSpec, TableSpec, WorkloadSpec,
};

/// A fixture, by its path relative to the crate (as the errors name it).
fn load(relative_path: &str) -> Result<Scenario, ScenarioError> {
    load_scenario(Path::new(relative_path))
}

/// The error a fixture of `tests/scenario_parse/invalid/` is refused with.
fn invalid_fixture_error(name: &str) -> String {
    let path = format!("tests/scenario_parse/invalid/{name}");
    match load(&path) {
        Ok(scenario) => panic!("{path} parsed, but must be refused: {scenario:?}"),
        Err(error) => error.to_string(),
    }
}

/// The error an inline scenario text is refused with.
fn inline_error(text: &str) -> String {
    match parse_scenario(text, "inline.toml") {
        Ok(scenario) => panic!("parsed, but must be refused: {scenario:?}"),
        Err(error) => error.to_string(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// The smallest valid scenario; tests append to it.
const MINIMAL: &str = r#"name = "minimal"
seed = 1

[cluster]
peers = [1, 2]

[[cluster.tables]]
id = 1
regions = [ { number = 1, leader = 1 } ]

[[migrations]]
region = "1:1"
from = 1
to = 2
"#;

/// A completed migration whose candidate needed three open attempts.
fn completed_result() -> MigrationResult {
    MigrationResult {
        region: "1024:1".to_string(),
        procedure_id: Some("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".to_string()),
        outcome: "completed".to_string(),
        error: None,
        rolled_back: false,
        path: strings(&[
            "Start",
            "OpenCandidateRegion",
            "OpenCandidateRegion",
            "OpenCandidateRegion",
            "UpdateMetadata::Downgrade",
            "DowngradeLeaderRegion",
            "UpgradeCandidateRegion",
            "UpdateMetadata::Upgrade",
            "CloseDowngradedRegion",
            "End",
        ]),
        leader: Some(2),
        followers: vec![3, 1],
        leader_state: "none".to_string(),
        sent: BTreeMap::from([
            ("2.open_region".to_string(), 3),
            ("1.downgrade_region".to_string(), 1),
        ]),
        virtual_time_ms: 1_520,
        unwritable_ms: 0,
        events: 23,
        regions: Vec::new(),
    }
}

/// The spec's examples.
mod scenario_examples {
    use super::*;

    #[test]
    fn spec_example_open_candidate_retry_parses_to_its_values() {
        let scenario = load("tests/scenario_parse/valid/open_candidate_retry.toml").unwrap();
        let expected = Scenario {
            name: "open candidate fails twice, then succeeds".to_string(),
            seed: 7,
            cluster: ClusterSpec {
                peers: vec![1, 2, 3],
                tables: vec![TableSpec {
                    id: 1024,
                    catalog: "greptime".to_string(),
                    schema: "public".to_string(),
                    wal: WalKind::Local,
                    logical: false,
                    regions: vec![
                        RegionSpec {
                            number: 1,
                            leader: 1,
                            followers: vec![],
                            last_entry_id: 100,
                        },
                        RegionSpec {
                            number: 2,
                            leader: 1,
                            followers: vec![3],
                            last_entry_id: 0,
                        },
                    ],
                }],
                flush_writes_per_second: 20_000,
            },
            workload: Some(WorkloadSpec {
                writes_per_second: 200,
            }),
            migrations: vec![MigrationSpec {
                region: RegionId::new(1024, 1),
                regions: Vec::new(),
                from: 1,
                to: 2,
                timeout_ms: 10_000,
                at_ms: 0,
                actor: None,
                reason: None,
            }],
            scripts: vec![ScriptSpec {
                peer: 2,
                region: None,
                instruction: InstructionKind::OpenRegion,
                replies: vec![
                    ReplyToken::Timeout,
                    ReplyToken::Error("disk full".to_string()),
                    ReplyToken::Ok,
                ],
            }],
            faults: vec![FaultSpec::MetadataCasConflict { count: 1, at_ms: 0 }],
            cancels: vec![],
            expects: vec![Expectations {
                outcome: Some(ExpectedOutcome::Completed),
                error: None,
                path: Some(strings(&[
                    "Start",
                    "OpenCandidateRegion",
                    "UpdateMetadata::Downgrade",
                    "DowngradeLeaderRegion",
                    "UpgradeCandidateRegion",
                    "UpdateMetadata::Upgrade",
                    "CloseDowngradedRegion",
                    "End",
                ])),
                leader: Some(2),
                followers: Some(vec![]),
                leader_state: Some(LeaderStateExpect::None),
                sent: Some(BTreeMap::from([("2.open_region".to_string(), 3)])),
                max_virtual_time_ms: Some(40_000),
                min_virtual_time_ms: None,
                max_unwritable_ms: None,
                settle_ms: None,
                regions: Default::default(),
            }],
            source: "tests/scenario_parse/valid/open_candidate_retry.toml".to_string(),
        };
        assert_eq!(scenario, expected);
    }

    #[test]
    fn spec_example_crash_then_resume_parses_with_defaults_applied() {
        let scenario = load("tests/scenario_parse/valid/crash_then_resume.toml").unwrap();
        let expected = Scenario {
            name: "the engine crashes mid-migration and resumes from its log".to_string(),
            seed: 3,
            cluster: ClusterSpec {
                peers: vec![1, 2, 3],
                tables: vec![TableSpec {
                    id: 1,
                    catalog: "greptime".to_string(),
                    schema: "public".to_string(),
                    wal: WalKind::Local,
                    logical: false,
                    regions: vec![RegionSpec {
                        number: 1,
                        leader: 3,
                        followers: vec![],
                        last_entry_id: 0,
                    }],
                }],
                flush_writes_per_second: 20_000,
            },
            workload: Some(WorkloadSpec {
                writes_per_second: 100,
            }),
            migrations: vec![MigrationSpec {
                region: RegionId::new(1, 1),
                regions: Vec::new(),
                from: 3,
                to: 1,
                timeout_ms: 10_000,
                at_ms: 0,
                actor: None,
                reason: None,
            }],
            scripts: vec![],
            faults: vec![FaultSpec::EngineCrash {
                trigger: CrashTrigger::AfterEvents(4),
                restart_after_ms: 0,
            }],
            cancels: vec![],
            expects: vec![Expectations {
                outcome: Some(ExpectedOutcome::Completed),
                leader: Some(1),
                followers: Some(vec![]),
                leader_state: Some(LeaderStateExpect::None),
                ..Expectations::default()
            }],
            source: "tests/scenario_parse/valid/crash_then_resume.toml".to_string(),
        };
        assert_eq!(scenario, expected);
    }

    #[test]
    fn spec_example_rollback_on_upgrade_failure_parses_to_its_values() {
        let scenario = load("tests/scenario_parse/valid/rollback_on_upgrade_failure.toml").unwrap();
        let expected = Scenario {
            name: "the candidate never becomes ready: roll back and abort".to_string(),
            seed: 11,
            cluster: ClusterSpec {
                peers: vec![1, 2],
                tables: vec![TableSpec {
                    id: 7,
                    catalog: "greptime".to_string(),
                    schema: "public".to_string(),
                    wal: WalKind::Local,
                    logical: false,
                    regions: vec![RegionSpec {
                        number: 3,
                        leader: 1,
                        followers: vec![2],
                        last_entry_id: 40,
                    }],
                }],
                flush_writes_per_second: 20_000,
            },
            workload: None,
            migrations: vec![MigrationSpec {
                region: RegionId::new(7, 3),
                regions: Vec::new(),
                from: 1,
                to: 2,
                timeout_ms: 5_000,
                at_ms: 0,
                actor: None,
                reason: None,
            }],
            scripts: vec![ScriptSpec {
                peer: 2,
                region: None,
                instruction: InstructionKind::UpgradeRegion,
                replies: vec![ReplyToken::NotReady; 4],
            }],
            faults: vec![],
            cancels: vec![],
            expects: vec![Expectations {
                outcome: Some(ExpectedOutcome::Aborted),
                path: Some(strings(&[
                    "Start",
                    "UpdateMetadata::Downgrade",
                    "DowngradeLeaderRegion",
                    "UpgradeCandidateRegion",
                    "UpdateMetadata::Rollback",
                    "Abort",
                ])),
                leader: Some(1),
                followers: Some(vec![2]),
                leader_state: Some(LeaderStateExpect::None),
                ..Expectations::default()
            }],
            source: "tests/scenario_parse/valid/rollback_on_upgrade_failure.toml".to_string(),
        };
        assert_eq!(scenario, expected);
    }

    #[test]
    fn every_optional_key_is_read() {
        let text = r#"name = "everything"
seed = 9

[cluster]
peers = [1, 2, 3]

[[cluster.tables]]
id = 5
catalog = "c"
schema = "s"
wal = "remote"
logical = true

[[cluster.tables.regions]]
number = 4
leader = 2
followers = [1, 3]
last_entry_id = 12

[[migrations]]
region = 21474836484
from = 2
to = 1
timeout = "1m 30s"
at = "250ms"

[[migrations]]
region = "5:4"
from = 1
to = 1

[[migrations]]
region = "99:1"
from = 7
to = 3

[[script]]
peer = 2
instruction = "downgrade_region"
replies = ["ok(last_entry_id=77)", "not_exists", "unreachable", "wrong_reply", "error:"]

[[script]]
peer = 1
instruction = "upgrade_region"
replies = ["not_ready", "not_exists", "ok"]

[[faults]]
kind = "metadata_unavailable"
count = 2
at = "1s"

[[faults]]
kind = "engine_crash"
at = "3s"

[[faults]]
kind = "datanode_crash"
peer = 3
at = "2s"
restart_after = "500ms"

[[faults]]
kind = "datanode_crash"
peer = 1

[[faults]]
kind = "message_delay"
peer = 2
delay = "40ms"

[expect]
outcome = "failed"
error = "timed out"
min_virtual_time = "2s"
max_virtual_time = "2s"

[[expect_more]]
outcome = "rejected"
error = "invalid_argument"
leader_state = "downgrading"
sent = { "01.close_region" = 0, "2.upgrade_region" = 4 }
"#;
        let scenario = parse_scenario(text, "everything.toml").unwrap();
        assert_eq!(
            scenario.cluster.tables,
            vec![TableSpec {
                id: 5,
                catalog: "c".to_string(),
                schema: "s".to_string(),
                wal: WalKind::Remote,
                logical: true,
                regions: vec![RegionSpec {
                    number: 4,
                    leader: 2,
                    followers: vec![1, 3],
                    last_entry_id: 12,
                }],
            }]
        );
        assert_eq!(
            scenario.migrations,
            vec![
                MigrationSpec {
                    region: RegionId::new(5, 4),
                    regions: Vec::new(),
                    from: 2,
                    to: 1,
                    timeout_ms: 90_000,
                    at_ms: 250,
                    actor: None,
                    reason: None,
                },
                MigrationSpec {
                    region: RegionId::new(5, 4),
                    regions: Vec::new(),
                    from: 1,
                    to: 1,
                    timeout_ms: 10_000,
                    at_ms: 0,
                    actor: None,
                    reason: None,
                },
                MigrationSpec {
                    region: RegionId::new(99, 1),
                    regions: Vec::new(),
                    from: 7,
                    to: 3,
                    timeout_ms: 10_000,
                    at_ms: 0,
                    actor: None,
                    reason: None,
                },
            ]
        );
        assert_eq!(
            scenario.scripts[0].replies,
            vec![
                ReplyToken::OkWithLastEntryId(77),
                ReplyToken::NotExists,
                ReplyToken::Unreachable,
                ReplyToken::WrongReply,
                ReplyToken::Error(String::new()),
            ]
        );
        assert_eq!(
            scenario.faults,
            vec![
                FaultSpec::MetadataUnavailable {
                    count: 2,
                    at_ms: 1_000,
                },
                FaultSpec::EngineCrash {
                    trigger: CrashTrigger::AtMs(3_000),
                    restart_after_ms: 0,
                },
                FaultSpec::DatanodeCrash {
                    peer: 3,
                    at_ms: 2_000,
                    restart_after_ms: Some(500),
                },
                FaultSpec::DatanodeCrash {
                    peer: 1,
                    at_ms: 0,
                    restart_after_ms: None,
                },
                FaultSpec::MessageDelay {
                    peer: 2,
                    delay_ms: 40,
                    at_ms: 0,
                },
            ]
        );
        assert_eq!(
            scenario.expects,
            vec![
                Expectations {
                    outcome: Some(ExpectedOutcome::Failed),
                    error: Some("timed out".to_string()),
                    min_virtual_time_ms: Some(2_000),
                    max_virtual_time_ms: Some(2_000),
                    ..Expectations::default()
                },
                Expectations {
                    outcome: Some(ExpectedOutcome::Rejected),
                    error: Some("invalid_argument".to_string()),
                    leader_state: Some(LeaderStateExpect::Downgrading),
                    sent: Some(BTreeMap::from([
                        ("1.close_region".to_string(), 0),
                        ("2.upgrade_region".to_string(), 4),
                    ])),
                    ..Expectations::default()
                },
                Expectations::default(),
            ]
        );
    }

    #[test]
    fn a_scenario_without_expectations_gets_one_empty_expectation_per_migration() {
        let text = format!("{MINIMAL}\n[[migrations]]\nregion = \"1:1\"\nfrom = 2\nto = 1\n");
        let scenario = parse_scenario(&text, "inline.toml").unwrap();
        assert_eq!(scenario.expects, vec![Expectations::default(); 2]);
        assert_eq!(scenario.workload, None);
    }
}

/// Invalid files: each names the file, the line and the field.
mod scenario_invalid_files {
    use super::*;

    #[test]
    fn unknown_top_level_key_is_refused() {
        assert_eq!(
            invalid_fixture_error("unknown_top_level_key.toml"),
            "tests/scenario_parse/invalid/unknown_top_level_key.toml:3: field `sede`: unknown key \
         (expected one of name, seed, cluster, workload, migrations, script, faults, cancels, expect, \
         expect_more)"
        );
    }

    #[test]
    fn unknown_key_in_a_region_inline_table_is_refused() {
        assert_eq!(
            invalid_fixture_error("unknown_region_key.toml"),
            "tests/scenario_parse/invalid/unknown_region_key.toml:11: field \
         `cluster.tables[0].regions[1].folowers`: unknown key (expected one of number, leader, \
         followers, last_entry_id)"
        );
    }

    #[test]
    fn misspelled_fault_kind_is_refused() {
        assert_eq!(
        invalid_fixture_error("typo_fault_kind.toml"),
        "tests/scenario_parse/invalid/typo_fault_kind.toml:17: field `faults[1].kind`: unknown \
         fault kind \"metadata_cas_conflct\" (expected one of metadata_cas_conflict, \
         metadata_unavailable, engine_crash, datanode_crash, message_delay, partition)"
    );
    }

    #[test]
    fn duration_without_unit_is_refused() {
        assert_eq!(
            invalid_fixture_error("bad_duration.toml"),
            "tests/scenario_parse/invalid/bad_duration.toml:11: field `migrations[0].timeout`: \
         invalid duration \"10\": time unit needed, for example 10sec or 10ms"
        );
    }

    #[test]
    fn region_written_with_a_dash_is_refused() {
        assert_eq!(
        invalid_fixture_error("bad_region.toml"),
        "tests/scenario_parse/invalid/bad_region.toml:8: field `migrations[0].region`: invalid \
         region \"1024-1\": expected TABLE:NUMBER (e.g. \"1024:1\") or the packed u64"
    );
    }

    #[test]
    fn misspelled_reply_token_is_refused() {
        assert_eq!(
            invalid_fixture_error("bad_reply_token.toml"),
            "tests/scenario_parse/invalid/bad_reply_token.toml:15: field `script[0].replies[1]`: \
         unknown reply token \"tiemout\" (expected one of ok, ok(last_entry_id=N), timeout, \
         unreachable, error:TEXT, not_exists, not_ready, wrong_reply)"
        );
    }

    #[test]
    fn last_entry_id_reply_on_upgrade_is_refused() {
        assert_eq!(
            invalid_fixture_error("last_entry_id_on_upgrade.toml"),
            "tests/scenario_parse/invalid/last_entry_id_on_upgrade.toml:15: field \
         `script[0].replies[0]`: reply \"ok(last_entry_id=5)\" is only valid for \
         downgrade_region, not upgrade_region"
        );
    }

    #[test]
    fn unknown_state_in_path_is_refused_on_its_own_line() {
        assert_eq!(
            invalid_fixture_error("unknown_state_in_path.toml"),
            "tests/scenario_parse/invalid/unknown_state_in_path.toml:14: field `expect.path[1]`: \
         unknown state \"OpenCandidate\" (expected one of Start, OpenCandidateRegion, \
         FlushLeaderRegion, UpdateMetadata::Downgrade, DowngradeLeaderRegion, UpgradeCandidateRegion, \
         UpdateMetadata::Upgrade, UpdateMetadata::Rollback, CloseDowngradedRegion, End, Abort)"
        );
    }

    #[test]
    fn sent_key_with_unknown_instruction_is_refused() {
        assert_eq!(
        invalid_fixture_error("bad_sent_key.toml"),
        "tests/scenario_parse/invalid/bad_sent_key.toml:14: field `expect.sent.\"1.downgrade\"`: \
         invalid key \"1.downgrade\": unknown instruction \"downgrade\" (expected one of \
         open_region, flush_region, downgrade_region, upgrade_region, close_region)"
    );
    }

    #[test]
    fn seed_written_as_a_string_is_refused() {
        assert_eq!(
        invalid_fixture_error("wrong_type.toml"),
        "tests/scenario_parse/invalid/wrong_type.toml:2: field `seed`: expected a non-negative \
         integer, found a string"
    );
    }

    #[test]
    fn migration_without_to_is_refused_at_its_header() {
        assert_eq!(
        invalid_fixture_error("missing_required_field.toml"),
        "tests/scenario_parse/invalid/missing_required_field.toml:12: field `migrations[1].to`: \
         required, but missing"
    );
    }

    #[test]
    fn engine_crash_without_trigger_is_refused() {
        assert_eq!(
        invalid_fixture_error("engine_crash_without_trigger.toml"),
        "tests/scenario_parse/invalid/engine_crash_without_trigger.toml:12: field `faults[0]`: \
         engine_crash needs exactly one of `after_events` and `at`, found neither"
    );
    }

    #[test]
    fn errors_expose_their_line_and_field() {
        let error = load("tests/scenario_parse/invalid/typo_fault_kind.toml").unwrap_err();
        assert_eq!(error.line(), Some(17));
        assert_eq!(error.field(), Some("faults[1].kind"));
        assert!(matches!(
            error,
            ScenarioError::Invalid {
                line: 17,
                column: 8,
                ..
            }
        ));
    }

    #[test]
    fn missing_file_is_a_read_error_naming_it() {
        let error = load("tests/scenario_parse/no_such_file.toml").unwrap_err();
        assert!(matches!(error, ScenarioError::Read { .. }));
        assert!(error.to_string().starts_with(
            "tests/scenario_parse/no_such_file.toml: cannot read the scenario file: "
        ));
    }

    #[test]
    fn toml_syntax_error_names_its_line() {
        let text = "name = \"x\"\nseed = 1\n[cluster\n";
        let error = parse_scenario(text, "inline.toml").unwrap_err();
        assert!(matches!(error, ScenarioError::Syntax { line: 3, .. }));
        assert!(error
            .to_string()
            .starts_with("inline.toml:3: invalid TOML: "));
    }

    #[test]
    fn negative_number_is_refused() {
        let text = MINIMAL.replace("from = 1", "from = -1");
        assert_eq!(
            inline_error(&text),
            "inline.toml:13: field `migrations[0].from`: expected a non-negative integer, found -1"
        );
    }

    #[test]
    fn table_id_beyond_u32_is_refused() {
        let text = MINIMAL.replace("id = 1", "id = 4294967296");
        assert_eq!(
        inline_error(&text),
        "inline.toml:8: field `cluster.tables[0].id`: must be at most 4294967295, found 4294967296"
    );
    }

    #[test]
    fn region_leader_outside_the_cluster_is_refused() {
        let text = MINIMAL.replace("leader = 1", "leader = 4");
        assert_eq!(
            inline_error(&text),
            "inline.toml:9: field `cluster.tables[0].regions[0].leader`: peer 4 is not in \
         cluster.peers [1, 2]"
        );
    }

    #[test]
    fn follower_that_is_the_leader_is_refused() {
        let text = MINIMAL.replace("leader = 1 }", "leader = 1, followers = [2, 1] }");
        assert_eq!(
            inline_error(&text),
            "inline.toml:9: field `cluster.tables[0].regions[0].followers[1]`: peer 1 is the \
         region's leader; it cannot also be a follower"
        );
    }

    #[test]
    fn duplicate_peer_is_refused() {
        let text = MINIMAL.replace("peers = [1, 2]", "peers = [1, 2, 1]");
        assert_eq!(
            inline_error(&text),
            "inline.toml:5: field `cluster.peers[2]`: peer 1 is listed twice"
        );
    }

    #[test]
    fn duplicate_table_id_is_refused() {
        let text = MINIMAL.replace(
            "\n[[migrations]]",
            "\n[[cluster.tables]]\nid = 1\n\n[[migrations]]",
        );
        assert_eq!(
            inline_error(&text),
            "inline.toml:12: field `cluster.tables[1].id`: table 1 is already defined at line 7"
        );
    }

    #[test]
    fn duplicate_region_number_is_refused() {
        let text = MINIMAL.replace(
            "regions = [ { number = 1, leader = 1 } ]",
            "regions = [\n  { number = 1, leader = 1 },\n  { number = 1, leader = 2 },\n]",
        );
        assert_eq!(
        inline_error(&text),
        "inline.toml:11: field `cluster.tables[0].regions[1].number`: region number 1 is already \
         defined at line 10"
    );
    }

    #[test]
    fn script_peer_outside_the_cluster_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[script]]\npeer = 3\ninstruction = \"open_region\"\nreplies = [\"ok\"]\n"
        );
        assert_eq!(
            inline_error(&text),
            "inline.toml:17: field `script[0].peer`: peer 3 is not in cluster.peers [1, 2]"
        );
    }

    #[test]
    fn second_script_for_the_same_peer_and_instruction_is_refused() {
        let script = "\n[[script]]\npeer = 2\ninstruction = \"open_region\"\nreplies = [\"ok\"]\n";
        let text = format!("{MINIMAL}{script}{script}");
        assert_eq!(
        inline_error(&text),
        "inline.toml:21: field `script[1]`: a script for peer 2 and open_region is already given \
         at line 16"
    );
    }

    #[test]
    fn reply_tokens_outside_their_instruction_are_refused() {
        let not_ready = format!(
            "{MINIMAL}\n[[script]]\npeer = 2\ninstruction = \"downgrade_region\"\n\
         replies = [\"not_ready\"]\n"
        );
        assert_eq!(
            inline_error(&not_ready),
            "inline.toml:19: field `script[0].replies[0]`: reply \"not_ready\" is only valid for \
         upgrade_region, not downgrade_region"
        );
        let not_exists = format!(
            "{MINIMAL}\n[[script]]\npeer = 2\ninstruction = \"close_region\"\n\
         replies = [\"not_exists\"]\n"
        );
        assert_eq!(
            inline_error(&not_exists),
            "inline.toml:19: field `script[0].replies[0]`: reply \"not_exists\" is only valid for \
         downgrade_region and upgrade_region, not close_region"
        );
        let malformed = format!(
            "{MINIMAL}\n[[script]]\npeer = 2\ninstruction = \"downgrade_region\"\n\
         replies = [\"ok(last_entry_id=x)\"]\n"
        );
        assert_eq!(
            inline_error(&malformed),
            "inline.toml:19: field `script[0].replies[0]`: invalid reply token \
         \"ok(last_entry_id=x)\" (expected ok(last_entry_id=N) with N a non-negative integer)"
        );
    }

    #[test]
    fn empty_script_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[script]]\npeer = 2\ninstruction = \"open_region\"\nreplies = []\n"
        );
        assert_eq!(
            inline_error(&text),
            "inline.toml:19: field `script[0].replies`: at least one reply is required"
        );
    }

    #[test]
    fn key_of_another_fault_kind_is_refused() {
        let text = format!("{MINIMAL}\n[[faults]]\nkind = \"engine_crash\"\ncount = 2\n");
        assert_eq!(
        inline_error(&text),
        "inline.toml:18: field `faults[0].count`: not a key of fault kind engine_crash (expected \
         one of kind, after_events, at, restart_after)"
    );
    }

    #[test]
    fn engine_crash_with_both_triggers_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[faults]]\nkind = \"engine_crash\"\nafter_events = 2\nat = \"1s\"\n"
        );
        assert_eq!(
        inline_error(&text),
        "inline.toml:16: field `faults[0]`: engine_crash takes exactly one of `after_events` and \
         `at`, not both"
    );
    }

    #[test]
    fn engine_crash_after_zero_events_is_refused() {
        let text = format!("{MINIMAL}\n[[faults]]\nkind = \"engine_crash\"\nafter_events = 0\n");
        assert_eq!(
            inline_error(&text),
            "inline.toml:18: field `faults[0].after_events`: must be at least 1, found 0"
        );
    }

    #[test]
    fn fault_without_kind_is_refused() {
        let text = format!("{MINIMAL}\n[[faults]]\ncount = 2\n");
        assert_eq!(
            inline_error(&text),
            "inline.toml:16: field `faults[0].kind`: required, but missing"
        );
    }

    #[test]
    fn message_delay_without_delay_is_refused() {
        let text = format!("{MINIMAL}\n[[faults]]\nkind = \"message_delay\"\npeer = 1\n");
        assert_eq!(
            inline_error(&text),
            "inline.toml:16: field `faults[0].delay`: required, but missing"
        );
    }

    #[test]
    fn unquoted_sent_key_is_refused_with_a_hint() {
        let text = format!("{MINIMAL}\n[expect]\nsent = {{ 2.open_region = 1 }}\n");
        assert_eq!(
            inline_error(&text),
            "inline.toml:17: field `expect.sent.2`: expected an integer, found a table (a \
         \"PEER.INSTRUCTION\" key must be quoted, e.g. \"2.open_region\" = 3; 2.{...} is read as \
         a nested table)"
        );
    }

    #[test]
    fn sent_key_without_a_peer_is_refused() {
        let text = format!("{MINIMAL}\n[expect]\nsent = {{ \"open_region\" = 1 }}\n");
        assert_eq!(
        inline_error(&text),
        "inline.toml:17: field `expect.sent.open_region`: invalid key \"open_region\": expected \
         \"PEER.INSTRUCTION\", e.g. \"2.open_region\""
    );
        let text = format!("{MINIMAL}\n[expect]\nsent = {{ \"-2.open_region\" = 1 }}\n");
        assert_eq!(
        inline_error(&text),
        "inline.toml:17: field `expect.sent.\"-2.open_region\"`: invalid key \"-2.open_region\": \
         \"-2\" is not a peer id (expected \"PEER.INSTRUCTION\", e.g. \"2.open_region\")"
    );
    }

    #[test]
    fn unknown_outcome_and_leader_state_are_refused() {
        let text = format!("{MINIMAL}\n[expect]\noutcome = \"complete\"\n");
        assert_eq!(
        inline_error(&text),
        "inline.toml:17: field `expect.outcome`: unknown outcome \"complete\" (expected one of \
         completed, aborted, failed, noop, rejected, partial)"
    );
        let text = format!("{MINIMAL}\n[expect]\nleader_state = \"Downgrading\"\n");
        assert_eq!(
            inline_error(&text),
            "inline.toml:17: field `expect.leader_state`: unknown leader state \"Downgrading\" \
         (expected one of none, downgrading)"
        );
    }

    #[test]
    fn min_virtual_time_above_max_is_refused() {
        let text = format!(
            "{MINIMAL}\n[expect]\nmax_virtual_time = \"1s\"\nmin_virtual_time = \"1500ms\"\n"
        );
        assert_eq!(
            inline_error(&text),
            "inline.toml:18: field `expect.min_virtual_time`: 1s 500ms is above max_virtual_time \
         (1s): no run can satisfy both"
        );
    }

    #[test]
    fn sub_millisecond_duration_is_refused() {
        let text = MINIMAL.replace("to = 2", "to = 2\nat = \"10us\"");
        assert_eq!(
            inline_error(&text),
            "inline.toml:15: field `migrations[0].at`: duration \"10us\" is not a whole number of \
         milliseconds"
        );
    }

    #[test]
    fn duration_written_as_a_number_is_refused() {
        let text = MINIMAL.replace("to = 2", "to = 2\ntimeout = 10");
        assert_eq!(
        inline_error(&text),
        "inline.toml:15: field `migrations[0].timeout`: expected a duration such as \"500ms\" or \
         \"10s\", found an integer"
    );
    }

    #[test]
    fn more_expect_more_tables_than_migrations_is_refused() {
        let text = format!(
            "{MINIMAL}\n[expect]\noutcome = \"completed\"\n\n[[expect_more]]\noutcome = \"noop\"\n"
        );
        assert_eq!(
            inline_error(&text),
            "inline.toml:19: field `expect_more[0]`: no migration left for this expectation: 1 \
         migration(s) take [expect] and at most 0 [[expect_more]]"
        );
    }

    #[test]
    fn scenario_without_migrations_is_refused() {
        let text = MINIMAL.split("[[migrations]]").next().unwrap().to_string();
        assert_eq!(
            inline_error(&text),
            "inline.toml:1: field `migrations`: required, but missing"
        );
        let text = text.replace("seed = 1", "seed = 1\nmigrations = []");
        assert_eq!(
            inline_error(&text),
            "inline.toml:3: field `migrations`: at least one migration is required"
        );
    }

    #[test]
    fn cluster_written_as_a_value_is_refused() {
        let text = "name = \"x\"\nseed = 1\ncluster = 3\n";
        assert_eq!(
            inline_error(text),
            "inline.toml:3: field `cluster`: expected a table, found an integer"
        );
    }

    #[test]
    fn unknown_wal_kind_is_refused() {
        let text = MINIMAL.replace("id = 1", "id = 1\nwal = \"kafka\"");
        assert_eq!(
        inline_error(&text),
        "inline.toml:9: field `cluster.tables[0].wal`: unknown wal kind \"kafka\" (expected one \
         of local, remote)"
    );
    }

    #[test]
    fn unknown_key_in_expect_more_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[migrations]]\nregion = \"1:1\"\nfrom = 2\nto = 1\n\n\
         [[expect_more]]\noutcom = \"noop\"\n"
        );
        assert_eq!(
            inline_error(&text),
            "inline.toml:22: field `expect_more[0].outcom`: unknown key (expected one of outcome, \
         error, path, leader, followers, leader_state, sent, max_virtual_time, min_virtual_time, max_unwritable, settle, regions)"
        );
    }
}

/// Expectations against results.
mod scenario_expectations {
    use super::*;

    #[test]
    fn spec_example_expectations_hold_for_a_matching_result() {
        let scenario = load("tests/scenario_parse/valid/open_candidate_retry.toml").unwrap();
        let mut result = completed_result();
        result.followers = vec![];
        assert_eq!(
            check_expectations(&scenario.expects[0], &result, 1),
            Vec::<String>::new()
        );
    }

    #[test]
    fn followers_compare_in_any_order_and_unnamed_sent_pairs_are_unchecked() {
        let expect = Expectations {
            followers: Some(vec![1, 3]),
            sent: Some(BTreeMap::from([
                ("2.open_region".to_string(), 3),
                ("3.close_region".to_string(), 0),
            ])),
            min_virtual_time_ms: Some(1_520),
            max_virtual_time_ms: Some(1_520),
            ..Expectations::default()
        };
        assert_eq!(
            check_expectations(&expect, &completed_result(), 1),
            Vec::<String>::new()
        );
        assert_eq!(
            check_expectations(&Expectations::default(), &completed_result(), 1),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_failed_expectation_is_a_sentence_with_expected_and_actual() {
        let expect = Expectations {
            outcome: Some(ExpectedOutcome::Aborted),
            error: Some("disk full".to_string()),
            path: Some(strings(&["Start", "End"])),
            leader: Some(1),
            followers: Some(vec![2]),
            leader_state: Some(LeaderStateExpect::Downgrading),
            sent: Some(BTreeMap::from([
                ("2.open_region".to_string(), 1),
                ("2.close_region".to_string(), 1),
            ])),
            max_virtual_time_ms: Some(1_000),
            min_virtual_time_ms: Some(2_000),
            max_unwritable_ms: None,
            settle_ms: None,
            regions: Default::default(),
        };
        assert_eq!(
        check_expectations(&expect, &completed_result(), 1),
        strings(&[
            "migration 1 (1024:1): outcome: expected aborted, got completed",
            "migration 1 (1024:1): error: expected an error containing \"disk full\", got no error",
            "migration 1 (1024:1): path: expected [Start, End], got [Start, OpenCandidateRegion, \
             UpdateMetadata::Downgrade, DowngradeLeaderRegion, UpgradeCandidateRegion, \
             UpdateMetadata::Upgrade, CloseDowngradedRegion, End]",
            "migration 1 (1024:1): leader: expected 1, got 2",
            "migration 1 (1024:1): followers: expected [2], got [3, 1]",
            "migration 1 (1024:1): leader_state: expected downgrading, got none",
            "migration 1 (1024:1): sent \"2.close_region\": expected 1, got 0",
            "migration 1 (1024:1): sent \"2.open_region\": expected 1, got 3",
            "migration 1 (1024:1): max_virtual_time: expected to end by 1s, ended after 1s 520ms",
            "migration 1 (1024:1): min_virtual_time: expected not to end before 2s, ended after \
             1s 520ms",
        ])
    );
    }

    #[test]
    fn rejection_kind_matches_the_error_as_a_substring() {
        let result = MigrationResult {
            region: "1024:9".to_string(),
            procedure_id: None,
            outcome: "rejected".to_string(),
            error: Some("region_route_not_found: region 1024:9 has no route".to_string()),
            rolled_back: false,
            path: vec![],
            leader: None,
            followers: vec![],
            leader_state: "none".to_string(),
            sent: BTreeMap::new(),
            virtual_time_ms: 0,
            unwritable_ms: 0,
            events: 0,
            regions: Vec::new(),
        };
        let matching = Expectations {
            outcome: Some(ExpectedOutcome::Rejected),
            error: Some("region_route_not_found".to_string()),
            ..Expectations::default()
        };
        assert_eq!(
            check_expectations(&matching, &result, 1),
            Vec::<String>::new()
        );
        let other = Expectations {
            outcome: Some(ExpectedOutcome::Completed),
            error: Some("migration_running".to_string()),
            leader: Some(2),
            ..Expectations::default()
        };
        assert_eq!(
            check_expectations(&other, &result, 1),
            strings(&[
                "migration 1 (1024:9): outcome: expected completed, got rejected (error: \
             region_route_not_found: region 1024:9 has no route)",
                "migration 1 (1024:9): error: expected an error containing \"migration_running\", \
             got \"region_route_not_found: region 1024:9 has no route\"",
                "migration 1 (1024:9): leader: expected 2, got no leader",
            ])
        );
    }

    #[test]
    fn collapse_path_merges_only_consecutive_repeats() {
        assert_eq!(
            collapse_path(&strings(&["Start", "A", "A", "B", "A", "A", "A", "End"])),
            strings(&["Start", "A", "B", "A", "End"])
        );
        assert_eq!(collapse_path(&[]), Vec::<String>::new());
    }
}

/// The result: JSON and text.
mod scenario_results {
    use super::*;

    fn outcome_with(migration: MigrationResult) -> ScenarioOutcome {
        ScenarioOutcome {
            name: "open candidate fails twice, then succeeds".to_string(),
            ok: true,
            failures: vec![],
            migrations: vec![migration],
            invariants: InvariantsResult {
                ok: true,
                violations: vec![],
            },
            data_dir: "/tmp/regmig-sim-7".to_string(),
        }
    }

    #[test]
    fn result_serializes_to_the_spec_json_schema_field_for_field() {
        let mut migration = completed_result();
        migration.sent = BTreeMap::from([("2.open_region".to_string(), 3)]);
        migration.followers = vec![];
        let json = serde_json::to_string(&outcome_with(migration)).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"name":"open candidate fails twice, then succeeds","ok":true,"failures":[],"#,
                r#""migrations":[{"region":"1024:1","#,
                r#""procedure_id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","outcome":"completed","#,
                r#""error":null,"rolled_back":false,"path":["Start","OpenCandidateRegion","#,
                r#""OpenCandidateRegion","OpenCandidateRegion","UpdateMetadata::Downgrade","#,
                r#""DowngradeLeaderRegion","UpgradeCandidateRegion","UpdateMetadata::Upgrade","#,
                r#""CloseDowngradedRegion","End"],"leader":2,"followers":[],"#,
                r#""leader_state":"none","sent":{"2.open_region":3},"#,
                r#""virtual_time_ms":1520,"unwritable_ms":0,"events":23}],"#,
                r#""invariants":{"ok":true,"violations":[]},"data_dir":"/tmp/regmig-sim-7"}"#
            )
        );
        let back: ScenarioOutcome = serde_json::from_str(&json).unwrap();
        assert_eq!(back.migrations[0].virtual_time_ms, 1520);
    }

    #[test]
    fn rejected_result_serializes_nulls_for_what_it_lacks() {
        let rejected = MigrationResult {
            region: "1:9".to_string(),
            procedure_id: None,
            outcome: "rejected".to_string(),
            error: Some("region_route_not_found: no route".to_string()),
            rolled_back: false,
            path: vec![],
            leader: None,
            followers: vec![],
            leader_state: "none".to_string(),
            sent: BTreeMap::new(),
            virtual_time_ms: 0,
            unwritable_ms: 0,
            events: 0,
            regions: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&rejected).unwrap(),
            r#"{"region":"1:9","procedure_id":null,"outcome":"rejected","error":"region_route_not_found: no route","rolled_back":false,"path":[],"leader":null,"followers":[],"leader_state":"none","sent":{},"virtual_time_ms":0,"unwritable_ms":0,"events":0}"#
        );
    }

    #[test]
    fn text_rendering_of_a_passing_run() {
        assert_eq!(
            render_text(&outcome_with(completed_result())),
            "scenario \"open candidate fails twice, then succeeds\": OK\n\
         \x20 migration 1 1024:1: completed in 1s 520ms (23 events, unwritable 0s): Start > OpenCandidateRegion \
         (x3) > UpdateMetadata::Downgrade > DowngradeLeaderRegion > UpgradeCandidateRegion > \
         UpdateMetadata::Upgrade > CloseDowngradedRegion > End\n\
         \x20 invariants: ok\n\
         \x20 data dir: /tmp/regmig-sim-7\n"
        );
    }

    #[test]
    fn text_rendering_of_a_failing_run_lists_failures_and_violations() {
        let mut migration = completed_result();
        migration.outcome = "aborted".to_string();
        migration.error = Some("upgrade: region not ready".to_string());
        migration.path = strings(&["Start", "Abort"]);
        let mut outcome = outcome_with(migration);
        outcome.ok = false;
        outcome.failures =
            strings(&["migration 1 (1024:1): outcome: expected completed, got aborted"]);
        outcome.invariants = InvariantsResult {
            ok: false,
            violations: strings(&["region 1024:1 has two writable leaders at 1200ms"]),
        };
        assert_eq!(
            render_text(&outcome),
            "scenario \"open candidate fails twice, then succeeds\": FAILED\n\
         \x20 migration 1 1024:1: aborted in 1s 520ms (23 events, unwritable 0s): Start > Abort\n\
         \x20   error: upgrade: region not ready\n\
         \x20 failed: migration 1 (1024:1): outcome: expected completed, got aborted\n\
         \x20 invariant violated: region 1024:1 has two writable leaders at 1200ms\n\
         \x20 data dir: /tmp/regmig-sim-7\n"
        );
    }
}

/// No input panics.
mod scenario_garbage {
    use super::*;

    const SPEC_EXAMPLE: &str = include_str!("scenario_parse/valid/open_candidate_retry.toml");

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_text_is_refused_without_panicking(text in "\\PC{0,300}") {
            prop_assert!(parse_scenario(&text, "random.toml").is_err());
        }

        #[test]
        fn random_bytes_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            prop_assert!(parse_scenario(&text, "random.toml").is_err());
        }

        #[test]
        fn damaged_spec_example_never_panics(
            start in 0usize..2000,
            length in 0usize..40,
            insert in "[ -~\\n]{0,20}",
        ) {
            let chars: Vec<char> = SPEC_EXAMPLE.chars().collect();
            let start = start.min(chars.len());
            let end = (start + length).min(chars.len());
            let mut damaged: String = chars[..start].iter().collect();
            damaged.push_str(&insert);
            damaged.extend(&chars[end..]);
            if let Err(error) = parse_scenario(&damaged, "damaged.toml") {
                prop_assert!(error.to_string().starts_with("damaged.toml:"));
            }
        }
    }
}

/// The revision 2 additions of the scenario format.
mod scenario_revision_two {
    use super::*;

    fn parse(text: &str) -> Scenario {
        parse_scenario(text, "inline.toml").expect("valid scenario")
    }

    #[test]
    fn revision_two_keys_parse_into_the_model() {
        let text = format!(
            "{}actor = \"bob\"\nreason = \"rebalance\"\n\n\
             [[faults]]\nkind = \"metadata_unavailable\"\nat = \"1s\"\nuntil = \"3s\"\n\n\
             [[faults]]\nkind = \"metadata_cas_conflict\"\nuntil = \"2s\"\n\n\
             [[faults]]\nkind = \"engine_crash\"\nat = \"5s\"\nrestart_after = \"12s\"\n\n\
             [[faults]]\nkind = \"partition\"\npeer = 1\nat = \"500ms\"\nheal_after = \"9s\"\n\n\
             [[faults]]\nkind = \"partition\"\npeer = 2\n\n\
             [[cancels]]\nmigration = 1\nat = \"2s\"\nactor = \"alice\"\nreason = \"late\"\n\n\
             [expect]\nmax_unwritable = \"3s\"\nsettle = \"20s\"\n",
            MINIMAL.replace(
                "peers = [1, 2]",
                "peers = [1, 2]\nflush_writes_per_second = 500"
            )
        );
        let scenario = parse(&text);
        assert_eq!(scenario.cluster.flush_writes_per_second, 500);
        assert_eq!(scenario.migrations[0].actor.as_deref(), Some("bob"));
        assert_eq!(scenario.migrations[0].reason.as_deref(), Some("rebalance"));
        assert_eq!(
            scenario.faults,
            vec![
                FaultSpec::MetadataUnavailableUntil {
                    at_ms: 1_000,
                    until_ms: 3_000
                },
                FaultSpec::MetadataCasConflictUntil {
                    at_ms: 0,
                    until_ms: 2_000
                },
                FaultSpec::EngineCrash {
                    trigger: CrashTrigger::AtMs(5_000),
                    restart_after_ms: 12_000,
                },
                FaultSpec::Partition {
                    peer: 1,
                    at_ms: 500,
                    heal_after_ms: Some(9_000),
                },
                FaultSpec::Partition {
                    peer: 2,
                    at_ms: 0,
                    heal_after_ms: None,
                },
            ]
        );
        assert_eq!(
            scenario.cancels,
            vec![regmig_tools::sim::scenario::CancelSpec {
                migration: 0,
                at_ms: 2_000,
                actor: "alice".to_string(),
                reason: "late".to_string(),
            }]
        );
        assert_eq!(scenario.expects[0].max_unwritable_ms, Some(3_000));
        assert_eq!(scenario.expects[0].settle_ms, Some(20_000));
    }

    #[test]
    fn defaults_of_the_revision_two_keys() {
        let scenario = parse(MINIMAL);
        assert_eq!(scenario.cluster.flush_writes_per_second, 20_000);
        assert_eq!(scenario.migrations[0].actor, None);
        assert!(scenario.cancels.is_empty());
        let crash = parse(&format!(
            "{MINIMAL}\n[[faults]]\nkind = \"engine_crash\"\nat = \"1s\"\n"
        ));
        assert_eq!(
            crash.faults,
            vec![FaultSpec::EngineCrash {
                trigger: CrashTrigger::AtMs(1_000),
                restart_after_ms: 0,
            }]
        );
    }

    #[test]
    fn flush_region_takes_its_reply_tokens() {
        let text = format!(
            "{MINIMAL}\n[[script]]\npeer = 1\ninstruction = \"flush_region\"\n\
             replies = [\"ok\", \"error:busy\", \"timeout\", \"unreachable\", \"wrong_reply\"]\n"
        );
        assert_eq!(parse(&text).scripts[0].replies.len(), 5);
        let not_ready = format!(
            "{MINIMAL}\n[[script]]\npeer = 1\ninstruction = \"flush_region\"\nreplies = [\"not_ready\"]\n"
        );
        assert_eq!(
            inline_error(&not_ready),
            "inline.toml:19: field `script[0].replies[0]`: reply \"not_ready\" is only valid for \
             upgrade_region, not flush_region"
        );
    }

    #[test]
    fn invalid_revision_two_keys_are_refused() {
        let both = format!(
            "{MINIMAL}\n[[faults]]\nkind = \"metadata_unavailable\"\ncount = 2\nuntil = \"2s\"\n"
        );
        assert_eq!(
            inline_error(&both),
            "inline.toml:16: field `faults[0]`: metadata_unavailable takes exactly one of `count` \
             and `until`, not both"
        );
        let backwards = format!(
            "{MINIMAL}\n[[faults]]\nkind = \"metadata_unavailable\"\nat = \"3s\"\nuntil = \"2s\"\n"
        );
        assert_eq!(
            inline_error(&backwards),
            "inline.toml:19: field `faults[0].until`: until (2s) must be after at (3s)"
        );
        let cancel = format!(
            "{MINIMAL}\n[[cancels]]\nmigration = 2\nat = \"1s\"\nactor = \"a\"\nreason = \"r\"\n"
        );
        assert_eq!(
            inline_error(&cancel),
            "inline.toml:17: field `cancels[0].migration`: migration 2 does not exist: the file \
             has 1 migration(s), counted from 1 in file order"
        );
        let early = format!(
            "{}\n[[cancels]]\nmigration = 1\nat = \"1s\"\nactor = \"a\"\nreason = \"r\"\n",
            MINIMAL.replace("to = 2", "to = 2\nat = \"2s\"")
        );
        assert_eq!(
            inline_error(&early),
            "inline.toml:19: field `cancels[0].at`: the cancel at 1000ms comes before migration 1 \
             is submitted (at 2000ms): there is nothing to cancel yet"
        );
        let many = format!(
            "{MINIMAL}{}",
            "\n[[migrations]]\nregion = \"1:1\"\nfrom = 1\nto = 2\n".repeat(1000)
        );
        assert_eq!(
            inline_error(&many),
            "inline.toml:11: field `migrations`: 1001 migrations; a scenario runs at most 1000 (a \
             run's cost grows faster than their number)"
        );
        let heal = format!("{MINIMAL}\n[[faults]]\nkind = \"partition\"\npeer = 1\ncount = 1\n");
        assert_eq!(
            inline_error(&heal),
            "inline.toml:19: field `faults[0].count`: not a key of fault kind partition (expected \
             one of kind, peer, at, heal_after)"
        );
    }
}
