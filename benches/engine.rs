//! The engine's figures (issue 7) under criterion, then the same table as `regmig bench`.
//!
//! `cargo bench --bench engine` runs short criterion groups (migrations per iteration for the
//! event log and both snapshot baselines, fold, the region query, the raw fdatasync), then
//! the table at quick sizes; `REGMIG_BENCH_FULL=1 cargo bench --bench engine` prints the
//! table at issue 7's sizes instead (about as long as `regmig bench`). The measurements
//! are those of `regmig_tools::bench`, shared with `regmig bench`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use regmig::engine::load_procedure;
use regmig::log::{EventLog, LogOptions};
use regmig::migration::fold;
use regmig_tools::bench::child::{self, Launcher};
use regmig_tools::bench::fixture::{self, FixtureSpec};
use regmig_tools::bench::migrations::{self, Design, RunLength};
use regmig_tools::bench::{recovery, world, RunOptions, Section, Sizes};

/// Migrations per worker are rounded up to at least this many per sample.
const WORKERS: usize = 16;

fn migrations_group(c: &mut Criterion) {
    let mut group = c.benchmark_group("migrations_16_concurrent");
    group.throughput(Throughput::Elements(1));
    for design in [
        Design::EventLog,
        Design::AsOriginal,
        Design::SnapshotEveryStep,
    ] {
        group.bench_function(BenchmarkId::from_parameter(format!("{design:?}")), |b| {
            b.iter_custom(|iters| {
                let per_worker = iters.div_ceil(WORKERS as u64).max(1);
                let dir = tempfile::tempdir().expect("temp dir");
                let run = migrations::measure(
                    &dir.path().join("data"),
                    design,
                    WORKERS,
                    RunLength::MigrationsPerWorker(per_worker),
                )
                .expect("migrations");
                // Time per migration, scaled to the iterations asked for.
                run.elapsed
                    .mul_f64(iters as f64 / run.completed.max(1) as f64)
            })
        });
    }
    group.finish();
}

fn replay_and_audit_group(c: &mut Criterion) {
    let histories = fixture::histories(100).expect("histories");
    let decoded: Vec<Vec<regmig::migration::TimedEvent>> = histories
        .iter()
        .map(|history| {
            history
                .iter()
                .map(|(kind, at_ms, payload)| regmig::migration::TimedEvent {
                    at_ms: *at_ms,
                    event: regmig::migration::MigrationEvent::decode(*kind, payload)
                        .expect("decode"),
                })
                .collect()
        })
        .collect();
    let events: u64 = decoded.iter().map(|h| h.len() as u64).sum();
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(events));
    group.bench_function("fold_100_procedures", |b| {
        b.iter(|| {
            decoded
                .iter()
                .map(|history| fold(history).report.counters.events)
                .sum::<u64>()
        })
    });
    group.finish();

    let scratch = tempfile::tempdir().expect("temp dir");
    let spec = FixtureSpec {
        events: 10_000,
        finished: 500,
        open: 100,
    };
    let (dir, _, _) =
        fixture::obtain(&spec, cache_dir().as_deref(), scratch.path()).expect("fixture");
    let copy = scratch.path().join("audit");
    regmig_tools::bench::memory::copy_dir(&dir, &copy).expect("copy");
    let log = EventLog::open(&copy, LogOptions::default()).expect("open");
    let mut group = c.benchmark_group("audit");
    let region = world::region_of(0);
    group.bench_function("region_query_10k_events", |b| {
        b.iter(|| recovery::region_query(&log, region).expect("query").len())
    });
    let (_, first) = log
        .procedures_by_region(region.as_u64(), 0, u64::MAX)
        .expect("index")[0];
    group.bench_function("load_and_fold_one_procedure", |b| {
        b.iter(|| {
            fold(&load_procedure(&log, first).expect("load"))
                .report
                .counters
                .events
        })
    });
    group.finish();
}

fn disk_group(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raw");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("create");
    let mut group = c.benchmark_group("disk");
    group.bench_function("write_64b_fdatasync", |b| {
        b.iter(|| {
            file.write_all(&[0x5a; 64]).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = disk_group, migrations_group, replay_and_audit_group
}

/// `target/regmig-bench-cache`, beside the bench binary's target directory.
fn cache_dir() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.is_dir().then(|| target.join("regmig-bench-cache"))
}

fn print_table() {
    let full = std::env::var("REGMIG_BENCH_FULL").is_ok_and(|value| value == "1");
    let scratch = tempfile::Builder::new()
        .prefix("regmig-bench-")
        .tempdir()
        .expect("temp dir");
    let options = RunOptions {
        sizes: if full { Sizes::full() } else { Sizes::quick() },
        sections: Section::ALL.to_vec(),
        work_dir: scratch.path().to_path_buf(),
        cache_dir: cache_dir(),
        launcher: Launcher::Process {
            program: std::env::current_exe().expect("this bench's path"),
            args: vec!["--bench".into()],
        },
    };
    let started = Instant::now();
    let report = regmig_tools::bench::run(&options, &mut |step| {
        if let regmig_tools::bench::Step::Measuring(step) = step {
            eprintln!("[{:>6.1} s] {step}", started.elapsed().as_secs_f64())
        }
    })
    .expect("the benchmark table");
    println!();
    print!("{}", report.render());
}

fn main() {
    // A measurement that needs a process of its own (see `regmig_tools::bench::child`).
    if let Some(code) = child::run_from_env() {
        std::process::exit(i32::from(code));
    }
    // `cargo test --benches` runs this binary without `--bench`: keep that quick.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("benches/engine.rs: run with `cargo bench --bench engine`");
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_table();
}
