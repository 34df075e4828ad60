//! What the inspect, replay, audit and timeline commands share: opening a data directory
//! for reading, the errors they report (each with its exit code), parsing ids and times,
//! and writing times, durations, tables and JSON.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use super::escape::escape_text;
use super::{DATA_DIR_ENV, DEFAULT_DATA_DIR, EXIT_FAILED, EXIT_USAGE, STORE_ENV};
use regmig::engine::store::{History, LoadError, UndecodableEvent};
use regmig::log::bundle::BundleError;
use regmig::log::{Checkpoint, EventLog, LogError, PgStore, SLED_SUBDIR};
use regmig::pg::PgConfig;

/// Why an inspect, replay, audit or timeline command failed. Every variant names the thing
/// at fault; [`CliError::exit_code`] says whether it was bad usage (2) or a failure (1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The log has no event for this id.
    #[error("no migration with id {procedure_id}")]
    UnknownMigration {
        /// The id asked for.
        procedure_id: Uuid,
    },
    /// The log has no migration of this region.
    #[error("no migration of region {region} in {log}")]
    RegionWithoutMigrations {
        /// The region, "TABLE:NUMBER".
        region: String,
        /// Where the history is: the data directory, or the store without its password.
        log: String,
    },
    /// The text given as a migration id is not a uuid.
    #[error("invalid migration id {text:?}: expected a uuid such as 019b7d6e-2a80-7000-8000-000000000001, or a prefix of one (see `regmig list`)")]
    BadId {
        /// The text given.
        text: String,
    },
    /// No migration id starts with the prefix given.
    #[error("no migration id starts with {prefix:?} (see `regmig list`)")]
    NoIdWithPrefix {
        /// The prefix given.
        prefix: String,
    },
    /// More than one migration id starts with the prefix given.
    #[error("migration id prefix {prefix:?} is ambiguous: it starts {}; give more of the id", candidates.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    AmbiguousId {
        /// The prefix given.
        prefix: String,
        /// Every id it starts, in id order.
        candidates: Vec<Uuid>,
    },
    /// A region ("TABLE:NUMBER") was given where a migration id is expected.
    #[error("{text:?} is a region, not a migration id: `regmig region {text}` shows its route and migrations")]
    RegionGivenAsId {
        /// The text given.
        text: String,
    },
    /// The data directory exists but holds no event log.
    #[error("data directory {} holds no regmig event log ({} does not exist)", dir.display(), dir.join(SLED_SUBDIR).display())]
    NoLog {
        /// The data directory.
        dir: PathBuf,
    },
    /// The event log failed, is damaged, is missing or is in use.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record's payload could not be decoded by this version.
    #[error(transparent)]
    Undecodable(#[from] UndecodableEvent),
    /// A procedure's history does not start with its submission.
    #[error("procedure {procedure_id}: event 1 is {kind}, not Submitted; run `regmig log verify`")]
    NotSubmitted {
        /// The procedure.
        procedure_id: Uuid,
        /// The kind of its first event.
        kind: &'static str,
    },
    /// A bundle file could not be read, or is not a valid bundle.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// An output file could not be written.
    #[error("could not write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The arguments are valid one by one but not together, or out of range.
    #[error("{0}")]
    Usage(String),
    /// An archive (`--archive DIR`) does not read or does not prove what it should.
    #[error(transparent)]
    Archive(#[from] regmig::archive::ArchiveError),
    /// A history could not be loaded for a reason this version of the tools does not know
    /// by name (the core's `LoadError` is non-exhaustive).
    #[error(transparent)]
    Load(LoadError),
}

impl From<LoadError> for CliError {
    fn from(error: LoadError) -> Self {
        match error {
            LoadError::Log(error) => CliError::Log(error),
            LoadError::Undecodable(error) => CliError::Undecodable(error),
            other => CliError::Load(other),
        }
    }
}

impl CliError {
    /// The process exit code: 2 for bad usage, 1 for a failed operation.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadId { .. }
            | CliError::Usage(_)
            | CliError::AmbiguousId { .. }
            | CliError::RegionGivenAsId { .. }
            | CliError::Log(LogError::StoreConfig { .. }) => EXIT_USAGE,
            _ => EXIT_FAILED,
        }
    }

    /// A stable snake_case name for the variant (the `kind` of a `--json` error).
    pub fn kind_name(&self) -> &'static str {
        match self {
            CliError::UnknownMigration { .. } => "unknown_migration",
            CliError::RegionWithoutMigrations { .. } => "region_without_migrations",
            CliError::BadId { .. } => "bad_id",
            CliError::NoIdWithPrefix { .. } => "no_id_with_prefix",
            CliError::AmbiguousId { .. } => "ambiguous_id",
            CliError::RegionGivenAsId { .. } => "region_given_as_id",
            CliError::NoLog { .. } => "no_log",
            CliError::Log(error) => error.kind_name(),
            CliError::Undecodable(_) => "undecodable_event",
            CliError::NotSubmitted { .. } => "not_submitted",
            CliError::Bundle(error) => error.kind_name(),
            CliError::Write { .. } => "write",
            CliError::Usage(_) => "usage",
            CliError::Archive(error) => error.kind_name(),
            CliError::Load(_) => "load_failed",
        }
    }
}

/// Reports `error` (on stderr; with `json`, also as one JSON document on stdout) and
/// returns its exit code.
pub fn report_error(error: &CliError, json: bool) -> u8 {
    print_failure(error.kind_name(), error, json);
    error.exit_code()
}

/// Prints a failure: `error: MESSAGE` on stderr ([`eprint_error`]) and, with `json`, the
/// document `{"ok": false, "error": {"kind": KIND, "message": MESSAGE}}` on stdout.
pub fn print_failure(kind: &str, error: &dyn std::fmt::Display, json: bool) {
    eprint_error(error);
    if json {
        let document = serde_json::json!({
            "ok": false,
            "error": { "kind": kind, "message": error.to_string() },
        });
        print_json(&document);
    }
}

/// Prints `error: MESSAGE` on stderr, on one line: a message may hold what the user typed
/// (a path, an id), whose control characters are written as escapes ([`escape_text`]).
pub fn eprint_error(message: &dyn std::fmt::Display) {
    eprintln!("error: {}", escape_text(&message.to_string()));
}

/// Refuses to write `output` (the `--output` of `what`) inside the data directory `source`
/// reads: the file could replace part of the log (`-o DATA_DIR/sled/db`). A PostgreSQL
/// source has no such directory.
pub fn refuse_output_in_data_dir(
    source: &LogSource,
    output: &Path,
    what: &str,
) -> Result<(), CliError> {
    if source.store.is_none() {
        refuse_inside(output, &source.data_dir, what)?;
    }
    Ok(())
}

/// Refuses `path` (what `what` writes) when it is `data_dir` or inside it.
pub fn refuse_inside(path: &Path, data_dir: &Path, what: &str) -> Result<(), CliError> {
    if regmig::files::is_inside(path, data_dir) {
        return Err(CliError::Usage(format!(
            "{what} {} is inside the data directory {}: writing there could damage the log; choose a path outside it",
            path.display(),
            data_dir.display()
        )));
    }
    Ok(())
}

/// Turns a command's result into its exit code, reporting the error if any.
pub fn finish(result: Result<u8, CliError>, json: bool) -> u8 {
    match result {
        Ok(code) => code,
        Err(error) => report_error(&error, json),
    }
}

/// Where a read command finds the history: a data directory (sled), or a PostgreSQL store.
/// `--data-dir` and `--store` exclude each other; the URL's password never shows (not in
/// `--help`, where the environment's value is hidden, nor in any message).
#[derive(Debug, Clone, clap::Args)]
pub struct LogSource {
    /// The data directory.
    #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Read a PostgreSQL store instead of a data directory:
    /// postgres://USER@HOST[:PORT]/DATABASE[?sslmode=disable|require|verify-full&schema=NAME]
    /// (README, "The PostgreSQL store"). A password in the URL shows in the process list:
    /// prefer --password-file or PGPASSWORD.
    #[arg(long, env = STORE_ENV, hide_env_values = true, value_name = "URL", conflicts_with = "data_dir")]
    pub store: Option<String>,
    /// The store's password: the first line of this file (with --store).
    #[arg(long, value_name = "FILE", requires = "store")]
    pub password_file: Option<PathBuf>,
}

impl LogSource {
    /// The source for a data directory.
    pub fn data_dir(dir: &Path) -> LogSource {
        LogSource {
            data_dir: dir.to_path_buf(),
            store: None,
            password_file: None,
        }
    }

    /// The PostgreSQL configuration, when the source is a store.
    pub fn store_config(&self) -> Result<Option<PgConfig>, LogError> {
        let Some(url) = &self.store else {
            return Ok(None);
        };
        let config = PgConfig::from_url(url)?;
        Ok(Some(match &self.password_file {
            Some(path) => config.password_file(path)?,
            None => config,
        }))
    }

    /// The history's place for messages: the directory, or the store's URL without its
    /// password.
    pub fn describe(&self) -> String {
        match &self.store {
            Some(url) => match PgConfig::from_url(url) {
                Ok(config) => config.redacted(),
                Err(_) => regmig::pg::config::redact_url(url),
            },
            None => self.data_dir.display().to_string(),
        }
    }

    /// Opens the history for reading, writing nothing: see [`open_log`].
    pub fn open(&self) -> Result<EventLog, CliError> {
        let log = match self.store_config()? {
            Some(config) => EventLog::with_store(Arc::new(PgStore::open_read_only(config)?)),
            None => EventLog::open_read_only(&self.data_dir)?,
        };
        if let Some(damage) = log.damage() {
            eprintln!(
                "warning: the event log is damaged; showing what still reads back: {}",
                escape_text(&damage.to_string())
            );
        }
        Ok(log)
    }
}

/// Opens an existing data directory's event log for reading, without writing anything
/// into it (the log reads a private copy of the database). A missing directory, a
/// directory without a regmig log and a directory another process holds are errors that
/// say so (the last at once: the log's lock is never waited for). A damaged log is still
/// read, after one warning line on stderr that says what is wrong and from where. A
/// PostgreSQL store ([`LogSource`]) opens read-only sessions and creates nothing.
pub fn open_log(source: &LogSource) -> Result<EventLog, CliError> {
    source.open()
}

/// The log's archive checkpoint; `None` for a store that cannot be archived (only sled's
/// data directories are: see `regmig log archive`).
pub fn checkpoint_of(log: &EventLog) -> Result<Option<Checkpoint>, LogError> {
    match log.checkpoint() {
        Err(LogError::Unsupported { .. }) => Ok(None),
        other => other,
    }
}

/// Says on stderr, when the log was archived and the command reads the live log only,
/// that older history is archived and where (`--archive DIR` reads it too).
pub fn note_archived_history(log: &EventLog, archive_given: bool) -> Result<(), CliError> {
    if archive_given {
        return Ok(());
    }
    if let Some(checkpoint) = checkpoint_of(log)? {
        eprintln!(
            "note: this log's history up to global seq {} is archived in {}; pass --archive DIR to include it",
            checkpoint.cut_global_seq, checkpoint.archive_dir
        );
    }
    Ok(())
}

/// A migration id as given on the command line: in full, or a prefix to resolve against a
/// log ([`IdArg::resolve`]). Parsed before the log is opened, so bad text is refused
/// (exit 2) without touching the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdArg {
    /// A whole uuid.
    Full(Uuid),
    /// The start of one: as given, and whether it is dashed as uuids are printed.
    Prefix {
        /// The text given (trimmed, lower case).
        text: String,
        /// True when it holds the dashes of the printed form; false for bare hex digits.
        dashed: bool,
    },
}

/// The printed form of a uuid, for checking a dashed prefix: hex digits, dashes at 8, 13,
/// 18 and 23.
const UUID_TEMPLATE: &str = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

/// Parses a migration id, whole or a prefix of its printed form (dashed or not, any case).
/// A region ("1024:2", or a packed region id: a decimal number of 2^32 or more) is refused
/// with a pointer to `regmig region`; a decimal number beyond u64 is no id.
pub fn parse_id_arg(text: &str) -> Result<IdArg, CliError> {
    let trimmed = text.trim();
    if let Ok(procedure_id) = Uuid::parse_str(trimmed) {
        return Ok(IdArg::Full(procedure_id));
    }
    let bad = || CliError::BadId {
        text: text.to_string(),
    };
    let region_given = || CliError::RegionGivenAsId {
        text: trimmed.to_string(),
    };
    if trimmed.contains(':') {
        return Err(match trimmed.parse::<regmig::domain::RegionId>() {
            Ok(_) => region_given(),
            Err(_) => bad(),
        });
    }
    if !trimmed.is_empty() && trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        match trimmed.parse::<u64>() {
            Ok(packed) if packed >> 32 != 0 => return Err(region_given()),
            Ok(_) => {}
            Err(_) => return Err(bad()),
        }
    }
    let lower = trimmed.to_ascii_lowercase();
    let bare =
        !lower.is_empty() && lower.len() < 32 && lower.bytes().all(|b| b.is_ascii_hexdigit());
    let dashed = lower.contains('-')
        && lower.len() < UUID_TEMPLATE.len()
        && lower
            .bytes()
            .zip(UUID_TEMPLATE.bytes())
            .all(|(byte, slot)| {
                if slot == b'-' {
                    byte == b'-'
                } else {
                    byte.is_ascii_hexdigit()
                }
            });
    if bare || dashed {
        Ok(IdArg::Prefix {
            text: lower,
            dashed,
        })
    } else {
        Err(bad())
    }
}

impl IdArg {
    /// The one migration of `log` this id names: a prefix that starts several ids is
    /// refused with them listed (exit 2); one that starts none is
    /// [`CliError::NoIdWithPrefix`] (exit 1).
    pub fn resolve(&self, log: &EventLog) -> Result<Uuid, CliError> {
        let (text, dashed) = match self {
            IdArg::Full(procedure_id) => return Ok(*procedure_id),
            IdArg::Prefix { text, dashed } => (text, *dashed),
        };
        let candidates: Vec<Uuid> = log
            .procedures()?
            .into_iter()
            .filter(|procedure_id| {
                if dashed {
                    procedure_id
                        .hyphenated()
                        .to_string()
                        .starts_with(text.as_str())
                } else {
                    procedure_id.simple().to_string().starts_with(text.as_str())
                }
            })
            .collect();
        match candidates.as_slice() {
            [] => Err(CliError::NoIdWithPrefix {
                prefix: text.clone(),
            }),
            [only] => Ok(*only),
            _ => Err(CliError::AmbiguousId {
                prefix: text.clone(),
                candidates,
            }),
        }
    }
}

/// A procedure's decoded history, with where `regmig log salvage` cut it if it did;
/// [`CliError::UnknownMigration`] when it has no event.
pub fn load_history(log: &EventLog, procedure_id: Uuid) -> Result<History, CliError> {
    let history = regmig::engine::store::load_history(log, procedure_id)?;
    if history.events.is_empty() {
        return Err(CliError::UnknownMigration { procedure_id });
    }
    Ok(history)
}

/// Whether output may be decorated for a person: stdout is a terminal and `NO_COLOR` is
/// not set. Decoration is bold table headers, nothing else; a pipe or a file gets plain
/// text (and no progress output: these commands print none).
pub fn decorate_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Prints one JSON document (pretty, one trailing newline) on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    // Serializing our own plain types cannot fail; a failure would print "null".
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_string());
    print_text(&format!("{text}\n"));
}

/// Prints text on stdout; a write error makes the command exit 1 ([`super::output`]).
pub fn print_text(text: &str) {
    super::output::write_stdout(text);
}

// ---------------------------------------------------------------------------------------------
// Times.
// ---------------------------------------------------------------------------------------------

/// Why a time given on the command line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {text:?}: expected RFC 3339 (2026-01-01T00:00:00Z, 2026-01-01T02:00:00+02:00, 2026-01-01) or milliseconds since the Unix epoch")]
pub struct ParseTimeError {
    /// The text given.
    pub text: String,
}

/// Parses a time as RFC 3339 (a date alone is midnight UTC) or as ms since the Unix epoch.
pub fn parse_time_ms(text: &str) -> Result<u64, ParseTimeError> {
    let error = || ParseTimeError {
        text: text.to_string(),
    };
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        return trimmed.parse::<u64>().map_err(|_| error());
    }
    parse_rfc3339_ms(trimmed).ok_or_else(error)
}

/// Which end of a time range (`--since`, `--until`) a time bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeEnd {
    /// `--since`: a date alone is the start of that day.
    Start,
    /// `--until`: a date alone is the end of that day (the whole day is included).
    End,
}

/// Why a `--since`/`--until` time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {text:?}: expected RFC 3339 (2026-01-01T00:00:00Z, 2026-01-01T02:00:00+02:00), a date (2026-01-01, the whole day), an age (7d, 24h, 90m: that long before now) or milliseconds since the Unix epoch")]
pub struct ParseRangeTimeError {
    /// The text given.
    pub text: String,
}

/// Parses one end of a time range: what [`parse_time_ms`] reads, except that a date alone
/// at the `End` is the last millisecond of that day, and an age ("7d", "24h", "1h 30m") is
/// that long before `now_ms`.
pub fn parse_range_time_ms(
    text: &str,
    end: RangeEnd,
    now_ms: u64,
) -> Result<u64, ParseRangeTimeError> {
    let trimmed = text.trim();
    if let Ok(ms) = parse_time_ms(trimmed) {
        let date_only = trimmed.len() == 10 && trimmed.as_bytes().get(4) == Some(&b'-');
        return Ok(match end {
            RangeEnd::End if date_only => ms + 86_400_000 - 1,
            _ => ms,
        });
    }
    let starts_with_digit = trimmed.bytes().next().is_some_and(|b| b.is_ascii_digit());
    match humantime::parse_duration(trimmed) {
        Ok(age) if starts_with_digit => {
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            Ok(now_ms.saturating_sub(age_ms))
        }
        _ => Err(ParseRangeTimeError {
            text: text.to_string(),
        }),
    }
}

/// The start of a range, or a time something happened before: [`parse_range_time_ms`] at
/// the `Start` (a date alone is midnight UTC at its start; "7d" is seven days before now).
pub fn parse_since_ms(text: &str) -> Result<u64, ParseRangeTimeError> {
    parse_range_time_ms(text, RangeEnd::Start, wall_clock_now_ms())
}

/// Now, in ms since the Unix epoch, from the system clock (what an age is counted back from).
pub fn wall_clock_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if bytes.len() == 10 {
        return u64::try_from(days.checked_mul(86_400_000)?).ok();
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes.len() < 19 {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut index = 19;
    let mut millis = 0i64;
    if bytes.get(index) == Some(&b'.') {
        let start = index + 1;
        let mut end = start;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        // Keep milliseconds; finer digits are dropped.
        let digits = &text[start..end.min(start + 3)];
        millis = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
        index = end;
    }
    let offset_minutes = match bytes.get(index) {
        Some(b'Z' | b'z') if index + 1 == bytes.len() => 0,
        Some(sign @ (b'+' | b'-')) if index + 6 == bytes.len() && bytes[index + 3] == b':' => {
            let hours = number(index + 1..index + 3)?;
            let minutes = number(index + 4..index + 6)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let total_ms =
        days * 86_400_000 + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000 + millis;
    u64::try_from(total_ms).ok()
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A time in ms since the Unix epoch as RFC 3339 in UTC, to the millisecond.
pub fn format_time(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    let (days, in_day_ms) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let seconds = in_day_ms / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        in_day_ms % 1000
    )
}

/// A duration for people: "0ms", "350ms", "12.177s", "2m 05.000s", "3h 02m 05s".
pub fn format_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    } else if ms < 3_600_000 {
        format!("{}m {:02}.{:03}s", ms / 60_000, ms / 1000 % 60, ms % 1000)
    } else {
        format!(
            "{}h {:02}m {:02}s",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60
        )
    }
}

/// A time relative to a start, for people: "+0ms", "+1.500s".
pub fn format_offset(at_ms: u64, start_ms: u64) -> String {
    if at_ms >= start_ms {
        format!("+{}", format_duration(at_ms - start_ms))
    } else {
        format!("-{}", format_duration(start_ms - at_ms))
    }
}

// ---------------------------------------------------------------------------------------------
// Tables.
// ---------------------------------------------------------------------------------------------

/// A plain-text table: a header row and rows, columns padded to their widest cell, two
/// spaces apart; the last column is not padded.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Bold header (on a terminal only, see [`decorate_stdout`]).
    bold_header: bool,
}

impl Table {
    /// A table with these column titles; its header is bold when stdout is a terminal.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|title| title.to_string()).collect(),
            rows: Vec::new(),
            bold_header: decorate_stdout(),
        }
    }

    /// Sets whether the header is bold, whatever stdout is.
    pub fn with_bold_header(mut self, bold_header: bool) -> Self {
        self.bold_header = bold_header;
        self
    }

    /// Adds a row (missing cells are empty, extra ones are dropped). Control characters in
    /// a cell are escaped ([`super::escape`]): a cell stays on its line.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells
            .into_iter()
            .map(|cell| super::escape::escape_text(&cell).into_owned())
            .collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, each line ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths = vec![0usize; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (row_index, row) in std::iter::once(&self.header).chain(&self.rows).enumerate() {
            let bold = row_index == 0 && self.bold_header;
            if bold {
                out.push_str("\u{1b}[1m");
            }
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                if index + 1 == columns {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    let pad = widths[index] - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            if bold {
                out.push_str("\u{1b}[0m");
            }
            out.push('\n');
        }
        out
    }
}

/// `word` as it goes after `count`: "region" for 1, "regions" otherwise. Only for words
/// whose plural adds an "s".
pub fn plural(count: u64, word: &str) -> String {
    if count == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// `count` and `word` after it: "1 region", "2 regions" ([`plural`]).
pub fn counted(count: u64, word: &str) -> String {
    format!("{count} {}", plural(count, word))
}

/// `value` or "-" when absent, for table cells.
pub fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_args_are_whole_ids_prefixes_or_refused() {
        let whole = "019b76da-a800-715b-9d39-b5bf90ae8891";
        assert!(matches!(parse_id_arg(whole), Ok(IdArg::Full(_))));
        let prefix = |text: &str, dashed| {
            Ok::<_, ()>(IdArg::Prefix {
                text: text.to_string(),
                dashed,
            })
        };
        let parsed = |text: &str| parse_id_arg(text).map_err(|_| ());
        assert_eq!(parsed("019B76DA-a8"), prefix("019b76da-a8", true));
        assert_eq!(parsed("019b76daa8"), prefix("019b76daa8", false));
        assert_eq!(parsed("019"), prefix("019", false));
        for bad in ["", "-", "-1", "019b-76da", "xyz", "18446744073709551616"] {
            assert!(
                matches!(parse_id_arg(bad), Err(CliError::BadId { .. })),
                "{bad:?} was accepted"
            );
        }
        for region in ["1024:2", "4402341478402"] {
            assert!(
                matches!(parse_id_arg(region), Err(CliError::RegionGivenAsId { .. })),
                "{region:?} was not taken for a region"
            );
        }
    }

    #[test]
    fn times_round_trip_through_rfc3339() {
        let ms = 1_767_225_612_177;
        assert_eq!(format_time(ms), "2026-01-01T00:00:12.177Z");
        assert_eq!(parse_time_ms("2026-01-01T00:00:12.177Z"), Ok(ms));
        assert_eq!(parse_time_ms("2026-01-01T02:00:12.177+02:00"), Ok(ms));
        assert_eq!(parse_time_ms("2026-01-01"), Ok(1_767_225_600_000));
        assert_eq!(parse_time_ms("1767225612177"), Ok(ms));
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn bad_times_are_refused() {
        for text in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+0200",
            "-5",
        ] {
            assert!(parse_time_ms(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn range_ends_read_whole_days_and_ages() {
        let day_ms = 1_767_225_600_000; // 2026-01-01
        let now_ms = day_ms + 3 * 86_400_000;
        let read = |text, end| parse_range_time_ms(text, end, now_ms);
        assert_eq!(read("2026-01-01", RangeEnd::Start), Ok(day_ms));
        assert_eq!(read("2026-01-01", RangeEnd::End), Ok(day_ms + 86_399_999));
        assert_eq!(
            read("2026-01-01T00:00:12.177Z", RangeEnd::End),
            Ok(1_767_225_612_177)
        );
        assert_eq!(read("1767225612177", RangeEnd::End), Ok(1_767_225_612_177));
        assert_eq!(read("3d", RangeEnd::Start), Ok(day_ms));
        assert_eq!(read("24h", RangeEnd::End), Ok(now_ms - 86_400_000));
        assert_eq!(read("1h 30m", RangeEnd::Start), Ok(now_ms - 5_400_000));
        assert_eq!(read("100000d", RangeEnd::Start), Ok(0));
        for text in ["", "yesterday", "d", "2026-02-30", "7 days ago", "-7d"] {
            assert_eq!(
                read(text, RangeEnd::Start),
                Err(ParseRangeTimeError {
                    text: text.to_string()
                }),
                "{text:?} was accepted"
            );
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(0), "0ms");
        assert_eq!(format_duration(999), "999ms");
        assert_eq!(format_duration(12_177), "12.177s");
        assert_eq!(format_duration(125_000), "2m 05.000s");
        assert_eq!(format_duration(10_925_000), "3h 02m 05s");
    }

    #[test]
    fn counts_take_the_singular_only_for_one() {
        assert_eq!(counted(0, "region"), "0 regions");
        assert_eq!(counted(1, "region"), "1 region");
        assert_eq!(counted(2, "migration"), "2 migrations");
        assert_eq!(plural(1, "attempt"), "attempt");
        assert_eq!(plural(3, "attempt"), "attempts");
    }

    #[test]
    fn tables_pad_all_but_the_last_column() {
        let mut table = Table::new(&["A", "BB", "C"]).with_bold_header(false);
        table.row(vec!["xyz".into(), "1".into(), "last".into()]);
        assert_eq!(table.render(), "A    BB  C\nxyz  1   last\n");
        let bold = table.with_bold_header(true).render();
        assert_eq!(bold, "\u{1b}[1mA    BB  C\u{1b}[0m\nxyz  1   last\n");
    }
}
