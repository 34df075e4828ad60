//! The engine's retention setting: off by default it archives nothing; on, a migration
//! that finishes past a limit moves exactly the migrations due out of the live log, and
//! the archive joins what stays.

mod engine_support;

use std::sync::Arc;
use std::time::Duration;

use engine_support::*;
use regmig::archive::{verify_archive, Retention};
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::TokioClock;
use regmig::domain::*;
use regmig::engine::{AppendMode, Engine, EngineConfig, MigrationRequest, SubmitOutcome};
use regmig::migration::Outcome;
use uuid::Uuid;

const TABLE: TableId = 1024;

struct Setup {
    /// The log's directory, kept until the test ends.
    _data: tempfile::TempDir,
    archive: tempfile::TempDir,
    engine: Engine,
}

async fn setup(
    append_mode: AppendMode,
    retention: impl FnOnce(&std::path::Path) -> Retention,
) -> Setup {
    let metadata = Arc::new(MemoryMetadataStore::new());
    add_table(&metadata, TABLE, 3, 1, &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let archive = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig {
        append_mode,
        retention: retention(archive.path()),
        ..EngineConfig::default()
    };
    let ports = ports(
        ScriptedMailbox::new(),
        metadata,
        TokioClock::new(EPOCH_BASE_MS),
    );
    let engine = Engine::open(data.path(), config, ports)
        .await
        .expect("engine opens");
    Setup {
        _data: data,
        archive,
        engine,
    }
}

/// Migrates region `number` of the table from datanode 1 to 2 and waits for it.
async fn migrate(engine: &Engine, number: u32) -> Uuid {
    let request = MigrationRequest::new(RegionId::new(TABLE, number), Peer::sim(1), Peer::sim(2));
    let id = match engine.submit(request).await {
        Ok(SubmitOutcome::Started(id)) => id,
        other => panic!("submit did not start a migration: {other:?}"),
    };
    let state = engine.wait(id).await.expect("wait");
    assert_eq!(state.outcome, Some(Outcome::Completed));
    id
}

/// The migrations in the live log, sorted (ids made in one millisecond are not ordered).
fn live(engine: &Engine) -> Vec<Uuid> {
    let mut ids = engine.log().procedures().expect("list");
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

/// Proves the archive joins the live log; returns the migrations of each manifest, in
/// order (each manifest's sorted).
fn archived(setup: &Setup) -> Vec<Vec<Uuid>> {
    let contents =
        verify_archive(setup.engine.log(), setup.archive.path()).expect("the archive joins");
    contents
        .manifests
        .iter()
        .map(|(_, manifest)| {
            sorted(
                manifest
                    .bundles
                    .iter()
                    .map(|bundle| bundle.procedure_id)
                    .collect(),
            )
        })
        .collect()
}

fn archive_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(start_paused = true)]
async fn retention_is_off_by_default_and_the_engine_archives_nothing() {
    assert_eq!(EngineConfig::default().retention, Retention::default());
    assert!(!Retention::default().is_on());
    let setup = setup(AppendMode::GroupCommit, |_| Retention::default()).await;
    let mut ids = Vec::new();
    for number in 1..=3 {
        ids.push(migrate(&setup.engine, number).await);
        tokio::time::advance(Duration::from_secs(3600)).await;
    }
    let log = setup.engine.log();
    assert_eq!(live(&setup.engine), sorted(ids));
    assert_eq!(log.checkpoint().expect("read"), None);
    assert_eq!(archive_files(setup.archive.path()), Vec::<String>::new());
}

/// Keep at most 2 finished: the third finished migration archives the first, and only it.
#[tokio::test(start_paused = true)]
async fn keeping_two_finished_migrations_archives_the_oldest_when_the_third_finishes() {
    let setup = setup(AppendMode::GroupCommit, |dir| Retention {
        keep_finished: Some(2),
        archive_dir: Some(dir.to_path_buf()),
        check_every_ms: 0,
        ..Retention::default()
    })
    .await;
    let first = migrate(&setup.engine, 1).await;
    let second = migrate(&setup.engine, 2).await;
    let log = setup.engine.log();
    assert_eq!(live(&setup.engine), sorted(vec![first, second]));
    assert_eq!(log.checkpoint().expect("read"), None);
    let first_events = log.procedure_events(first, 1).expect("read").len();

    let third = migrate(&setup.engine, 3).await;
    assert_eq!(live(&setup.engine), sorted(vec![second, third]));
    let checkpoint = log.checkpoint().expect("read").expect("a checkpoint");
    assert_eq!(checkpoint.cut_global_seq, first_events as u64);
    assert_eq!(archived(&setup), vec![vec![first]]);
    let contents = verify_archive(log, setup.archive.path()).expect("the archive joins");
    assert_eq!(contents.records.len(), first_events);
    assert_eq!(
        archive_files(setup.archive.path()),
        vec![
            format!("{first}.rgmb"),
            format!("manifest-{:020}-{:020}.json", 1, first_events)
        ]
    );
    assert!(log.verify().expect("verify").is_clean());
}

/// Archive after an hour: a migration finishing two hours after the first archives the
/// first (and not itself, nor the one that finished 30 minutes before it).
#[tokio::test(start_paused = true)]
async fn archiving_after_an_hour_moves_exactly_the_migrations_older_than_an_hour() {
    let setup = setup(AppendMode::Inline, |dir| Retention {
        archive_after_ms: Some(3_600_000),
        archive_dir: Some(dir.to_path_buf()),
        check_every_ms: 0,
        ..Retention::default()
    })
    .await;
    let first = migrate(&setup.engine, 1).await;
    tokio::time::advance(Duration::from_secs(90 * 60)).await;
    let second = migrate(&setup.engine, 2).await;
    // The first finished 90 minutes ago, but the check ran when the second finished...
    assert_eq!(live(&setup.engine), vec![second]);
    tokio::time::advance(Duration::from_secs(30 * 60)).await;
    let third = migrate(&setup.engine, 3).await;
    // ...and the second is 30 minutes old now: it stays.
    assert_eq!(live(&setup.engine), sorted(vec![second, third]));
    assert_eq!(archived(&setup), vec![vec![first]]);
}

/// Checked at most once every `check_every_ms`: with an hour, the finish of the second
/// migration in the same hour does not archive, the first finish after the hour does.
#[tokio::test(start_paused = true)]
async fn the_engine_checks_the_retention_at_most_once_per_interval() {
    let setup = setup(AppendMode::Inline, |dir| Retention {
        keep_finished: Some(1),
        archive_dir: Some(dir.to_path_buf()),
        check_every_ms: 3_600_000,
        ..Retention::default()
    })
    .await;
    let first = migrate(&setup.engine, 1).await;
    let second = migrate(&setup.engine, 2).await;
    assert_eq!(live(&setup.engine), sorted(vec![first, second]));
    tokio::time::advance(Duration::from_secs(3600)).await;
    let third = migrate(&setup.engine, 3).await;
    assert_eq!(live(&setup.engine), vec![third]);
    assert_eq!(archived(&setup), vec![sorted(vec![first, second])]);
}
