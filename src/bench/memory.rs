//! Reading this process's memory use from `/proc/self/status`, and the size of a directory.

use std::fs::File;
use std::path::Path;

use super::error::BenchError;

/// A field of `/proc/self/status` in KiB (e.g. `VmRSS`, `VmHWM`); `None` off Linux.
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The resident set size now, in MiB.
pub fn rss_mib() -> Option<f64> {
    status_kib("VmRSS").map(kib_to_mib)
}

/// The peak resident set size since the process started or [`reset_peak_rss`], in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    status_kib("VmHWM").map(kib_to_mib)
}

/// Resets the peak RSS to the current RSS (writes 5 to `/proc/self/clear_refs`, Linux ≥ 4.0).
/// Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Asks malloc to return its free memory to the system (`malloc_trim(0)`, glibc only).
/// Returns whether it could be asked. A diagnosis: it tells memory in use from memory that
/// malloc keeps for later; the figures report the RSS as it is without it.
pub fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer and only releases free memory of the heap.
        unsafe {
            libc::malloc_trim(0);
        }
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The bytes a directory takes on disk (allocated blocks, as `du` counts), recursively.
pub fn disk_usage_bytes(dir: &Path) -> Result<u64, BenchError> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path)
            .map_err(|error| BenchError::io("stat", &path, error))?;
        total += metadata.blocks() * 512;
        if metadata.is_dir() {
            let entries =
                std::fs::read_dir(&path).map_err(|error| BenchError::io("list", &path, error))?;
            for entry in entries {
                let entry = entry.map_err(|error| BenchError::io("list", &path, error))?;
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(to).map_err(|error| BenchError::io("create directory", to, error))?;
    let entries = std::fs::read_dir(from).map_err(|error| BenchError::io("list", from, error))?;
    for entry in entries {
        let entry = entry.map_err(|error| BenchError::io("list", from, error))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let file_type = entry
            .file_type()
            .map_err(|error| BenchError::io("stat", &source, error))?;
        if file_type.is_dir() {
            copy_dir(&source, &target)?;
        } else if file_type.is_file() {
            std::fs::copy(&source, &target)
                .map_err(|error| BenchError::io("copy", &source, error))?;
            File::open(&target)
                .and_then(|file| file.sync_all())
                .map_err(|error| BenchError::io("fsync", &target, error))?;
        }
    }
    File::open(to)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| BenchError::io("fsync directory", to, error))
}
