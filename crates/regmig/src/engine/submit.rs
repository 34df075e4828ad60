//! Submit validation, in the spec's order, each failure with its own typed error.

use uuid::Uuid;

use super::Inner;
use crate::cluster::MetadataError;
use crate::domain::{Peer, RegionId, RegionRoute, TableId, TableRoute};
use crate::log::{AppendConflict, LogError};
use crate::migration::{EncodeError, MigrationEvent, MigrationTask, DEFAULT_TIMEOUT_MS};

/// Who asks for a migration (or a batch), why, and with what budget: recorded in each
/// procedure's `Submitted` event, so `regmig audit` and `show` can tell who moved what and
/// why. Shared by [`MigrationRequest`] and [`BatchRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitContext {
    /// Budget for downgrade and upgrade together, per region, in ms (default
    /// [`DEFAULT_TIMEOUT_MS`], 10 s).
    pub timeout_ms: u64,
    /// What asked for it (e.g. "operator", "rebalance", "evacuate peer 3").
    pub trigger: String,
    /// The operator's reason, if any.
    pub reason: Option<String>,
    /// Who asks for it (a person or a service), if known.
    pub actor: Option<String>,
}

impl Default for SubmitContext {
    /// The default timeout, triggered by an operator, no actor or reason.
    fn default() -> Self {
        SubmitContext {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            trigger: "operator".to_string(),
            reason: None,
            actor: None,
        }
    }
}

impl SubmitContext {
    /// The same context, recording who asks and why.
    pub fn by(mut self, actor: impl Into<String>, reason: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self.reason = Some(reason.into());
        self
    }
}

/// The builder methods of a request, each setting one field of its [`SubmitContext`].
macro_rules! context_builders {
    ($request:ty) => {
        impl $request {
            /// The same request, recording who asks for it and why (in the `Submitted`
            /// event, for `regmig audit`).
            pub fn by(mut self, actor: impl Into<String>, reason: impl Into<String>) -> Self {
                self.context = self.context.by(actor, reason);
                self
            }

            /// The same request with another downgrade-and-upgrade budget, in ms.
            pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Self {
                self.context.timeout_ms = timeout_ms;
                self
            }

            /// The same request with another trigger (what asked for it).
            pub fn with_trigger(mut self, trigger: impl Into<String>) -> Self {
                self.context.trigger = trigger.into();
                self
            }
        }
    };
}

/// A migration to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRequest {
    /// The region to move.
    pub region_id: RegionId,
    /// Its current leader.
    pub from_peer: Peer,
    /// Its new leader.
    pub to_peer: Peer,
    /// Budget, trigger, actor and reason.
    pub context: SubmitContext,
}

impl MigrationRequest {
    /// A request with the default context ([`SubmitContext::default`]).
    pub fn new(region_id: RegionId, from_peer: Peer, to_peer: Peer) -> Self {
        MigrationRequest {
            region_id,
            from_peer,
            to_peer,
            context: SubmitContext::default(),
        }
    }
}

context_builders!(MigrationRequest);

/// A batch to submit (spec R2.5): many regions, of one or more tables, all moving from one
/// peer to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRequest {
    /// The regions to move, each at most once.
    pub regions: Vec<RegionId>,
    /// Their current leader.
    pub from_peer: Peer,
    /// Their new leader.
    pub to_peer: Peer,
    /// Budget (per region), trigger, actor and reason, shared by every region.
    pub context: SubmitContext,
}

impl BatchRequest {
    /// A batch with the default context ([`SubmitContext::default`]).
    pub fn new(regions: Vec<RegionId>, from_peer: Peer, to_peer: Peer) -> Self {
        BatchRequest {
            regions,
            from_peer,
            to_peer,
            context: SubmitContext::default(),
        }
    }

    /// The single-region request of one of its regions.
    pub fn request(&self, region_id: RegionId) -> MigrationRequest {
        MigrationRequest {
            region_id,
            from_peer: self.from_peer.clone(),
            to_peer: self.to_peer.clone(),
            context: self.context.clone(),
        }
    }
}

context_builders!(BatchRequest);

/// How one region of a batch started.
#[derive(Debug)]
pub enum BatchRegionStart {
    /// Its procedure was created and started.
    Started(Uuid),
    /// It was refused alone (its table or region route, or its table info, is missing, or
    /// the metadata store failed); the others went on. A region already on `to_peer` or led
    /// by another peer is not refused: its procedure's Start ends or aborts it.
    Refused(SubmitError),
}

/// What a batch submit came to.
#[derive(Debug)]
pub struct BatchSubmitted {
    /// The batch's id, recorded in each of its procedures.
    pub batch_id: Uuid,
    /// Each region, in the order submitted.
    pub regions: Vec<(RegionId, BatchRegionStart)>,
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
    /// The submitted events could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
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
            SubmitError::Log(_) | SubmitError::AppendConflict(_) | SubmitError::Encode(_) => {
                "log_error"
            }
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
    let region_route = checked_route(inner, request).await?;
    let region_id = request.region_id;
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
    submitted_event(inner, request).await.map(Some)
}

/// The validations of one region of a batch: those of [`validate`] but the leader's (4 and
/// 5). Its procedure's Start ends it when the region is already on `to_peer` and aborts it
/// when its leader is not `from_peer` (spec R2.5), both recorded in its log.
pub(crate) async fn validate_batch_region(
    inner: &Inner,
    request: &MigrationRequest,
) -> Result<MigrationEvent, SubmitError> {
    checked_route(inner, request).await?;
    submitted_event(inner, request).await
}

/// Validations 1 to 3: no open migration of the region, two peers, a physical table route
/// with the region; returns the region's route.
async fn checked_route(
    inner: &Inner,
    request: &MigrationRequest,
) -> Result<RegionRoute, SubmitError> {
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
    route
        .route
        .region_route(region_id)
        .cloned()
        .ok_or(SubmitError::RegionRouteNotFound { region_id })
}

/// Validation 6 (the table info) and the submitted event.
async fn submitted_event(
    inner: &Inner,
    request: &MigrationRequest,
) -> Result<MigrationEvent, SubmitError> {
    let table_id = request.region_id.table_id();
    let Some(info) = inner.ports.submit_metadata.table_info(table_id).await? else {
        return Err(SubmitError::TableInfoNotFound { table_id });
    };
    Ok(MigrationEvent::Submitted {
        task: MigrationTask {
            region_id: request.region_id,
            from_peer: request.from_peer.clone(),
            to_peer: request.to_peer.clone(),
            timeout_ms: request.context.timeout_ms,
        },
        catalog: info.catalog,
        schema: info.schema,
        wal: info.wal,
        policy: inner.config.retry_policy.clone(),
        trigger: request.context.trigger.clone(),
        reason: request.context.reason.clone(),
        actor: request.context.actor.clone(),
    })
}

/// The checks that refuse a whole batch: no region, a region listed twice, one peer as both
/// ends, or a region that already has an open migration (alone or in another batch).
pub(crate) fn validate_batch(inner: &Inner, batch: &BatchRequest) -> Result<(), SubmitError> {
    if batch.regions.is_empty() {
        return Err(SubmitError::InvalidArgument {
            message: "a batch needs at least one region".to_string(),
        });
    }
    for (index, region_id) in batch.regions.iter().enumerate() {
        if batch.regions[..index].contains(region_id) {
            return Err(SubmitError::InvalidArgument {
                message: format!("region {region_id} is listed twice in the batch"),
            });
        }
    }
    if batch.from_peer.id == batch.to_peer.id {
        return Err(SubmitError::InvalidArgument {
            message: format!(
                "from_peer and to_peer are both datanode {} (batch of {} regions)",
                batch.from_peer.id,
                batch.regions.len()
            ),
        });
    }
    for region_id in &batch.regions {
        if let Some(procedure_id) = inner.log.open_procedure_of_region(region_id.as_u64())? {
            return Err(SubmitError::MigrationRunning {
                region_id: *region_id,
                procedure_id,
            });
        }
    }
    Ok(())
}
