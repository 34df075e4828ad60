//! The high-water mark: a small file beside sled, `<data dir>/regmig.mark`, that says how
//! far the log reached and what its chain hash was there. sled 0.34's recovery treats a
//! damaged message as the end of its log and drops everything after it without a word; the
//! mark is how the log notices that history it acknowledged is gone.
//!
//! Every group commit writes the mark (the group's first and last global seq and the chain
//! hashes before and at its end) and fdatasyncs it on a second thread, from the moment the
//! group is planned, while the commit thread applies the batch and syncs sled's files; so
//! an append still waits about one device round trip. Since the two syncs
//! race, a power cut may leave the mark naming a group sled never made durable: that group
//! was not acknowledged, and the check accepts a log that ends exactly before it. A clean
//! close writes a mark with no group in flight.
//!
//! The file holds two 512-byte slots, written alternately, each with its own checksum and
//! a generation: a write torn by a power cut spoils one slot, and the other still holds
//! the previous mark. `migrations-log-format.md` documents the bytes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::error::LogError;
use super::keys::hex;
use super::record::{ChainHash, CHAIN_HASH_LEN, CHAIN_START};

/// The mark file's name in the data directory.
pub const MARK_FILE_NAME: &str = "regmig.mark";
/// The bytes that open every slot.
const MARK_MAGIC: [u8; 4] = *b"RGMK";
/// The slot layout version.
const MARK_VERSION: u8 = 1;
/// Bytes per slot; slot `generation % 2` is at `(generation % 2) * SLOT_LEN`.
pub const MARK_SLOT_LEN: usize = 512;
/// Bytes of the whole file: two slots.
pub const MARK_FILE_LEN: usize = 2 * MARK_SLOT_LEN;
/// Bytes of a slot that carry data; the rest are zero.
const SLOT_DATA_LEN: usize = 100;

/// What one mark says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Counts writes; the valid slot with the larger one is the mark.
    pub generation: u64,
    /// The first global seq of the group being committed when the mark was written; one
    /// past `last_global_seq` when no group was in flight (a clean close, a new log).
    pub group_first_global_seq: u64,
    /// The last global seq the mark vouches for (0: none).
    pub last_global_seq: u64,
    /// The chain hash of the record at `group_first_global_seq - 1`.
    pub hash_before_group: ChainHash,
    /// The chain hash of the record at `last_global_seq`.
    pub hash_at_last: ChainHash,
}

impl Mark {
    /// The mark of an empty log.
    pub fn empty() -> Mark {
        Mark::settled(1, 0, CHAIN_START)
    }

    /// A mark with no group in flight: the log ends at `last_global_seq`, whose record has
    /// chain hash `hash_at_last`.
    pub fn settled(generation: u64, last_global_seq: u64, hash_at_last: ChainHash) -> Mark {
        Mark {
            generation,
            group_first_global_seq: last_global_seq + 1,
            last_global_seq,
            hash_before_group: hash_at_last,
            hash_at_last,
        }
    }

    /// The last global seq an append was acknowledged for, for certain: the end of the
    /// group before the one in flight.
    pub fn acknowledged_global_seq(&self) -> u64 {
        self.group_first_global_seq.saturating_sub(1)
    }

    /// The slot bytes of this mark.
    pub fn encode(&self) -> [u8; MARK_SLOT_LEN] {
        let mut slot = [0u8; MARK_SLOT_LEN];
        slot[0..4].copy_from_slice(&MARK_MAGIC);
        slot[4] = MARK_VERSION;
        slot[8..16].copy_from_slice(&self.generation.to_be_bytes());
        slot[16..24].copy_from_slice(&self.group_first_global_seq.to_be_bytes());
        slot[24..32].copy_from_slice(&self.last_global_seq.to_be_bytes());
        slot[32..64].copy_from_slice(&self.hash_before_group);
        slot[64..96].copy_from_slice(&self.hash_at_last);
        let crc = crc32fast::hash(&slot[..96]);
        slot[96..SLOT_DATA_LEN].copy_from_slice(&crc.to_be_bytes());
        slot
    }

    /// Decodes one slot; `Err` says why it is not a valid mark.
    pub fn decode(slot: &[u8]) -> Result<Mark, String> {
        if slot.len() < SLOT_DATA_LEN {
            return Err(format!(
                "{} bytes, a slot needs {SLOT_DATA_LEN}",
                slot.len()
            ));
        }
        if slot[0..4] != MARK_MAGIC {
            return Err(format!("it starts with {}, not \"RGMK\"", hex(&slot[0..4])));
        }
        let stored_crc = u32::from_be_bytes(slot[96..100].try_into().map_err(|_| "short")?);
        let computed_crc = crc32fast::hash(&slot[..96]);
        if stored_crc != computed_crc {
            return Err(format!(
                "bad checksum: stored {stored_crc:#010x}, computed {computed_crc:#010x}"
            ));
        }
        if slot[4] != MARK_VERSION {
            return Err(format!(
                "slot version {}, this regmig reads {MARK_VERSION}",
                slot[4]
            ));
        }
        let u64_at = |offset: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&slot[offset..offset + 8]);
            u64::from_be_bytes(bytes)
        };
        let hash_at = |offset: usize| {
            let mut hash = [0u8; CHAIN_HASH_LEN];
            hash.copy_from_slice(&slot[offset..offset + CHAIN_HASH_LEN]);
            hash
        };
        let mark = Mark {
            generation: u64_at(8),
            group_first_global_seq: u64_at(16),
            last_global_seq: u64_at(24),
            hash_before_group: hash_at(32),
            hash_at_last: hash_at(64),
        };
        if mark.group_first_global_seq == 0
            || mark.group_first_global_seq > mark.last_global_seq.saturating_add(1)
        {
            return Err(format!(
                "group from global seq {} to {} is not a range",
                mark.group_first_global_seq, mark.last_global_seq
            ));
        }
        Ok(mark)
    }
}

/// The mark of `data_dir`: `Ok(None)` when there is no mark file, `Err` (a
/// [`LogError::MarkDamaged`]) when neither slot holds a valid mark.
pub fn read_mark(data_dir: &Path) -> Result<Option<Mark>, LogError> {
    let path = data_dir.join(MARK_FILE_NAME);
    // At most one byte more than a mark holds: a mark replaced by an endless file reads
    // as damaged, not to its end.
    let bytes = match crate::files::read_at_most(&path, MARK_FILE_LEN as u64) {
        Ok(crate::files::Bounded::Whole(bytes)) => bytes,
        Ok(crate::files::Bounded::TooLarge { .. }) => {
            return Err(LogError::MarkDamaged {
                path,
                reason: format!("it holds more than the {MARK_FILE_LEN} bytes of a mark file"),
            })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(LogError::io("read the mark file", &path, error)),
    };
    if bytes.len() != MARK_FILE_LEN {
        return Err(LogError::MarkDamaged {
            path,
            reason: format!(
                "it is {} bytes, a mark file is {MARK_FILE_LEN}",
                bytes.len()
            ),
        });
    }
    let slots = [
        Mark::decode(&bytes[..MARK_SLOT_LEN]),
        Mark::decode(&bytes[MARK_SLOT_LEN..]),
    ];
    let best = slots
        .iter()
        .enumerate()
        .filter_map(|(index, slot)| slot.as_ref().ok().map(|mark| (index, *mark)))
        // A slot is only ever written at its own parity.
        .filter(|(index, mark)| mark.generation % 2 == *index as u64)
        .max_by_key(|(_, mark)| mark.generation);
    match best {
        Some((_, mark)) => Ok(Some(mark)),
        None => Err(LogError::MarkDamaged {
            path,
            reason: format!(
                "neither slot holds a valid mark (slot 0: {}; slot 1: {})",
                slots[0].as_ref().err().map_or("wrong generation", |e| e),
                slots[1].as_ref().err().map_or("wrong generation", |e| e)
            ),
        }),
    }
}

/// Creates the mark file of a log with `mark` in it, atomically: written to a temporary
/// name, synced, renamed, and the directory synced.
pub fn create_mark(data_dir: &Path, mark: &Mark) -> Result<(), LogError> {
    let path = data_dir.join(MARK_FILE_NAME);
    let temporary = data_dir.join(format!("{MARK_FILE_NAME}.new"));
    let mut bytes = vec![0u8; MARK_FILE_LEN];
    let offset = slot_offset(mark.generation);
    bytes[offset..offset + MARK_SLOT_LEN].copy_from_slice(&mark.encode());
    let mut file = File::create(&temporary)
        .map_err(|error| LogError::io("create the mark file", &temporary, error))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| LogError::io("write the mark file", &temporary, error))?;
    drop(file);
    std::fs::rename(&temporary, &path)
        .map_err(|error| LogError::io("rename the mark file to", &path, error))?;
    super::durable::fsync_dir(data_dir)
}

fn slot_offset(generation: u64) -> usize {
    (generation % 2) as usize * MARK_SLOT_LEN
}

/// Writes marks: each in the slot of its generation, then fdatasync, on a thread of its
/// own so the caller can sync sled meanwhile.
pub(crate) struct MarkWriter {
    path: PathBuf,
    file: std::sync::Arc<File>,
    /// Started on the first durable write.
    thread: Option<(mpsc::Sender<MarkJob>, JoinHandle<()>)>,
}

struct MarkJob {
    slot: [u8; MARK_SLOT_LEN],
    offset: u64,
    sync: bool,
    reply: mpsc::SyncSender<std::io::Result<()>>,
}

/// A mark write under way; [`PendingMark::wait`] returns once it is durable.
pub(crate) struct PendingMark {
    path: PathBuf,
    answer: Result<mpsc::Receiver<std::io::Result<()>>, std::io::Error>,
}

impl PendingMark {
    pub(crate) fn wait(self) -> Result<(), LogError> {
        let result = match self.answer {
            Ok(answer) => answer
                .recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("the mark thread stopped"))),
            Err(error) => Err(error),
        };
        result.map_err(|error| LogError::io("write and fdatasync", &self.path, error))
    }
}

impl MarkWriter {
    /// Opens the existing mark file of `data_dir` for writing.
    pub(crate) fn open(data_dir: &Path) -> Result<MarkWriter, LogError> {
        let path = data_dir.join(MARK_FILE_NAME);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|error| LogError::io("open the mark file", &path, error))?;
        Ok(MarkWriter {
            path,
            file: std::sync::Arc::new(file),
            thread: None,
        })
    }

    /// Starts writing `mark` (and fdatasyncing it, when `sync`) on the mark thread.
    pub(crate) fn start(&mut self, mark: &Mark, sync: bool) -> PendingMark {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = MarkJob {
            slot: mark.encode(),
            offset: slot_offset(mark.generation) as u64,
            sync,
            reply,
        };
        let sent = self.sender().and_then(|sender| {
            sender
                .send(job)
                .map_err(|_| std::io::Error::other("the mark thread stopped"))
        });
        PendingMark {
            path: self.path.clone(),
            answer: sent.map(|()| answer),
        }
    }

    /// Writes `mark` on the caller's thread.
    pub(crate) fn write_now(&self, mark: &Mark) -> Result<(), LogError> {
        write_slot(
            &self.file,
            &mark.encode(),
            slot_offset(mark.generation) as u64,
            true,
        )
        .map_err(|error| LogError::io("write and fdatasync", &self.path, error))
    }

    fn sender(&mut self) -> std::io::Result<&mpsc::Sender<MarkJob>> {
        if self.thread.is_none() {
            let (sender, receiver) = mpsc::channel::<MarkJob>();
            let file = std::sync::Arc::clone(&self.file);
            let thread = std::thread::Builder::new()
                .name("regmig-log-mark".to_string())
                .spawn(move || {
                    for job in receiver {
                        let result = write_slot(&file, &job.slot, job.offset, job.sync);
                        let _ = job.reply.send(result);
                    }
                })?;
            self.thread = Some((sender, thread));
        }
        match &self.thread {
            Some((sender, _)) => Ok(sender),
            None => Err(std::io::Error::other("the mark thread did not start")),
        }
    }
}

impl Drop for MarkWriter {
    fn drop(&mut self) {
        if let Some((sender, thread)) = self.thread.take() {
            drop(sender);
            let _ = thread.join();
        }
    }
}

fn write_slot(file: &File, slot: &[u8], offset: u64, sync: bool) -> std::io::Result<()> {
    file.write_all_at(slot, offset)?;
    if sync {
        file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_round_trips_and_a_flipped_byte_is_refused() {
        let mark = Mark {
            generation: 7,
            group_first_global_seq: 10,
            last_global_seq: 12,
            hash_before_group: [1; 32],
            hash_at_last: [2; 32],
        };
        let slot = mark.encode();
        assert_eq!(Mark::decode(&slot), Ok(mark));
        for offset in [0, 4, 9, 20, 40, 70, 97] {
            let mut damaged = slot;
            damaged[offset] ^= 0x10;
            assert!(Mark::decode(&damaged).is_err(), "offset {offset}");
        }
    }

    #[test]
    fn the_newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        create_mark(dir.path(), &Mark::empty()).unwrap();
        let mut writer = MarkWriter::open(dir.path()).unwrap();
        let second = Mark::settled(2, 5, [5; 32]);
        writer.start(&second, true).wait().unwrap();
        assert_eq!(read_mark(dir.path()).unwrap(), Some(second));
        let third = Mark::settled(3, 9, [9; 32]);
        writer.write_now(&third).unwrap();
        assert_eq!(read_mark(dir.path()).unwrap(), Some(third));
        // Tear slot 1 (generation 3): slot 0 (generation 2) is the mark again.
        let path = dir.path().join(MARK_FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MARK_SLOT_LEN + 30] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_mark(dir.path()).unwrap(), Some(second));
        bytes[30] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_mark(dir.path()),
            Err(LogError::MarkDamaged { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read_mark(dir.path()).unwrap(), None);
    }
}
