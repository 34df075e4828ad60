//! Files a user names: reading one whose size is someone else's choice (a bundle, a
//! manifest, a mark, a password file: a length from `metadata` is 0 for a pipe or a device
//! such as `/dev/zero`, so the limit is enforced while reading, never by trusting the
//! reported size), and telling whether a path to write lies inside a directory that must
//! stay untouched (a data directory being read).

use std::io::Read;
use std::path::{Path, PathBuf};

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

/// Where `path` is or would be, through links: its nearest existing ancestor resolved, the
/// rest appended; `None` when nothing of it resolves.
fn real_path_of_new(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut rest = Vec::new();
    let mut current = absolute.as_path();
    loop {
        if let Ok(real) = current.canonicalize() {
            return Some(rest.iter().rev().fold(real, |path, part| path.join(part)));
        }
        rest.push(current.file_name()?.to_os_string());
        current = current.parent()?;
    }
}

/// Whether `path` (existing or not) is, through links, `dir` itself or inside it; `false`
/// when `dir` does not exist.
pub fn is_inside(path: &Path, dir: &Path) -> bool {
    match (dir.canonicalize(), real_path_of_new(path)) {
        (Ok(dir_real), Some(path_real)) => path_real.starts_with(dir_real),
        _ => false,
    }
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
    fn a_path_inside_a_directory_is_found_through_dot_dot_and_links() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sled")).expect("mkdir");
        std::os::unix::fs::symlink(&data, dir.path().join("link")).expect("symlink");
        assert!(is_inside(&data.join("sled/db"), &data));
        assert!(is_inside(&dir.path().join("link/new/x.svg"), &data));
        assert!(is_inside(&data.join("sled/../x"), &data));
        assert!(!is_inside(&dir.path().join("data-2/x"), &data));
        assert!(!is_inside(&dir.path().join("x"), &data));
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
