//! Crash tests: a child process (this test binary, re-executed) appends in a loop and prints
//! every acknowledged append; the parent SIGKILLs it at random moments, reopens the log and
//! checks that every acknowledged event is there, valid, without gaps, and that the indexes
//! agree with the events.
//!
//! - `process_kill_loses_no_acknowledged_event`: a process crash (the page cache survives).
//! - `machine_crash_loses_no_acknowledged_event`: the same under `shared/tools/powerloss`,
//!   which rolls back every write no fsync covered, as a power cut would.
//!
//! Reproduce a run with `REGMIG_CRASH_SEED=<seed printed by the test>`.

mod log_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use log_support::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use regmig::log::{AppendRequest, EventLog, LogOptions};
use uuid::Uuid;

/// The child's test name, run with `--exact --ignored`.
const CHILD_TEST: &str = "crash_child_appends_until_killed";
const ENV_CHILD_DIR: &str = "REGMIG_LOG_CRASH_CHILD_DIR";
const ENV_CHILD_ROUND: &str = "REGMIG_LOG_CRASH_ROUND";
const PROCESS_KILL_ROUNDS: u64 = 24;
const MACHINE_CRASH_ROUNDS: u64 = 8;
/// Async writers in the child, beside one writer on a plain thread using append_blocking.
const CHILD_ASYNC_WRITERS: u64 = 4;
/// The child stops by itself after this long, if nobody kills it.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(60);
/// How long the parent waits for the child's acknowledgements before giving up.
const ACK_WAIT_MAX: Duration = Duration::from_secs(60);

/// The child: appends to several procedures (opening, continuing and closing them) and
/// prints `ack <procedure> <region> <last_seq> <closed>` after every acknowledged append.
#[test]
#[ignore = "the child process of the crash tests, which run it with --ignored"]
fn crash_child_appends_until_killed() {
    let Some(dir) = std::env::var_os(ENV_CHILD_DIR) else {
        eprintln!("{CHILD_TEST}: {ENV_CHILD_DIR} is not set, so this is not a crash-test child: nothing to do");
        return;
    };
    let round: u64 = std::env::var(ENV_CHILD_ROUND)
        .ok()
        .and_then(|round| round.parse().ok())
        .expect("the round number");
    let log = EventLog::open(Path::new(&dir), LogOptions::default()).expect("open the log");
    let stdout_lock = Arc::new(Mutex::new(()));
    let deadline = Instant::now() + CHILD_LIFETIME_MAX;
    let blocking_writer = {
        let log = log.clone();
        let stdout_lock = Arc::clone(&stdout_lock);
        std::thread::spawn(move || {
            let mut writer = ChildWriter::new(round, CHILD_ASYNC_WRITERS, stdout_lock);
            while Instant::now() < deadline {
                let request = writer.next_request();
                let receipt = log
                    .append_blocking(request)
                    .expect("append")
                    .expect("no conflict");
                writer.acknowledged(receipt.last_seq);
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for writer_index in 0..CHILD_ASYNC_WRITERS {
            let log = log.clone();
            let stdout_lock = Arc::clone(&stdout_lock);
            tasks.push(tokio::spawn(async move {
                let mut writer = ChildWriter::new(round, writer_index, stdout_lock);
                while Instant::now() < deadline {
                    let request = writer.next_request();
                    let receipt = log
                        .append(request)
                        .await
                        .expect("append")
                        .expect("no conflict");
                    writer.acknowledged(receipt.last_seq);
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer task");
        }
    });
    blocking_writer.join().expect("blocking writer");
}

/// One writer of the child: a sequence of procedures of 2 to 7 batches of 1 to 3 events.
struct ChildWriter {
    rng: SmallRng,
    round: u64,
    writer_index: u64,
    procedures_started: u64,
    current: Option<CurrentProcedure>,
    stdout_lock: Arc<Mutex<()>>,
}

struct CurrentProcedure {
    procedure_id: Uuid,
    region_id: u64,
    next_seq: u64,
    batches_left: u64,
    closing: bool,
}

impl ChildWriter {
    fn new(round: u64, writer_index: u64, stdout_lock: Arc<Mutex<()>>) -> Self {
        ChildWriter {
            rng: SmallRng::seed_from_u64(round * 1000 + writer_index),
            round,
            writer_index,
            procedures_started: 0,
            current: None,
            stdout_lock,
        }
    }

    fn next_request(&mut self) -> AppendRequest {
        let count = self.rng.gen_range(1..=3);
        if self.current.is_none() {
            let region_id =
                self.round * 1_000_000 + self.writer_index * 10_000 + self.procedures_started;
            self.procedures_started += 1;
            self.current = Some(CurrentProcedure {
                procedure_id: Uuid::now_v7(),
                region_id,
                next_seq: 1,
                batches_left: self.rng.gen_range(2..=7),
                closing: false,
            });
        }
        let current = self.current.as_mut().expect("a current procedure");
        current.batches_left -= 1;
        current.closing = current.batches_left == 0;
        if current.next_seq == 1 {
            AppendRequest {
                closes: current.closing,
                ..first_append(
                    current.procedure_id,
                    count,
                    current.region_id,
                    vec![self.writer_index, 100 + self.writer_index],
                )
            }
        } else {
            next_append(
                current.procedure_id,
                current.next_seq,
                count,
                current.closing,
            )
        }
    }

    fn acknowledged(&mut self, last_seq: u64) {
        let current = self.current.as_mut().expect("a current procedure");
        current.next_seq = last_seq + 1;
        {
            let _line = self
                .stdout_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "ack {} {} {} {}",
                current.procedure_id,
                current.region_id,
                last_seq,
                u8::from(current.closing)
            )
            .and_then(|()| stdout.flush())
            .expect("print an acknowledgement");
        }
        if current.closing {
            self.current = None;
        }
    }
}

/// What the parent knows was acknowledged for one procedure.
#[derive(Debug, Clone, Copy)]
struct Acknowledged {
    region_id: u64,
    last_seq: u64,
    closed: bool,
}

/// The powerloss tool, built for this run.
struct Powerloss {
    library: PathBuf,
    apply_script: PathBuf,
    _build_dir: tempfile::TempDir,
}

fn parse_ack(line: &str) -> Option<(Uuid, Acknowledged)> {
    let mut fields = line.strip_prefix("ack ")?.split(' ');
    let procedure_id = fields.next()?.parse().ok()?;
    let region_id = fields.next()?.parse().ok()?;
    let last_seq = fields.next()?.parse().ok()?;
    let closed = fields.next()? == "1";
    fields.next().is_none().then_some((
        procedure_id,
        Acknowledged {
            region_id,
            last_seq,
            closed,
        },
    ))
}

fn seed() -> u64 {
    std::env::var("REGMIG_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| rand::random::<u32>() as u64)
}

fn spawn_child(
    dir: &Path,
    round: u64,
    stderr_path: &Path,
    powerloss: Option<(&Powerloss, &Path)>,
) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([
            "--exact",
            CHILD_TEST,
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ENV_CHILD_DIR, dir)
        .env(ENV_CHILD_ROUND, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr_path).expect("child stderr file"));
    if let Some((powerloss, undo_log)) = powerloss {
        command
            .env("LD_PRELOAD", &powerloss.library)
            .env("POWERLOSS_DIR", dir)
            .env("POWERLOSS_UNDO", undo_log);
    }
    command.spawn().expect("spawn the crash-test child")
}

/// Runs `rounds` rounds of: child appends, SIGKILL at a random moment, (roll back unsynced
/// writes,) reopen and check every acknowledged event.
fn crash_rounds(test_name: &str, rounds: u64, powerloss: Option<&Powerloss>) {
    let seed = seed();
    println!("{test_name}: seed {seed} (rerun with REGMIG_CRASH_SEED={seed})");
    let mut rng = SmallRng::seed_from_u64(seed);
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("data");
    let undo_log = work.path().join("powerloss.undo");
    let stderr_path = work.path().join("child.stderr");
    let mut acknowledged: BTreeMap<Uuid, Acknowledged> = BTreeMap::new();
    let mut total_acks = 0u64;

    for round in 0..rounds {
        let mut child = spawn_child(
            &dir,
            round,
            &stderr_path,
            powerloss.map(|tool| (tool, undo_log.as_path())),
        );
        let child_stdout = child.stdout.take().expect("child stdout");
        let (lines, received) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(child_stdout);
            let mut line = Vec::new();
            // Only whole lines count: the kill may cut the last one short.
            while reader
                .read_until(b'\n', &mut line)
                .map(|read| read > 0)
                .unwrap_or(false)
            {
                if line.ends_with(b"\n") {
                    let _ = lines.send(String::from_utf8_lossy(&line).trim_end().to_string());
                }
                line.clear();
            }
        });

        let mut round_acks = Vec::new();
        // Most rounds kill mid-append after some acknowledgements; some kill during start-up.
        if round % 6 == 5 {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
        } else {
            let acks_wanted = rng.gen_range(3..60);
            let waited_since = Instant::now();
            while round_acks.len() < acks_wanted {
                match received.recv_timeout(Duration::from_millis(100)) {
                    Ok(line) => round_acks.extend(parse_ack(&line)),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        panic!(
                            "round {round}: the child stopped: {}",
                            std::fs::read_to_string(&stderr_path).unwrap_or_default()
                        )
                    }
                }
                assert!(
                    waited_since.elapsed() < ACK_WAIT_MAX,
                    "round {round}: no acknowledgements from the child: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..20_000)));
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        reader.join().expect("stdout reader");
        round_acks.extend(received.try_iter().filter_map(|line| parse_ack(&line)));
        total_acks += round_acks.len() as u64;
        for (procedure_id, ack) in round_acks {
            let entry = acknowledged.entry(procedure_id).or_insert(ack);
            entry.last_seq = entry.last_seq.max(ack.last_seq);
            entry.closed |= ack.closed;
        }

        if let Some(tool) = powerloss {
            if undo_log.exists() {
                let output = Command::new("python3")
                    .arg(&tool.apply_script)
                    .arg(&undo_log)
                    .output()
                    .expect("run apply.py");
                assert!(
                    output.status.success(),
                    "apply.py failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                println!(
                    "round {round}: {}",
                    String::from_utf8_lossy(&output.stdout).trim()
                );
                std::fs::remove_file(&undo_log).expect("remove the undo log");
            }
        }
        check_acknowledged_events(&dir, round, &acknowledged);
    }
    assert!(
        total_acks > rounds,
        "the children acknowledged too little to test anything ({total_acks})"
    );
    println!("{test_name}: {rounds} rounds, {total_acks} acknowledged appends, {} procedures, all present", acknowledged.len());
}

fn check_acknowledged_events(dir: &Path, round: u64, acknowledged: &BTreeMap<Uuid, Acknowledged>) {
    if acknowledged.is_empty() && !dir.join(regmig::log::SLED_SUBDIR).exists() {
        return;
    }
    let log = EventLog::open_existing(dir, LogOptions::default()).expect("reopen after the crash");
    let open: BTreeMap<Uuid, u64> = log
        .open_procedures()
        .expect("open index")
        .into_iter()
        .collect();
    for (procedure_id, ack) in acknowledged {
        let records = log
            .procedure_events(*procedure_id, 1)
            .unwrap_or_else(|error| panic!("round {round}: procedure {procedure_id}: {error}"));
        assert!(
            records.len() as u64 >= ack.last_seq,
            "round {round}: procedure {procedure_id} acknowledged up to seq {} but only {} events survived",
            ack.last_seq,
            records.len()
        );
        assert_events_are_the_written_ones(*procedure_id, &records);
        let audited = log
            .procedures_by_region(ack.region_id, 0, u64::MAX)
            .expect("region audit");
        assert!(
            audited.iter().any(|(_, id)| id == procedure_id),
            "round {round}: {procedure_id} not in its region's audit index"
        );
        match open.get(procedure_id) {
            Some(region_id) => {
                assert!(
                    !ack.closed,
                    "round {round}: {procedure_id} was closed but is still open"
                );
                assert_eq!(*region_id, ack.region_id);
            }
            None => assert!(
                ack.closed || records.len() as u64 > ack.last_seq,
                "round {round}: {procedure_id} left the open index without its closing batch"
            ),
        }
    }
    assert_log_consistent(&log);
}

#[test]
fn process_kill_loses_no_acknowledged_event() {
    crash_rounds(
        "process_kill_loses_no_acknowledged_event",
        PROCESS_KILL_ROUNDS,
        None,
    );
}

/// Builds the powerloss shim, or says why this machine cannot.
fn build_powerloss() -> Result<Powerloss, String> {
    let tool_dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/tools/powerloss"
    ));
    if !tool_dir.join("build.sh").exists() {
        return Err(format!("{} not found", tool_dir.display()));
    }
    for (program, argument) in [("cc", "--version"), ("python3", "--version")] {
        let found = Command::new(program)
            .arg(argument)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false);
        if !found {
            return Err(format!("`{program}` is not available"));
        }
    }
    let build_dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let library = build_dir.path().join("libpowerloss.so");
    let output = Command::new("sh")
        .arg(tool_dir.join("build.sh"))
        .arg(&library)
        .output()
        .map_err(|error| format!("build.sh: {error}"))?;
    if !output.status.success() || !library.exists() {
        return Err(format!(
            "build.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(Powerloss {
        library,
        apply_script: tool_dir.join("apply.py"),
        _build_dir: build_dir,
    })
}

#[test]
fn machine_crash_loses_no_acknowledged_event() {
    match build_powerloss() {
        Ok(powerloss) => crash_rounds(
            "machine_crash_loses_no_acknowledged_event",
            MACHINE_CRASH_ROUNDS,
            Some(&powerloss),
        ),
        Err(reason) => println!("machine_crash_loses_no_acknowledged_event: skipped: {reason}"),
    }
}
