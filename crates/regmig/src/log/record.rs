//! The record envelope: a fixed, big-endian layout ending in a crc32 over every byte before
//! it. `migrations-log-format.md` documents it byte by byte.
//!
//! Version 2 (written by this build):
//!
//! ```text
//! offset  size  field
//!      0     1  format_version   (2)
//!      1     2  kind             u16 BE
//!      3    16  procedure_id     uuid v7, RFC 4122 byte order
//!     19     8  seq              u64 BE, from 1, no gaps within a procedure
//!     27     8  global_seq       u64 BE, from 1, no gaps across the log
//!     35     8  recorded_at_ms   u64 BE, ms since the Unix epoch
//!     43    32  prev_hash        the chain hash of the record at global_seq - 1 (zeros at 1)
//!     75     4  payload_len      u32 BE
//!     79     n  payload          rmp-serde (named) bytes, opaque to the log
//!   79+n     4  crc32            u32 BE, CRC-32/ISO-HDLC of bytes [0, 79+n)
//! ```
//!
//! Version 1 is the same without `prev_hash` (`payload_len` at 43, the payload at 47). It is
//! read forever and never written. A record's chain hash is the SHA-256 of its whole
//! encoding ([`chain_hash`]), so each record's hash covers its predecessor's.

use uuid::Uuid;

use super::error::LogError;
use super::keys::{hex, parse_event_key};

/// The envelope version this build writes. It reads this one and [`FORMAT_VERSION_V1`].
pub const FORMAT_VERSION: u8 = 2;
/// The first envelope version: no chain field. Read forever, never written.
pub const FORMAT_VERSION_V1: u8 = 1;
/// Bytes of a chain hash (SHA-256).
pub const CHAIN_HASH_LEN: usize = 32;
/// A chain hash: the SHA-256 of a record's encoding.
pub type ChainHash = [u8; CHAIN_HASH_LEN];
/// The `prev_hash` of the record at global seq 1: nothing comes before it.
pub const CHAIN_START: ChainHash = [0u8; CHAIN_HASH_LEN];
/// Bytes before the payload (version 2).
pub const HEADER_LEN: usize = 79;
/// Bytes before the payload in a version-1 record.
pub const HEADER_LEN_V1: usize = 47;
/// Bytes of the trailing checksum.
pub const CRC_LEN: usize = 4;
/// Envelope bytes around the payload: the smallest possible record (version 2).
pub const ENVELOPE_OVERHEAD_BYTES: usize = HEADER_LEN + CRC_LEN;
/// Envelope bytes around the payload of a version-1 record.
pub const ENVELOPE_OVERHEAD_BYTES_V1: usize = HEADER_LEN_V1 + CRC_LEN;
/// The largest payload the log accepts on append. Readers accept any length the
/// `payload_len` field can express.
pub const PAYLOAD_MAX_BYTES: usize = 1 << 20;

const OFFSET_KIND: usize = 1;
const OFFSET_PROCEDURE_ID: usize = 3;
const OFFSET_SEQ: usize = 19;
const OFFSET_GLOBAL_SEQ: usize = 27;
const OFFSET_RECORDED_AT_MS: usize = 35;
const OFFSET_PREV_HASH: usize = 43;
const OFFSET_PAYLOAD_LEN_V1: usize = 43;
const OFFSET_PAYLOAD_LEN: usize = 75;

/// One event as stored: the envelope's fields and the opaque payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// The envelope version: [`FORMAT_VERSION`], or [`FORMAT_VERSION_V1`] for a record an
    /// older regmig wrote.
    pub format_version: u8,
    /// The event kind; the log does not interpret it (see `src/migration/events.rs`).
    pub kind: u16,
    /// The procedure (a uuid v7).
    pub procedure_id: Uuid,
    /// Position in the procedure's history, from 1, without gaps.
    pub seq: u64,
    /// Position in the whole log, from 1, without gaps.
    pub global_seq: u64,
    /// When the event was recorded, in ms since the Unix epoch.
    pub recorded_at_ms: u64,
    /// The event, rmp-serde encoded with field names; the log does not interpret it.
    pub payload: Vec<u8>,
    /// The chain hash of the record at `global_seq - 1` ([`CHAIN_START`] at 1); `None` in
    /// a version-1 record, which has no chain field.
    pub prev_hash: Option<ChainHash>,
}

impl Record {
    /// The byte length of this record's envelope.
    pub fn encoded_len(&self) -> usize {
        let overhead = if self.format_version == FORMAT_VERSION_V1 {
            ENVELOPE_OVERHEAD_BYTES_V1
        } else {
            ENVELOPE_OVERHEAD_BYTES
        };
        overhead + self.payload.len()
    }
}

/// The chain hash of a record: the SHA-256 of its whole encoding (checksum included).
pub fn chain_hash(encoded: &[u8]) -> ChainHash {
    use sha2::Digest;
    sha2::Sha256::digest(encoded).into()
}

/// Encodes `record` in the layout of its `format_version`: version 2 with its `prev_hash`,
/// or version 1 (no chain field), so a record read back re-encodes to the same bytes.
///
/// # Panics
/// If the version is neither, if `prev_hash` is absent from a version-2 record or present
/// in a version-1 one, or if the payload does not fit the u32 length field: all bugs in
/// the caller, never data read from disk.
pub fn encode_record(record: &Record) -> Vec<u8> {
    let prev_hash = match (record.format_version, record.prev_hash) {
        (FORMAT_VERSION, Some(prev_hash)) => Some(prev_hash),
        (FORMAT_VERSION_V1, None) => None,
        (version, prev_hash) => panic!(
            "encode_record: format version {version} with prev_hash {}",
            if prev_hash.is_some() {
                "present"
            } else {
                "absent"
            }
        ),
    };
    let payload_len = u32::try_from(record.payload.len())
        .expect("payload length must fit the u32 payload_len field");
    let mut bytes = Vec::with_capacity(record.encoded_len());
    bytes.push(record.format_version);
    bytes.extend_from_slice(&record.kind.to_be_bytes());
    bytes.extend_from_slice(record.procedure_id.as_bytes());
    bytes.extend_from_slice(&record.seq.to_be_bytes());
    bytes.extend_from_slice(&record.global_seq.to_be_bytes());
    bytes.extend_from_slice(&record.recorded_at_ms.to_be_bytes());
    if let Some(prev_hash) = prev_hash {
        bytes.extend_from_slice(&prev_hash);
    }
    bytes.extend_from_slice(&payload_len.to_be_bytes());
    bytes.extend_from_slice(&record.payload);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(bytes.len(), record.encoded_len());
    bytes
}

/// Decodes and checks the record stored under the event key `key`.
///
/// Every check names the procedure id, seq and key (from the key): a short record is
/// [`LogError::Truncated`], a checksum mismatch [`LogError::BadChecksum`], a newer
/// envelope [`LogError::UnknownFormatVersion`], a record whose fields break an invariant
/// (or disagree with its key) [`LogError::Malformed`]. A key that is not an event key is
/// [`LogError::MalformedKey`].
pub fn decode_record(key: &[u8], bytes: &[u8]) -> Result<Record, LogError> {
    let Some((procedure_id, seq)) = parse_event_key(key) else {
        return Err(LogError::MalformedKey {
            key: hex(key),
            reason: "not an event key (expected 'E' | 16-byte procedure id | u64 seq)".to_string(),
        });
    };
    let key_hex = || hex(key);
    let truncated = |expected_len: usize| LogError::Truncated {
        procedure_id,
        seq,
        key: key_hex(),
        expected_len,
        actual_len: bytes.len(),
    };
    let malformed = |reason: String| LogError::Malformed {
        procedure_id,
        seq,
        key: key_hex(),
        reason,
    };

    // Every format version ends in a crc32 over all the bytes before it, so the checksum
    // is checked before the version: a flipped bit anywhere reads as damage, and a valid
    // record of a newer version reads as UnknownFormatVersion.
    let min_len = match bytes.first() {
        Some(&FORMAT_VERSION_V1) => ENVELOPE_OVERHEAD_BYTES_V1,
        _ => ENVELOPE_OVERHEAD_BYTES,
    };
    if bytes.len() < CRC_LEN + 1 {
        return Err(truncated(min_len));
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored_crc = read_u32(crc_bytes, 0).ok_or_else(|| truncated(min_len))?;
    let computed_crc = crc32fast::hash(body);
    let declared_len = declared_len(bytes);
    if stored_crc != computed_crc {
        return match declared_len {
            _ if bytes.len() < min_len => Err(truncated(min_len)),
            Some(expected_len) if expected_len > bytes.len() => Err(truncated(expected_len)),
            _ => Err(LogError::BadChecksum {
                procedure_id,
                seq,
                key: key_hex(),
                stored_crc,
                computed_crc,
            }),
        };
    }
    let version = bytes[0];
    if version != FORMAT_VERSION && version != FORMAT_VERSION_V1 {
        return Err(LogError::UnknownFormatVersion {
            procedure_id,
            seq,
            key: key_hex(),
            version,
        });
    }
    let Some(expected_len) = declared_len else {
        return Err(truncated(min_len));
    };
    if expected_len > bytes.len() {
        return Err(truncated(expected_len));
    }
    if expected_len < bytes.len() {
        return Err(malformed(format!(
            "payload_len says the record is {expected_len} bytes but it is {} bytes",
            bytes.len()
        )));
    }

    let field_error = || truncated(min_len);
    let (header_len, prev_hash) = if version == FORMAT_VERSION_V1 {
        (HEADER_LEN_V1, None)
    } else {
        let prev_hash: ChainHash = bytes
            .get(OFFSET_PREV_HASH..OFFSET_PREV_HASH + CHAIN_HASH_LEN)
            .and_then(|slice| slice.try_into().ok())
            .ok_or_else(field_error)?;
        (HEADER_LEN, Some(prev_hash))
    };
    let kind = read_u16(bytes, OFFSET_KIND).ok_or_else(field_error)?;
    let stored_id_bytes: [u8; 16] = bytes
        .get(OFFSET_PROCEDURE_ID..OFFSET_PROCEDURE_ID + 16)
        .and_then(|slice| slice.try_into().ok())
        .ok_or_else(field_error)?;
    let record = Record {
        format_version: version,
        kind,
        procedure_id: Uuid::from_bytes(stored_id_bytes),
        seq: read_u64(bytes, OFFSET_SEQ).ok_or_else(field_error)?,
        global_seq: read_u64(bytes, OFFSET_GLOBAL_SEQ).ok_or_else(field_error)?,
        recorded_at_ms: read_u64(bytes, OFFSET_RECORDED_AT_MS).ok_or_else(field_error)?,
        payload: bytes
            .get(header_len..bytes.len() - CRC_LEN)
            .ok_or_else(field_error)?
            .to_vec(),
        prev_hash,
    };
    if record.procedure_id != procedure_id || record.seq != seq {
        return Err(malformed(format!(
            "the record names procedure {} seq {} but is stored under another key",
            record.procedure_id, record.seq
        )));
    }
    if let Some(reason) = envelope_violation(&record) {
        return Err(malformed(reason));
    }
    Ok(record)
}

/// The invariant a record breaks, if any: checked before a record is written and after
/// it is read. (The payload bound is a writer's rule only; see [`PAYLOAD_MAX_BYTES`].)
pub(crate) fn envelope_violation(record: &Record) -> Option<String> {
    match (record.format_version, record.prev_hash) {
        (FORMAT_VERSION, Some(_)) | (FORMAT_VERSION_V1, None) => {}
        (FORMAT_VERSION, None) => {
            return Some(format!(
                "a format version {FORMAT_VERSION} record without prev_hash"
            ))
        }
        (FORMAT_VERSION_V1, Some(_)) => {
            return Some(format!(
                "a format version {FORMAT_VERSION_V1} record cannot carry prev_hash"
            ))
        }
        (version, _) => {
            return Some(format!(
                "format version {version} is neither {FORMAT_VERSION} nor {FORMAT_VERSION_V1}"
            ))
        }
    }
    if record.seq == 0 {
        return Some("seq is 0; sequences start at 1".to_string());
    }
    if record.global_seq == 0 {
        return Some("global_seq is 0; global sequences start at 1".to_string());
    }
    if record.procedure_id.get_version_num() != 7 {
        return Some(format!(
            "procedure id {} is a uuid v{}, not v7",
            record.procedure_id,
            record.procedure_id.get_version_num()
        ));
    }
    if u32::try_from(record.payload.len()).is_err() {
        return Some("payload longer than u32::MAX bytes".to_string());
    }
    None
}

/// The record length an envelope of a known version declares, when the header is there to
/// say it.
fn declared_len(bytes: &[u8]) -> Option<usize> {
    let (offset, overhead) = match *bytes.first()? {
        FORMAT_VERSION => (OFFSET_PAYLOAD_LEN, ENVELOPE_OVERHEAD_BYTES),
        FORMAT_VERSION_V1 => (OFFSET_PAYLOAD_LEN_V1, ENVELOPE_OVERHEAD_BYTES_V1),
        _ => return None,
    };
    let payload_len = read_u32(bytes, offset)?;
    usize::try_from(payload_len).ok()?.checked_add(overhead)
}

fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        bytes.get(offset..offset + 8)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::keys::event_key;

    fn sample() -> Record {
        Record {
            format_version: FORMAT_VERSION,
            kind: 0x0102,
            procedure_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            seq: 3,
            global_seq: 9,
            recorded_at_ms: 1_700_000_000_000,
            payload: vec![0x81, 0xa1, b'a', 0x01],
            prev_hash: Some([0xab; CHAIN_HASH_LEN]),
        }
    }

    fn sample_v1() -> Record {
        Record {
            format_version: FORMAT_VERSION_V1,
            prev_hash: None,
            ..sample()
        }
    }

    #[test]
    fn layout_matches_the_documented_offsets() {
        let record = sample();
        let bytes = encode_record(&record);
        assert_eq!(bytes.len(), 83 + 4);
        assert_eq!(bytes[0], 2);
        assert_eq!(&bytes[1..3], &[0x01, 0x02]);
        assert_eq!(&bytes[3..19], record.procedure_id.as_bytes());
        assert_eq!(&bytes[19..27], &3u64.to_be_bytes());
        assert_eq!(&bytes[27..35], &9u64.to_be_bytes());
        assert_eq!(&bytes[35..43], &1_700_000_000_000u64.to_be_bytes());
        assert_eq!(&bytes[43..75], &[0xab; 32]);
        assert_eq!(&bytes[75..79], &4u32.to_be_bytes());
        assert_eq!(&bytes[79..83], &record.payload[..]);
        assert_eq!(&bytes[83..87], &crc32fast::hash(&bytes[..83]).to_be_bytes());
        assert_eq!(
            decode_record(&event_key(record.procedure_id, 3), &bytes).unwrap(),
            record
        );
    }

    #[test]
    fn version_1_layout_still_decodes_and_re_encodes() {
        let record = sample_v1();
        let bytes = encode_record(&record);
        assert_eq!(bytes.len(), 51 + 4);
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..3], &[0x01, 0x02]);
        assert_eq!(&bytes[3..19], record.procedure_id.as_bytes());
        assert_eq!(&bytes[19..27], &3u64.to_be_bytes());
        assert_eq!(&bytes[27..35], &9u64.to_be_bytes());
        assert_eq!(&bytes[35..43], &1_700_000_000_000u64.to_be_bytes());
        assert_eq!(&bytes[43..47], &4u32.to_be_bytes());
        assert_eq!(&bytes[47..51], &record.payload[..]);
        assert_eq!(&bytes[51..55], &crc32fast::hash(&bytes[..51]).to_be_bytes());
        assert_eq!(
            decode_record(&event_key(record.procedure_id, 3), &bytes).unwrap(),
            record
        );
    }

    #[test]
    fn decode_rejects_a_record_under_another_key() {
        let record = sample();
        let bytes = encode_record(&record);
        let wrong_key = event_key(record.procedure_id, 4);
        assert!(matches!(
            decode_record(&wrong_key, &bytes),
            Err(LogError::Malformed { seq: 4, .. })
        ));
    }

    #[test]
    fn decode_reports_a_cut_record_as_truncated() {
        let record = sample_v1();
        let bytes = encode_record(&record);
        let key = event_key(record.procedure_id, record.seq);
        assert!(matches!(
            decode_record(&key, &bytes[..53]),
            Err(LogError::Truncated {
                expected_len: 55,
                actual_len: 53,
                seq: 3,
                ..
            })
        ));
        assert!(matches!(
            decode_record(&key, &bytes[..50]),
            Err(LogError::Truncated {
                expected_len: 51,
                actual_len: 50,
                ..
            })
        ));
        assert!(matches!(
            decode_record(&key, &bytes[..3]),
            Err(LogError::Truncated { actual_len: 3, .. })
        ));
    }
}
