//! `regmig cancel ID --actor A --reason R`: an operator's cancel, from the command line.
//!
//! The engine that runs a migration holds its data directory (the log's lock), so another
//! process cannot append to the log. The command therefore records a **cancel request**, a
//! small JSON file in `<data-dir>/cancel-requests/`, written durably (fsync, rename, fsync of
//! the directory), and the engine's host honours it by calling [`Engine::cancel`]; the
//! engine then records the outcome in the log as it records every cancel
//! (`OperatorCancelled` and a rollback, or `CancelRefused`). Two cases:
//!
//! - **No engine holds the directory**: the command reads the log (holding its lock, so no
//!   engine opens meanwhile), refuses at once a cancel the migration cannot take (finished,
//!   already rolling back, or past the new route: spec, "Cancels"), else records the request
//!   and exits 0. The engine honours it when it next opens the directory (`regmig demo`
//!   resuming the campaign does).
//! - **An engine holds it**: the command records the request and waits up to `--wait` for the
//!   engine's answer, a file beside the request: exit 0 when the cancel was taken, 1 when it
//!   was refused (the refusal is in the log) or nobody answered in time (the request is then
//!   withdrawn, unless the engine already took it). The log cannot be read while it is held,
//!   so the id must be given whole.
//!
//! The host side is [`serve`]: `regmig demo` runs it from the moment its engine is open. An
//! embedder that wants CLI cancels runs it beside its own engine.
//!
//! **With `--store URL`** (PostgreSQL) the request is a row of the store's
//! `cancel_requests` table ([`regmig::pg::cancel`]), and the engine leading on the database
//! answers it itself (no host code needed). The shared log can be read while an engine runs,
//! so the command checks the cancel first (refused at once as above; an id prefix works) and
//! then records it: with an engine leading, it waits up to `--wait` for the answer as above;
//! with none, the request waits in the table and the next leader honours it (exit 0,
//! `recorded`).
//!
//! A request for a migration that already has one waiting (or being honoured) is not
//! recorded: the first is kept, and the command says so (exit 0, `recorded`), since the
//! engine takes one cancel per migration and its actor and reason are the first's.
//!
//! Exit codes: 0 the cancel was taken (or, with no engine running, recorded), 1 refused or
//! unanswered, 2 bad input (an invalid or unknown id, a prefix while an engine holds the
//! directory). With `--json` the report has the same keys on every path (`ok`,
//! `procedure_id`, `result`, `message`); bad input is the error document of every command,
//! also when it is the engine that answers that it knows no such migration.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use uuid::Uuid;

use super::common::{
    eprint_error, load_history, parse_id_arg, print_json, report_error, CliError, IdArg, LogSource,
};
use super::escape::escape_text;
use super::{DATA_DIR_ENV, DEFAULT_DATA_DIR, EXIT_FAILED, EXIT_USAGE, STORE_ENV};
use regmig::engine::Engine;
use regmig::log::{EventLog, LogError};
use regmig::migration::{check_cancel, fold};
use regmig::pg::cancel::PgCancelRequests;

/// The directory of pending cancel requests, inside the data directory.
pub const REQUESTS_DIR: &str = "cancel-requests";
/// How often a waiting command looks for the answer, and the host for new requests.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Arguments of `regmig cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The migration: its id, or a unique prefix of it (whole when an engine holds the
    /// directory).
    pub id: String,
    /// Who cancels (recorded in the log with the cancel).
    #[arg(long)]
    pub actor: String,
    /// Why (recorded in the log with the cancel).
    #[arg(long)]
    pub reason: String,
    /// How long to wait for the answer of an engine that holds the directory (e.g. `10s`,
    /// `500ms`).
    #[arg(long, default_value = "10s", value_parser = parse_wait)]
    pub wait: Duration,
    /// The data directory.
    #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Record the request in a PostgreSQL store instead of a data directory, for the engine
    /// that leads on it: postgres://USER@HOST[:PORT]/DATABASE[?sslmode=…&schema=NAME]
    /// (README, "The PostgreSQL store"). Prefer --password-file or PGPASSWORD to a password
    /// in the URL.
    #[arg(long, env = STORE_ENV, hide_env_values = true, value_name = "URL", conflicts_with = "data_dir")]
    pub store: Option<String>,
    /// The store's password: the first line of this file (with --store).
    #[arg(long, value_name = "FILE", requires = "store")]
    pub password_file: Option<PathBuf>,
    /// Print one JSON document instead of text, of one shape whether an engine runs or not:
    /// {"ok", "procedure_id", "result": cancelled|recorded|refused|unanswered, "message"};
    /// bad input (an invalid or unknown id) is {"ok": false, "error": {"kind", "message"}}.
    #[arg(long)]
    pub json: bool,
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("{text:?} is not a duration such as 10s or 500ms: {error}"))
}

/// The request (`<data-dir>/cancel-requests/<id>.json`, or a row of the PostgreSQL store)
/// and the engine's answer (`<id>.answer.json`, or the same row): one shape, in the core.
pub use regmig::engine::{CancelAnswer, CancelOutcome, CancelRequest};

fn requests_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(REQUESTS_DIR)
}

fn request_path(data_dir: &Path, procedure_id: Uuid) -> PathBuf {
    requests_dir(data_dir).join(format!("{procedure_id}.json"))
}

/// Where the host moves a request it is working on, so a command that gives up waiting
/// can tell "not yet taken" (it withdraws the request) from "being honoured".
fn taken_path(data_dir: &Path, procedure_id: Uuid) -> PathBuf {
    requests_dir(data_dir).join(format!("{procedure_id}.taken"))
}

fn answer_path(data_dir: &Path, procedure_id: Uuid) -> PathBuf {
    requests_dir(data_dir).join(format!("{procedure_id}.answer.json"))
}

/// Writes `value` as JSON to `path` durably: a temporary file beside it, fsync, rename,
/// fsync of the directory. Errors name the file.
fn write_durably<T: Serialize>(path: &Path, value: &T) -> Result<(), CliError> {
    write_durably_as(path, value, false).map(|_| ())
}

/// [`write_durably`], but only when `path` does not exist yet (the rename refuses to replace
/// a file, so two commands racing cannot both write it): false when it existed.
fn write_new_durably<T: Serialize>(path: &Path, value: &T) -> Result<bool, CliError> {
    write_durably_as(path, value, true)
}

fn write_durably_as<T: Serialize>(
    path: &Path,
    value: &T,
    new_only: bool,
) -> Result<bool, CliError> {
    let write_error = |source: std::io::Error| CliError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write_error)?;
    let bytes = serde_json::to_vec_pretty(value).map_err(|error| write_error(error.into()))?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
    std::io::Write::write_all(&mut file, &bytes).map_err(write_error)?;
    file.as_file().sync_all().map_err(write_error)?;
    let persisted = if new_only {
        file.persist_noclobber(path)
    } else {
        file.persist(path)
    };
    match persisted {
        Ok(_) => {}
        Err(error) if new_only && error.error.kind() == std::io::ErrorKind::AlreadyExists => {
            return Ok(false)
        }
        Err(error) => return Err(write_error(error.error)),
    }
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(write_error)?;
    Ok(true)
}

/// The request already recorded for `procedure_id` in `data_dir` and not yet answered
/// (waiting, or taken by an engine), if any.
fn request_in_place(data_dir: &Path, procedure_id: Uuid) -> Option<CancelRequest> {
    [
        request_path(data_dir, procedure_id),
        taken_path(data_dir, procedure_id),
    ]
    .iter()
    .find_map(|path| {
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    })
}

/// The report when a request for the migration is already recorded: the first is kept
/// (its actor and reason are what the log will say), this one is not recorded.
fn already_requested(
    procedure_id: Uuid,
    first: Option<&CancelRequest>,
    what_happens: &str,
) -> Report {
    let by = first.map_or_else(String::new, |first| {
        format!(" by {} (reason: {})", first.actor, first.reason)
    });
    Report {
        procedure_id,
        result: "recorded",
        message: format!(
            "a cancel of migration {procedure_id} was already requested{by}; that request is kept and this one was not recorded: {what_happens}"
        ),
        code: 0,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// What the command printed and its exit code.
struct Report {
    procedure_id: Uuid,
    /// `cancelled`, `recorded` (or already requested), `refused`, `unanswered`.
    result: &'static str,
    message: String,
    code: u8,
}

/// Runs `regmig cancel`; returns the exit code.
pub fn run(args: CancelArgs) -> u8 {
    let report = match cancel(&args) {
        Ok(report) => report,
        Err(error) => {
            let code = report_error(&error, args.json);
            // An id the log does not hold is bad input here, as an invalid one is.
            return match error {
                CliError::UnknownMigration { .. } | CliError::NoIdWithPrefix { .. } => EXIT_USAGE,
                _ => code,
            };
        }
    };
    if args.json {
        print_json(&serde_json::json!({
            "ok": report.code == 0,
            "procedure_id": report.procedure_id,
            "result": report.result,
            "message": report.message,
        }));
    } else if report.code == 0 {
        println!("{}", escape_text(&report.message));
    }
    if report.code != 0 {
        eprint_error(&report.message);
    }
    report.code
}

fn cancel(args: &CancelArgs) -> Result<Report, CliError> {
    if args.actor.trim().is_empty() || args.reason.trim().is_empty() {
        return Err(CliError::Usage(
            "--actor and --reason must not be empty: the log records who cancelled and why"
                .to_string(),
        ));
    }
    let id = parse_id_arg(&args.id)?;
    if args.store.is_some() {
        return cancel_in_store(args, &id);
    }
    match EventLog::open_read_only(&args.data_dir) {
        Ok(log) => cancel_offline(args, &id, &log),
        Err(LogError::InUse { .. }) => match id {
            IdArg::Full(procedure_id) => cancel_live(args, procedure_id),
            IdArg::Prefix { .. } => Err(CliError::Usage(format!(
                "an engine holds {}, so its log cannot be read to resolve the id prefix {:?}: give the whole id",
                args.data_dir.display(),
                args.id
            ))),
        },
        Err(error) => Err(error.into()),
    }
}

/// The report of a cancel the migration cannot take, read from the log: it finished, is
/// rolling back or wrote its new route (spec, "Cancels"), or salvage closed it.
fn refusal(log: &EventLog, procedure_id: Uuid) -> Result<Option<Report>, CliError> {
    let history = load_history(log, procedure_id)?;
    let why = match (history.missing_from_seq, check_cancel(&fold(&history.events))) {
        (_, Err(refusal)) => refusal,
        (Some(missing_from_seq), Ok(())) => format!(
            "its history is missing from event {missing_from_seq} on: `regmig log salvage` closed it, so no engine runs it"
        ),
        (None, Ok(())) => return Ok(None),
    };
    Ok(Some(Report {
        procedure_id,
        result: "refused",
        message: format!("cannot cancel migration {procedure_id}: {why}"),
        code: EXIT_FAILED,
    }))
}

/// No engine holds the directory: check the cancel against the log and record it for the
/// next engine to open the directory. `log` (and so the directory's lock) is held until the
/// request is written.
fn cancel_offline(args: &CancelArgs, id: &IdArg, log: &EventLog) -> Result<Report, CliError> {
    let procedure_id = id.resolve(log)?;
    if let Some(refused) = refusal(log, procedure_id)? {
        return Ok(refused);
    }
    let what_happens = format!(
        "no engine holds {}; the next engine to open it cancels the migration (it rolls back and ends aborted)",
        args.data_dir.display()
    );
    let first = request_in_place(&args.data_dir, procedure_id);
    let recorded = first.is_none()
        && write_new_durably(
            &request_path(&args.data_dir, procedure_id),
            &CancelRequest {
                procedure_id,
                actor: args.actor.clone(),
                reason: args.reason.clone(),
                requested_at_ms: now_ms(),
                awaited: false,
            },
        )?;
    if !recorded {
        let first = first.or_else(|| request_in_place(&args.data_dir, procedure_id));
        return Ok(already_requested(
            procedure_id,
            first.as_ref(),
            &what_happens,
        ));
    }
    Ok(Report {
        procedure_id,
        result: "recorded",
        message: format!("cancel of migration {procedure_id} recorded: {what_happens}"),
        code: 0,
    })
}

/// An engine holds the directory: record the request and wait for its answer.
fn cancel_live(args: &CancelArgs, procedure_id: Uuid) -> Result<Report, CliError> {
    let what_happens = format!(
        "the engine holding {} answers it (the command that recorded it waits for the answer); see `regmig show {procedure_id}` once the engine lets go of the directory",
        args.data_dir.display()
    );
    // Another command's request, waiting or being honoured: its answer is that command's.
    if let Some(first) = request_in_place(&args.data_dir, procedure_id) {
        return Ok(already_requested(procedure_id, Some(&first), &what_happens));
    }
    let answer_file = answer_path(&args.data_dir, procedure_id);
    // A stale answer of an earlier request must not pass for this one's.
    let _ = std::fs::remove_file(&answer_file);
    let request_file = request_path(&args.data_dir, procedure_id);
    let recorded = write_new_durably(
        &request_file,
        &CancelRequest {
            procedure_id,
            actor: args.actor.clone(),
            reason: args.reason.clone(),
            requested_at_ms: now_ms(),
            awaited: true,
        },
    )?;
    if !recorded {
        let first = request_in_place(&args.data_dir, procedure_id);
        return Ok(already_requested(
            procedure_id,
            first.as_ref(),
            &what_happens,
        ));
    }
    let mut deadline = Instant::now() + args.wait;
    let mut withdrawn_tried = false;
    loop {
        if let Some(answer) = read_answer(&answer_file)? {
            let _ = std::fs::remove_file(&answer_file);
            return report_of(procedure_id, &answer);
        }
        if Instant::now() >= deadline {
            if withdrawn_tried {
                return Ok(Report {
                    procedure_id,
                    result: "unanswered",
                    message: format!(
                        "the engine holding {} took the cancel of migration {procedure_id} but did not answer within {}; see `regmig show {procedure_id}` once it lets go of the directory",
                        args.data_dir.display(),
                        humantime::format_duration(args.wait * 2)
                    ),
                    code: EXIT_FAILED,
                });
            }
            match std::fs::remove_file(&request_file) {
                Ok(()) => {
                    return Ok(Report {
                        procedure_id,
                        result: "unanswered",
                        message: format!(
                            "the engine holding {} did not take the cancel of migration {procedure_id} within {} (does its host serve cancel requests?); the request was withdrawn",
                            args.data_dir.display(),
                            humantime::format_duration(args.wait)
                        ),
                        code: EXIT_FAILED,
                    })
                }
                // Taken by the engine: its answer is on its way.
                Err(_) => {
                    withdrawn_tried = true;
                    deadline = Instant::now() + args.wait;
                }
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// With `--store`: check the cancel against the shared log (readable while an engine runs),
/// record the request in the store's `cancel_requests` table, and, while an engine leads,
/// wait up to `--wait` for its answer (withdrawing the request if no engine took it by
/// then). With no engine leading, the request waits for the next leader.
fn cancel_in_store(args: &CancelArgs, id: &IdArg) -> Result<Report, CliError> {
    let source = LogSource {
        data_dir: args.data_dir.clone(),
        store: args.store.clone(),
        password_file: args.password_file.clone(),
    };
    let Some(config) = source.store_config()? else {
        return Err(CliError::Usage("--store is required here".to_string()));
    };
    let log = source.open()?;
    let procedure_id = id.resolve(&log)?;
    let refused = refusal(&log, procedure_id)?;
    drop(log);
    if let Some(refused) = refused {
        return Ok(refused);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::Usage(format!("cannot start a runtime: {error}")))?;
    let wait = args.wait;
    let request = CancelRequest {
        procedure_id,
        actor: args.actor.clone(),
        reason: args.reason.clone(),
        requested_at_ms: now_ms(),
        awaited: true,
    };
    runtime.block_on(record_in_store(config, request, wait))
}

/// Records `request` in the store of `config` and waits up to `wait` for the answer of the
/// engine leading there (see [`cancel_in_store`]).
async fn record_in_store(
    config: regmig::pg::PgConfig,
    request: CancelRequest,
    wait: Duration,
) -> Result<Report, CliError> {
    let procedure_id = request.procedure_id;
    let location = config.redacted();
    let requests = PgCancelRequests::new(config)?;
    let request_id = requests.request(&request).await?;
    if !requests.engine_running().await? {
        return Ok(Report {
            procedure_id,
            result: "recorded",
            message: format!(
                "cancel of migration {procedure_id} recorded as request {request_id}: no engine leads on {location}; the next leader cancels the migration (it rolls back and ends aborted)"
            ),
            code: 0,
        });
    }
    if let Some(answer) = requests.wait_answer(request_id, wait).await? {
        return report_of(procedure_id, &answer);
    }
    if requests.withdraw(request_id).await? {
        return Ok(Report {
            procedure_id,
            result: "unanswered",
            message: format!(
                "the engine leading on {location} did not take the cancel of migration {procedure_id} within {}; the request was withdrawn",
                humantime::format_duration(wait)
            ),
            code: EXIT_FAILED,
        });
    }
    // Taken: its answer is on its way.
    match requests.wait_answer(request_id, wait).await? {
        Some(answer) => report_of(procedure_id, &answer),
        None => Ok(Report {
            procedure_id,
            result: "unanswered",
            message: format!(
                "the engine leading on {location} took the cancel of migration {procedure_id} (request {request_id}) but did not answer within {}; see `regmig show {procedure_id} --store …`",
                humantime::format_duration(wait * 2)
            ),
            code: EXIT_FAILED,
        }),
    }
}

fn read_answer(path: &Path) -> Result<Option<CancelAnswer>, CliError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            CliError::Usage(format!("{}: not a cancel answer: {error}", path.display()))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CliError::Write {
            path: path.to_path_buf(),
            source: error,
        }),
    }
}

/// The engine's answer as the command reports it. An id the engine does not know is bad
/// input, reported as an error, as it is when the command reads the log itself: the output
/// does not depend on whether an engine ran.
fn report_of(procedure_id: Uuid, answer: &CancelAnswer) -> Result<Report, CliError> {
    match answer.outcome {
        CancelOutcome::Cancelled => Ok(Report {
            procedure_id,
            result: "cancelled",
            message: format!("migration {procedure_id} cancelled: it rolls back and ends aborted"),
            code: 0,
        }),
        CancelOutcome::Refused => Ok(Report {
            procedure_id,
            result: "refused",
            message: format!("cannot cancel migration {procedure_id}: {}", answer.reason),
            code: EXIT_FAILED,
        }),
        CancelOutcome::UnknownMigration => Err(CliError::UnknownMigration { procedure_id }),
    }
}

/// The requests recorded in `data_dir` and not yet taken, oldest first. Unreadable files
/// are skipped with a warning naming them (a request half-written by a crash is never
/// seen: requests are renamed into place).
pub fn pending_requests(data_dir: &Path) -> Vec<CancelRequest> {
    let dir = requests_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut requests = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if Uuid::parse_str(stem).is_err() {
            continue; // an answer, or a file of someone else's
        }
        match std::fs::read(&path)
            .map_err(|error| error.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<CancelRequest>(&bytes).map_err(|error| error.to_string())
            }) {
            Ok(request) => requests.push(request),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "skipping an unreadable cancel request")
            }
        }
    }
    requests.sort_by_key(|request| request.requested_at_ms);
    requests
}

/// Honours every pending request of `data_dir` on `engine`: takes it (so a command that
/// gives up cannot withdraw it any more), cancels, answers when someone waits, and removes
/// it. Returns the requests honoured with their answers.
pub async fn honour_pending(engine: &Engine, data_dir: &Path) -> Vec<CancelAnswer> {
    let mut answers = Vec::new();
    for request in take_pending(data_dir) {
        let result = engine
            .cancel(request.procedure_id, &request.actor, &request.reason)
            .await;
        let answer = CancelAnswer::of(request.procedure_id, &result);
        answer_taken(data_dir, &request, &answer);
        answers.push(answer);
    }
    answers
}

/// Takes every pending request of `data_dir` (so a command that gives up cannot withdraw
/// it any more), those a previous host took without answering included: for
/// [`EngineConfig::cancels_on_open`](regmig::engine::EngineConfig::cancels_on_open), before
/// the engine opens. Each must then be answered with [`answer_taken`].
pub fn take_pending(data_dir: &Path) -> Vec<CancelRequest> {
    requeue_taken(data_dir);
    pending_requests(data_dir)
        .into_iter()
        .filter(|request| {
            let procedure_id = request.procedure_id;
            // A request withdrawn meanwhile is gone.
            std::fs::rename(
                request_path(data_dir, procedure_id),
                taken_path(data_dir, procedure_id),
            )
            .is_ok()
        })
        .collect()
}

/// Answers a taken request (an answer file when someone waits for it) and removes it.
pub fn answer_taken(data_dir: &Path, request: &CancelRequest, answer: &CancelAnswer) {
    let procedure_id = request.procedure_id;
    tracing::info!(%procedure_id, actor = %request.actor, outcome = ?answer.outcome, "cancel request honoured");
    if request.awaited {
        if let Err(error) = write_durably(&answer_path(data_dir, procedure_id), answer) {
            tracing::warn!(%error, "cannot answer a cancel request");
        }
    }
    let _ = std::fs::remove_file(taken_path(data_dir, procedure_id));
}

/// Puts back the requests a previous host took but may not have honoured (it stopped
/// between taking and answering): honouring one twice is harmless, the second is refused
/// as already rolling back.
fn requeue_taken(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(requests_dir(data_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(procedure_id) = name
            .to_string_lossy()
            .strip_suffix(".taken")
            .and_then(|stem| Uuid::parse_str(stem).ok())
        else {
            continue;
        };
        let request = request_path(data_dir, procedure_id);
        if !request.exists() {
            let _ = std::fs::rename(entry.path(), request);
        }
    }
}

/// Serves cancel requests for `engine`, the holder of `data_dir`, until the returned future
/// is dropped: the ones recorded while no engine ran (and any a previous host took without
/// answering) at once, then each new one as it
/// appears (a thread looks for them every 50ms of wall time, so a runtime in paused virtual
/// time is not woken by it).
pub async fn serve(engine: &Engine, data_dir: &Path) -> std::convert::Infallible {
    requeue_taken(data_dir);
    let wake = Arc::new(tokio::sync::Notify::new());
    let watcher = Watcher::start(requests_dir(data_dir), wake.clone());
    loop {
        honour_pending(engine, data_dir).await;
        wake.notified().await;
        let _ = &watcher;
    }
}

/// The thread that looks for new requests; stopped when dropped.
struct Watcher {
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn start(dir: PathBuf, wake: Arc<tokio::sync::Notify>) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("regmig-cancel-requests".to_string())
            .spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    let pending = std::fs::read_dir(&dir).is_ok_and(|entries| {
                        entries.flatten().any(|entry| {
                            entry
                                .file_name()
                                .to_string_lossy()
                                .strip_suffix(".json")
                                .is_some_and(|stem| Uuid::parse_str(stem).is_ok())
                        })
                    });
                    if pending {
                        wake.notify_one();
                    }
                    std::thread::sleep(POLL_INTERVAL);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot watch for cancel requests; they are honoured at the next open");
        }
        Watcher { stop }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
