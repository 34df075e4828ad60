//! Scenario files, the contract of `regmig sim run` (`scenario-format.md`): the parser, the
//! validated model it produces, the check of a migration's result against its expectations,
//! and the result a run reports (as text, and as the `--json` object).
//!
//! The parser is strict on purpose: an unknown key, a misspelled state or reply token, a
//! wrong type or a peer outside the cluster is an error that names the file, the line and
//! the field, because a typo must never silently weaken a test.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml_edit::{ArrayOfTables, ImDocument, InlineTable, Item, Table, Value};

use regmig::domain::{InstructionKind, PeerId, RegionId, TableId, WalKind};
use regmig::files::{read_at_most, Bounded};
use regmig::migration::StateName;

/// The largest scenario file [`load_scenario`] reads.
pub const SCENARIO_FILE_SIZE_MAX_BYTES: u64 = 1 << 20;

/// The longest duration a file may give (an `at`, a timeout, a delay): the virtual time
/// after which a run is stopped, so a longer one could only time out.
pub const DURATION_MAX_MS: u64 = super::runner::SIM_VIRTUAL_TIME_MAX_MS;

/// A migration's timeout when the file gives none (`timeout = "10s"`).
pub const DEFAULT_MIGRATION_TIMEOUT_MS: u64 = 10_000;

/// A table's catalog when the file gives none.
pub const DEFAULT_CATALOG: &str = "greptime";

/// A table's schema when the file gives none.
pub const DEFAULT_SCHEMA: &str = "public";

/// The kinds of a refused submit; a rejected result's error is `"KIND: message"`.
pub const REJECTION_KINDS: [&str; 6] = [
    "migration_running",
    "invalid_argument",
    "table_route_not_found",
    "region_route_not_found",
    "logical_table",
    "table_info_not_found",
];

/// The names of the fault kinds, as written in `[[faults]].kind`.
pub const FAULT_KINDS: [&str; 6] = [
    "metadata_cas_conflict",
    "metadata_unavailable",
    "engine_crash",
    "datanode_crash",
    "message_delay",
    "partition",
];

/// How fast simulated datanodes flush when `[cluster]` gives no `flush_writes_per_second`.
pub const DEFAULT_FLUSH_WRITES_PER_SECOND: u64 = 20_000;

// ---------------------------------------------------------------------------------------------
// The validated model.
// ---------------------------------------------------------------------------------------------

/// A parsed and validated scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// `name`: what the scenario shows.
    pub name: String,
    /// `seed`: all randomness of the run (jitter, workload) comes from it.
    pub seed: u64,
    /// `[cluster]`: the datanodes and the tables.
    pub cluster: ClusterSpec,
    /// `[workload]`: writes to every region's leader, if any.
    pub workload: Option<WorkloadSpec>,
    /// `[[migrations]]`, in file order (at least one).
    pub migrations: Vec<MigrationSpec>,
    /// `[[script]]`, in file order.
    pub scripts: Vec<ScriptSpec>,
    /// `[[faults]]`, in file order.
    pub faults: Vec<FaultSpec>,
    /// `[[cancels]]`, in file order.
    pub cancels: Vec<CancelSpec>,
    /// One per migration: `expects[i]` applies to `migrations[i]`. `[expect]` is the first,
    /// each `[[expect_more]]` the next in file order; a migration the file says nothing about
    /// gets an empty [`Expectations`] (only the invariants are checked).
    pub expects: Vec<Expectations>,
    /// The file name the scenario was parsed from, as given (used in messages).
    pub source: String,
}

/// `[cluster]`: the datanodes and the tables on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// `peers`: the datanode ids, in file order, without duplicates.
    pub peers: Vec<PeerId>,
    /// `[[cluster.tables]]`, in file order, with distinct ids.
    pub tables: Vec<TableSpec>,
    /// `flush_writes_per_second` (default 20000, at least 1): how fast a flush writes the
    /// entries written since the region's last flush.
    pub flush_writes_per_second: u64,
}

/// One `[[cluster.tables]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// `id`.
    pub id: TableId,
    /// `catalog` (default "greptime").
    pub catalog: String,
    /// `schema` (default "public").
    pub schema: String,
    /// `wal`: local (default) or remote.
    pub wal: WalKind,
    /// `logical` (default false): the table is a logical table.
    pub logical: bool,
    /// `regions`, in file order, with distinct numbers.
    pub regions: Vec<RegionSpec>,
}

/// One entry of a table's `regions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSpec {
    /// `number`: the region's number within its table.
    pub number: u32,
    /// `leader`: a cluster peer.
    pub leader: PeerId,
    /// `followers` (default none): cluster peers other than the leader.
    pub followers: Vec<PeerId>,
    /// `last_entry_id` (default 0): the leader's WAL position at the start.
    pub last_entry_id: u64,
}

/// `[workload]`: writes to every region's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadSpec {
    /// `writes_per_second`: per region, in virtual time.
    pub writes_per_second: u64,
}

/// One `[[migrations]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSpec {
    /// `region`: need not exist in the cluster (a scenario may expect a rejection). For a
    /// batch, its first region.
    pub region: RegionId,
    /// `regions` (revision 2, a batch): every region the one procedure moves; empty for a
    /// single-region migration.
    pub regions: Vec<RegionId>,
    /// `from`: any peer id (a scenario may expect a rejection).
    pub from: PeerId,
    /// `to`: a cluster peer.
    pub to: PeerId,
    /// `timeout` (default 10s).
    pub timeout_ms: u64,
    /// `at` (default 0s): the virtual time of the submit.
    pub at_ms: u64,
    /// `actor` (optional): who asked for it, recorded with the submit.
    pub actor: Option<String>,
    /// `reason` (optional): why, recorded with the submit.
    pub reason: Option<String>,
}

/// One `[[cancels]]`: an operator's cancel of a migration at a virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelSpec {
    /// `migration`: which one, 0-based here (the file counts from 1, in file order).
    pub migration: usize,
    /// `at`: the virtual time of the cancel.
    pub at_ms: u64,
    /// `actor`: who cancels.
    pub actor: String,
    /// `reason`: why.
    pub reason: String,
}

/// One `[[script]]`: replies forced on a datanode, consumed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSpec {
    /// `peer`: a cluster peer.
    pub peer: PeerId,
    /// `instruction`: the instruction whose replies are forced.
    pub instruction: InstructionKind,
    /// `region` (optional): the replies answer only this region's part of an instruction.
    pub region: Option<RegionId>,
    /// `replies`: at least one, each valid for `instruction`.
    pub replies: Vec<ReplyToken>,
}

/// A forced reply, as written in `[[script]].replies`: the simulator's own scripted reply,
/// so a parsed file needs no translation before it runs.
pub use super::datanode::ScriptedReply as ReplyToken;

impl ReplyToken {
    /// Whether the token may be scripted for `instruction`.
    pub fn is_valid_for(&self, instruction: InstructionKind) -> bool {
        match self {
            ReplyToken::OkWithLastEntryId(_) => instruction == InstructionKind::DowngradeRegion,
            ReplyToken::NotReady => instruction == InstructionKind::UpgradeRegion,
            ReplyToken::NotExists => matches!(
                instruction,
                InstructionKind::DowngradeRegion | InstructionKind::UpgradeRegion
            ),
            ReplyToken::Ok
            | ReplyToken::Timeout
            | ReplyToken::Unreachable
            | ReplyToken::Error(_)
            | ReplyToken::WrongReply => true,
        }
    }

    /// Parses a token as written in a file; the error says what is wrong.
    fn parse(text: &str) -> Result<ReplyToken, String> {
        const EXPECTED: &str = "expected one of ok, ok(last_entry_id=N), timeout, unreachable, \
                                error:TEXT, not_exists, not_ready, wrong_reply";
        let token = match text {
            "ok" => ReplyToken::Ok,
            "timeout" => ReplyToken::Timeout,
            "unreachable" => ReplyToken::Unreachable,
            "not_exists" => ReplyToken::NotExists,
            "not_ready" => ReplyToken::NotReady,
            "wrong_reply" => ReplyToken::WrongReply,
            _ => {
                if let Some(message) = text.strip_prefix("error:") {
                    ReplyToken::Error(message.to_string())
                } else if text.starts_with("ok(") {
                    let number = text
                        .strip_prefix("ok(last_entry_id=")
                        .and_then(|rest| rest.strip_suffix(')'))
                        .filter(|digits| digits.bytes().all(|byte| byte.is_ascii_digit()))
                        .and_then(|digits| digits.parse::<u64>().ok());
                    match number {
                        Some(number) => ReplyToken::OkWithLastEntryId(number),
                        None => {
                            return Err(format!(
                                "invalid reply token {text:?} (expected ok(last_entry_id=N) \
                                 with N a non-negative integer)"
                            ))
                        }
                    }
                } else {
                    return Err(format!("unknown reply token {text:?} ({EXPECTED})"));
                }
            }
        };
        Ok(token)
    }
}

impl fmt::Display for ReplyToken {
    /// Writes the token as a scenario file spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyToken::Ok => f.write_str("ok"),
            ReplyToken::OkWithLastEntryId(number) => write!(f, "ok(last_entry_id={number})"),
            ReplyToken::Timeout => f.write_str("timeout"),
            ReplyToken::Unreachable => f.write_str("unreachable"),
            ReplyToken::Error(message) => write!(f, "error:{message}"),
            ReplyToken::NotExists => f.write_str("not_exists"),
            ReplyToken::NotReady => f.write_str("not_ready"),
            ReplyToken::WrongReply => f.write_str("wrong_reply"),
        }
    }
}

/// One `[[faults]]`. Every kind starts to count at `at_ms` (`at`, default 0s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSpec {
    /// `metadata_cas_conflict`: the next `count` table-route CAS writes lose a race.
    MetadataCasConflict {
        /// `count` (at least 1).
        count: u64,
        /// `at`.
        at_ms: u64,
    },
    /// `metadata_unavailable`: the next `count` metadata reads or writes fail.
    MetadataUnavailable {
        /// `count` (at least 1).
        count: u64,
        /// `at`.
        at_ms: u64,
    },
    /// `metadata_cas_conflict` with `until`: every route CAS between `at` and `until` loses
    /// a race.
    MetadataCasConflictUntil {
        /// `at`.
        at_ms: u64,
        /// `until` (after `at`).
        until_ms: u64,
    },
    /// `metadata_unavailable` with `until`: every metadata read or write between `at` and
    /// `until` fails.
    MetadataUnavailableUntil {
        /// `at`.
        at_ms: u64,
        /// `until` (after `at`).
        until_ms: u64,
    },
    /// `engine_crash`: the engine stops abruptly and is reopened from its data directory.
    EngineCrash {
        /// `after_events` or `at`: exactly one is given.
        trigger: CrashTrigger,
        /// `restart_after` (default 0s): how long the engine stays down, in virtual time.
        restart_after_ms: u64,
    },
    /// `datanode_crash`: the datanode stops answering, and restarts if asked to.
    DatanodeCrash {
        /// `peer`: a cluster peer.
        peer: PeerId,
        /// `at`.
        at_ms: u64,
        /// `restart_after`: how long after the crash it comes back, if it does.
        restart_after_ms: Option<u64>,
    },
    /// `message_delay`: every reply of the peer is late.
    MessageDelay {
        /// `peer`: a cluster peer.
        peer: PeerId,
        /// `delay`.
        delay_ms: u64,
        /// `at`.
        at_ms: u64,
    },
    /// `partition`: the control plane cannot reach the peer and gets no heartbeat from it;
    /// the datanode keeps running and takes writes while its leases last.
    Partition {
        /// `peer`: a cluster peer.
        peer: PeerId,
        /// `at`.
        at_ms: u64,
        /// `heal_after`: how long after `at` the partition ends, if it does.
        heal_after_ms: Option<u64>,
    },
}

impl FaultSpec {
    /// The kind's name, as written in `[[faults]].kind`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            FaultSpec::MetadataCasConflict { .. } | FaultSpec::MetadataCasConflictUntil { .. } => {
                "metadata_cas_conflict"
            }
            FaultSpec::MetadataUnavailable { .. } | FaultSpec::MetadataUnavailableUntil { .. } => {
                "metadata_unavailable"
            }
            FaultSpec::EngineCrash { .. } => "engine_crash",
            FaultSpec::DatanodeCrash { .. } => "datanode_crash",
            FaultSpec::MessageDelay { .. } => "message_delay",
            FaultSpec::Partition { .. } => "partition",
        }
    }
}

/// When an `engine_crash` fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashTrigger {
    /// `after_events = N`: after the N-th event of a migration (counted from 1).
    AfterEvents(u64),
    /// `at = "..."`: at this virtual time.
    AtMs(u64),
}

/// `[expect]` or one `[[expect_more]]`: every key optional, `None` is unchecked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// `outcome`.
    pub outcome: Option<ExpectedOutcome>,
    /// `error`: text the final error must contain (for a rejection, its kind).
    pub error: Option<String>,
    /// `path`: the states entered, consecutive repeats collapsed.
    pub path: Option<Vec<String>>,
    /// `leader`: the region's leader at the end.
    pub leader: Option<PeerId>,
    /// `followers`: the region's followers at the end, in any order.
    pub followers: Option<Vec<PeerId>>,
    /// `leader_state`: the region's leader state at the end.
    pub leader_state: Option<LeaderStateExpect>,
    /// `sent`: exact counts for the named "PEER.INSTRUCTION" pairs (keys canonical).
    pub sent: Option<BTreeMap<String, u64>>,
    /// `max_virtual_time`: the migration ended by then.
    pub max_virtual_time_ms: Option<u64>,
    /// `min_virtual_time`: the migration did not end before then.
    pub min_virtual_time_ms: Option<u64>,
    /// `max_unwritable`: the longest stretch, between the submit and the end, during which
    /// no datanode would have accepted a write for the region.
    pub max_unwritable_ms: Option<u64>,
    /// `settle`: how long the cluster keeps running after the last migration ends.
    pub settle_ms: Option<u64>,
    /// `[expect.regions."T:N"]` (a batch): per-region expectations (keys `outcome`,
    /// `leader`, `followers`, `leader_state`, `max_unwritable`).
    pub regions: BTreeMap<RegionId, Expectations>,
}

/// How a migration ended, as written in `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedOutcome {
    /// Ended in End.
    Completed,
    /// The state machine chose Abort, and the procedure was rolled back.
    Aborted,
    /// A non-retryable error or a used-up retry budget in another state.
    Failed,
    /// The submit answered "already migrated".
    Noop,
    /// The submit was refused.
    Rejected,
    /// A batch: some regions completed and some did not.
    Partial,
}

impl ExpectedOutcome {
    /// Every outcome, in the order of the spec.
    pub const ALL: [ExpectedOutcome; 6] = [
        ExpectedOutcome::Completed,
        ExpectedOutcome::Aborted,
        ExpectedOutcome::Failed,
        ExpectedOutcome::Noop,
        ExpectedOutcome::Rejected,
        ExpectedOutcome::Partial,
    ];

    /// The name used in files and in results' `outcome`.
    pub fn name(self) -> &'static str {
        match self {
            ExpectedOutcome::Completed => "completed",
            ExpectedOutcome::Aborted => "aborted",
            ExpectedOutcome::Failed => "failed",
            ExpectedOutcome::Noop => "noop",
            ExpectedOutcome::Rejected => "rejected",
            ExpectedOutcome::Partial => "partial",
        }
    }
}

/// A region's leader state, as written in `leader_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderStateExpect {
    /// `none`: the leader is not Downgrading.
    None,
    /// `downgrading`.
    Downgrading,
}

impl LeaderStateExpect {
    /// The name used in files and in results' `leader_state`.
    pub fn name(self) -> &'static str {
        match self {
            LeaderStateExpect::None => "none",
            LeaderStateExpect::Downgrading => "downgrading",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// Why a scenario file was refused; nothing is run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: cannot read the scenario file: {source}")]
    Read {
        /// The file.
        file: String,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`SCENARIO_FILE_SIZE_MAX_BYTES`].
    #[error(
        "{file}: the scenario file has at least {size_bytes} bytes, more than the limit of {limit_bytes}"
    )]
    TooLarge {
        /// The file.
        file: String,
        /// Its size.
        size_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// The file is not valid TOML.
    #[error("{file}:{line}: invalid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// Valid TOML, but not a valid scenario.
    #[error("{file}:{line}: field `{field}`: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// The field's path, e.g. `migrations[0].timeout`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ScenarioError {
    /// The 1-based line the error is on, if it is about a place in the file.
    pub fn line(&self) -> Option<usize> {
        match self {
            ScenarioError::Syntax { line, .. } | ScenarioError::Invalid { line, .. } => Some(*line),
            ScenarioError::Read { .. } | ScenarioError::TooLarge { .. } => None,
        }
    }

    /// The path of the field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ScenarioError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points.
// ---------------------------------------------------------------------------------------------

/// Reads and parses a scenario file; errors name the file as `path` displays.
pub fn load_scenario(path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let read_error = |source| ScenarioError::Read {
        file: file.clone(),
        source,
    };
    // Read with the limit, not by trusting the size: a pipe or a device reports 0 bytes.
    let bytes = match read_at_most(path, SCENARIO_FILE_SIZE_MAX_BYTES).map_err(read_error)? {
        Bounded::Whole(bytes) => bytes,
        Bounded::TooLarge { read_bytes } => {
            return Err(ScenarioError::TooLarge {
                file,
                size_bytes: read_bytes,
                limit_bytes: SCENARIO_FILE_SIZE_MAX_BYTES,
            })
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })?;
    parse_scenario(&text, &file)
}

/// Parses and validates a scenario; `file_name` is only used in errors and `source`.
pub fn parse_scenario(text: &str, file_name: &str) -> Result<Scenario, ScenarioError> {
    let source = Source {
        text,
        file: file_name,
    };
    let document = ImDocument::parse(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        let (line, column) = source.position(offset);
        if let Some(field) = value_field_at(text, offset) {
            return ScenarioError::Invalid {
                file: file_name.to_string(),
                line,
                column,
                field,
                message: if error.message().contains("number") {
                    format!(
                        "invalid value: {} (an integer is at most {})",
                        one_line(error.message()),
                        i64::MAX
                    )
                } else {
                    format!("invalid value: {}", one_line(error.message()))
                },
            };
        }
        ScenarioError::Syntax {
            file: file_name.to_string(),
            line,
            column,
            message: one_line(error.message()),
        }
    })?;
    let root = Field {
        source,
        node: Node::Table(TableNode::Header(document.as_table())),
        path: String::new(),
        offset: 0,
    };
    parse_root(&root, file_name)
}

/// The field whose value holds byte `offset`, when its line is a plain `key = value` and the
/// offset is in the value: a TOML error there (an integer too large) is about that field.
/// The path is the key under the table header above it, e.g. `seed` or `migrations[1].to`.
fn value_field_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text
        .get(..offset)?
        .rfind('\n')
        .map_or(0, |newline| newline + 1);
    let line = text.get(line_start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let is_bare = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !is_bare(key) || offset <= line_start + line.find('=')? {
        return None;
    }
    // The header above: `[name]` or the n-th `[[name]]`.
    let mut header: Option<String> = None;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for above in text[..line_start].lines() {
        let above = above.trim();
        if let Some(name) = above
            .strip_prefix("[[")
            .and_then(|rest| rest.strip_suffix("]]"))
        {
            let count = counts.entry(name.trim()).or_insert(0);
            header = Some(format!("{}[{}]", name.trim(), *count));
            *count += 1;
        } else if let Some(name) = above
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            header = Some(name.trim().to_string());
        }
    }
    Some(match header {
        Some(header) => format!("{header}.{key}"),
        None => key.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Reading the TOML tree with positions and field paths.
// ---------------------------------------------------------------------------------------------

/// The text being parsed, to turn byte offsets into lines.
#[derive(Debug, Clone, Copy)]
struct Source<'a> {
    text: &'a str,
    file: &'a str,
}

impl Source<'_> {
    /// The 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let bytes = self.text.as_bytes();
        let offset = offset.min(bytes.len());
        let before = &bytes[..offset];
        let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |newline| newline + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        (line, column)
    }
}

/// A table as written: under a `[header]`, or inline `{ ... }`.
#[derive(Debug, Clone, Copy)]
enum TableNode<'a> {
    Header(&'a Table),
    Inline(&'a InlineTable),
}

/// Any node of the tree.
#[derive(Debug, Clone, Copy)]
enum Node<'a> {
    Value(&'a Value),
    Table(TableNode<'a>),
    Tables(&'a ArrayOfTables),
}

impl<'a> Node<'a> {
    fn from_value(value: &'a Value) -> Node<'a> {
        match value {
            Value::InlineTable(table) => Node::Table(TableNode::Inline(table)),
            other => Node::Value(other),
        }
    }

    fn from_item(item: &'a Item) -> Option<Node<'a>> {
        match item {
            Item::None => None,
            Item::Value(value) => Some(Node::from_value(value)),
            Item::Table(table) => Some(Node::Table(TableNode::Header(table))),
            Item::ArrayOfTables(tables) => Some(Node::Tables(tables)),
        }
    }

    fn span(&self) -> Option<Range<usize>> {
        match self {
            Node::Value(value) => value.span(),
            Node::Table(TableNode::Header(table)) => table.span(),
            Node::Table(TableNode::Inline(table)) => table.span(),
            Node::Tables(tables) => tables.span(),
        }
    }

    /// What the node is, for "expected X, found Y".
    fn describe(&self) -> &'static str {
        match self {
            Node::Value(Value::String(_)) => "a string",
            Node::Value(Value::Integer(_)) => "an integer",
            Node::Value(Value::Float(_)) => "a float",
            Node::Value(Value::Boolean(_)) => "a boolean",
            Node::Value(Value::Datetime(_)) => "a date-time",
            Node::Value(Value::Array(_)) => "an array",
            Node::Value(Value::InlineTable(_)) | Node::Table(_) => "a table",
            Node::Tables(_) => "an array of tables",
        }
    }
}

/// One entry of a table: its key, where the key is, and its value.
struct Entry<'a> {
    key: &'a str,
    key_offset: Option<usize>,
    node: Node<'a>,
}

impl<'a> TableNode<'a> {
    fn entries(self) -> Vec<Entry<'a>> {
        let keys: Vec<&'a str> = match self {
            TableNode::Header(table) => table.iter().map(|(key, _)| key).collect(),
            TableNode::Inline(table) => table.iter().map(|(key, _)| key).collect(),
        };
        keys.into_iter()
            .filter_map(|key| self.lookup(key))
            .collect()
    }

    /// The entry of `key`, if the table has it.
    fn lookup(self, key: &str) -> Option<Entry<'a>> {
        let (key, node) = match self {
            TableNode::Header(table) => {
                let (key, item) = table.get_key_value(key)?;
                (key, Node::from_item(item)?)
            }
            TableNode::Inline(table) => (table.key(key)?, Node::from_value(table.get(key)?)),
        };
        Some(Entry {
            key: key.get(),
            key_offset: key.span().map(|span| span.start),
            node,
        })
    }
}

/// A node with its field path and the byte offset errors about it point at.
#[derive(Debug, Clone)]
struct Field<'a> {
    source: Source<'a>,
    node: Node<'a>,
    path: String,
    offset: usize,
}

impl<'a> Field<'a> {
    /// A node under this one: it points at its own span, else at its key, else at ours.
    fn child(&self, path: String, node: Node<'a>, key_offset: Option<usize>) -> Field<'a> {
        let offset = node
            .span()
            .map(|span| span.start)
            .or(key_offset)
            .unwrap_or(self.offset);
        Field {
            source: self.source,
            node,
            path,
            offset,
        }
    }

    fn error_at(&self, offset: usize, field: &str, message: impl Into<String>) -> ScenarioError {
        let (line, column) = self.source.position(offset);
        ScenarioError::Invalid {
            file: self.source.file.to_string(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn error(&self, message: impl Into<String>) -> ScenarioError {
        self.error_at(self.offset, &self.path, message)
    }

    fn wrong_type(&self, expected: &str) -> ScenarioError {
        self.error(format!(
            "expected {expected}, found {}",
            self.node.describe()
        ))
    }

    fn string(&self) -> Result<&'a str, ScenarioError> {
        match self.node {
            Node::Value(Value::String(text)) => Ok(text.value().as_str()),
            _ => Err(self.wrong_type("a string")),
        }
    }

    fn non_empty_string(&self) -> Result<&'a str, ScenarioError> {
        let text = self.string()?;
        if text.trim().is_empty() {
            return Err(self.error("must not be empty"));
        }
        Ok(text)
    }

    fn boolean(&self) -> Result<bool, ScenarioError> {
        match self.node {
            Node::Value(Value::Boolean(value)) => Ok(*value.value()),
            _ => Err(self.wrong_type("a boolean")),
        }
    }

    fn u64(&self) -> Result<u64, ScenarioError> {
        match self.node {
            Node::Value(Value::Integer(value)) => {
                let value = *value.value();
                u64::try_from(value).map_err(|_| {
                    self.error(format!("expected a non-negative integer, found {value}"))
                })
            }
            _ => Err(self.wrong_type("a non-negative integer")),
        }
    }

    fn u64_at_least(&self, min: u64) -> Result<u64, ScenarioError> {
        let value = self.u64()?;
        if value < min {
            return Err(self.error(format!("must be at least {min}, found {value}")));
        }
        Ok(value)
    }

    fn u32(&self) -> Result<u32, ScenarioError> {
        let value = self.u64()?;
        u32::try_from(value)
            .map_err(|_| self.error(format!("must be at most {}, found {value}", u32::MAX)))
    }

    /// A humantime duration ("500ms", "10s"), in whole milliseconds.
    fn duration_ms(&self) -> Result<u64, ScenarioError> {
        let text = match self.node {
            Node::Value(Value::String(text)) => text.value().as_str(),
            _ => return Err(self.wrong_type("a duration such as \"500ms\" or \"10s\"")),
        };
        let duration = humantime::parse_duration(text)
            .map_err(|error| self.error(format!("invalid duration {text:?}: {error}")))?;
        if duration.subsec_nanos() % 1_000_000 != 0 {
            return Err(self.error(format!(
                "duration {text:?} is not a whole number of milliseconds"
            )));
        }
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        if millis > DURATION_MAX_MS {
            return Err(self.error(format!(
                "duration {text:?} is longer than {}, the virtual time a run may last",
                millis_text(DURATION_MAX_MS)
            )));
        }
        Ok(millis)
    }

    /// A duration that must not be zero (a timeout).
    fn positive_duration_ms(&self) -> Result<u64, ScenarioError> {
        let millis = self.duration_ms()?;
        if millis == 0 {
            return Err(self.error("must be at least 1ms, found 0ms"));
        }
        Ok(millis)
    }

    /// The elements of an array or an array of tables, each with its path `path[i]`.
    fn list(&self) -> Result<Vec<Field<'a>>, ScenarioError> {
        match self.node {
            Node::Value(Value::Array(array)) => Ok(array
                .iter()
                .enumerate()
                .map(|(index, value)| {
                    self.child(
                        format!("{}[{index}]", self.path),
                        Node::from_value(value),
                        None,
                    )
                })
                .collect()),
            Node::Tables(tables) => Ok(tables
                .iter()
                .enumerate()
                .map(|(index, table)| {
                    self.child(
                        format!("{}[{index}]", self.path),
                        Node::Table(TableNode::Header(table)),
                        None,
                    )
                })
                .collect()),
            _ => Err(self.wrong_type("an array")),
        }
    }

    /// The node as a table whose keys are all in `allowed`.
    fn record(&self, allowed: &[&str]) -> Result<Record<'a>, ScenarioError> {
        let record = self.table()?;
        record.check_keys(allowed)?;
        Ok(record)
    }

    /// The node as a table, keys unchecked.
    fn table(&self) -> Result<Record<'a>, ScenarioError> {
        match self.node {
            Node::Table(table) => Ok(Record {
                field: self.clone(),
                table,
            }),
            _ => Err(self.wrong_type("a table")),
        }
    }
}

/// The path of `key` under `path`, quoting keys that are not bare.
fn join_key(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// A table being read.
struct Record<'a> {
    field: Field<'a>,
    table: TableNode<'a>,
}

impl<'a> Record<'a> {
    /// Every entry, each as a field with its key.
    fn entries(&self) -> Vec<(&'a str, Field<'a>)> {
        self.table
            .entries()
            .into_iter()
            .map(|entry| {
                let path = join_key(&self.field.path, entry.key);
                (
                    entry.key,
                    self.field.child(path, entry.node, entry.key_offset),
                )
            })
            .collect()
    }

    /// Refuses the first key (in file order) not in `allowed`.
    fn check_keys(&self, allowed: &[&str]) -> Result<(), ScenarioError> {
        self.check_keys_described(allowed, "unknown key")
    }

    /// Refuses the first key (in file order) not in `allowed`, saying `description`.
    fn check_keys_described(
        &self,
        allowed: &[&str],
        description: &str,
    ) -> Result<(), ScenarioError> {
        for entry in self.table.entries() {
            if !allowed.contains(&entry.key) {
                let offset = entry
                    .key_offset
                    .or(entry.node.span().map(|span| span.start))
                    .unwrap_or(self.field.offset);
                return Err(self.field.error_at(
                    offset,
                    &join_key(&self.field.path, entry.key),
                    format!("{description} (expected one of {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<Field<'a>> {
        let entry = self.table.lookup(key)?;
        Some(self.field.child(
            join_key(&self.field.path, entry.key),
            entry.node,
            entry.key_offset,
        ))
    }

    fn required(&self, key: &str) -> Result<Field<'a>, ScenarioError> {
        self.get(key).ok_or_else(|| {
            self.field.error_at(
                self.field.offset,
                &join_key(&self.field.path, key),
                "required, but missing",
            )
        })
    }
}

/// A multi-line parser message on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Looks `name` up among `options`, or says what was expected.
fn one_of<T: Copy>(
    field: &Field<'_>,
    what: &str,
    name: &str,
    options: &[(&str, T)],
) -> Result<T, ScenarioError> {
    options
        .iter()
        .find(|(option, _)| *option == name)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(option, _)| *option).collect();
            field.error(format!(
                "unknown {what} {name:?} (expected one of {})",
                names.join(", ")
            ))
        })
}

// ---------------------------------------------------------------------------------------------
// The sections of a scenario.
// ---------------------------------------------------------------------------------------------

const ROOT_KEYS: [&str; 10] = [
    "name",
    "seed",
    "cluster",
    "workload",
    "migrations",
    "script",
    "faults",
    "cancels",
    "expect",
    "expect_more",
];

fn parse_root(root: &Field<'_>, file_name: &str) -> Result<Scenario, ScenarioError> {
    let record = root.record(&ROOT_KEYS)?;
    let name = record.required("name")?.non_empty_string()?.to_string();
    let seed = record.required("seed")?.u64()?;
    let cluster = parse_cluster(&record.required("cluster")?)?;
    let workload = match record.get("workload") {
        Some(field) => {
            let workload = field.record(&["writes_per_second"])?;
            Some(WorkloadSpec {
                writes_per_second: workload.required("writes_per_second")?.u64()?,
            })
        }
        None => None,
    };

    let migrations_field = record.required("migrations")?;
    let migration_fields = migrations_field.list()?;
    if migration_fields.len() > MIGRATIONS_MAX {
        return Err(migrations_field.error(format!(
            "{} migrations; a scenario runs at most {MIGRATIONS_MAX} (a run's cost grows faster \
             than their number)",
            migration_fields.len()
        )));
    }
    let regions_in_cluster: usize = cluster.tables.iter().map(|table| table.regions.len()).sum();
    if regions_in_cluster > CLUSTER_REGIONS_MAX {
        return Err(record.required("cluster")?.error(format!(
            "{regions_in_cluster} regions; a scenario's cluster holds at most \
             {CLUSTER_REGIONS_MAX}"
        )));
    }
    let migrations = migration_fields
        .iter()
        .map(|element| parse_migration(element, &cluster))
        .collect::<Result<Vec<_>, _>>()?;
    if migrations.is_empty() {
        return Err(migrations_field.error("at least one migration is required"));
    }

    let mut scripts: Vec<(ScriptSpec, Field<'_>)> = Vec::new();
    if let Some(field) = record.get("script") {
        for element in field.list()? {
            let script = parse_script(&element, &cluster)?;
            if let Some(region) = script.region {
                if !migrations
                    .iter()
                    .any(|migration| migration.regions.contains(&region))
                {
                    return Err(element.error(format!(
                        "region {region} is in no batch (`regions`) of this file: a script's \
                         region answers only that region's part of a batch instruction"
                    )));
                }
            }
            if let Some((_, earlier)) = scripts.iter().find(|(other, _)| {
                other.peer == script.peer
                    && other.instruction == script.instruction
                    && other.region == script.region
            }) {
                let (line, _) = element.source.position(earlier.offset);
                let region = match script.region {
                    Some(region) => format!(" (region {region})"),
                    None => String::new(),
                };
                return Err(element.error(format!(
                    "a script for peer {} and {}{region} is already given at line {line}",
                    script.peer, script.instruction
                )));
            }
            scripts.push((script, element));
        }
    }

    let faults = match record.get("faults") {
        Some(field) => field
            .list()?
            .iter()
            .map(|element| parse_fault(element, &cluster))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };

    let mut cancels = Vec::new();
    if let Some(field) = record.get("cancels") {
        for element in field.list()? {
            cancels.push(parse_cancel(&element, &migrations)?);
        }
    }

    let mut expects = vec![Expectations::default(); migrations.len()];
    if let Some(field) = record.get("expect") {
        expects[0] = parse_expectations(&field, &migrations[0].regions)?;
    }
    if let Some(field) = record.get("expect_more") {
        for (index, element) in field.list()?.iter().enumerate() {
            let Some(slot) = expects.get_mut(index + 1) else {
                return Err(element.error(format!(
                    "no migration left for this expectation: {} migration(s) take [expect] \
                     and at most {} [[expect_more]]",
                    migrations.len(),
                    migrations.len() - 1
                )));
            };
            *slot = parse_expectations(element, &migrations[index + 1].regions)?;
        }
    }

    Ok(Scenario {
        name,
        seed,
        cluster,
        workload,
        migrations,
        scripts: scripts.into_iter().map(|(script, _)| script).collect(),
        faults,
        cancels,
        expects,
        source: file_name.to_string(),
    })
}

/// At most this many `[[migrations]]` in one file (400 already take about 20 s).
pub const MIGRATIONS_MAX: usize = 1000;

/// At most this many regions in a scenario's cluster, over all its tables.
pub const CLUSTER_REGIONS_MAX: usize = 10_000;

fn parse_cluster(field: &Field<'_>) -> Result<ClusterSpec, ScenarioError> {
    let record = field.record(&["peers", "tables", "flush_writes_per_second"])?;
    let peers_field = record.required("peers")?;
    let mut peers = Vec::new();
    for element in peers_field.list()? {
        let peer = element.u64()?;
        if peers.contains(&peer) {
            return Err(element.error(format!("peer {peer} is listed twice")));
        }
        peers.push(peer);
    }
    if peers.is_empty() {
        return Err(peers_field.error("at least one peer is required"));
    }

    let mut tables: Vec<TableSpec> = Vec::new();
    if let Some(tables_field) = record.get("tables") {
        let mut ids: Vec<(TableId, usize)> = Vec::new();
        for element in tables_field.list()? {
            let (table, id_field) = parse_table(&element, &peers)?;
            if let Some((_, earlier)) = ids.iter().find(|(id, _)| *id == table.id) {
                let (line, _) = element.source.position(*earlier);
                return Err(id_field.error(format!(
                    "table {} is already defined at line {line}",
                    table.id
                )));
            }
            ids.push((table.id, element.offset));
            tables.push(table);
        }
    }
    let flush_writes_per_second = match record.get("flush_writes_per_second") {
        Some(field) => field.u64_at_least(1)?,
        None => DEFAULT_FLUSH_WRITES_PER_SECOND,
    };
    Ok(ClusterSpec {
        peers,
        tables,
        flush_writes_per_second,
    })
}

/// Refuses a peer that is not in `cluster.peers`.
fn cluster_peer(field: &Field<'_>, peers: &[PeerId]) -> Result<PeerId, ScenarioError> {
    let peer = field.u64()?;
    if !peers.contains(&peer) {
        return Err(field.error(format!(
            "peer {peer} is not in cluster.peers {}",
            list_text(peers)
        )));
    }
    Ok(peer)
}

fn parse_table<'a>(
    field: &Field<'a>,
    peers: &[PeerId],
) -> Result<(TableSpec, Field<'a>), ScenarioError> {
    let record = field.record(&["id", "catalog", "schema", "wal", "logical", "regions"])?;
    let id_field = record.required("id")?;
    let id = id_field.u32()?;
    let catalog = match record.get("catalog") {
        Some(field) => field.non_empty_string()?.to_string(),
        None => DEFAULT_CATALOG.to_string(),
    };
    let schema = match record.get("schema") {
        Some(field) => field.non_empty_string()?.to_string(),
        None => DEFAULT_SCHEMA.to_string(),
    };
    let wal = match record.get("wal") {
        Some(field) => one_of(
            &field,
            "wal kind",
            field.string()?,
            &[("local", WalKind::Local), ("remote", WalKind::Remote)],
        )?,
        None => WalKind::Local,
    };
    let logical = match record.get("logical") {
        Some(field) => field.boolean()?,
        None => false,
    };
    let mut regions: Vec<RegionSpec> = Vec::new();
    if let Some(regions_field) = record.get("regions") {
        let mut numbers: Vec<(u32, usize)> = Vec::new();
        for element in regions_field.list()? {
            let (region, number_field) = parse_region(&element, peers)?;
            if let Some((_, earlier)) = numbers.iter().find(|(number, _)| *number == region.number)
            {
                let (line, _) = element.source.position(*earlier);
                return Err(number_field.error(format!(
                    "region number {} is already defined at line {line}",
                    region.number
                )));
            }
            numbers.push((region.number, element.offset));
            regions.push(region);
        }
    }
    let table = TableSpec {
        id,
        catalog,
        schema,
        wal,
        logical,
        regions,
    };
    Ok((table, id_field))
}

fn parse_region<'a>(
    field: &Field<'a>,
    peers: &[PeerId],
) -> Result<(RegionSpec, Field<'a>), ScenarioError> {
    let record = field.record(&["number", "leader", "followers", "last_entry_id"])?;
    let number_field = record.required("number")?;
    let number = number_field.u32()?;
    let leader = cluster_peer(&record.required("leader")?, peers)?;
    let mut followers = Vec::new();
    if let Some(followers_field) = record.get("followers") {
        for element in followers_field.list()? {
            let follower = cluster_peer(&element, peers)?;
            if follower == leader {
                return Err(element.error(format!(
                    "peer {follower} is the region's leader; it cannot also be a follower"
                )));
            }
            if followers.contains(&follower) {
                return Err(element.error(format!("peer {follower} is listed twice")));
            }
            followers.push(follower);
        }
    }
    let last_entry_id = match record.get("last_entry_id") {
        Some(field) => field.u64()?,
        None => 0,
    };
    let region = RegionSpec {
        number,
        leader,
        followers,
        last_entry_id,
    };
    Ok((region, number_field))
}

fn parse_migration(
    field: &Field<'_>,
    cluster: &ClusterSpec,
) -> Result<MigrationSpec, ScenarioError> {
    let record = field.record(&[
        "region", "regions", "from", "to", "timeout", "at", "actor", "reason",
    ])?;
    let (region, regions) = match (record.get("region"), record.get("regions")) {
        (Some(_), Some(regions_field)) => {
            return Err(regions_field.error("give either region or regions, not both"))
        }
        (Some(region_field), None) => (region_value(&region_field)?, Vec::new()),
        (None, Some(regions_field)) => {
            let mut regions = Vec::new();
            for element in regions_field.list()? {
                let region = region_value(&element)?;
                if regions.contains(&region) {
                    return Err(element.error(format!("region {region} is listed twice")));
                }
                regions.push(region);
            }
            let Some(first) = regions.first().copied() else {
                return Err(regions_field.error("a batch needs at least one region"));
            };
            (first, regions)
        }
        (None, None) => {
            return Err(record
                .required("region")
                .err()
                .unwrap_or_else(|| field.error("region or regions is required")))
        }
    };
    let from = record.required("from")?.u64()?;
    // A migration may come from anywhere (a rejection to test) but must go to the cluster.
    let to = cluster_peer(&record.required("to")?, &cluster.peers)?;
    let timeout_ms = match record.get("timeout") {
        Some(field) => field.positive_duration_ms()?,
        None => DEFAULT_MIGRATION_TIMEOUT_MS,
    };
    let at_ms = match record.get("at") {
        Some(field) => field.duration_ms()?,
        None => 0,
    };
    let actor = match record.get("actor") {
        Some(field) => Some(field.non_empty_string()?.to_string()),
        None => None,
    };
    let reason = match record.get("reason") {
        Some(field) => Some(field.non_empty_string()?.to_string()),
        None => None,
    };
    Ok(MigrationSpec {
        region,
        regions,
        from,
        to,
        timeout_ms,
        at_ms,
        actor,
        reason,
    })
}

fn region_value(field: &Field<'_>) -> Result<RegionId, ScenarioError> {
    match field.node {
        Node::Value(Value::String(text)) => text
            .value()
            .parse::<RegionId>()
            .map_err(|error| field.error(error.to_string())),
        Node::Value(Value::Integer(_)) => Ok(RegionId(field.u64()?)),
        _ => {
            Err(field.wrong_type("a region, \"TABLE:NUMBER\" (e.g. \"1024:1\") or the packed u64"))
        }
    }
}

fn parse_cancel(
    field: &Field<'_>,
    migrations: &[MigrationSpec],
) -> Result<CancelSpec, ScenarioError> {
    let record = field.record(&["migration", "at", "actor", "reason"])?;
    let migration_field = record.required("migration")?;
    let number = migration_field.u64_at_least(1)?;
    let migration = usize::try_from(number)
        .ok()
        .filter(|number| *number <= migrations.len())
        .ok_or_else(|| {
            migration_field.error(format!(
                "migration {number} does not exist: the file has {} migration(s), \
                 counted from 1 in file order",
                migrations.len()
            ))
        })?;
    let at_field = record.required("at")?;
    let at_ms = at_field.duration_ms()?;
    let submitted_at_ms = migrations[migration - 1].at_ms;
    if at_ms < submitted_at_ms {
        return Err(at_field.error(format!(
            "the cancel at {at_ms}ms comes before migration {number} is submitted (at \
             {submitted_at_ms}ms): there is nothing to cancel yet"
        )));
    }
    Ok(CancelSpec {
        migration: migration - 1,
        at_ms,
        actor: record.required("actor")?.non_empty_string()?.to_string(),
        reason: record.required("reason")?.non_empty_string()?.to_string(),
    })
}

fn instruction_kind(field: &Field<'_>, name: &str) -> Result<InstructionKind, ScenarioError> {
    let options: Vec<(&str, InstructionKind)> = InstructionKind::ALL
        .into_iter()
        .map(|kind| (kind.name(), kind))
        .collect();
    one_of(field, "instruction", name, &options)
}

fn parse_script(field: &Field<'_>, cluster: &ClusterSpec) -> Result<ScriptSpec, ScenarioError> {
    let record = field.record(&["peer", "instruction", "replies", "region"])?;
    let peer = cluster_peer(&record.required("peer")?, &cluster.peers)?;
    let region = match record.get("region") {
        Some(field) => Some(region_value(&field)?),
        None => None,
    };
    let instruction_field = record.required("instruction")?;
    let instruction = instruction_kind(&instruction_field, instruction_field.string()?)?;
    let replies_field = record.required("replies")?;
    let mut replies = Vec::new();
    for element in replies_field.list()? {
        let text = element.string()?;
        let token = ReplyToken::parse(text).map_err(|message| element.error(message))?;
        if !token.is_valid_for(instruction) {
            let valid_for = match token {
                ReplyToken::OkWithLastEntryId(_) => "downgrade_region",
                ReplyToken::NotReady => "upgrade_region",
                _ => "downgrade_region and upgrade_region",
            };
            return Err(element.error(format!(
                "reply {text:?} is only valid for {valid_for}, not {instruction}"
            )));
        }
        replies.push(token);
    }
    if replies.is_empty() {
        return Err(replies_field.error("at least one reply is required"));
    }
    Ok(ScriptSpec {
        peer,
        instruction,
        region,
        replies,
    })
}

const FAULT_KEYS: [&str; 9] = [
    "kind",
    "count",
    "at",
    "after_events",
    "peer",
    "restart_after",
    "delay",
    "until",
    "heal_after",
];

/// The keys each fault kind takes, in the order of [`FAULT_KINDS`].
fn fault_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "metadata_cas_conflict" | "metadata_unavailable" => &["kind", "count", "until", "at"],
        "engine_crash" => &["kind", "after_events", "at", "restart_after"],
        "datanode_crash" => &["kind", "peer", "at", "restart_after"],
        "partition" => &["kind", "peer", "at", "heal_after"],
        _ => &["kind", "peer", "delay", "at"],
    }
}

fn parse_fault(field: &Field<'_>, cluster: &ClusterSpec) -> Result<FaultSpec, ScenarioError> {
    let record = field.record(&FAULT_KEYS)?;
    let kind_field = record.required("kind")?;
    let kind_options: Vec<(&str, &str)> = FAULT_KINDS.iter().map(|kind| (*kind, *kind)).collect();
    let kind = one_of(
        &kind_field,
        "fault kind",
        kind_field.string()?,
        &kind_options,
    )?;
    record.check_keys_described(fault_keys(kind), &format!("not a key of fault kind {kind}"))?;
    let at_ms = match record.get("at") {
        Some(field) => Some(field.duration_ms()?),
        None => None,
    };
    let fault = match kind {
        "metadata_cas_conflict" | "metadata_unavailable" => {
            let at_ms = at_ms.unwrap_or(0);
            match (record.get("count"), record.get("until")) {
                (Some(count), None) => {
                    let count = count.u64_at_least(1)?;
                    if kind == "metadata_cas_conflict" {
                        FaultSpec::MetadataCasConflict { count, at_ms }
                    } else {
                        FaultSpec::MetadataUnavailable { count, at_ms }
                    }
                }
                (None, Some(until)) => {
                    let until_ms = until.duration_ms()?;
                    if until_ms <= at_ms {
                        return Err(until.error(format!(
                            "until ({}) must be after at ({})",
                            millis_text(until_ms),
                            millis_text(at_ms)
                        )));
                    }
                    if kind == "metadata_cas_conflict" {
                        FaultSpec::MetadataCasConflictUntil { at_ms, until_ms }
                    } else {
                        FaultSpec::MetadataUnavailableUntil { at_ms, until_ms }
                    }
                }
                (Some(_), Some(_)) => {
                    return Err(field.error(format!(
                        "{kind} takes exactly one of `count` and `until`, not both"
                    )))
                }
                (None, None) => {
                    return Err(field.error(format!(
                        "{kind} needs exactly one of `count` and `until`, found neither"
                    )))
                }
            }
        }
        "engine_crash" => {
            let after_events = match record.get("after_events") {
                Some(field) => Some(field.u64_at_least(1)?),
                None => None,
            };
            let trigger =
                match (after_events, at_ms) {
                    (Some(events), None) => CrashTrigger::AfterEvents(events),
                    (None, Some(at_ms)) => CrashTrigger::AtMs(at_ms),
                    (Some(_), Some(_)) => {
                        return Err(field.error(
                            "engine_crash takes exactly one of `after_events` and `at`, not both",
                        ))
                    }
                    (None, None) => return Err(field.error(
                        "engine_crash needs exactly one of `after_events` and `at`, found neither",
                    )),
                };
            let restart_after_ms = match record.get("restart_after") {
                Some(field) => field.duration_ms()?,
                None => 0,
            };
            FaultSpec::EngineCrash {
                trigger,
                restart_after_ms,
            }
        }
        "partition" => FaultSpec::Partition {
            peer: cluster_peer(&record.required("peer")?, &cluster.peers)?,
            at_ms: at_ms.unwrap_or(0),
            heal_after_ms: match record.get("heal_after") {
                Some(field) => Some(field.duration_ms()?),
                None => None,
            },
        },
        "datanode_crash" => FaultSpec::DatanodeCrash {
            peer: cluster_peer(&record.required("peer")?, &cluster.peers)?,
            at_ms: at_ms.unwrap_or(0),
            restart_after_ms: match record.get("restart_after") {
                Some(field) => Some(field.duration_ms()?),
                None => None,
            },
        },
        _ => FaultSpec::MessageDelay {
            peer: cluster_peer(&record.required("peer")?, &cluster.peers)?,
            delay_ms: record.required("delay")?.duration_ms()?,
            at_ms: at_ms.unwrap_or(0),
        },
    };
    Ok(fault)
}

const EXPECT_KEYS: [&str; 12] = [
    "outcome",
    "error",
    "path",
    "leader",
    "followers",
    "leader_state",
    "sent",
    "max_virtual_time",
    "min_virtual_time",
    "max_unwritable",
    "settle",
    "regions",
];

const REGION_EXPECT_KEYS: [&str; 5] = [
    "outcome",
    "leader",
    "followers",
    "leader_state",
    "max_unwritable",
];

/// `batch`: the regions of the migration these expectations are for (empty for a single
/// region); `[expect.regions."T:N"]` must name one of them.
fn parse_expectations(
    field: &Field<'_>,
    batch: &[RegionId],
) -> Result<Expectations, ScenarioError> {
    let record = field.record(&EXPECT_KEYS)?;
    let mut expect = Expectations::default();
    if let Some(field) = record.get("outcome") {
        let options: Vec<(&str, ExpectedOutcome)> = ExpectedOutcome::ALL
            .into_iter()
            .map(|outcome| (outcome.name(), outcome))
            .collect();
        expect.outcome = Some(one_of(&field, "outcome", field.string()?, &options)?);
    }
    if let Some(field) = record.get("error") {
        expect.error = Some(field.non_empty_string()?.to_string());
    }
    if let Some(field) = record.get("path") {
        // The states as the model names them, written in `path` and reported in results.
        let options: Vec<(&str, StateName)> = StateName::ALL
            .into_iter()
            .map(|state| (state.name(), state))
            .collect();
        let mut path = Vec::new();
        for element in field.list()? {
            let state = one_of(&element, "state", element.string()?, &options)?;
            path.push(state.name().to_string());
        }
        expect.path = Some(path);
    }
    if let Some(field) = record.get("leader") {
        expect.leader = Some(field.u64()?);
    }
    if let Some(field) = record.get("followers") {
        let mut followers = Vec::new();
        for element in field.list()? {
            let follower = element.u64()?;
            if followers.contains(&follower) {
                return Err(element.error(format!("peer {follower} is listed twice")));
            }
            followers.push(follower);
        }
        expect.followers = Some(followers);
    }
    if let Some(field) = record.get("leader_state") {
        let options = [
            ("none", LeaderStateExpect::None),
            ("downgrading", LeaderStateExpect::Downgrading),
        ];
        expect.leader_state = Some(one_of(&field, "leader state", field.string()?, &options)?);
    }
    if let Some(field) = record.get("sent") {
        expect.sent = Some(parse_sent(&field)?);
    }
    if let Some(field) = record.get("max_virtual_time") {
        expect.max_virtual_time_ms = Some(field.duration_ms()?);
    }
    if let Some(field) = record.get("min_virtual_time") {
        let min_ms = field.duration_ms()?;
        if let Some(max_ms) = expect.max_virtual_time_ms.filter(|max_ms| min_ms > *max_ms) {
            return Err(field.error(format!(
                "{} is above max_virtual_time ({}): no run can satisfy both",
                millis_text(min_ms),
                millis_text(max_ms)
            )));
        }
        expect.min_virtual_time_ms = Some(min_ms);
    }
    if let Some(field) = record.get("max_unwritable") {
        expect.max_unwritable_ms = Some(field.duration_ms()?);
    }
    if let Some(field) = record.get("settle") {
        expect.settle_ms = Some(field.duration_ms()?);
    }
    if let Some(field) = record.get("regions") {
        for (key, entry) in field.table()?.entries() {
            let region = key
                .parse::<RegionId>()
                .map_err(|error| entry.error(format!("invalid region {key:?}: {error}")))?;
            if batch.is_empty() {
                return Err(entry.error(
                    "per-region expectations are for a batch: this migration names one region \
                     (`region`), not `regions`",
                ));
            }
            if !batch.contains(&region) {
                return Err(entry.error(format!(
                    "region {region} is not one of this migration's regions"
                )));
            }
            if expect.regions.contains_key(&region) {
                return Err(entry.error(format!("region {region} is given twice")));
            }
            entry.record(&REGION_EXPECT_KEYS)?;
            expect
                .regions
                .insert(region, parse_expectations(&entry, &[])?);
        }
    }
    Ok(expect)
}

/// `sent = { "2.open_region" = 3 }`; keys are stored canonical ("2.open_region").
fn parse_sent(field: &Field<'_>) -> Result<BTreeMap<String, u64>, ScenarioError> {
    const FORM: &str = "expected \"PEER.INSTRUCTION\", e.g. \"2.open_region\"";
    let record = field.table()?;
    let mut sent = BTreeMap::new();
    for (key, entry) in record.entries() {
        if let Node::Table(_) = entry.node {
            return Err(entry.error(format!(
                "expected an integer, found a table (a \"PEER.INSTRUCTION\" key must be quoted, \
                 e.g. \"2.open_region\" = 3; {key}.{{...}} is read as a nested table)"
            )));
        }
        let Some((peer_text, instruction_name)) = key.split_once('.') else {
            return Err(entry.error(format!("invalid key {key:?}: {FORM}")));
        };
        let peer: PeerId = match peer_text.parse() {
            Ok(peer) if peer_text.bytes().all(|byte| byte.is_ascii_digit()) => peer,
            _ => {
                return Err(entry.error(format!(
                    "invalid key {key:?}: {peer_text:?} is not a peer id ({FORM})"
                )))
            }
        };
        let instruction = InstructionKind::from_name(instruction_name).ok_or_else(|| {
            let names: Vec<&str> = InstructionKind::ALL.iter().map(|kind| kind.name()).collect();
            entry.error(format!(
                "invalid key {key:?}: unknown instruction {instruction_name:?} (expected one of {})",
                names.join(", ")
            ))
        })?;
        let canonical = sent_key(peer, instruction);
        let count = entry.u64()?;
        if sent.insert(canonical.clone(), count).is_some() {
            return Err(entry.error(format!("{canonical:?} is given twice")));
        }
    }
    Ok(sent)
}

/// The "PEER.INSTRUCTION" key of `sent` counts, in expectations and results: the core's
/// [`SentKey`](regmig::migration::SentKey) spelling.
pub fn sent_key(peer: PeerId, instruction: InstructionKind) -> String {
    regmig::migration::SentKey::new(peer, instruction).to_string()
}

// ---------------------------------------------------------------------------------------------
// Results.
// ---------------------------------------------------------------------------------------------

/// The result of one scenario run: the `--json` object of `regmig sim run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioOutcome {
    /// The scenario's name.
    pub name: String,
    /// Every expectation and every invariant held.
    pub ok: bool,
    /// Every failed expectation, as a sentence.
    pub failures: Vec<String>,
    /// One per migration, in file order.
    pub migrations: Vec<MigrationResult>,
    /// The simulator's invariants, always checked.
    pub invariants: InvariantsResult,
    /// Where the log was written.
    pub data_dir: String,
}

/// How one migration of a scenario ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationResult {
    /// The region, "TABLE:NUMBER".
    pub region: String,
    /// The procedure's id; none when the submit was refused or a no-op.
    pub procedure_id: Option<String>,
    /// completed | aborted | failed | noop | rejected.
    pub outcome: String,
    /// None when completed; "KIND: message" when rejected; else the final error's message.
    pub error: Option<String>,
    /// Whether a rollback ran.
    pub rolled_back: bool,
    /// The states entered, in order, repeats included.
    pub path: Vec<String>,
    /// The region's leader at the end.
    pub leader: Option<PeerId>,
    /// The region's followers at the end.
    pub followers: Vec<PeerId>,
    /// "none" | "downgrading".
    pub leader_state: String,
    /// Instructions sent, by "PEER.INSTRUCTION", every count above zero.
    pub sent: BTreeMap<String, u64>,
    /// From the submit to the terminal state, in virtual time.
    pub virtual_time_ms: u64,
    /// The longest stretch, between the submit and the end, during which no datanode would
    /// have accepted a write for the region (0 for a refused or no-op submit).
    #[serde(default)]
    pub unwritable_ms: u64,
    /// The events the procedure appended.
    pub events: u64,
    /// A batch: each of its regions, in the order of `regions` (empty for a single region).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionResult>,
}

/// How one region of a batch ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionResult {
    /// The region, "TABLE:NUMBER".
    pub region: String,
    /// completed | aborted | failed | noop | rejected (or the status when unfinished).
    pub outcome: String,
    /// The region's leader when its part of the batch ended.
    pub leader: Option<PeerId>,
    /// Its followers then.
    pub followers: Vec<PeerId>,
    /// "none" | "downgrading".
    pub leader_state: String,
    /// The longest stretch during which no datanode would have accepted a write for it.
    pub unwritable_ms: u64,
}

/// The simulator's invariants over a whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantsResult {
    /// No violation.
    pub ok: bool,
    /// Each violation, as a sentence.
    pub violations: Vec<String>,
}

/// The states with each run of consecutive repeats (a retry) collapsed into one.
pub fn collapse_path(states: &[String]) -> Vec<String> {
    let mut collapsed: Vec<String> = Vec::with_capacity(states.len());
    for state in states {
        if collapsed.last() != Some(state) {
            collapsed.push(state.clone());
        }
    }
    collapsed
}

/// Every expectation `result` fails, each as a sentence naming the key, what was expected
/// and what happened; empty when all hold. `migration_number` counts from 1 in file order,
/// as `[[cancels]]` do.
pub fn check_expectations(
    expect: &Expectations,
    result: &MigrationResult,
    migration_number: usize,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut fail = |key: &str, message: String| {
        failures.push(format!(
            "migration {migration_number} ({}): {key}: {message}",
            result.region
        ));
    };
    if let Some(outcome) = expect.outcome {
        if result.outcome != outcome.name() {
            let error = match &result.error {
                Some(error) => format!(" (error: {error})"),
                None => String::new(),
            };
            fail(
                "outcome",
                format!("expected {}, got {}{error}", outcome.name(), result.outcome),
            );
        }
    }
    if let Some(expected) = &expect.error {
        match &result.error {
            Some(error) if error.contains(expected.as_str()) => {}
            Some(error) => fail(
                "error",
                format!("expected an error containing {expected:?}, got {error:?}"),
            ),
            None => fail(
                "error",
                format!("expected an error containing {expected:?}, got no error"),
            ),
        }
    }
    if let Some(expected) = &expect.path {
        let actual = collapse_path(&result.path);
        if &actual != expected {
            fail(
                "path",
                format!(
                    "expected {}, got {}",
                    list_text(expected),
                    list_text(&actual)
                ),
            );
        }
    }
    if let Some(expected) = expect.leader {
        if result.leader != Some(expected) {
            let actual = result
                .leader
                .map_or_else(|| "no leader".to_string(), |leader| leader.to_string());
            fail("leader", format!("expected {expected}, got {actual}"));
        }
    }
    if let Some(expected) = &expect.followers {
        let mut expected_sorted = expected.clone();
        expected_sorted.sort_unstable();
        let mut actual_sorted = result.followers.clone();
        actual_sorted.sort_unstable();
        if expected_sorted != actual_sorted {
            fail(
                "followers",
                format!(
                    "expected {}, got {}",
                    list_text(expected),
                    list_text(&result.followers)
                ),
            );
        }
    }
    if let Some(expected) = expect.leader_state {
        if result.leader_state != expected.name() {
            fail(
                "leader_state",
                format!("expected {}, got {}", expected.name(), result.leader_state),
            );
        }
    }
    if let Some(expected) = &expect.sent {
        for (key, count) in expected {
            let actual = result.sent.get(key).copied().unwrap_or(0);
            if actual != *count {
                fail(
                    &format!("sent {key:?}"),
                    format!("expected {count}, got {actual}"),
                );
            }
        }
    }
    if let Some(max_ms) = expect.max_virtual_time_ms {
        if result.virtual_time_ms > max_ms {
            fail(
                "max_virtual_time",
                format!(
                    "expected to end by {}, ended after {}",
                    millis_text(max_ms),
                    millis_text(result.virtual_time_ms)
                ),
            );
        }
    }
    if let Some(max_ms) = expect.max_unwritable_ms {
        if result.unwritable_ms > max_ms {
            fail(
                "max_unwritable",
                format!(
                    "expected the region unwritable for at most {}, it was for {}",
                    millis_text(max_ms),
                    millis_text(result.unwritable_ms)
                ),
            );
        }
    }
    for (region, region_expect) in &expect.regions {
        let name = region.to_string();
        let Some(actual) = result.regions.iter().find(|r| r.region == name) else {
            fail(
                &format!("regions.\"{name}\""),
                "expected a region of this batch, the migration does not move it".to_string(),
            );
            continue;
        };
        for failure in check_region(region_expect, actual) {
            fail(&format!("regions.\"{name}\".{}", failure.0), failure.1);
        }
    }
    if let Some(min_ms) = expect.min_virtual_time_ms {
        if result.virtual_time_ms < min_ms {
            fail(
                "min_virtual_time",
                format!(
                    "expected not to end before {}, ended after {}",
                    millis_text(min_ms),
                    millis_text(result.virtual_time_ms)
                ),
            );
        }
    }
    failures
}

/// The failed keys of one region's expectations, each with what was expected and found.
fn check_region(expect: &Expectations, actual: &RegionResult) -> Vec<(&'static str, String)> {
    let mut failures = Vec::new();
    if let Some(outcome) = expect.outcome {
        if actual.outcome != outcome.name() {
            failures.push((
                "outcome",
                format!("expected {}, got {}", outcome.name(), actual.outcome),
            ));
        }
    }
    if let Some(expected) = expect.leader {
        if actual.leader != Some(expected) {
            let found = actual
                .leader
                .map_or_else(|| "no leader".to_string(), |leader| leader.to_string());
            failures.push(("leader", format!("expected {expected}, got {found}")));
        }
    }
    if let Some(expected) = &expect.followers {
        let mut expected_sorted = expected.clone();
        expected_sorted.sort_unstable();
        let mut actual_sorted = actual.followers.clone();
        actual_sorted.sort_unstable();
        if expected_sorted != actual_sorted {
            failures.push((
                "followers",
                format!(
                    "expected {}, got {}",
                    list_text(expected),
                    list_text(&actual.followers)
                ),
            ));
        }
    }
    if let Some(expected) = expect.leader_state {
        if actual.leader_state != expected.name() {
            failures.push((
                "leader_state",
                format!("expected {}, got {}", expected.name(), actual.leader_state),
            ));
        }
    }
    if let Some(max_ms) = expect.max_unwritable_ms {
        if actual.unwritable_ms > max_ms {
            failures.push((
                "max_unwritable",
                format!(
                    "expected the region unwritable for at most {}, it was for {}",
                    millis_text(max_ms),
                    millis_text(actual.unwritable_ms)
                ),
            ));
        }
    }
    failures
}

/// The result for a terminal: the verdict, one line per migration (and per region of a
/// batch), the failures, the invariant violations and the data directory.
pub fn render_text(outcome: &ScenarioOutcome) -> String {
    use crate::cli::escape::escape_text;
    let mut text = format!(
        "scenario {:?}: {}\n",
        outcome.name,
        if outcome.ok { "OK" } else { "FAILED" }
    );
    for (index, migration) in outcome.migrations.iter().enumerate() {
        text.push_str(&format!(
            "  migration {} {}: {} in {} ({} events, unwritable {}): {}\n",
            index + 1,
            migration.region,
            migration.outcome,
            millis_text(migration.virtual_time_ms),
            migration.events,
            millis_text(migration.unwritable_ms),
            path_text(&migration.path)
        ));
        if let Some(error) = &migration.error {
            // A datanode's or an operator's words: one line, no terminal escapes.
            text.push_str(&format!("    error: {}\n", escape_text(error)));
        }
        for region in &migration.regions {
            let leader = region
                .leader
                .map_or_else(|| "none".to_string(), |leader| leader.to_string());
            text.push_str(&format!(
                "    region {}: {}, leader {leader} ({}), unwritable {}\n",
                region.region,
                region.outcome,
                region.leader_state,
                millis_text(region.unwritable_ms)
            ));
        }
    }
    for failure in &outcome.failures {
        text.push_str(&format!("  failed: {}\n", escape_text(failure)));
    }
    if outcome.invariants.ok {
        text.push_str("  invariants: ok\n");
    } else {
        for violation in &outcome.invariants.violations {
            text.push_str(&format!("  invariant violated: {violation}\n"));
        }
    }
    text.push_str(&format!("  data dir: {}\n", outcome.data_dir));
    text
}

/// "Start > OpenCandidateRegion (x3) > ..."; "(no states)" when empty.
fn path_text(states: &[String]) -> String {
    if states.is_empty() {
        return "(no states)".to_string();
    }
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for state in states {
        match runs.last_mut() {
            Some((last, count)) if *last == state.as_str() => *count += 1,
            _ => runs.push((state, 1)),
        }
    }
    runs.iter()
        .map(|(state, count)| {
            if *count > 1 {
                format!("{state} (x{count})")
            } else {
                (*state).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" > ")
}

/// "[a, b, c]".
fn list_text<T: fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// A duration in milliseconds as humantime writes it ("1s 520ms", "0s").
fn millis_text(millis: u64) -> String {
    humantime::format_duration(Duration::from_millis(millis)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let source = Source {
            text: "a = 1\nbé = 2\n",
            file: "x.toml",
        };
        assert_eq!(source.position(0), (1, 1));
        assert_eq!(source.position(6), (2, 1));
        assert_eq!(source.position(9), (2, 3));
        assert_eq!(source.position(1000), (3, 1));
    }

    #[test]
    fn reply_tokens_round_trip_through_their_text() {
        for token in [
            ReplyToken::Ok,
            ReplyToken::OkWithLastEntryId(42),
            ReplyToken::Timeout,
            ReplyToken::Unreachable,
            ReplyToken::Error("disk full".to_string()),
            ReplyToken::NotExists,
            ReplyToken::NotReady,
            ReplyToken::WrongReply,
        ] {
            assert_eq!(ReplyToken::parse(&token.to_string()), Ok(token));
        }
        assert!(ReplyToken::parse("ok(last_entry_id=-1)").is_err());
        assert!(ReplyToken::parse("ok(last_entry_id=+1)").is_err());
        assert!(ReplyToken::parse("OK").is_err());
    }

    #[test]
    fn keys_that_are_not_bare_are_quoted_in_field_paths() {
        assert_eq!(join_key("", "seed"), "seed");
        assert_eq!(
            join_key("expect.sent", "2.open_region"),
            "expect.sent.\"2.open_region\""
        );
        assert_eq!(join_key("a", ""), "a.\"\"");
    }

    #[test]
    fn path_text_shows_retries_as_counts() {
        let states: Vec<String> = ["Start", "OpenCandidateRegion", "OpenCandidateRegion", "End"]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(path_text(&states), "Start > OpenCandidateRegion (x2) > End");
        assert_eq!(path_text(&[]), "(no states)");
    }
}
