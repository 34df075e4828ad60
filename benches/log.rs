//! Durable append throughput and latency of the event log, beside the raw fdatasync rate of
//! the same disk, measured in the same run.
//!
//! `cargo bench --bench log` (about a minute). Prints two tables:
//! - events/s with 1, 16 and 256 procedures appending 1-event batches concurrently, each
//!   beside the raw rate of this disk (a loop of a 64-byte write + fdatasync on a temporary
//!   file) measured just before it, and the ratio;
//! - the single-writer median latency of `append` and `append_blocking` against the raw
//!   fdatasync median, their samples interleaved so all three see the same (shared) disk,
//!   and the floor of what the high-water mark adds: two files written and fdatasynced at
//!   once, as each group commit syncs sled's file and the mark.
//!
//! Criterion then measures the raw write + fdatasync and a single-writer `append_blocking`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use regmig::log::{AppendRequest, EventLog, LogOptions, NewEvent, OpenProcedure};
use uuid::Uuid;

/// How long each throughput point runs.
const THROUGHPUT_RUN: Duration = Duration::from_secs(3);
/// How many samples the latency medians take (of each kind).
const LATENCY_SAMPLES: usize = 1500;
/// How long the raw disk rate is measured before each throughput point.
const RAW_RUN: Duration = Duration::from_secs(1);
/// A payload of the size of a typical migration event.
const PAYLOAD_BYTES: usize = 96;

fn event(now_ms: u64) -> NewEvent {
    NewEvent {
        kind: 7,
        recorded_at_ms: now_ms,
        payload: vec![0xa5; PAYLOAD_BYTES],
    }
}

fn first_request(procedure_id: Uuid, region_id: u64) -> AppendRequest {
    AppendRequest {
        procedure_id,
        expected_next_seq: 1,
        events: vec![event(1)],
        opens: Some(OpenProcedure {
            region_id,
            peers: vec![1, 2],
        }),
        closes: false,
    }
}

fn next_request(procedure_id: Uuid, expected_next_seq: u64) -> AppendRequest {
    AppendRequest {
        procedure_id,
        expected_next_seq,
        events: vec![event(expected_next_seq)],
        opens: None,
        closes: false,
    }
}

/// A temporary file to measure the raw disk: a 64-byte append + fdatasync per sample.
struct RawDisk {
    file: File,
}

impl RawDisk {
    fn new(dir: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("raw-fdatasync"))
            .expect("create the raw fdatasync file");
        RawDisk { file }
    }

    fn sample(&mut self) -> Duration {
        let started = Instant::now();
        self.file.write_all(&[0x5a; 64]).expect("write");
        self.file.sync_data().expect("fdatasync");
        started.elapsed()
    }

    /// Samples per second over `run`.
    fn rate(&mut self, run: Duration) -> f64 {
        let started = Instant::now();
        let mut samples = 0u64;
        while started.elapsed() < run {
            self.sample();
            samples += 1;
        }
        samples as f64 / started.elapsed().as_secs_f64()
    }
}

fn median(latencies: &mut [Duration]) -> Duration {
    latencies.sort_unstable();
    latencies[latencies.len() / 2]
}

/// Events/s with `procedures` tasks each appending 1-event batches for `run`.
fn durable_throughput(dir: &Path, procedures: usize, run: Duration) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let log = EventLog::open(dir, LogOptions::default()).expect("open the log");
    let appended = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let elapsed = runtime.block_on(async {
        let mut tasks = Vec::with_capacity(procedures);
        for task_index in 0..procedures {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let procedure_id = Uuid::now_v7();
                let receipt = log
                    .append(first_request(procedure_id, task_index as u64 + 1))
                    .await
                    .expect("append")
                    .expect("no conflict");
                receipt.last_seq + 1
            }));
        }
        let mut next_seqs = Vec::with_capacity(procedures);
        for task in tasks {
            next_seqs.push(task.await.expect("task"));
        }
        let procedure_ids = log.open_procedures().expect("open procedures");
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(procedures);
        for (procedure_id, _) in procedure_ids {
            let log = log.clone();
            let appended = Arc::clone(&appended);
            let stop = Arc::clone(&stop);
            let mut next_seq = log.next_seq(procedure_id).expect("next seq");
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    log.append(next_request(procedure_id, next_seq))
                        .await
                        .expect("append")
                        .expect("no conflict");
                    next_seq += 1;
                    appended.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(run).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("task");
        }
        started.elapsed()
    });
    appended.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

/// Median latencies of single-writer appends (one procedure, nothing else running), async
/// and blocking, each sample interleaved with a raw fdatasync sample so that all three see
/// the same disk (the machine is shared).
fn single_writer_medians(
    dir: &Path,
    raw: &mut RawDisk,
    samples: usize,
) -> (Duration, Duration, Duration) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let log = EventLog::open(dir, LogOptions::default()).expect("open the log");
    let procedure_id = Uuid::now_v7();
    log.append_blocking(first_request(procedure_id, 1))
        .expect("append")
        .expect("no conflict");
    let mut next_seq = 2;
    let mut raw_latencies = Vec::with_capacity(samples);
    let mut async_latencies = Vec::with_capacity(samples);
    let mut blocking_latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        raw_latencies.push(raw.sample());
        let started = Instant::now();
        runtime
            .block_on(log.append(next_request(procedure_id, next_seq)))
            .expect("append")
            .expect("no conflict");
        async_latencies.push(started.elapsed());
        next_seq += 1;
        let started = Instant::now();
        log.append_blocking(next_request(procedure_id, next_seq))
            .expect("append")
            .expect("no conflict");
        blocking_latencies.push(started.elapsed());
        next_seq += 1;
    }
    (
        median(&mut raw_latencies),
        median(&mut async_latencies),
        median(&mut blocking_latencies),
    )
}

fn criterion_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let raw_path = dir.path().join("criterion-raw");
    let mut raw_file = File::create(&raw_path).expect("create");
    c.bench_function("disk/write_64b_fdatasync", |b| {
        b.iter(|| {
            raw_file.write_all(&[0x5a; 64]).expect("write");
            raw_file.sync_data().expect("fdatasync");
        })
    });
    let log =
        EventLog::open(&dir.path().join("criterion-log"), LogOptions::default()).expect("open");
    let procedure_id = Uuid::now_v7();
    log.append_blocking(first_request(procedure_id, 1))
        .expect("append")
        .expect("no conflict");
    let mut next_seq = 2;
    c.bench_function("log/durable_append_blocking_1_event", |b| {
        b.iter(|| {
            log.append_blocking(next_request(procedure_id, next_seq))
                .expect("append")
                .expect("no conflict");
            next_seq += 1;
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = criterion_benches
}

fn print_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut raw = RawDisk::new(dir.path());
    println!();
    println!(
        "durable appends, 1-event batches of {PAYLOAD_BYTES} bytes, {THROUGHPUT_RUN:?} per point; \
         raw = 64 B write + fdatasync, measured just before each point"
    );
    println!("| procedures | events/s | raw fdatasync/s | x raw |");
    println!("| ---: | ---: | ---: | ---: |");
    for procedures in [1usize, 16, 256] {
        let raw_rate = raw.rate(RAW_RUN);
        let log_dir = dir.path().join(format!("throughput-{procedures}"));
        let rate = durable_throughput(&log_dir, procedures, THROUGHPUT_RUN);
        println!(
            "| {procedures} | {rate:.0} | {raw_rate:.0} | {:.2} |",
            rate / raw_rate
        );
    }
    let (raw_median, async_median, blocking_median) =
        single_writer_medians(&dir.path().join("latency"), &mut raw, LATENCY_SAMPLES);
    let micros = |latency: Duration| latency.as_secs_f64() * 1e6;
    println!();
    println!("single writer, {LATENCY_SAMPLES} samples each, interleaved");
    println!("| median latency | µs | x raw |");
    println!("| --- | ---: | ---: |");
    println!(
        "| raw 64 B write + fdatasync | {:.1} | 1.00 |",
        micros(raw_median)
    );
    let pair =
        regmig_tools::bench::appends::raw_fdatasync_pair(&dir.path().join("pair"), LATENCY_SAMPLES)
            .expect("raw fdatasync of two files");
    for (name, latency) in [
        (
            "raw: two files written + fdatasynced at once (sled's + the mark)",
            pair.median,
        ),
        ("append (async, group commit, mark included)", async_median),
        ("append_blocking", blocking_median),
    ] {
        println!(
            "| {name} | {:.1} | {:.2} |",
            micros(latency),
            latency.as_secs_f64() / raw_median.as_secs_f64()
        );
    }
    let (mut with_mark, mut without_mark) =
        regmig_tools::bench::appends::single_writer_latencies_with_and_without_mark(
            &dir.path().join("mark-cost"),
            LATENCY_SAMPLES,
        )
        .expect("latencies with and without the mark");
    let (with_mark, without_mark) = (median(&mut with_mark), median(&mut without_mark));
    let rate_with = regmig_tools::bench::appends::durable_throughput_of(
        &dir.path().join("mark-256-with"),
        256,
        THROUGHPUT_RUN,
        true,
    )
    .expect("256-way with the mark");
    let rate_without = regmig_tools::bench::appends::durable_throughput_of(
        &dir.path().join("mark-256-without"),
        256,
        THROUGHPUT_RUN,
        false,
    )
    .expect("256-way without the mark");
    println!();
    println!("what the high-water mark costs (same run; latency samples interleaved)");
    println!("| figure | with the mark | without | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| single-writer append, median µs | {:.1} | {:.1} | {:.2} |",
        micros(with_mark),
        micros(without_mark),
        with_mark.as_secs_f64() / without_mark.as_secs_f64()
    );
    println!(
        "| 256-way events/s | {rate_with:.0} | {rate_without:.0} | {:.2} |",
        rate_with / rate_without
    );
    println!();
}

fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent: keep that quick.
    let benching = std::env::args().any(|arg| arg == "--bench");
    if !benching {
        println!("benches/log.rs: run with `cargo bench --bench log`");
        return;
    }
    print_table();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
