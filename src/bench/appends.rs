//! Figure 1: durable appends per second with 1, 16 and 256 procedures appending 1-event
//! batches concurrently, and the single-writer append latency, beside the raw rate of this
//! disk: a loop of a 64-byte write plus fdatasync on a temporary file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::error::BenchError;
use super::runtime;
use regmig::log::{AppendRequest, EventLog, LogOptions, NewEvent, OpenProcedure, SledStore};

/// The payload of each appended event: the size of a typical migration event.
pub const PAYLOAD_BYTES: usize = 96;
/// The block the raw loop writes before each fdatasync.
pub const RAW_WRITE_BYTES: usize = 64;

/// The raw loop's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawSync {
    /// Write + fdatasync pairs per second.
    pub per_second: f64,
    /// Their median latency.
    pub median: Duration,
}

/// Runs `samples` 64-byte writes, each followed by fdatasync, on a new file in `dir`.
pub fn raw_fdatasync(dir: &Path, samples: usize) -> Result<RawSync, BenchError> {
    std::fs::create_dir_all(dir).map_err(|error| BenchError::io("create directory", dir, error))?;
    let path = dir.join("raw-fdatasync");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|error| BenchError::io("create", &path, error))?;
    let block = [0x5au8; RAW_WRITE_BYTES];
    let samples = samples.max(1);
    let mut latencies = Vec::with_capacity(samples);
    let started = Instant::now();
    for _ in 0..samples {
        let one = Instant::now();
        file.write_all(&block)
            .map_err(|error| BenchError::io("write", &path, error))?;
        file.sync_data()
            .map_err(|error| BenchError::io("fdatasync", &path, error))?;
        latencies.push(one.elapsed());
    }
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&path);
    Ok(RawSync {
        per_second: samples as f64 / elapsed.as_secs_f64(),
        median: median(&mut latencies),
    })
}

/// Like [`raw_fdatasync`], on two files at once: each sample writes 64 bytes to both and
/// fdatasyncs one on a second thread while this one fdatasyncs the other, as a group commit
/// syncs sled's file and the high-water mark. The floor of what the mark costs.
pub fn raw_fdatasync_pair(dir: &Path, samples: usize) -> Result<RawSync, BenchError> {
    std::fs::create_dir_all(dir).map_err(|error| BenchError::io("create directory", dir, error))?;
    let open = |name: &str| {
        let path = dir.join(name);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(|file| (file, path.clone()))
            .map_err(|error| BenchError::io("create", &path, error))
    };
    let (mut first, first_path) = open("raw-pair-data")?;
    let (second, second_path) = open("raw-pair-mark")?;
    let block = [0x5au8; RAW_WRITE_BYTES];
    let samples = samples.max(1);
    let (jobs, job_receiver) = std::sync::mpsc::channel::<()>();
    let (done_sender, done) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let helper = std::thread::spawn(move || {
        let mut second = second;
        for () in job_receiver {
            let result = second.write_all(&block).and_then(|()| second.sync_data());
            if done_sender.send(result).is_err() {
                return;
            }
        }
    });
    let mut latencies = Vec::with_capacity(samples);
    let started = Instant::now();
    let mut failure = None;
    for _ in 0..samples {
        let one = Instant::now();
        if jobs.send(()).is_err() {
            failure = Some(BenchError::Task(
                "the pair's helper thread stopped".to_string(),
            ));
            break;
        }
        let synced = first.write_all(&block).and_then(|()| first.sync_data());
        let helper_synced = done
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the helper thread stopped")));
        if let Err(error) = synced {
            failure = Some(BenchError::io("fdatasync", &first_path, error));
            break;
        }
        if let Err(error) = helper_synced {
            failure = Some(BenchError::io("fdatasync", &second_path, error));
            break;
        }
        latencies.push(one.elapsed());
    }
    let elapsed = started.elapsed();
    drop(jobs);
    let _ = helper.join();
    let _ = std::fs::remove_file(&first_path);
    let _ = std::fs::remove_file(&second_path);
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(RawSync {
        per_second: samples as f64 / elapsed.as_secs_f64(),
        median: median(&mut latencies),
    })
}

/// The median of some durations (zero when empty).
pub fn median(durations: &mut [Duration]) -> Duration {
    if durations.is_empty() {
        return Duration::ZERO;
    }
    durations.sort_unstable();
    durations[durations.len() / 2]
}

fn event(recorded_at_ms: u64) -> NewEvent {
    NewEvent {
        kind: 7,
        recorded_at_ms,
        payload: vec![0xa5; PAYLOAD_BYTES],
    }
}

fn request(
    procedure_id: Uuid,
    expected_next_seq: u64,
    opens: Option<OpenProcedure>,
) -> AppendRequest {
    AppendRequest {
        procedure_id,
        expected_next_seq,
        events: vec![event(expected_next_seq)],
        opens,
        closes: false,
    }
}

/// Events per second with `procedures` tasks each appending 1-event batches durably for
/// `run`, on a new log in `dir` (group commit shares each fdatasync among them).
pub fn durable_throughput(dir: &Path, procedures: usize, run: Duration) -> Result<f64, BenchError> {
    durable_throughput_of(dir, procedures, run, true)
}

/// [`durable_throughput`], with the high-water mark written (`with_mark`) or not: the
/// difference is what the mark costs.
pub fn durable_throughput_of(
    dir: &Path,
    procedures: usize,
    run: Duration,
    with_mark: bool,
) -> Result<f64, BenchError> {
    let runtime = runtime::multi_thread()?;
    let store = Arc::new(SledStore::open(dir, LogOptions::default())?);
    if !with_mark {
        store.stop_writing_the_mark_for_benchmarks();
    }
    throughput_on(&runtime, EventLog::with_store(store), procedures, run)
}

/// Events per second with `procedures` tasks each appending 1-event batches to `log` for
/// `run`, on `runtime` (any store: sled here, PostgreSQL in [`super::pg`]). The procedures
/// open regions 1 to `procedures` first, outside the measured time.
pub fn throughput_on(
    runtime: &tokio::runtime::Runtime,
    log: EventLog,
    procedures: usize,
    run: Duration,
) -> Result<f64, BenchError> {
    let appended = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let elapsed = runtime.block_on(async {
        // Open every procedure first, so the measured appends are all plain ones.
        let mut ids = Vec::with_capacity(procedures);
        let mut opening = tokio::task::JoinSet::new();
        for index in 0..procedures {
            let log = log.clone();
            let procedure_id = Uuid::now_v7();
            ids.push(procedure_id);
            opening.spawn(async move {
                let opens = OpenProcedure {
                    region_id: index as u64 + 1,
                    peers: vec![1, 2],
                };
                log.append(request(procedure_id, 1, Some(opens))).await
            });
        }
        while let Some(joined) = opening.join_next().await {
            appended_ok(joined)?;
        }
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for procedure_id in ids {
            let log = log.clone();
            let appended = Arc::clone(&appended);
            let stop = Arc::clone(&stop);
            tasks.spawn(async move {
                let mut next_seq = 2;
                while !stop.load(Ordering::Relaxed) {
                    log.append(request(procedure_id, next_seq, None)).await??;
                    next_seq += 1;
                    appended.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, AppendFailure>(())
            });
        }
        tokio::time::sleep(run).await;
        stop.store(true, Ordering::Relaxed);
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(failure)) => return Err(failure.into_bench_error()),
                Err(error) => return Err(BenchError::Task(format!("append task: {error}"))),
            }
        }
        Ok::<_, BenchError>(started.elapsed())
    })?;
    Ok(appended.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

/// Latencies of `samples` single-writer durable appends (one procedure, nothing else).
pub fn single_writer_latencies(dir: &Path, samples: usize) -> Result<Vec<Duration>, BenchError> {
    let runtime = runtime::multi_thread()?;
    let log = EventLog::open(dir, LogOptions::default())?;
    runtime.block_on(async {
        let procedure_id = Uuid::now_v7();
        let opens = OpenProcedure {
            region_id: 1,
            peers: vec![1, 2],
        };
        log.append(request(procedure_id, 1, Some(opens)))
            .await?
            .map_err(|conflict| BenchError::Task(conflict.to_string()))?;
        let mut latencies = Vec::with_capacity(samples);
        for next_seq in 2..(samples as u64 + 2) {
            let started = Instant::now();
            log.append(request(procedure_id, next_seq, None))
                .await?
                .map_err(|conflict| BenchError::Task(conflict.to_string()))?;
            latencies.push(started.elapsed());
        }
        Ok(latencies)
    })
}

/// Single-writer durable append latencies on two logs at once, one writing the mark and one
/// not, their samples interleaved so both see the same (shared) disk: `(with, without)`.
pub fn single_writer_latencies_with_and_without_mark(
    dir: &Path,
    samples: usize,
) -> Result<(Vec<Duration>, Vec<Duration>), BenchError> {
    let runtime = runtime::multi_thread()?;
    let with_mark = EventLog::open(&dir.join("with-mark"), LogOptions::default())?;
    let without_mark_store = Arc::new(SledStore::open(
        &dir.join("without-mark"),
        LogOptions::default(),
    )?);
    without_mark_store.stop_writing_the_mark_for_benchmarks();
    let without_mark = EventLog::with_store(without_mark_store);
    runtime.block_on(async {
        let procedure_id = Uuid::now_v7();
        for log in [&with_mark, &without_mark] {
            let opens = OpenProcedure {
                region_id: 1,
                peers: vec![1, 2],
            };
            log.append(request(procedure_id, 1, Some(opens)))
                .await?
                .map_err(|conflict| BenchError::Task(conflict.to_string()))?;
        }
        let mut latencies = (Vec::with_capacity(samples), Vec::with_capacity(samples));
        for next_seq in 2..(samples as u64 + 2) {
            for (log, into) in [
                (&with_mark, &mut latencies.0),
                (&without_mark, &mut latencies.1),
            ] {
                let started = Instant::now();
                log.append(request(procedure_id, next_seq, None))
                    .await?
                    .map_err(|conflict| BenchError::Task(conflict.to_string()))?;
                into.push(started.elapsed());
            }
        }
        Ok(latencies)
    })
}

/// An append that failed inside a task.
enum AppendFailure {
    Log(regmig::log::LogError),
    Conflict(regmig::log::AppendConflict),
}

impl From<regmig::log::LogError> for AppendFailure {
    fn from(error: regmig::log::LogError) -> Self {
        AppendFailure::Log(error)
    }
}

impl From<regmig::log::AppendConflict> for AppendFailure {
    fn from(conflict: regmig::log::AppendConflict) -> Self {
        AppendFailure::Conflict(conflict)
    }
}

impl AppendFailure {
    fn into_bench_error(self) -> BenchError {
        match self {
            AppendFailure::Log(error) => BenchError::Log(error),
            AppendFailure::Conflict(conflict) => {
                BenchError::Task(format!("unexpected append conflict: {conflict}"))
            }
        }
    }
}

type Appended =
    Result<Result<regmig::log::AppendReceipt, regmig::log::AppendConflict>, regmig::log::LogError>;

fn appended_ok(joined: Result<Appended, tokio::task::JoinError>) -> Result<(), BenchError> {
    match joined {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(conflict))) => Err(AppendFailure::Conflict(conflict).into_bench_error()),
        Ok(Err(error)) => Err(BenchError::Log(error)),
        Err(error) => Err(BenchError::Task(format!("append task: {error}"))),
    }
}
