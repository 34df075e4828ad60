//! Key layouts of the log tree. Every key starts with a one-byte prefix naming its index;
//! every integer is big-endian, so sled's byte order is the numeric order. The layouts are
//! documented byte by byte in `migrations-log-format.md`.

use uuid::Uuid;

/// The name of the sled tree that holds the log (events and all their indexes).
pub const TREE_NAME: &[u8] = b"regmig.log";

/// The prefix of the layout marker key.
pub const PREFIX_META: u8 = b'M';
/// The prefix of event records: `E | procedure_id | seq`.
pub const PREFIX_EVENT: u8 = b'E';
/// The prefix of the global-order index: `G | first_global_seq`, one entry per group commit.
pub const PREFIX_GLOBAL: u8 = b'G';
/// The prefix of the open-procedures index: `O | procedure_id`.
pub const PREFIX_OPEN: u8 = b'O';
/// The prefix of the region → open procedure index: `R | region_id`.
pub const PREFIX_REGION_OPEN: u8 = b'R';
/// The prefix of the region audit index: `A | region_id | recorded_at_ms | procedure_id`.
pub const PREFIX_REGION_AUDIT: u8 = b'A';
/// The prefix of the peer audit index: `P | peer_id | recorded_at_ms | procedure_id`.
pub const PREFIX_PEER_AUDIT: u8 = b'P';

/// The layout marker key: its value is one byte, the layout version.
pub const LAYOUT_KEY: &[u8] = b"Mlayout";
/// The archive checkpoint (see [`super::archive::Checkpoint`]); absent until an archive.
pub const CHECKPOINT_KEY: &[u8] = b"Mcheckpoint";
/// The key layout version this build writes and reads.
pub const LAYOUT_VERSION: u8 = 1;

/// Length of an event key: prefix, 16-byte procedure id, 8-byte seq.
pub const EVENT_KEY_LEN: usize = 1 + 16 + 8;
/// Length of a global-order key: prefix, 8-byte global seq.
pub const GLOBAL_KEY_LEN: usize = 1 + 8;
/// Length of an open-procedure key: prefix, 16-byte procedure id.
pub const OPEN_KEY_LEN: usize = 1 + 16;
/// Length of a region → open procedure key: prefix, 8-byte region id.
pub const REGION_OPEN_KEY_LEN: usize = 1 + 8;
/// Length of an audit key: prefix, 8-byte region or peer id, 8-byte ms, 16-byte procedure id.
pub const AUDIT_KEY_LEN: usize = 1 + 8 + 8 + 16;
/// Length of one run in a global-order value: procedure id, first seq, event count.
pub const GLOBAL_RUN_LEN: usize = 16 + 8 + 4;
/// The most runs one global-order entry holds; a group commit with more writes several.
pub const GLOBAL_RUNS_PER_ENTRY_MAX: usize = 1024;

/// `E | procedure_id (16) | seq (u64 BE)`: one procedure's events lie together, in order.
pub fn event_key(procedure_id: Uuid, seq: u64) -> [u8; EVENT_KEY_LEN] {
    let mut key = [0u8; EVENT_KEY_LEN];
    key[0] = PREFIX_EVENT;
    key[1..17].copy_from_slice(procedure_id.as_bytes());
    key[17..25].copy_from_slice(&seq.to_be_bytes());
    key
}

/// `E | procedure_id`: the prefix of every event of one procedure.
pub fn event_prefix(procedure_id: Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = PREFIX_EVENT;
    key[1..17].copy_from_slice(procedure_id.as_bytes());
    key
}

/// `G | first_global_seq (u64 BE)`: the entry whose runs start at that global seq.
pub fn global_key(first_global_seq: u64) -> [u8; GLOBAL_KEY_LEN] {
    let mut key = [0u8; GLOBAL_KEY_LEN];
    key[0] = PREFIX_GLOBAL;
    key[1..9].copy_from_slice(&first_global_seq.to_be_bytes());
    key
}

/// Consecutive events of one procedure, in global order: global seqs
/// `start .. start + event_count` are that procedure's seqs `first_seq .. first_seq + event_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalRun {
    /// The procedure.
    pub procedure_id: Uuid,
    /// The seq of the run's first event.
    pub first_seq: u64,
    /// How many events the run has (at least 1).
    pub event_count: u32,
}

/// The value of a global-order entry: `run_count (u32 BE)`, then per run
/// `procedure_id (16) | first_seq (u64 BE) | event_count (u32 BE)`.
pub fn encode_global_runs(runs: &[GlobalRun]) -> Vec<u8> {
    let run_count = u32::try_from(runs.len())
        .expect("a global-order entry holds at most GLOBAL_RUNS_PER_ENTRY_MAX runs");
    let mut value = Vec::with_capacity(4 + runs.len() * GLOBAL_RUN_LEN);
    value.extend_from_slice(&run_count.to_be_bytes());
    for run in runs {
        value.extend_from_slice(run.procedure_id.as_bytes());
        value.extend_from_slice(&run.first_seq.to_be_bytes());
        value.extend_from_slice(&run.event_count.to_be_bytes());
    }
    value
}

/// The runs of a global-order value; `None` if its length disagrees with its run count or
/// a run is empty.
pub fn parse_global_runs(value: &[u8]) -> Option<Vec<GlobalRun>> {
    let run_count = usize::try_from(u32::from_be_bytes(value.get(0..4)?.try_into().ok()?)).ok()?;
    if run_count == 0 || value.len() != 4 + run_count.checked_mul(GLOBAL_RUN_LEN)? {
        return None;
    }
    let mut runs = Vec::with_capacity(run_count);
    for run_bytes in value[4..].chunks_exact(GLOBAL_RUN_LEN) {
        let run = GlobalRun {
            procedure_id: uuid_at(run_bytes, 0)?,
            first_seq: u64_at(run_bytes, 16)?,
            event_count: u32::from_be_bytes(run_bytes.get(24..28)?.try_into().ok()?),
        };
        if run.event_count == 0 || run.first_seq == 0 {
            return None;
        }
        runs.push(run);
    }
    Some(runs)
}

/// How many events the runs cover.
pub fn global_runs_event_count(runs: &[GlobalRun]) -> u64 {
    runs.iter().map(|run| u64::from(run.event_count)).sum()
}

/// The procedure and seq that the runs of the entry starting at `first_global_seq` give
/// global seq `global_seq`, if they cover it.
pub fn locate_in_global_runs(
    runs: &[GlobalRun],
    first_global_seq: u64,
    global_seq: u64,
) -> Option<(Uuid, u64)> {
    let mut offset = global_seq.checked_sub(first_global_seq)?;
    for run in runs {
        if offset < u64::from(run.event_count) {
            return Some((run.procedure_id, run.first_seq + offset));
        }
        offset -= u64::from(run.event_count);
    }
    None
}

/// `O | procedure_id (16)`; the value is the region id (u64 BE).
pub fn open_key(procedure_id: Uuid) -> [u8; OPEN_KEY_LEN] {
    let mut key = [0u8; OPEN_KEY_LEN];
    key[0] = PREFIX_OPEN;
    key[1..17].copy_from_slice(procedure_id.as_bytes());
    key
}

/// `R | region_id (u64 BE)`; the value is the open procedure's id (16 bytes).
pub fn region_open_key(region_id: u64) -> [u8; REGION_OPEN_KEY_LEN] {
    let mut key = [0u8; REGION_OPEN_KEY_LEN];
    key[0] = PREFIX_REGION_OPEN;
    key[1..9].copy_from_slice(&region_id.to_be_bytes());
    key
}

/// `A | region_id | recorded_at_ms | procedure_id`; the value is empty.
pub fn region_audit_key(
    region_id: u64,
    recorded_at_ms: u64,
    procedure_id: Uuid,
) -> [u8; AUDIT_KEY_LEN] {
    audit_key(PREFIX_REGION_AUDIT, region_id, recorded_at_ms, procedure_id)
}

/// `P | peer_id | recorded_at_ms | procedure_id`; the value is empty.
pub fn peer_audit_key(
    peer_id: u64,
    recorded_at_ms: u64,
    procedure_id: Uuid,
) -> [u8; AUDIT_KEY_LEN] {
    audit_key(PREFIX_PEER_AUDIT, peer_id, recorded_at_ms, procedure_id)
}

fn audit_key(
    prefix: u8,
    owner_id: u64,
    recorded_at_ms: u64,
    procedure_id: Uuid,
) -> [u8; AUDIT_KEY_LEN] {
    let mut key = [0u8; AUDIT_KEY_LEN];
    key[0] = prefix;
    key[1..9].copy_from_slice(&owner_id.to_be_bytes());
    key[9..17].copy_from_slice(&recorded_at_ms.to_be_bytes());
    key[17..33].copy_from_slice(procedure_id.as_bytes());
    key
}

/// The procedure id and seq of an event key; `None` if it is not one.
pub fn parse_event_key(key: &[u8]) -> Option<(Uuid, u64)> {
    if key.len() != EVENT_KEY_LEN || key[0] != PREFIX_EVENT {
        return None;
    }
    Some((uuid_at(key, 1)?, u64_at(key, 17)?))
}

/// The global seq of a global-order key; `None` if it is not one.
pub fn parse_global_key(key: &[u8]) -> Option<u64> {
    if key.len() != GLOBAL_KEY_LEN || key[0] != PREFIX_GLOBAL {
        return None;
    }
    u64_at(key, 1)
}

/// The procedure id of an open-procedure key.
pub fn parse_open_key(key: &[u8]) -> Option<Uuid> {
    if key.len() != OPEN_KEY_LEN || key[0] != PREFIX_OPEN {
        return None;
    }
    uuid_at(key, 1)
}

/// The region id of a region → open procedure key.
pub fn parse_region_open_key(key: &[u8]) -> Option<u64> {
    if key.len() != REGION_OPEN_KEY_LEN || key[0] != PREFIX_REGION_OPEN {
        return None;
    }
    u64_at(key, 1)
}

/// `(region or peer id, recorded_at_ms, procedure_id)` of an audit key with `prefix`.
pub fn parse_audit_key(prefix: u8, key: &[u8]) -> Option<(u64, u64, Uuid)> {
    if key.len() != AUDIT_KEY_LEN || key[0] != prefix {
        return None;
    }
    Some((u64_at(key, 1)?, u64_at(key, 9)?, uuid_at(key, 17)?))
}

/// A u64 read big-endian from 8 bytes; `None` for any other length.
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    (bytes.len() == 8).then(|| u64_at(bytes, 0)).flatten()
}

/// A uuid from 16 bytes; `None` for any other length.
pub fn parse_uuid(bytes: &[u8]) -> Option<Uuid> {
    (bytes.len() == 16).then(|| uuid_at(bytes, 0)).flatten()
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    let array: [u8; 8] = bytes.get(offset..offset + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(array))
}

fn uuid_at(bytes: &[u8], offset: usize) -> Option<Uuid> {
    let array: [u8; 16] = bytes.get(offset..offset + 16)?.try_into().ok()?;
    Some(Uuid::from_bytes(array))
}

/// Lower-case hex of `bytes`, as keys are named in errors and in `regmig log verify`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_procedure_then_seq() {
        let first = Uuid::from_u128(1);
        let second = Uuid::from_u128(2);
        assert!(event_key(first, 2) < event_key(first, 256));
        assert!(event_key(first, u64::MAX) < event_key(second, 1));
        assert_eq!(parse_event_key(&event_key(second, 7)), Some((second, 7)));
        assert_eq!(parse_event_key(&global_key(7)), None);
    }

    #[test]
    fn audit_keys_sort_by_owner_then_time() {
        let id = Uuid::from_u128(9);
        assert!(region_audit_key(1, 500, id) < region_audit_key(1, 501, Uuid::nil()));
        assert!(region_audit_key(1, u64::MAX, id) < region_audit_key(2, 0, id));
        assert_eq!(
            parse_audit_key(PREFIX_REGION_AUDIT, &region_audit_key(3, 4, id)),
            Some((3, 4, id))
        );
        assert_eq!(
            parse_audit_key(PREFIX_PEER_AUDIT, &region_audit_key(3, 4, id)),
            None
        );
    }

    #[test]
    fn global_runs_round_trip_and_locate_events() {
        let first = Uuid::from_u128(1);
        let second = Uuid::from_u128(2);
        let runs = vec![
            GlobalRun {
                procedure_id: first,
                first_seq: 4,
                event_count: 2,
            },
            GlobalRun {
                procedure_id: second,
                first_seq: 1,
                event_count: 3,
            },
        ];
        let value = encode_global_runs(&runs);
        assert_eq!(value.len(), 4 + 2 * GLOBAL_RUN_LEN);
        assert_eq!(parse_global_runs(&value).as_deref(), Some(&runs[..]));
        assert_eq!(parse_global_runs(&value[..value.len() - 1]), None);
        assert_eq!(global_runs_event_count(&runs), 5);
        assert_eq!(locate_in_global_runs(&runs, 10, 11), Some((first, 5)));
        assert_eq!(locate_in_global_runs(&runs, 10, 12), Some((second, 1)));
        assert_eq!(locate_in_global_runs(&runs, 10, 15), None);
        assert_eq!(locate_in_global_runs(&runs, 10, 9), None);
    }

    #[test]
    fn hex_is_lower_case_pairs() {
        assert_eq!(hex(&[0x00, 0x4f, 0xff]), "004fff");
    }
}
