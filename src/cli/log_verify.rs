//! `regmig log verify --data-dir DIR [--json]`: checks every record and index entry of a
//! data directory's event log and names every problem. Exit 0 when clean, 1 otherwise.
//! With `--archive ARCHIVE_DIR` it also proves that the archive joins the live log without
//! a gap ([`regmig::archive::verify_archive`]); an archive that does not is a problem.
//! It prints the chain head (`GLOBAL_SEQ:HASH`); `--expect-head` takes one printed earlier and
//! checks that the history up to it is unchanged: the chain hash there is the same (exit 1
//! when not, naming the first broken link when the damage left one).

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use regmig::archive::{verify_archive, ArchiveError};
use regmig::log::keys::hex;
use regmig::log::{
    chain_hash, encode_record, ChainHash, EventLog, LogError, PgStore, VerifyReport, CHAIN_START,
};

use super::common::{checkpoint_of, counted, eprint_error, CliError, LogSource};
use super::EXIT_FAILED;

/// A chain head written down earlier: a chain hash, and where it was (`GLOBAL_SEQ:HASH`, as
/// `log verify` prints it) when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedHead {
    /// The global seq of the record whose chain hash it is, when given.
    pub global_seq: Option<u64>,
    /// The chain hash.
    pub hash: ChainHash,
}

/// Why an `--expect-head` value is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHeadError {
    /// Not `GLOBAL_SEQ:HASH` or `HASH`.
    #[error("invalid chain head {text:?}: expected GLOBAL_SEQ:HASH or HASH, the hash as 64 hex digits (as `regmig log verify` prints it)")]
    Malformed {
        /// The text given.
        text: String,
    },
    /// `0:HASH`: global seqs count from 1, so no record's chain hash is at 0.
    #[error("invalid chain head {text:?}: global seq 0 names no record (global seqs count from 1), so there is no history up to it to check; give a head `regmig log verify` printed")]
    GlobalSeqZero {
        /// The text given.
        text: String,
    },
}

/// Parses `GLOBAL_SEQ:HASH` or `HASH`.
pub fn parse_expected_head(text: &str) -> Result<ExpectedHead, ParseHeadError> {
    let error = || ParseHeadError::Malformed {
        text: text.to_string(),
    };
    let trimmed = text.trim();
    let (global_seq, hash_text) = match trimmed.split_once(':') {
        Some((seq, hash)) => (Some(seq.parse::<u64>().map_err(|_| error())?), hash),
        None => (None, trimmed),
    };
    if global_seq == Some(0) {
        return Err(ParseHeadError::GlobalSeqZero {
            text: text.to_string(),
        });
    }
    if hash_text.len() != 64 || !hash_text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(error());
    }
    let mut hash = ChainHash::default();
    for (index, byte) in hash.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(&hash_text[index * 2..index * 2 + 2], 16).map_err(|_| error())?;
    }
    Ok(ExpectedHead { global_seq, hash })
}

/// Where the chain first breaks: a record whose `prev_hash` is not the chain hash of the
/// record before it, so one of the two was changed (or records were removed or reordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BrokenLink {
    global_seq: u64,
    procedure_id: uuid::Uuid,
    seq: u64,
}

/// What checking an expected head came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeadCheck {
    /// The chain hash at `global_seq` is the expected one and every link up to it holds: the
    /// history up to it is unchanged.
    Unchanged {
        global_seq: u64,
        appended_since: u64,
    },
    /// The chain hash at `global_seq` is `actual`, or a link before it is broken.
    Changed {
        global_seq: u64,
        actual: ChainHash,
        broken: Option<BrokenLink>,
    },
    /// No record's chain hash is the expected one (no global seq was given).
    NotFound { broken: Option<BrokenLink> },
    /// The check cannot be made here: the reason.
    Cannot(String),
}

impl HeadCheck {
    fn holds(&self) -> bool {
        matches!(self, HeadCheck::Unchanged { .. })
    }
}

/// Records read at once while walking the chain.
const CHAIN_PAGE_RECORDS: usize = 4096;

/// Walks the live log in global order, checking every link, and compares the expected head
/// with the chain hash at its global seq (or, without one, looks for it).
fn check_head(
    log: &EventLog,
    report: &VerifyReport,
    expected: ExpectedHead,
) -> Result<HeadCheck, LogError> {
    if report.chain.chained_from_global_seq.is_none() && report.chain.records > 0 {
        return Ok(HeadCheck::Cannot(
            "this log has no hash chain (format version 1 records only)".to_string(),
        ));
    }
    let head_global_seq = report
        .chain
        .head_global_seq
        .max(report.archived_to_global_seq);
    let (cut_global_seq, hash_at_cut) = checkpoint_of(log)?
        .map_or((0, CHAIN_START), |checkpoint| {
            (checkpoint.cut_global_seq, checkpoint.hash_at_cut)
        });
    if let Some(seq) = expected.global_seq {
        if seq < cut_global_seq {
            return Ok(HeadCheck::Cannot(format!(
                "global seq {seq} is archived (the live log starts after global seq {cut_global_seq}): check it against the archive's manifests"
            )));
        }
        if seq > head_global_seq {
            return Ok(HeadCheck::Cannot(format!(
                "the log ends at global seq {head_global_seq}, before global seq {seq}: records were removed, or the head is another log's"
            )));
        }
    }
    // The hash at the cut stands for the archived history; the live log chains to it.
    let judge =
        |global_seq: u64, hash: ChainHash, broken: Option<BrokenLink>| -> Option<HeadCheck> {
            let here = match expected.global_seq {
                Some(seq) => seq == global_seq,
                None => hash == expected.hash,
            };
            here.then(|| match broken {
                None if hash == expected.hash => HeadCheck::Unchanged {
                    global_seq,
                    appended_since: head_global_seq - global_seq,
                },
                _ => HeadCheck::Changed {
                    global_seq,
                    actual: hash,
                    broken,
                },
            })
        };
    if cut_global_seq > 0 {
        if let Some(check) = judge(cut_global_seq, hash_at_cut, None) {
            return Ok(check);
        }
    }
    let mut prev_hash = hash_at_cut;
    let mut broken = None;
    let mut next = cut_global_seq + 1;
    loop {
        let page = log.events_from(next, CHAIN_PAGE_RECORDS)?;
        let Some(last) = page.last() else {
            return Ok(HeadCheck::NotFound { broken });
        };
        next = last.global_seq + 1;
        for record in &page {
            if record.prev_hash.is_some_and(|stored| stored != prev_hash) && broken.is_none() {
                broken = Some(BrokenLink {
                    global_seq: record.global_seq,
                    procedure_id: record.procedure_id,
                    seq: record.seq,
                });
            }
            prev_hash = chain_hash(&encode_record(record));
            if let Some(check) = judge(record.global_seq, prev_hash, broken) {
                return Ok(check);
            }
        }
    }
}

fn broken_text(broken: Option<BrokenLink>) -> String {
    match broken {
        Some(link) => format!(
            "; the chain first breaks between global seq {} and {} (migration {} event {}): one of them was changed",
            link.global_seq - 1,
            link.global_seq,
            link.procedure_id,
            link.seq
        ),
        None => String::new(),
    }
}

fn head_text(expected: ExpectedHead, check: &HeadCheck) -> String {
    match check {
        HeadCheck::Unchanged {
            global_seq,
            appended_since,
        } => format!(
            "unchanged: the chain hash at global seq {global_seq} is {} and every link up to it holds; {} appended since",
            hex(&expected.hash),
            counted(*appended_since, "record")
        ),
        HeadCheck::Changed {
            global_seq,
            actual,
            broken,
        } => format!(
            "CHANGED: the chain hash at global seq {global_seq} is {}{}: a record at or before it was changed, removed or reordered{}",
            hex(actual),
            if *actual == expected.hash {
                " as expected, but a link before it does not hold".to_string()
            } else {
                format!(", not {}", hex(&expected.hash))
            },
            broken_text(*broken)
        ),
        HeadCheck::NotFound { broken } => format!(
            "NOT FOUND: no record's chain hash is {}: the history it ended was changed, or it is another log's{}",
            hex(&expected.hash),
            broken_text(*broken)
        ),
        HeadCheck::Cannot(reason) => format!("CANNOT CHECK: {reason}"),
    }
}

/// The head to write down: `GLOBAL_SEQ:HASH` of the last chained record, if any.
fn head_of(report: &VerifyReport) -> Option<String> {
    let chained = report.chain.chained_from_global_seq.is_some()
        || (report.chain.records == 0 && report.archived_to_global_seq > 0);
    chained.then(|| {
        format!(
            "{}:{}",
            report
                .chain
                .head_global_seq
                .max(report.archived_to_global_seq),
            hex(&report.chain.head_hash)
        )
    })
}

/// Runs the command; returns the exit code.
pub fn run(
    source: &LogSource,
    archive: Option<&Path>,
    expect_head: Option<ExpectedHead>,
    json: bool,
) -> u8 {
    let report = open_and_verify(source, archive, expect_head);
    match (&report, json) {
        (Ok((report, joined, head)), false) => {
            print_text(source, report, archive, joined.as_ref());
            if let (Some(expected), Some(check)) = (expect_head, head) {
                println!("expected head:   {}", head_text(expected, check));
            }
        }
        (Ok((report, joined, head)), true) => {
            let mut document = report_json(source, report, archive, joined.as_ref());
            if let (Some(expected), Some(check)) = (expect_head, head) {
                document["expected_head"] = json!({
                    "global_seq": expected.global_seq,
                    "hash": hex(&expected.hash),
                    "unchanged": check.holds(),
                    "text": head_text(expected, check),
                });
                document["ok"] = json!(document["ok"] == json!(true) && check.holds());
            }
            println!("{document}");
        }
        (Err(error), false) => eprint_error(error),
        (Err(error), true) => println!(
            "{}",
            json!({
                source_key(source): source.describe(),
                "ok": false,
                "error": { "kind": error.kind_name(), "message": error.to_string() },
            })
        ),
    }
    match report {
        Err(error) => error.exit_code(),
        Ok((_, _, Some(check))) if !check.holds() => EXIT_FAILED,
        Ok((report, None | Some(Ok(_)), _)) if report.is_clean() => 0,
        _ => EXIT_FAILED,
    }
}

/// The JSON field that names where the log is: `data_dir`, or `store` (without password).
fn source_key(source: &LogSource) -> &'static str {
    if source.store.is_some() {
        "store"
    } else {
        "data_dir"
    }
}

/// What `--archive` found: the archive's records and manifests, or why it does not join.
type Joined = Result<(usize, usize), ArchiveError>;

type Verified = (VerifyReport, Option<Joined>, Option<HeadCheck>);

fn open_and_verify(
    source: &LogSource,
    archive: Option<&Path>,
    expect_head: Option<ExpectedHead>,
) -> Result<Verified, CliError> {
    // A private copy (sled) or read-only sessions (PostgreSQL): verifying writes nothing.
    let log = match source.store_config()? {
        Some(config) => EventLog::with_store(Arc::new(PgStore::open_read_only(config)?)),
        None => EventLog::open_read_only(&source.data_dir)?,
    };
    let report = log.verify()?;
    let joined = archive.map(|dir| {
        verify_archive(&log, dir).map(|contents| (contents.manifests.len(), contents.records.len()))
    });
    let head = expect_head
        .map(|expected| check_head(&log, &report, expected))
        .transpose()?;
    Ok((report, joined, head))
}

fn archive_text(report: &VerifyReport, archive: Option<&Path>, joined: Option<&Joined>) -> String {
    match (archive, joined) {
        (Some(dir), Some(Ok((manifests, records)))) => format!(
            "{}: {}, {}, chained from global seq 1 and joined to the live log at global seq {}",
            dir.display(),
            counted(*manifests as u64, "manifest"),
            counted(*records as u64, "record"),
            report.archived_to_global_seq
        ),
        (Some(dir), Some(Err(error))) => format!("{}: DOES NOT JOIN: {error}", dir.display()),
        _ if report.archived_to_global_seq > 0 => format!(
            "global seqs 1 to {} are archived (not checked: pass --archive DIR)",
            report.archived_to_global_seq
        ),
        _ => "none".to_string(),
    }
}

/// How the chain reads, in one line.
fn chain_text(report: &VerifyReport) -> String {
    let chain = &report.chain;
    match chain.chained_from_global_seq {
        None if chain.records == 0 && report.archived_to_global_seq > 0 => format!(
            "no live records: everything up to global seq {} is archived, chain hash there {}",
            report.archived_to_global_seq,
            hex(&chain.head_hash)
        ),
        None if chain.records == 0 => "empty log, no chain yet".to_string(),
        None => format!(
            "none: format version 1 records only (written before the chain existed), {}",
            counted(chain.records, "record")
        ),
        Some(from) => format!(
            "global seq {from} to {}, head hash {}",
            chain.head_global_seq,
            hex(&chain.head_hash)
        ),
    }
}

fn print_text(
    source: &LogSource,
    report: &VerifyReport,
    archive: Option<&Path>,
    joined: Option<&Joined>,
) {
    println!("event log:       {}", source.describe());
    println!("events:          {}", report.events);
    println!("procedures:      {}", report.procedures);
    println!("open procedures: {}", report.open_procedures);
    println!("chain:           {}", chain_text(report));
    if let Some(head) = head_of(report) {
        println!("head:            {head} (give it to --expect-head later to check that the history up to here is unchanged)");
    }
    println!("archive:         {}", archive_text(report, archive, joined));
    println!("problems:        {}", report.problem_count());
    for problem in &report.problems {
        println!("  - {}: {problem}", problem.kind_name());
    }
    if report.problems_omitted > 0 {
        println!(
            "  ... and {} more problems not listed",
            report.problems_omitted
        );
    }
    if let Some(Err(_)) = joined {
        println!("DAMAGED: the archive does not join the live log");
    } else if report.is_clean() && source.store.is_some() {
        println!(
            "ok: every record and chain link checks out, and the log ends where its head row says"
        );
    } else if report.is_clean() && !source.data_dir.join(regmig::log::MARK_FILE_NAME).exists() {
        println!("ok: every record and index entry checks out; the log has no mark yet (an older regmig wrote it; the next writer adds one), so records lost from its end could not be detected");
    } else if report.is_clean() {
        println!("ok: every record, index entry and chain link checks out, and the log ends where its mark says");
    } else {
        println!(
            "DAMAGED: {} found",
            counted(report.problem_count(), "problem")
        );
    }
}

fn report_json(
    source: &LogSource,
    report: &VerifyReport,
    archive: Option<&Path>,
    joined: Option<&Joined>,
) -> serde_json::Value {
    let problems: Vec<serde_json::Value> = report
        .problems
        .iter()
        .map(|problem| {
            json!({
                "kind": problem.kind_name(),
                "procedure_id": problem.procedure_id().map(|id| id.to_string()),
                "seq": problem.seq(),
                "key": problem.key(),
                "message": problem.to_string(),
            })
        })
        .collect();
    json!({
        source_key(source): source.describe(),
        "ok": report.is_clean() && !matches!(joined, Some(Err(_))),
        "archived_to_global_seq": report.archived_to_global_seq,
        "archive": archive.map(|dir| json!({
            "dir": dir.display().to_string(),
            "joins": matches!(joined, Some(Ok(_))),
            "text": archive_text(report, archive, joined),
        })),
        "events": report.events,
        "procedures": report.procedures,
        "open_procedures": report.open_procedures,
        "chain": {
            "chained_from_global_seq": report.chain.chained_from_global_seq,
            "head_global_seq": report.chain.head_global_seq,
            "head_hash": hex(&report.chain.head_hash),
            "records": report.chain.records,
            "head": head_of(report),
        },
        "problem_count": report.problem_count(),
        "problems_omitted": report.problems_omitted,
        "problems": problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_read_with_or_without_their_global_seq() {
        let hash_text = "0f".repeat(32);
        let hash = [0x0f; 32];
        assert_eq!(
            parse_expected_head(&format!("42:{hash_text}")),
            Ok(ExpectedHead {
                global_seq: Some(42),
                hash
            })
        );
        assert_eq!(
            parse_expected_head(&hash_text.to_uppercase()),
            Ok(ExpectedHead {
                global_seq: None,
                hash
            })
        );
        for text in [
            "",
            "42",
            "x:",
            &format!("-1:{hash_text}"),
            &hash_text[1..],
            &format!("{hash_text}0"),
            &"zz".repeat(32),
        ] {
            assert_eq!(
                parse_expected_head(text),
                Err(ParseHeadError::Malformed {
                    text: text.to_string()
                }),
                "{text:?}"
            );
        }
        let zero = format!("0:{hash_text}");
        assert_eq!(
            parse_expected_head(&zero),
            Err(ParseHeadError::GlobalSeqZero { text: zero.clone() })
        );
    }
}
