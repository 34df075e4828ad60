//! The benchmarks' one error type: a measurement that could not be taken.

use std::path::PathBuf;

use uuid::Uuid;

use regmig::cluster::MetadataError;
use regmig::engine::{EngineError, LoadError, SubmitError};
use regmig::log::LogError;
use regmig::migration::{DecideError, EncodeError};

/// Why a measurement could not be taken (never a missed target: the table reports those).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A file-system call failed.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A procedure's history could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The engine refused a migration.
    #[error("submit refused: {0}")]
    Submit(#[from] SubmitError),
    /// `decide` refused its input (a bug in the bench driver).
    #[error("decide refused its input for procedure {procedure_id}: {error}")]
    Decide {
        /// The procedure.
        procedure_id: Uuid,
        /// The error.
        error: DecideError,
    },
    /// A task of the bench panicked or returned an unexpected answer.
    #[error("bench task: {0}")]
    Task(String),
    /// The snapshot baseline's store failed.
    #[error("snapshot store: {0}")]
    Snapshot(String),
    /// A migration the bench expected to complete did not.
    #[error("migration {procedure_id} of region {region} ended {outcome} instead of completing: {error}")]
    NotCompleted {
        /// The procedure.
        procedure_id: Uuid,
        /// Its region.
        region: String,
        /// How it ended.
        outcome: String,
        /// Its final error.
        error: String,
    },
    /// The sizes asked for cannot be built (e.g. too few events for the procedures).
    #[error("invalid sizes: {0}")]
    InvalidSizes(String),
    /// A measurement in a child process failed.
    #[error("the child process measuring {job} failed: {reason}")]
    Child {
        /// What it measured.
        job: String,
        /// Why it failed (its stderr's end, or the parse error).
        reason: String,
    },
}

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}
