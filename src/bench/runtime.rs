//! The tokio runtimes the measurements run on: two workers, as many as the machine's cores.

use super::error::BenchError;

/// Worker threads of the multi-thread runtime.
pub const WORKER_THREADS: usize = 2;

/// A multi-thread runtime with [`WORKER_THREADS`] workers and timers.
pub fn multi_thread() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .map_err(|error| BenchError::io("start a tokio runtime", "(none)", error))
}

/// A current-thread runtime with timers.
pub fn current_thread() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| BenchError::io("start a tokio runtime", "(none)", error))
}
