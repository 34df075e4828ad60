//! The scenario files under tests/scenarios/ on the real engine and the simulator: every
//! file passes, a chosen subset passes `--crash-at-every-event`, runs are reproducible from
//! their seed, and the invariant checker catches a broken datanode model in an engine run.

use std::path::PathBuf;
use std::sync::Mutex;

use regmig_tools::sim::datanode::SimOptions;
use regmig_tools::sim::runner::{run_crash_at_every_event, run_scenario, RunOptions, ScenarioRun};
use regmig_tools::sim::scenario::{load_scenario, parse_scenario, render_text, Scenario};

fn scenarios_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios"))
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .expect("tests/scenarios exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

fn load(name: &str) -> Scenario {
    load_scenario(&scenarios_dir().join(name)).expect("valid scenario")
}

/// A run that keeps nothing on disk; `unsynced` skips fdatasync (an engine crash here is a
/// halt, never a machine crash, so durability on disk changes nothing).
fn options(unsynced: bool) -> RunOptions {
    RunOptions {
        discard_data_dir: true,
        unsynced_log: unsynced,
        ..RunOptions::default()
    }
}

fn run(scenario: &Scenario) -> ScenarioRun {
    run_scenario(scenario, &options(false)).expect("scenario runs")
}

/// Runs `work` over `items` on two threads (the test machine has two cores); returns the
/// failures, in item order.
fn on_two_threads<T: Sync>(items: &[T], work: impl Fn(&T) -> Option<String> + Sync) -> Vec<String> {
    let failures = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let index = {
                    let mut next = next.lock().expect("not poisoned");
                    let index = *next;
                    *next += 1;
                    index
                };
                let Some(item) = items.get(index) else {
                    return;
                };
                if let Some(failure) = work(item) {
                    failures
                        .lock()
                        .expect("not poisoned")
                        .push((index, failure));
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("not poisoned");
    failures.sort();
    failures.into_iter().map(|(_, failure)| failure).collect()
}

#[test]
fn every_scenario_in_the_repository_passes() {
    let files = scenario_files();
    assert!(files.len() >= 50, "scenario files found: {files:?}");
    let failed = on_two_threads(&files, |file| {
        let scenario = load_scenario(file).expect("valid scenario");
        let run = run_scenario(&scenario, &options(false)).expect("scenario runs");
        (!run.outcome.ok).then(|| format!("{}:\n{}", file.display(), render_text(&run.outcome)))
    });
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Files whose expectations hold whatever event the engine crashes after. The others are
/// left out because a crash point legitimately changes what they expect: with two
/// migrations at once, a restart resends an instruction another migration left outstanding
/// (its scripted reply is then not the one the file expects) or resumes them in another
/// order (`two_tables_migrate_in_parallel.toml`); exact times that a re-sent flush or a
/// re-read shifts (`flush_*.toml`); or a file whose own engine crash is the point
/// (`engine_crash_downtime_is_not_charged.toml`).
const CRASH_SWEEP_FILES: [&str; 16] = [
    "batch_crash_at_every_event_resumes_each_region.toml",
    "batch_of_three_regions_sends_one_instruction_per_datanode_per_step.toml",
    "start_opens_candidate_and_completes.toml",
    "start_to_follower_skips_open.toml",
    "open_retries_exhausted_fails.toml",
    "downgrade_unreachable_takes_the_slow_path.toml",
    "upgrade_not_ready_three_times_aborts.toml",
    "update_upgrade_cas_conflicts_exhausted_fails.toml",
    "datanode_crash_candidate_restarts_mid_upgrade_waits_out_the_budget.toml",
    "submit_rejected_migration_running.toml",
    "late_downgrade_reply_is_taken.toml",
    "late_candidate_replies_are_taken.toml",
    "partition_old_leader_waits_from_its_last_heartbeat.toml",
    "rollback_retries_through_a_store_outage.toml",
    "flush_timeout_waits_at_most_one_lease.toml",
    "two_migrations_of_one_region_each_see_their_own_route.toml",
];

#[test]
fn crash_at_every_event_keeps_every_expectation_of_the_chosen_scenarios() {
    let failed = on_two_threads(&CRASH_SWEEP_FILES, |name| {
        let scenario = load(name);
        let sweep = run_crash_at_every_event(&scenario, &options(true), &mut |_, _| {})
            .expect("sweep runs");
        let mut problems = Vec::new();
        // Every crash point of the uninterrupted run was tried: the sweep is not vacuous. For
        // a batch, that is every event of every one of its regions.
        let events = sweep.baseline.migrations[0].events;
        if events < 20 || sweep.runs.len() as u64 != events || sweep.crash_points != events {
            problems.push(format!(
                "{name}: {} crash points for {events} events",
                sweep.runs.len()
            ));
        }
        if !sweep.baseline.ok {
            problems.push(format!(
                "{name}, uninterrupted:\n{}",
                render_text(&sweep.baseline)
            ));
        }
        for (k, outcome) in &sweep.runs {
            if !outcome.ok {
                problems.push(format!(
                    "{name}, crash after event {k}:\n{}",
                    render_text(outcome)
                ));
            }
        }
        (!problems.is_empty()).then(|| problems.join("\n"))
    });
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn same_seed_and_scenario_give_byte_identical_logs() {
    // Retries with jitter, a metadata fault, a workload: every source of randomness.
    let scenario = load("open_candidate_retry.toml");
    let first = run(&scenario);
    let second = run(&scenario);
    assert!(first.outcome.ok, "{}", render_text(&first.outcome));
    assert!(first.log_fingerprint.len() > 1_000);
    // Start, open (retried), FlushLeaderRegion, the downgrade's route read, ... End.
    assert_eq!(first.first_migration_events, 45);
    assert!(
        first.log_fingerprint == second.log_fingerprint,
        "two runs of one seed wrote different logs"
    );
    assert_eq!(first.outcome.migrations, second.outcome.migrations);
}

#[test]
fn a_different_seed_draws_different_jitter() {
    // Three jittered backoffs (500, 1000, 2000 ms, each + up to 25%).
    let scenario = load("open_retries_exhausted_fails.toml");
    let mut reseeded = scenario.clone();
    reseeded.seed += 1;
    let first = run(&scenario);
    let second = run(&reseeded);
    assert!(first.outcome.ok, "{}", render_text(&first.outcome));
    assert!(second.outcome.ok, "{}", render_text(&second.outcome));
    let elapsed = |run: &ScenarioRun| run.outcome.migrations[0].virtual_time_ms;
    assert_eq!((elapsed(&first), elapsed(&second)), (3_891, 3_591));
    assert!(first.log_fingerprint != second.log_fingerprint);
    // Everything but the jitter is the same.
    let shape = |run: &ScenarioRun| {
        let migration = &run.outcome.migrations[0];
        (
            migration.outcome.clone(),
            migration.path.clone(),
            migration.sent.clone(),
            migration.events,
        )
    };
    assert_eq!(shape(&first), shape(&second));
}

/// The old leader reports last_entry_id 200 at 1 s; the candidate's first upgrade answers
/// not ready, so the route keeps naming the old leader until the second upgrade at 1.5 s.
/// A datanode that keeps taking writes once downgraded acknowledges 50 writes in between
/// that the new leader never replays.
const BROKEN_MODEL_SCENARIO: &str = r#"
name = "a downgraded leader must not take writes"
seed = 5

[cluster]
peers = [1, 2, 3]

[[cluster.tables]]
id = 1024
regions = [ { number = 1, leader = 1, followers = [], last_entry_id = 100 } ]

[workload]
writes_per_second = 100

[[migrations]]
region = "1024:1"
from = 1
to = 2
at = "1s"

[[script]]
peer = 2
instruction = "upgrade_region"
replies = ["not_ready"]

[expect]
outcome = "completed"
leader = 2
"#;

#[test]
fn broken_datanode_model_is_caught_by_the_invariant_checker_in_an_engine_run() {
    let scenario = parse_scenario(BROKEN_MODEL_SCENARIO, "broken.toml").expect("valid");
    let correct = run(&scenario);
    assert!(correct.outcome.ok, "{}", render_text(&correct.outcome));

    let broken = run_scenario(
        &scenario,
        &RunOptions {
            sim_options: SimOptions {
                accept_writes_while_downgraded: true,
            },
            ..options(false)
        },
    )
    .expect("scenario runs");
    // The migration itself went as planned: only the invariants fail the run.
    assert!(
        broken.outcome.failures.is_empty(),
        "{:?}",
        broken.outcome.failures
    );
    assert_eq!(broken.outcome.migrations[0].outcome, "completed");
    assert!(!broken.outcome.ok);
    assert!(!broken.outcome.invariants.ok);
    let first_lines: Vec<&str> = broken
        .outcome
        .invariants
        .violations
        .iter()
        .map(|violation| violation.lines().next().unwrap_or_default())
        .collect();
    assert_eq!(
        first_lines,
        vec![
            "invariant violated at 1505 ms, region 1024:1: 49 of 250 acknowledged writes are \
             missing from the final leader (peer 2, Leader, last entry 201); first missing \
             entry 202"
        ]
    );
    let violation = &broken.outcome.invariants.violations[0];
    assert!(
        violation.contains("events before it:"),
        "no context in {violation}"
    );
}

/// Regression: an engine_crash fired by the first of two submits at the same instant used to
/// leave the second submit to the halted engine, refused as "shutting_down".
#[test]
fn a_submit_due_right_after_an_engine_crash_reaches_the_reopened_engine() {
    let mut scenario = load("submit_rejected_migration_running.toml");
    scenario
        .faults
        .push(regmig_tools::sim::scenario::FaultSpec::EngineCrash {
            trigger: regmig_tools::sim::scenario::CrashTrigger::AfterEvents(3),
            restart_after_ms: 0,
        });
    let run = run(&scenario);
    assert!(run.outcome.ok, "{}", render_text(&run.outcome));
    let second = &run.outcome.migrations[1];
    assert_eq!(second.outcome, "rejected");
    assert!(
        second
            .error
            .as_deref()
            .is_some_and(|error| error.starts_with("migration_running: ")),
        "{:?}",
        second.error
    );
}

/// A run that fails keeps its log (its path is in the result) so it can be inspected and
/// replayed; a run that passes leaves nothing behind.
#[test]
fn a_failing_crash_point_keeps_its_log_and_a_passing_one_does_not() {
    let mut scenario = load("crash_then_resume.toml");
    scenario.expects[0].leader = Some(99);
    let sweep =
        run_crash_at_every_event(&scenario, &options(true), &mut |_, _| {}).expect("sweep runs");
    assert!(!sweep.runs.is_empty());
    std::fs::remove_dir_all(&sweep.baseline.data_dir).expect("the failing baseline's log");
    for (k, outcome) in &sweep.runs {
        assert!(!outcome.ok, "crash after event {k} passed a wrong leader");
        let dir = PathBuf::from(&outcome.data_dir);
        assert!(
            dir.join("sled").is_dir(),
            "crash after event {k}: {dir:?} is gone"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
    let passing = run_scenario(&load("crash_then_resume.toml"), &options(true)).expect("runs");
    assert!(passing.outcome.ok);
    assert!(!PathBuf::from(&passing.outcome.data_dir).exists());
}
