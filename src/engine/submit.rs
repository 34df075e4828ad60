//! Submit validation, in the spec's order, each failure with its own typed error.

use uuid::Uuid;

use super::Inner;
use crate::cluster::MetadataError;
use crate::domain::{Peer, RegionId, TableId, TableRoute};
use crate::log::{AppendConflict, LogError};
use crate::migration::{MigrationEvent, MigrationTask, DEFAULT_TIMEOUT_MS};

/// A migration to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRequest {
    /// The region to move.
    pub region_id: RegionId,
    /// Its current leader.
    pub from_peer: Peer,
    /// Its new leader.
    pub to_peer: Peer,
    /// Budget for downgrade and upgrade together (default 10 s).
    pub timeout_ms: u64,
    /// What asked for it (e.g. "rebalance", "operator").
    pub trigger: String,
    /// The operator's reason, if any.
    pub reason: Option<String>,
}

impl MigrationRequest {
    /// A request with the default timeout, triggered by an operator.
    pub fn new(region_id: RegionId, from_peer: Peer, to_peer: Peer) -> Self {
        MigrationRequest {
            region_id,
            from_peer,
            to_peer,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            trigger: "operator".to_string(),
            reason: None,
        }
    }
}

/// What a submit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// A procedure was created and started.
    Started(Uuid),
    /// The region is already led by `to_peer`: nothing to do, no procedure created.
    AlreadyMigrated,
}

/// Why a submit was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// Another migration of the region is open.
    #[error("migration running: region {region_id} is already being migrated by {procedure_id}")]
    MigrationRunning {
        /// The region.
        region_id: RegionId,
        /// The open procedure.
        procedure_id: Uuid,
    },
    /// The request itself is wrong.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// The table has no route.
    #[error("table route not found: table {table_id}")]
    TableRouteNotFound {
        /// The table.
        table_id: TableId,
    },
    /// The table is logical.
    #[error("logical table: table {table_id} has no regions of its own")]
    LogicalTable {
        /// The table.
        table_id: TableId,
    },
    /// The table's route has no such region.
    #[error("region route not found: region {region_id}")]
    RegionRouteNotFound {
        /// The region.
        region_id: RegionId,
    },
    /// The table has no table info.
    #[error("table info not found: table {table_id}")]
    TableInfoNotFound {
        /// The table.
        table_id: TableId,
    },
    /// The metadata store failed during validation.
    #[error("metadata store error during submit: {0}")]
    Metadata(#[from] MetadataError),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log refused the append.
    #[error("the log refused the submitted event: {0:?}")]
    AppendConflict(AppendConflict),
    /// The engine is shutting down.
    #[error("the engine is shutting down and takes no new migrations")]
    ShuttingDown,
}

impl SubmitError {
    /// The rejection kind as the scenario format names it.
    pub fn kind(&self) -> &'static str {
        match self {
            SubmitError::MigrationRunning { .. } => "migration_running",
            SubmitError::InvalidArgument { .. } => "invalid_argument",
            SubmitError::TableRouteNotFound { .. } => "table_route_not_found",
            SubmitError::LogicalTable { .. } => "logical_table",
            SubmitError::RegionRouteNotFound { .. } => "region_route_not_found",
            SubmitError::TableInfoNotFound { .. } => "table_info_not_found",
            SubmitError::Metadata(_) => "metadata_error",
            SubmitError::Log(_) | SubmitError::AppendConflict(_) => "log_error",
            SubmitError::ShuttingDown => "shutting_down",
        }
    }
}

/// Runs the validations; `Ok(None)` means already migrated, `Ok(Some(event))` the event to
/// record.
pub(crate) async fn validate(
    inner: &Inner,
    request: &MigrationRequest,
) -> Result<Option<MigrationEvent>, SubmitError> {
    let region_id = request.region_id;
    let table_id = region_id.table_id();
    // 1. One open migration per region, from the log: it holds across restarts.
    if let Some(procedure_id) = inner.log.open_procedure_of_region(region_id.as_u64())? {
        return Err(SubmitError::MigrationRunning {
            region_id,
            procedure_id,
        });
    }
    // 2.
    if request.from_peer.id == request.to_peer.id {
        return Err(SubmitError::InvalidArgument {
            message: format!(
                "from_peer and to_peer are both datanode {} (region {region_id})",
                request.from_peer.id
            ),
        });
    }
    // 3.
    let metadata = &inner.ports.submit_metadata;
    let Some(route) = metadata.table_route(table_id).await? else {
        return Err(SubmitError::TableRouteNotFound { table_id });
    };
    if let TableRoute::Logical { .. } = route.route {
        return Err(SubmitError::LogicalTable { table_id });
    }
    let Some(region_route) = route.route.region_route(region_id) else {
        return Err(SubmitError::RegionRouteNotFound { region_id });
    };
    // 4.
    let leader = region_route.leader_id();
    if leader == Some(request.to_peer.id) && !region_route.is_leader_downgrading() {
        return Ok(None);
    }
    // 5.
    if leader != Some(request.from_peer.id) {
        return Err(SubmitError::InvalidArgument {
            message: format!(
                "incorrect from_peer: region {region_id} is led by {}, not datanode {}",
                leader.map_or("no datanode".to_string(), |id| format!("datanode {id}")),
                request.from_peer.id
            ),
        });
    }
    // 6.
    let Some(info) = metadata.table_info(table_id).await? else {
        return Err(SubmitError::TableInfoNotFound { table_id });
    };
    Ok(Some(MigrationEvent::Submitted {
        task: MigrationTask {
            region_id,
            from_peer: request.from_peer.clone(),
            to_peer: request.to_peer.clone(),
            timeout_ms: request.timeout_ms,
        },
        catalog: info.catalog,
        schema: info.schema,
        wal: info.wal,
        policy: inner.config.retry_policy.clone(),
        trigger: request.trigger.clone(),
        reason: request.reason.clone(),
    }))
}
