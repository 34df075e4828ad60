//! Reading a file whose size is someone else's choice: a bundle, a manifest, a mark, a
//! password file. A length from `metadata` is 0 for a pipe or a device (`/dev/zero`), so
//! the limit is enforced while reading, never by trusting the reported size.

use std::io::Read;
use std::path::Path;

/// What [`read_at_most`] read.
#[derive(Debug)]
pub enum Bounded {
    /// The whole file, at most the limit.
    Whole(Vec<u8>),
    /// The file holds more than the limit: at least `read_bytes` bytes (the limit + 1).
    TooLarge {
        /// How many bytes were read before stopping.
        read_bytes: u64,
    },
}

/// Reads `path` whole if it holds at most `limit_bytes` bytes; otherwise stops after
/// `limit_bytes + 1` bytes and says so, so a stream that never ends is never read to its end.
pub fn read_at_most(path: &Path, limit_bytes: u64) -> std::io::Result<Bounded> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    let read_bytes = bytes.len() as u64;
    Ok(if read_bytes > limit_bytes {
        Bounded::TooLarge { read_bytes }
    } else {
        Bounded::Whole(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_stops_one_byte_past_the_limit() {
        match read_at_most(Path::new("/dev/zero"), 1000).expect("/dev/zero opens") {
            Bounded::TooLarge { read_bytes } => assert_eq!(read_bytes, 1001),
            Bounded::Whole(bytes) => panic!("read {} bytes of /dev/zero whole", bytes.len()),
        }
    }

    #[test]
    fn a_file_at_the_limit_reads_whole() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("f");
        std::fs::write(&path, [7u8; 10]).expect("write");
        match read_at_most(&path, 10).expect("reads") {
            Bounded::Whole(bytes) => assert_eq!(bytes, vec![7u8; 10]),
            Bounded::TooLarge { read_bytes } => panic!("too large at {read_bytes}"),
        }
        assert!(matches!(
            read_at_most(&path, 9).expect("reads"),
            Bounded::TooLarge { read_bytes: 10 }
        ));
    }
}
