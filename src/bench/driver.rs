//! Runs a migration through the engine's own procedure driver
//! ([`regmig::engine::ProcedureDriver`]) with a persistence policy of the benchmark's
//! instead of the event log. The snapshot baselines persist by saving the whole state at
//! their persist points; the recovery fixture persists by collecting the events.

use async_trait::async_trait;
use uuid::Uuid;

use super::error::BenchError;
use regmig::cluster::{new_procedure_id, MetadataStore, Ports};
use regmig::domain::{Peer, RegionId};
use regmig::engine::{Batch, DriveError, LockTable, Next, Persistence, ProcedureDriver};
use regmig::migration::{
    MigrationEvent, MigrationState, MigrationTask, Observation, RetryPolicy, DEFAULT_TIMEOUT_MS,
};

/// A migration of `region_id` from `from` to `to`, as submit would record it, if the table
/// exists (the same reads as the engine's submit validation: route, then table info).
pub async fn submitted_event(
    metadata: &dyn MetadataStore,
    region_id: RegionId,
    from: Peer,
    to: Peer,
) -> Result<MigrationEvent, BenchError> {
    let table_id = region_id.table_id();
    let route = metadata.table_route(table_id).await?;
    if route.is_none() {
        return Err(BenchError::InvalidSizes(format!(
            "table {table_id} has no route"
        )));
    }
    let Some(info) = metadata.table_info(table_id).await? else {
        return Err(BenchError::InvalidSizes(format!(
            "table {table_id} has no table info"
        )));
    };
    Ok(MigrationEvent::Submitted {
        task: MigrationTask {
            region_id,
            from_peer: from,
            to_peer: to,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        },
        catalog: info.catalog,
        schema: info.schema,
        wal: info.wal,
        policy: RetryPolicy::default(),
        trigger: "bench".to_string(),
        reason: None,
        actor: None,
    })
}

/// A new procedure id from the ports' clock and entropy.
pub fn procedure_id(ports: &Ports) -> Uuid {
    new_procedure_id(ports.clock.now_ms(), ports.entropy.as_ref())
}

/// Persists `submitted`, then runs the engine's driver until the procedure finishes or
/// `persistence` says stop. Returns the last state. Locks are released either way.
pub async fn drive<P>(
    ports: &Ports,
    locks: &LockTable,
    procedure_id: Uuid,
    submitted: MigrationEvent,
    persistence: P,
) -> Result<MigrationState, BenchError>
where
    P: Persistence<Error = BenchError>,
{
    let mut driver = ProcedureDriver::new(
        ports,
        locks,
        procedure_id,
        MigrationState::default(),
        1,
        persistence,
    );
    let next = driver.record(vec![submitted]).await.map_err(bench_error)?;
    if next == Next::Continue {
        driver.run(Observation::Begin).await.map_err(bench_error)?;
    }
    Ok(driver.into_state())
}

fn bench_error(error: DriveError<BenchError>) -> BenchError {
    match error {
        DriveError::Decide {
            procedure_id,
            error,
        } => BenchError::Decide {
            procedure_id,
            error,
        },
        DriveError::Persist { error, .. } => error,
    }
}

/// A persistence that keeps every batch in memory, for tests and the fixture.
#[derive(Debug, Default)]
pub struct CollectingRecorder {
    /// The batches, in order, with their time.
    pub batches: Vec<(u64, Vec<MigrationEvent>)>,
}

#[async_trait]
impl Persistence for CollectingRecorder {
    type Error = BenchError;

    async fn persist(
        &mut self,
        batch: Batch<'_>,
        _state: &MigrationState,
    ) -> Result<(), BenchError> {
        self.batches.push((batch.at_ms, batch.events.to_vec()));
        Ok(())
    }
}
