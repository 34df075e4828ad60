//! One procedure's task: decide, append, act, observe, again.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, debug_span, info, info_span, warn, Instrument};
use uuid::Uuid;

use super::{EngineError, Inner, ProcedureEvent};
use crate::log::OpenProcedure;
use crate::migration::{
    check_cancel, decide, table_lock_key, Action, Hook, Input, MigrationEvent, MigrationState,
    Observation,
};

/// A request to a running procedure.
pub(crate) enum Control {
    /// Cancel it; the answer says whether the cancel was taken.
    Cancel {
        actor: String,
        reason: String,
        answer: oneshot::Sender<Result<(), EngineError>>,
    },
}

/// Why a procedure task stopped before the procedure finished.
enum Stop {
    /// Graceful shutdown or a simulated crash: the procedure stays open in the log.
    Halted,
    /// The log refused or failed an append: the procedure stays open in the log.
    LogFailed(String),
}

/// What a running procedure owns.
pub(crate) struct Runner {
    pub(crate) inner: Arc<Inner>,
    pub(crate) id: Uuid,
    pub(crate) state: MigrationState,
    pub(crate) next_seq: u64,
    pub(crate) control: mpsc::Receiver<Control>,
    /// The table lock, while held across a route read and the compare-and-swap after it.
    pub(crate) table_lock: Option<Vec<String>>,
}

impl Runner {
    /// Runs the procedure until it finishes or the engine stops.
    pub(crate) async fn run(mut self, first: Observation) {
        let region = self
            .state
            .task
            .as_ref()
            .map(|task| task.region_id.to_string())
            .unwrap_or_default();
        let span = info_span!("procedure", id = %self.id, region = %region);
        let result = self.run_loop(first).instrument(span).await;
        let inner = self.inner.clone();
        inner.locks.release_all(self.id);
        match result {
            Ok(()) => super::retention::after_finish(&inner).await,
            Err(Stop::Halted) => {
                debug!(id = %self.id, "procedure halted; it resumes from the log on the next open")
            }
            Err(Stop::LogFailed(error)) => {
                warn!(id = %self.id, %error, "procedure stopped: the log failed; it resumes from the log on the next open")
            }
        }
        inner.forget(self.id, self.state.outcome);
    }

    async fn run_loop(&mut self, first: Observation) -> Result<(), Stop> {
        let mut input = Input::new(first);
        loop {
            if self.inner.halted() {
                return Err(Stop::Halted);
            }
            let now_ms = self.inner.ports.clock.now_ms();
            let decision = match decide(&self.state, now_ms, input) {
                Ok(decision) => decision,
                Err(error) => {
                    return Err(Stop::LogFailed(format!(
                        "decide refused its input: {error}"
                    )))
                }
            };
            if !decision.events.is_empty() {
                self.append(now_ms, decision.events).await?;
                // A crash right after the append: nothing more happens.
                if self.inner.halted() {
                    return Err(Stop::Halted);
                }
            }
            for hook in &decision.hooks {
                self.call_hook(hook).await;
            }
            let observation = match decision.action {
                Action::Finish { outcome } => {
                    info!(outcome = outcome.name(), "procedure finished");
                    return Ok(());
                }
                action => {
                    let span = debug_span!("step", state = %self.state.state, action = action_name(&action));
                    self.act(action).instrument(span).await?
                }
            };
            input = Input {
                observation,
                jitter_random: self.inner.ports.entropy.next_u32(),
            };
        }
    }

    /// Appends a decision's events, durably, and folds them in.
    async fn append(&mut self, now_ms: u64, events: Vec<MigrationEvent>) -> Result<(), Stop> {
        let opens = if self.next_seq == 1 {
            self.state.task.as_ref().map(|task| OpenProcedure {
                region_id: task.region_id.as_u64(),
                peers: vec![task.from_peer.id, task.to_peer.id],
            })
        } else {
            None
        };
        let closes = events.iter().any(MigrationEvent::is_terminal);
        let first_seq = self.next_seq;
        let count = events.len() as u64;
        self.inner
            .append(self.id, first_seq, &events, now_ms, opens, closes)
            .await
            .map_err(|error| Stop::LogFailed(error.to_string()))?;
        for (offset, event) in events.into_iter().enumerate() {
            self.state.apply(now_ms, &event);
            let seq = first_seq + offset as u64;
            self.inner.after_append(self.id, seq, now_ms, &event);
        }
        self.next_seq = first_seq + count;
        Ok(())
    }

    async fn call_hook(&self, hook: &Hook) {
        let hooks = &self.inner.ports.hooks;
        match hook {
            Hook::RegisterFailureDetector { peer, region_id } => {
                hooks.register_failure_detector(*peer, *region_id).await
            }
            Hook::DeregisterFailureDetector { peer, region_id } => {
                hooks.deregister_failure_detector(*peer, *region_id).await
            }
            Hook::InvalidateTableCache { table_id } => {
                hooks.invalidate_table_cache(*table_id).await
            }
        }
    }

    /// Performs an action and returns what came of it.
    async fn act(&mut self, action: Action) -> Result<Observation, Stop> {
        let ports = self.inner.ports.clone();
        if !matches!(action, Action::ReadRoute { .. } | Action::CasRoute { .. }) {
            self.release_table_lock();
        }
        match action {
            Action::AcquireLocks { lock_keys } => {
                let started_ms = ports.clock.now_ms();
                if let Err(contended) = self.inner.locks.try_acquire(self.id, &lock_keys) {
                    self.note(MigrationEvent::LockWaitStarted {
                        lock_key: contended.key,
                    })
                    .await?;
                    let inner = self.inner.clone();
                    let acquire = inner.locks.acquire(self.id, &lock_keys, |_| {});
                    tokio::select! {
                        biased;
                        () = until_halted(inner.halt_signal()) => return Err(Stop::Halted),
                        () = acquire => {}
                    }
                }
                Ok(Observation::LocksAcquired {
                    lock_keys,
                    waited_ms: ports.clock.now_ms().saturating_sub(started_ms),
                })
            }
            Action::ReadRoute { table_id } => {
                self.take_table_lock(table_id).await?;
                Ok(match ports.metadata.table_route(table_id).await {
                    Ok(route) => Observation::RouteRead { table_id, route },
                    Err(error) => Observation::MetadataFailed {
                        operation: format!("read the route of table {table_id}"),
                        error: error.reason,
                    },
                })
            }
            Action::ReadLastHeartbeat { peer } => Ok(Observation::LastHeartbeatRead {
                peer,
                last_heartbeat_ms: ports.lease_renewals.last_heartbeat_ms(peer).await,
            }),
            Action::ReadDatanodeTable {
                datanode_id,
                table_id,
            } => Ok(
                match ports.metadata.datanode_table(datanode_id, table_id).await {
                    Ok(datanode_table) => Observation::DatanodeTableRead {
                        datanode_id,
                        table_id,
                        datanode_table,
                    },
                    Err(error) => Observation::MetadataFailed {
                        operation: format!(
                            "read the datanode table of table {table_id} on datanode {datanode_id}"
                        ),
                        error: error.reason,
                    },
                },
            ),
            Action::CasRoute {
                table_id,
                expected_version,
                route,
                change,
                region_move,
            } => {
                self.take_table_lock(table_id).await?;
                let observation = match ports
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
                };
                self.release_table_lock();
                Ok(observation)
            }
            Action::Send {
                peer,
                instruction,
                timeout_ms,
            } => {
                let kind = instruction.kind();
                if timeout_ms == 0 {
                    // A re-send whose deadline passed while the engine was down.
                    return Ok(Observation::Mailbox(crate::domain::MailboxOutcome::Timeout));
                }
                let send = ports.mailbox.send(&peer, instruction, timeout_ms);
                Ok(match self.interruptible(send).await? {
                    Ok(outcome) => {
                        debug!(peer = peer.id, instruction = %kind, ?outcome, "instruction answered");
                        Observation::Mailbox(outcome)
                    }
                    Err(cancel) => cancel,
                })
            }
            Action::WaitUntil { until_ms, reason } => {
                debug!(until_ms, ?reason, "waiting");
                let sleep = ports.clock.sleep_until_ms(until_ms);
                Ok(match self.interruptible(sleep).await? {
                    Ok(()) => Observation::WaitElapsed,
                    Err(cancel) => cancel,
                })
            }
            Action::Finish { .. } => Err(Stop::LogFailed(
                "internal error: Finish is handled by the loop".to_string(),
            )),
        }
    }

    /// Takes the table's exclusive lock for a route read and the compare-and-swap that may
    /// follow it (R2.6); it is released after the compare-and-swap, or before any other
    /// action, so a lease wait or a datanode's answer never holds it.
    async fn take_table_lock(&mut self, table_id: crate::domain::TableId) -> Result<(), Stop> {
        let keys = vec![table_lock_key(table_id)];
        if self.table_lock.as_ref() == Some(&keys) {
            return Ok(());
        }
        // A revision 1 procedure holds its table's lock for the whole migration.
        if crate::migration::lock_keys(&self.state).contains(&keys[0]) {
            return Ok(());
        }
        self.release_table_lock();
        if self.inner.locks.try_acquire(self.id, &keys).is_err() {
            let inner = self.inner.clone();
            let acquire = inner.locks.acquire(self.id, &keys, |_| {});
            tokio::select! {
                biased;
                () = until_halted(inner.halt_signal()) => return Err(Stop::Halted),
                () = acquire => {}
            }
        }
        self.table_lock = Some(keys);
        Ok(())
    }

    fn release_table_lock(&mut self) {
        if let Some(keys) = self.table_lock.take() {
            self.inner.locks.release(self.id, &keys);
        }
    }

    /// Awaits `work` while answering operator requests; `Err` carries a cancel that was
    /// taken and interrupts the work (a datanode may still carry out an instruction whose
    /// answer is dropped: every instruction is idempotent).
    async fn interruptible<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<Result<T, Observation>, Stop> {
        tokio::pin!(work);
        let mut control_open = true;
        loop {
            tokio::select! {
                biased;
                () = until_halted(self.inner.halt_signal()) => return Err(Stop::Halted),
                control = self.control.recv(), if control_open => match control {
                    Some(control) => {
                        if let Some(cancel) = self.on_control(control).await? {
                            return Ok(Err(cancel));
                        }
                    }
                    None => control_open = false,
                },
                output = &mut work => return Ok(Ok(output)),
            }
        }
    }

    /// Handles an operator request received while waiting; `Some` interrupts the wait.
    async fn on_control(&mut self, control: Control) -> Result<Option<Observation>, Stop> {
        let Control::Cancel {
            actor,
            reason,
            answer,
        } = control;
        match check_cancel(&self.state) {
            Ok(()) => {
                let _ = answer.send(Ok(()));
                Ok(Some(Observation::Cancel { actor, reason }))
            }
            Err(refusal) => {
                self.note(MigrationEvent::CancelRefused {
                    actor,
                    reason,
                    refusal: refusal.clone(),
                })
                .await?;
                let _ = answer.send(Err(EngineError::CancelRefused {
                    procedure_id: self.id,
                    reason: refusal,
                }));
                Ok(None)
            }
        }
    }

    /// Appends an event the engine writes outside a decision.
    async fn note(&mut self, event: MigrationEvent) -> Result<(), Stop> {
        let now_ms = self.inner.ports.clock.now_ms();
        self.append(now_ms, vec![event]).await
    }
}

/// A short name of an action, for spans.
fn action_name(action: &Action) -> &'static str {
    match action {
        Action::AcquireLocks { .. } => "acquire_locks",
        Action::ReadRoute { .. } => "read_route",
        Action::ReadDatanodeTable { .. } => "read_datanode_table",
        Action::Send { .. } => "send",
        Action::CasRoute { .. } => "cas_route",
        Action::ReadLastHeartbeat { .. } => "read_last_heartbeat",
        Action::WaitUntil { .. } => "wait",
        Action::Finish { .. } => "finish",
    }
}

/// Returns once the engine is halted (never, if the engine is gone without halting).
async fn until_halted(mut halt: tokio::sync::watch::Receiver<bool>) {
    if halt.wait_for(|halted| *halted).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Sent to subscribers after each append.
pub(crate) fn procedure_event(
    procedure_id: Uuid,
    seq: u64,
    at_ms: u64,
    event: &MigrationEvent,
) -> ProcedureEvent {
    ProcedureEvent {
        procedure_id,
        seq,
        at_ms,
        event: event.clone(),
    }
}
