//! Runs a migration's decisions (`migration::decide`) against a cluster's ports, the way the
//! engine's procedure task does, but hands each batch of events to a [`Recorder`] instead of
//! the event log. The snapshot baselines record by saving the whole state at their persist
//! points; the recovery fixture records by collecting the events.

use async_trait::async_trait;
use uuid::Uuid;

use super::error::BenchError;
use regmig::cluster::{new_procedure_id, MetadataStore, Ports};
use regmig::domain::{MailboxOutcome, Peer, RegionId};
use regmig::engine::LockTable;
use regmig::migration::{
    decide, table_lock_key, Action, Input, MigrationEvent, MigrationState, MigrationTask,
    Observation, RetryPolicy, DEFAULT_TIMEOUT_MS,
};

/// Whether the driver goes on after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on to the action.
    Continue,
    /// Stop here, as a crash right after the batch would: the procedure stays unfinished.
    Stop,
}

/// What the driver does with each batch of events.
#[async_trait]
pub trait Recorder: Send {
    /// Called with each batch in order: first the submission, then the events of every
    /// decision that has some. `state` has already folded them.
    async fn record(
        &mut self,
        procedure_id: Uuid,
        at_ms: u64,
        events: &[MigrationEvent],
        state: &MigrationState,
    ) -> Result<Next, BenchError>;
}

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

/// Records `submitted`, then decides and acts until the procedure finishes or the recorder
/// says stop. Returns the last state. Locks are released either way.
pub async fn drive(
    ports: &Ports,
    locks: &LockTable,
    procedure_id: Uuid,
    submitted: MigrationEvent,
    recorder: &mut dyn Recorder,
) -> Result<MigrationState, BenchError> {
    let result = drive_locked(ports, locks, procedure_id, submitted, recorder).await;
    locks.release_all(procedure_id);
    result
}

async fn drive_locked(
    ports: &Ports,
    locks: &LockTable,
    procedure_id: Uuid,
    submitted: MigrationEvent,
    recorder: &mut dyn Recorder,
) -> Result<MigrationState, BenchError> {
    let mut state = MigrationState::default();
    let submitted_at_ms = ports.clock.now_ms();
    state.apply(submitted_at_ms, &submitted);
    if recorder
        .record(
            procedure_id,
            submitted_at_ms,
            std::slice::from_ref(&submitted),
            &state,
        )
        .await?
        == Next::Stop
    {
        return Ok(state);
    }
    let mut input = Input::new(Observation::Begin);
    let mut table_lock = None;
    loop {
        let now_ms = ports.clock.now_ms();
        let decision = decide(&state, now_ms, input).map_err(|error| BenchError::Decide {
            procedure_id,
            error,
        })?;
        if !decision.events.is_empty() {
            for event in &decision.events {
                state.apply(now_ms, event);
            }
            if recorder
                .record(procedure_id, now_ms, &decision.events, &state)
                .await?
                == Next::Stop
            {
                return Ok(state);
            }
        }
        let observation = match decision.action {
            Action::Finish { .. } => return Ok(state),
            action => act(ports, locks, procedure_id, action, &mut table_lock).await,
        };
        input = Input {
            observation,
            jitter_random: ports.entropy.next_u32(),
        };
    }
}

/// Performs an action as the engine's procedure task does, the table lock included: taken
/// at a route read, held through the compare-and-swap after it, released before any other
/// action (R2.6). `table_lock` is the key held, if any.
async fn act(
    ports: &Ports,
    locks: &LockTable,
    procedure_id: Uuid,
    action: Action,
    table_lock: &mut Option<String>,
) -> Observation {
    let needed = match &action {
        Action::ReadRoute { table_id } | Action::CasRoute { table_id, .. } => {
            Some(table_lock_key(*table_id))
        }
        _ => None,
    };
    if table_lock.is_some() && *table_lock != needed {
        if let Some(key) = table_lock.take() {
            locks.release(procedure_id, &[key]);
        }
    }
    if let (Some(key), None) = (&needed, &table_lock) {
        let keys = [key.clone()];
        if locks.try_acquire(procedure_id, &keys).is_err() {
            locks.acquire(procedure_id, &keys, |_| {}).await;
        }
        *table_lock = needed.clone();
    }
    let is_cas = matches!(action, Action::CasRoute { .. });
    let observation = act_unlocked(ports, locks, procedure_id, action).await;
    if is_cas {
        if let Some(key) = table_lock.take() {
            locks.release(procedure_id, &[key]);
        }
    }
    observation
}

async fn act_unlocked(
    ports: &Ports,
    locks: &LockTable,
    procedure_id: Uuid,
    action: Action,
) -> Observation {
    match action {
        Action::AcquireLocks { lock_keys } => {
            let started_ms = ports.clock.now_ms();
            if locks.try_acquire(procedure_id, &lock_keys).is_err() {
                locks.acquire(procedure_id, &lock_keys, |_| {}).await;
            }
            Observation::LocksAcquired {
                lock_keys,
                waited_ms: ports.clock.now_ms().saturating_sub(started_ms),
            }
        }
        Action::ReadLastHeartbeat { peer } => Observation::LastHeartbeatRead {
            peer,
            last_heartbeat_ms: ports.lease_renewals.last_heartbeat_ms(peer).await,
        },
        Action::ReadRoute { table_id } => match ports.metadata.table_route(table_id).await {
            Ok(route) => Observation::RouteRead { table_id, route },
            Err(error) => Observation::MetadataFailed {
                operation: format!("read the route of table {table_id}"),
                error: error.reason,
            },
        },
        Action::ReadDatanodeTable {
            datanode_id,
            table_id,
        } => match ports.metadata.datanode_table(datanode_id, table_id).await {
            Ok(datanode_table) => Observation::DatanodeTableRead {
                datanode_id,
                table_id,
                datanode_table,
            },
            Err(error) => Observation::MetadataFailed {
                operation: format!("read the datanode table of table {table_id}"),
                error: error.reason,
            },
        },
        Action::CasRoute {
            table_id,
            expected_version,
            route,
            change,
            region_move,
        } => match ports
            .metadata
            .cas_table_route(table_id, expected_version, route, region_move)
            .await
        {
            Ok(Ok(to_version)) => Observation::CasApplied {
                table_id,
                change,
                from_version: expected_version,
                to_version,
            },
            Ok(Err(conflict)) => Observation::CasRefused {
                table_id,
                change,
                expected_version,
                actual_version: conflict.actual_version,
            },
            Err(error) => Observation::MetadataFailed {
                operation: format!("write the route of table {table_id}"),
                error: error.reason,
            },
        },
        Action::Send {
            peer,
            instruction,
            timeout_ms,
        } => {
            if timeout_ms == 0 {
                return Observation::Mailbox(MailboxOutcome::Timeout);
            }
            Observation::Mailbox(ports.mailbox.send(&peer, instruction, timeout_ms).await)
        }
        Action::WaitUntil { until_ms, .. } => {
            ports.clock.sleep_until_ms(until_ms).await;
            Observation::WaitElapsed
        }
        // drive() handles Finish before acting.
        Action::Finish { .. } => Observation::WaitElapsed,
    }
}

/// A recorder that keeps every batch, for tests and the fixture.
#[derive(Debug, Default)]
pub struct CollectingRecorder {
    /// The batches, in order, with their time.
    pub batches: Vec<(u64, Vec<MigrationEvent>)>,
}

#[async_trait]
impl Recorder for CollectingRecorder {
    async fn record(
        &mut self,
        _procedure_id: Uuid,
        at_ms: u64,
        events: &[MigrationEvent],
        _state: &MigrationState,
    ) -> Result<Next, BenchError> {
        self.batches.push((at_ms, events.to_vec()));
        Ok(Next::Continue)
    }
}
