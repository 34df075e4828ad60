//! Export bundles: one migration's events in a self-contained file, so a failed migration
//! can be attached to a bug report and replayed elsewhere (`regmig export`,
//! `regmig replay --file`). The format is documented byte by byte in
//! the "Export bundles" section of migrations-log-format.md.
//!
//! ```text
//! offset  size  field
//!      0     8  magic            "RGMGBNDL"
//!      8     2  bundle_version   u16 BE (1)
//!     10     1  record_format    u8, the envelope format version of every record (1)
//!     11     1  reserved         0
//!     12    16  procedure_id     uuid v7, RFC 4122 byte order
//!     28     4  record_count     u32 BE, at least 1
//!     32     2  writer_len       u16 BE
//!     34     w  writer           UTF-8, e.g. "regmig 0.1.0" (informative)
//!   34+w     4  header_crc32     u32 BE, CRC-32/ISO-HDLC of bytes [0, 34+w)
//! then record_count times, seq 1, 2, 3... in order:
//!            4  record_len       u32 BE
//!            n  record           the record exactly as the log stores it (its own crc32)
//! ```
//! The file ends right after the last record.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::files::{read_at_most, Bounded};
use crate::log::keys::event_key;
use crate::log::{decode_record, encode_record, LogError, Record, FORMAT_VERSION};

/// The first eight bytes of every bundle.
pub const BUNDLE_MAGIC: [u8; 8] = *b"RGMGBNDL";
/// The bundle layout this build writes (and the only one it reads).
pub const BUNDLE_VERSION: u16 = 1;
/// The largest bundle file read (or written).
pub const BUNDLE_SIZE_MAX_BYTES: u64 = 256 << 20;
/// Bytes of the header before the writer string.
const FIXED_HEADER_LEN: usize = 34;

/// One migration's records, as read from a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The migration.
    pub procedure_id: Uuid,
    /// What wrote the bundle (informative).
    pub writer: String,
    /// Its records, seq 1, 2, 3... each checked as the log checks it.
    pub records: Vec<Record>,
}

/// Why a bundle could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The file could not be read or written.
    #[error("bundle {}: could not {action}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// "read" or "write".
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the bundle magic.
    #[error("{} is not a regmig bundle (it does not start with \"RGMGBNDL\")", path.display())]
    NotABundle {
        /// The file.
        path: PathBuf,
    },
    /// The bundle layout is one this build does not read.
    #[error("bundle {}: bundle version {found}; this regmig reads version {BUNDLE_VERSION} only", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u16,
    },
    /// The records' envelope version is one this build does not read.
    #[error("bundle {}: its records have format version {found}; this regmig reads format versions 1 to {FORMAT_VERSION}", path.display())]
    UnsupportedRecordFormat {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u8,
    },
    /// The file ends early.
    #[error("bundle {}: truncated in {what}: needs {needed_bytes} more bytes at offset {offset}, the file ends there", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Which part was cut ("the header", "event 3").
        what: String,
        /// Where the missing bytes start.
        offset: usize,
        /// How many bytes are missing.
        needed_bytes: usize,
    },
    /// The header's checksum does not match its bytes.
    #[error("bundle {}: bad header checksum: stored {stored_crc:#010x}, computed {computed_crc:#010x}", path.display())]
    HeaderChecksum {
        /// The file.
        path: PathBuf,
        /// The crc32 stored.
        stored_crc: u32,
        /// The crc32 of the header bytes.
        computed_crc: u32,
    },
    /// A record fails the log's checks (checksum, envelope, seq, procedure id).
    #[error("bundle {}: event {seq}: {source}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The seq the record should have.
        seq: u64,
        /// What the log's record check found.
        #[source]
        source: LogError,
    },
    /// The header names no record.
    #[error("bundle {}: holds no events", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Bytes follow the last record.
    #[error("bundle {}: {extra_bytes} unexpected bytes after the last event (offset {offset})", path.display())]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Where they start.
        offset: usize,
        /// How many.
        extra_bytes: usize,
    },
    /// The file is larger than [`BUNDLE_SIZE_MAX_BYTES`].
    #[error("bundle {}: at least {size_bytes} bytes, more than the {BUNDLE_SIZE_MAX_BYTES} bytes a bundle may hold", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, or for a stream (a pipe, `/dev/zero`) the bytes read before stopping.
        size_bytes: u64,
    },
}

impl BundleError {
    /// A stable snake_case name for the variant.
    pub fn kind_name(&self) -> &'static str {
        match self {
            BundleError::Io { .. } => "bundle_io",
            BundleError::NotABundle { .. } => "not_a_bundle",
            BundleError::UnsupportedVersion { .. } => "unsupported_bundle_version",
            BundleError::UnsupportedRecordFormat { .. } => "unsupported_record_format",
            BundleError::Truncated { .. } => "bundle_truncated",
            BundleError::HeaderChecksum { .. } => "bundle_header_checksum",
            BundleError::Record { .. } => "bundle_record",
            BundleError::Empty { .. } => "bundle_empty",
            BundleError::TrailingBytes { .. } => "bundle_trailing_bytes",
            BundleError::TooLarge { .. } => "bundle_too_large",
        }
    }
}

/// Encodes a migration's records (seq 1, 2, 3... of `procedure_id`) as a bundle.
///
/// # Panics
/// If a record belongs to another procedure, is out of order or cannot be encoded (see
/// [`encode_record`]): records read from the log never are.
pub fn encode_bundle(procedure_id: Uuid, records: &[Record]) -> Vec<u8> {
    let writer = format!("regmig {}", env!("CARGO_PKG_VERSION"));
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&BUNDLE_MAGIC);
    bytes.extend_from_slice(&BUNDLE_VERSION.to_be_bytes());
    // The newest record version inside (a log an older regmig wrote has version 1 only).
    bytes.push(
        records
            .iter()
            .map(|record| record.format_version)
            .max()
            .unwrap_or(FORMAT_VERSION),
    );
    bytes.push(0);
    bytes.extend_from_slice(procedure_id.as_bytes());
    let record_count = u32::try_from(records.len()).expect("at most u32::MAX records");
    bytes.extend_from_slice(&record_count.to_be_bytes());
    let writer_len = u16::try_from(writer.len()).expect("a short writer string");
    bytes.extend_from_slice(&writer_len.to_be_bytes());
    bytes.extend_from_slice(writer.as_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    for (index, record) in records.iter().enumerate() {
        assert_eq!(
            record.procedure_id, procedure_id,
            "a record of another procedure"
        );
        assert_eq!(record.seq, index as u64 + 1, "records out of order");
        let encoded = encode_record(record);
        let len = u32::try_from(encoded.len()).expect("a record fits u32");
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&encoded);
    }
    bytes
}

/// Writes a bundle file.
pub fn write_bundle(
    path: &Path,
    procedure_id: Uuid,
    records: &[Record],
) -> Result<(), BundleError> {
    let bytes = encode_bundle(procedure_id, records);
    std::fs::write(path, bytes).map_err(|source| BundleError::Io {
        path: path.to_path_buf(),
        action: "write",
        source,
    })
}

/// Reads and checks a bundle file.
pub fn read_bundle(path: &Path) -> Result<Bundle, BundleError> {
    let io_error = |source| BundleError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    };
    let size_bytes = std::fs::metadata(path).map_err(io_error)?.len();
    if size_bytes > BUNDLE_SIZE_MAX_BYTES {
        return Err(BundleError::TooLarge {
            path: path.to_path_buf(),
            size_bytes,
        });
    }
    // The length above is 0 for a pipe or a device: read at most one byte past the limit.
    match read_at_most(path, BUNDLE_SIZE_MAX_BYTES).map_err(io_error)? {
        Bounded::Whole(bytes) => decode_bundle(path, &bytes),
        Bounded::TooLarge { read_bytes } => Err(BundleError::TooLarge {
            path: path.to_path_buf(),
            size_bytes: read_bytes,
        }),
    }
}

/// Decodes and checks bundle bytes; `path` only names the file in errors.
pub fn decode_bundle(path: &Path, bytes: &[u8]) -> Result<Bundle, BundleError> {
    let path_buf = || path.to_path_buf();
    if bytes.len() < BUNDLE_MAGIC.len() || bytes[..BUNDLE_MAGIC.len()] != BUNDLE_MAGIC {
        return Err(BundleError::NotABundle { path: path_buf() });
    }
    // Only reached when the file ends before `end`: the missing bytes start at its end.
    let truncated = |what: &str, end: usize| BundleError::Truncated {
        path: path_buf(),
        what: what.to_string(),
        offset: bytes.len(),
        needed_bytes: end.saturating_sub(bytes.len()),
    };
    let take = |offset: usize, len: usize, what: &str| -> Result<&[u8], BundleError> {
        let end = offset.saturating_add(len);
        bytes.get(offset..end).ok_or_else(|| truncated(what, end))
    };
    let version_bytes = take(8, 2, "the header")?;
    let version = u16::from_be_bytes([version_bytes[0], version_bytes[1]]);
    if version != BUNDLE_VERSION {
        return Err(BundleError::UnsupportedVersion {
            path: path_buf(),
            found: version,
        });
    }
    let fixed = take(0, FIXED_HEADER_LEN, "the header")?;
    let writer_len = usize::from(u16::from_be_bytes([fixed[32], fixed[33]]));
    let header_len = FIXED_HEADER_LEN + writer_len;
    let header = take(0, header_len, "the header")?;
    let crc_bytes = take(header_len, 4, "the header")?;
    let stored_crc = u32::from_be_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    let computed_crc = crc32fast::hash(header);
    if stored_crc != computed_crc {
        return Err(BundleError::HeaderChecksum {
            path: path_buf(),
            stored_crc,
            computed_crc,
        });
    }
    let record_format = fixed[10];
    // Records of every version up to ours are read (a log may hold version-1 records).
    if record_format == 0 || record_format > FORMAT_VERSION {
        return Err(BundleError::UnsupportedRecordFormat {
            path: path_buf(),
            found: record_format,
        });
    }
    let mut id_bytes = [0u8; 16];
    id_bytes.copy_from_slice(&fixed[12..28]);
    let procedure_id = Uuid::from_bytes(id_bytes);
    let record_count = u32::from_be_bytes([fixed[28], fixed[29], fixed[30], fixed[31]]);
    if record_count == 0 {
        return Err(BundleError::Empty { path: path_buf() });
    }
    let writer = String::from_utf8_lossy(&header[FIXED_HEADER_LEN..]).into_owned();

    let mut offset = header_len + 4;
    // Bounded by the file: every record takes at least its 4-byte length.
    let mut records = Vec::with_capacity((record_count as usize).min(bytes.len() / 4));
    for index in 0..u64::from(record_count) {
        let seq = index + 1;
        let what = format!("event {seq}");
        let len_bytes = take(offset, 4, &what)?;
        let record_len =
            u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        offset += 4;
        let record_bytes = take(offset, record_len, &what)?;
        let record =
            decode_record(&event_key(procedure_id, seq), record_bytes).map_err(|source| {
                BundleError::Record {
                    path: path_buf(),
                    seq,
                    source,
                }
            })?;
        records.push(record);
        offset += record_len;
    }
    if offset != bytes.len() {
        return Err(BundleError::TrailingBytes {
            path: path_buf(),
            offset,
            extra_bytes: bytes.len() - offset,
        });
    }
    Ok(Bundle {
        procedure_id,
        writer,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> (Uuid, Vec<Record>) {
        let procedure_id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let records = (1..=3)
            .map(|seq| Record {
                format_version: FORMAT_VERSION,
                kind: 5,
                procedure_id,
                seq,
                global_seq: seq + 10,
                recorded_at_ms: 1_767_225_600_000 + seq,
                payload: vec![0x80 + seq as u8],
                prev_hash: Some([seq as u8; 32]),
            })
            .collect();
        (procedure_id, records)
    }

    #[test]
    fn a_bundle_round_trips() {
        let (procedure_id, records) = records();
        let bytes = encode_bundle(procedure_id, &records);
        assert_eq!(&bytes[..8], b"RGMGBNDL");
        let bundle = decode_bundle(Path::new("b"), &bytes).expect("decodes");
        assert_eq!(bundle.procedure_id, procedure_id);
        assert_eq!(bundle.records, records);
        assert!(bundle.writer.starts_with("regmig "));
    }

    #[test]
    fn every_cut_of_a_bundle_is_an_error() {
        let (procedure_id, records) = records();
        let bytes = encode_bundle(procedure_id, &records);
        for len in 0..bytes.len() {
            assert!(
                decode_bundle(Path::new("b"), &bytes[..len]).is_err(),
                "a bundle cut at {len} bytes was accepted"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_an_error() {
        let (procedure_id, records) = records();
        let bytes = encode_bundle(procedure_id, &records);
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x01;
            assert!(
                decode_bundle(Path::new("b"), &damaged).is_err(),
                "a flipped bit at byte {index} was accepted"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_named() {
        let (procedure_id, records) = records();
        let mut bytes = encode_bundle(procedure_id, &records);
        bytes.push(0);
        assert!(matches!(
            decode_bundle(Path::new("b"), &bytes),
            Err(BundleError::TrailingBytes { extra_bytes: 1, .. })
        ));
    }
}
