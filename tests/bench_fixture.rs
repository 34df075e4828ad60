//! The recovery fixture holds exactly the counts asked for, resumes, and answers region
//! queries; a whole run at tiny sizes produces every figure (no timing is checked).

use std::collections::BTreeSet;

use regmig::log::{EventLog, LogOptions};
use regmig_tools::bench::child::Launcher;
use regmig_tools::bench::fixture::{self, FixtureSpec};
use regmig_tools::bench::{recovery, world, BenchError, RunOptions, Section, Sizes};

const SPEC: FixtureSpec = FixtureSpec {
    events: 700,
    finished: 30,
    open: 6,
};

#[test]
fn the_fixture_has_the_requested_events_and_procedures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("fixture");
    let summary = fixture::build(&data, &SPEC).expect("build");
    assert_eq!(summary.events, SPEC.events);
    assert_eq!(summary.finished, SPEC.finished);
    assert_eq!(summary.open, SPEC.open);
    assert_eq!(
        summary.completed_full_path + summary.already_moved,
        SPEC.finished
    );
    assert_eq!(fixture::read_summary(&data, &SPEC), Some(summary.clone()));

    let log = EventLog::open(&data, LogOptions::default()).expect("open");
    let report = log.verify().expect("verify");
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.events, SPEC.events);
    assert_eq!(report.procedures, SPEC.finished + SPEC.open);
    assert_eq!(report.open_procedures, SPEC.open);
    let open = log.open_procedures().expect("open procedures");
    let regions: BTreeSet<u64> = open.iter().map(|(_, region)| *region).collect();
    assert_eq!(
        regions.len() as u64,
        SPEC.open,
        "one open procedure per region"
    );

    // Region 0 holds its share of the history plus its open procedure.
    let found = recovery::region_query(&log, world::region_of(0)).expect("query");
    let finished_here = SPEC.finished.div_ceil(SPEC.history_regions());
    assert_eq!(found.len() as u64, finished_here + 1);
    assert_eq!(
        found.iter().filter(|p| p.status == "completed").count() as u64,
        finished_here
    );
    let scanned = recovery::region_query_by_scan(&log, world::region_of(0)).expect("scan");
    assert_eq!(scanned, found);
}

#[test]
fn a_cached_fixture_is_reused_and_a_different_spec_is_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _, cached) = fixture::obtain(&SPEC, Some(dir.path()), dir.path()).expect("build");
    assert!(!cached);
    let (again, _, cached) = fixture::obtain(&SPEC, Some(dir.path()), dir.path()).expect("reuse");
    assert!(cached);
    assert_eq!(path, again);
    let other = FixtureSpec {
        events: SPEC.events + 1,
        ..SPEC
    };
    assert_eq!(fixture::read_summary(&path, &other), None);
}

#[test]
fn sizes_that_cannot_hold_the_procedures_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let too_few = FixtureSpec {
        events: 100,
        finished: 50,
        open: 5,
    };
    let built = fixture::build(&dir.path().join("too-few"), &too_few);
    assert!(
        matches!(built, Err(BenchError::InvalidSizes(_))),
        "{built:?}"
    );
}

#[test]
fn resuming_the_fixture_steps_every_open_procedure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("fixture");
    fixture::build(&data, &SPEC).expect("build");
    let regions = vec![world::region_of(0), world::region_of(1)];
    let result = recovery::resume_and_audit(&data, &dir.path().join("work"), &regions, true)
        .expect("resume");
    assert_eq!(result.resumed, SPEC.open);
    assert_eq!(result.audit_queries, 2);
    assert!(result.full_scan_ms.is_some());
    // The fixture itself is untouched: it was copied.
    let log = EventLog::open(&data, LogOptions::default()).expect("open");
    assert_eq!(log.verify().expect("verify").events, SPEC.events);
}

#[test]
fn a_tiny_run_produces_every_figure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = RunOptions {
        sizes: Sizes::tiny(),
        sections: Section::ALL.to_vec(),
        work_dir: dir.path().join("work"),
        cache_dir: None,
        launcher: Launcher::InProcess,
    };
    let report = regmig_tools::bench::run(&options, &mut |_| {}).expect("run");
    let ids: Vec<&str> = report
        .figures
        .iter()
        .map(|f| f.figure.id.as_str())
        .collect();
    for id in [
        "1.a", "1.b", "1.c", "2.a", "2.b", "3.a", "3.b", "3.c", "4.a", "4.b", "5", "6.a", "6.b",
        "6.c",
    ] {
        assert!(ids.contains(&id), "figure {id} missing from {ids:?}");
    }
    let table = report.render();
    assert!(table.contains("TINY sizes"), "{table}");
    assert!(table.contains("| met"), "{table}");
}
