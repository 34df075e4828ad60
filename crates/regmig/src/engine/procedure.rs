//! The procedure driver: decide, persist, act, observe, again. It is the only code that turns
//! a decision into port calls; the engine plugs the event log in as its persistence, the
//! benchmark's snapshot baselines plug in theirs.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, debug_span, info, info_span, warn, Instrument};
use uuid::Uuid;

use super::{EngineError, Inner, LockTable, ProcedureEvent};
use crate::cluster::Ports;
use crate::log::{OpenProcedure, APPEND_EVENTS_MAX};
use crate::migration::{
    check_cancel, decide, table_lock_key, Action, DecideError, Decision, EventRole, Hook, Input,
    MigrationEvent, MigrationState, Observation, Outcome, RouteChange, TimedEvent,
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

/// What came of one action: what `act` returns, or the next action to perform at once.
enum Acted {
    Done(Result<Observation, Outcome>),
    Then(Action),
}

/// Whether the driver goes on after a batch was persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on to the action.
    Continue,
    /// Stop here, as a crash right after the batch would: the procedure stays unfinished.
    Stop,
}

/// What the driver does with a decided action, as [`Persistence::before_action`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proceed {
    /// Perform it and go on.
    Perform,
    /// Stop before performing it, as a crash right after its decision was persisted would:
    /// the procedure stays unfinished, the action pending.
    StopBefore,
    /// Perform it, then stop with its observation lost, as a crash right after the action
    /// would (a route write stays written though nothing records it).
    StopAfter,
}

/// One batch of events the driver hands to its persistence, in order: the events of a
/// decision, or one event the driver writes outside a decision (a lock wait, a refused
/// cancel), or a batch given to [`ProcedureDriver::record`].
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The procedure.
    pub procedure_id: Uuid,
    /// The sequence number of the first event (1 for a procedure's first event).
    pub first_seq: u64,
    /// When the events happened.
    pub at_ms: u64,
    /// The events.
    pub events: &'a [MigrationEvent],
    /// Whether write-ahead lets this batch wait for the procedure's next one: true when the
    /// action decided with it changes nothing outside the procedure (a read of the metadata
    /// or of a heartbeat, or taking the in-memory locks) or is a route write whose batch is
    /// only the route read it rests on, it calls no hook, and it holds nothing a resume
    /// could not get back by reading again (no datanode answer, no route write's result, no
    /// operator's cancel, no end). A persistence may then hold it and
    /// write it with the next batch, in order, sharing one durable write (issue 17: fewer
    /// durable waits per migration). A crash loses a held batch as it loses any write not
    /// yet durable: the resume decides again from the last durable event and reads again.
    /// False for every other batch, which must be durable before the driver goes on.
    pub deferrable: bool,
}

/// Where a driven procedure's events go: the persistence policy.
#[async_trait]
pub trait Persistence: Send {
    /// Why persisting failed.
    type Error: Send;

    /// Makes `batch` durable. The driver folds the batch into its state only once this
    /// returns `Ok`; `state` is the state before the batch. A policy that keeps whole states
    /// instead of events writes in [`Persistence::persisted`] and leaves this as it is.
    async fn persist(
        &mut self,
        _batch: Batch<'_>,
        _state: &MigrationState,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Called once the batch is folded in; `state` is the state after it. A policy that
    /// keeps whole states (a snapshot design) writes here.
    async fn persisted(
        &mut self,
        _batch: Batch<'_>,
        _state: &MigrationState,
    ) -> Result<Next, Self::Error> {
        Ok(Next::Continue)
    }

    /// Called by [`ProcedureDriver::run`] before it performs each decided action (never
    /// `Finish`, which performs nothing), with the state the action was decided on. A test's
    /// persistence stops here to stand for a crash before or right after the action; the
    /// engine and the benchmarks always perform.
    fn before_action(&mut self, _state: &MigrationState, _action: &Action) -> Proceed {
        Proceed::Perform
    }
}

#[async_trait]
impl<T: Persistence + ?Sized> Persistence for &mut T {
    type Error = T::Error;

    async fn persist(
        &mut self,
        batch: Batch<'_>,
        state: &MigrationState,
    ) -> Result<(), Self::Error> {
        (**self).persist(batch, state).await
    }

    async fn persisted(
        &mut self,
        batch: Batch<'_>,
        state: &MigrationState,
    ) -> Result<Next, Self::Error> {
        (**self).persisted(batch, state).await
    }

    fn before_action(&mut self, state: &MigrationState, action: &Action) -> Proceed {
        (**self).before_action(state, action)
    }
}

/// How a driven procedure ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The model finished it with this outcome.
    Finished(Outcome),
    /// The engine halted or the persistence said stop: the procedure stays unfinished.
    Stopped,
}

/// Why the driver could not go on.
#[derive(Debug, thiserror::Error)]
pub enum DriveError<E> {
    /// `decide` refused its input: the state or the observation breaks the model.
    #[error("decide refused its input for procedure {procedure_id}: {error}")]
    Decide {
        /// The procedure.
        procedure_id: Uuid,
        /// The model's error.
        error: DecideError,
    },
    /// The persistence failed; the batch was not folded in.
    #[error("persisting procedure {procedure_id} failed: {error}")]
    Persist {
        /// The procedure.
        procedure_id: Uuid,
        /// The persistence's error.
        error: E,
    },
}

/// Where a run starts: an input to decide on, or an action already decided.
enum Start {
    Input(Input),
    Pending(Action),
}

/// Why a step stopped the loop.
pub(crate) enum Halt<E> {
    Stopped,
    Failed(DriveError<E>),
}

impl<E> From<DriveError<E>> for Halt<E> {
    fn from(error: DriveError<E>) -> Self {
        Halt::Failed(error)
    }
}

/// The engine's signals to a running procedure: halt, and operator requests.
pub(crate) struct Signals {
    pub(crate) halt: watch::Receiver<bool>,
    pub(crate) control: mpsc::Receiver<Control>,
}

/// Drives one procedure against the ports: decides, hands the events to its persistence,
/// folds them, performs the action, and feeds the observation back, until the procedure
/// finishes, the persistence says stop, or the engine halts.
pub struct ProcedureDriver<'a, P> {
    ports: &'a Ports,
    locks: &'a LockTable,
    id: Uuid,
    state: MigrationState,
    next_seq: u64,
    persistence: P,
    /// The table lock, while held across a route read and the compare-and-swap after it.
    table_lock: Option<Vec<String>>,
    signals: Option<Signals>,
}

impl<'a, P: Persistence> ProcedureDriver<'a, P> {
    /// A driver of procedure `id` whose log so far folds to `state` and holds `next_seq - 1`
    /// events (a new procedure: the default state and 1). Locks are taken in `locks` under
    /// the procedure's id.
    pub fn new(
        ports: &'a Ports,
        locks: &'a LockTable,
        id: Uuid,
        state: MigrationState,
        next_seq: u64,
        persistence: P,
    ) -> Self {
        ProcedureDriver {
            ports,
            locks,
            id,
            state,
            next_seq,
            persistence,
            table_lock: None,
            signals: None,
        }
    }

    pub(crate) fn with_signals(mut self, signals: Signals) -> Self {
        self.signals = Some(signals);
        self
    }

    /// The procedure driven.
    pub fn procedure_id(&self) -> Uuid {
        self.id
    }

    /// The state folded from every persisted event.
    pub fn state(&self) -> &MigrationState {
        &self.state
    }

    /// The state, giving up the driver.
    pub fn into_state(self) -> MigrationState {
        self.state
    }

    /// The persistence.
    pub fn persistence(&self) -> &P {
        &self.persistence
    }

    /// Persists and folds events decided outside the model's loop (a submission).
    pub async fn record(
        &mut self,
        events: Vec<MigrationEvent>,
    ) -> Result<Next, DriveError<P::Error>> {
        let now_ms = self.ports.clock.now_ms();
        self.append(now_ms, &events, false).await
    }

    /// Runs the procedure from `first` (an observation alone comes with no randomness)
    /// until it finishes or stops. Every lock the procedure holds is released either way.
    pub async fn run(&mut self, first: impl Into<Input>) -> Result<Ended, DriveError<P::Error>> {
        self.run_from(Start::Input(first.into())).await
    }

    /// Runs the procedure from an action decided and persisted earlier but not performed (a
    /// run stopped by [`Proceed::StopBefore`] left it pending): performs it without asking
    /// [`Persistence::before_action`] again, then goes on as [`ProcedureDriver::run`].
    pub async fn run_pending(&mut self, pending: Action) -> Result<Ended, DriveError<P::Error>> {
        self.run_from(Start::Pending(pending)).await
    }

    async fn run_from(&mut self, start: Start) -> Result<Ended, DriveError<P::Error>> {
        let result = self.run_loop(start).await;
        self.release_locks();
        match result {
            Ok(outcome) => Ok(Ended::Finished(outcome)),
            Err(Halt::Stopped) => Ok(Ended::Stopped),
            Err(Halt::Failed(error)) => Err(error),
        }
    }

    pub(crate) fn halted(&self) -> bool {
        self.signals
            .as_ref()
            .is_some_and(|signals| *signals.halt.borrow())
    }

    async fn run_loop(&mut self, start: Start) -> Result<Outcome, Halt<P::Error>> {
        let mut next = start;
        loop {
            let (action, proceed) = match next {
                Start::Pending(action) => (action, Proceed::Perform),
                Start::Input(input) => {
                    let action = self.step(input).await?;
                    let proceed = match action {
                        Action::Finish { .. } => Proceed::Perform,
                        _ => self.persistence.before_action(&self.state, &action),
                    };
                    (action, proceed)
                }
            };
            if proceed == Proceed::StopBefore {
                return Err(Halt::Stopped);
            }
            // A cancel queued while the procedure decided (or before it started: one
            // recorded while no engine ran) is answered before the action is performed, so
            // it never waits behind a route write it could have come before. A send is left
            // to the wait for its answer, which answers requests, since the instruction is
            // already recorded as sent.
            if !matches!(action, Action::Finish { .. } | Action::Send { .. }) {
                if let Some(cancel) = self.queued_cancel().await? {
                    next = Start::Input(self.input(cancel));
                    continue;
                }
            }
            let span =
                debug_span!("step", state = %self.state.state, action = action_name(&action));
            let observation = match self.act(action).instrument(span).await? {
                Ok(observation) => observation,
                Err(outcome) => {
                    info!(outcome = outcome.name(), "procedure finished");
                    return Ok(outcome);
                }
            };
            if proceed == Proceed::StopAfter {
                return Err(Halt::Stopped);
            }
            next = Start::Input(self.input(observation));
        }
    }

    /// One decision: asks the model what to do after `input`, persists and folds the
    /// decided events (write-ahead: before any of their action is performed), calls the
    /// decided hooks, and returns the action, not yet performed.
    pub(crate) async fn step(&mut self, input: Input) -> Result<Action, Halt<P::Error>> {
        let (now_ms, decision) = self.decide(input)?;
        self.commit(now_ms, decision).await
    }

    /// Asks the model what to do after `input`, now; nothing is persisted yet.
    pub(crate) fn decide(&self, input: Input) -> Result<(u64, Decision), Halt<P::Error>> {
        if self.halted() {
            return Err(Halt::Stopped);
        }
        let now_ms = self.ports.clock.now_ms();
        let decision = decide(&self.state, now_ms, input).map_err(|error| DriveError::Decide {
            procedure_id: self.id,
            error,
        })?;
        Ok((now_ms, decision))
    }

    /// Persists and folds a decision's events (made at `now_ms`), calls its hooks, and
    /// returns its action, not yet performed.
    pub(crate) async fn commit(
        &mut self,
        now_ms: u64,
        decision: Decision,
    ) -> Result<Action, Halt<P::Error>> {
        if !decision.events.is_empty() {
            let deferrable = self.next_seq > 1 && deferrable(&decision);
            let next = self.append(now_ms, &decision.events, deferrable).await?;
            // A crash right after the append: nothing more happens.
            if next == Next::Stop || self.halted() {
                return Err(Halt::Stopped);
            }
        }
        for hook in &decision.hooks {
            self.call_hook(hook).await?;
        }
        Ok(decision.action)
    }

    /// The model's input for `observation`, with fresh jitter.
    pub(crate) fn input(&self, observation: Observation) -> Input {
        Input {
            observation,
            jitter_random: self.ports.entropy.next_u32(),
        }
    }

    /// Lets go of every lock the procedure holds (when it ends or stops).
    pub(crate) fn release_locks(&mut self) {
        self.table_lock = None;
        self.locks.release_all(self.id);
    }

    /// The next operator request, without taking it from a closed channel twice: pending
    /// when the driver has no signals or its channel is closed.
    pub(crate) fn poll_control(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Control> {
        let Some(signals) = self.signals.as_mut() else {
            return std::task::Poll::Pending;
        };
        if signals.control.is_closed() && signals.control.is_empty() {
            return std::task::Poll::Pending;
        }
        match signals.control.poll_recv(cx) {
            std::task::Poll::Ready(Some(control)) => std::task::Poll::Ready(control),
            _ => std::task::Poll::Pending,
        }
    }

    /// Persists a batch, then folds it in.
    async fn append(
        &mut self,
        now_ms: u64,
        events: &[MigrationEvent],
        deferrable: bool,
    ) -> Result<Next, DriveError<P::Error>> {
        let batch = Batch {
            procedure_id: self.id,
            first_seq: self.next_seq,
            at_ms: now_ms,
            events,
            deferrable,
        };
        let procedure_id = self.id;
        let persisted = move |error| DriveError::Persist {
            procedure_id,
            error,
        };
        self.persistence
            .persist(batch, &self.state)
            .await
            .map_err(persisted)?;
        for event in events {
            self.state.apply(now_ms, event);
        }
        self.next_seq += events.len() as u64;
        self.persistence
            .persisted(batch, &self.state)
            .await
            .map_err(persisted)
    }

    async fn call_hook(&self, hook: &Hook) -> Result<(), Halt<P::Error>> {
        let hooks = &self.ports.hooks;
        let call = async {
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
        };
        self.halt_only(call).await
    }

    /// Awaits `work` unless the engine halts first (a port call that hangs cannot keep a
    /// halted engine's procedure alive).
    async fn halt_only<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Halt<P::Error>> {
        let halt = self.halt_signal();
        tokio::select! {
            biased;
            () = until_halted(halt) => Err(Halt::Stopped),
            output = work => Ok(output),
        }
    }

    /// Performs an action and returns what came of it, or the outcome of a `Finish`. A
    /// cancel taken during a route write decides the rollback's first action, performed here
    /// too (see `cas_answering_cancels`).
    pub(crate) async fn act(
        &mut self,
        mut action: Action,
    ) -> Result<Result<Observation, Outcome>, Halt<P::Error>> {
        loop {
            match self.act_once(action).await? {
                Acted::Done(result) => return Ok(result),
                Acted::Then(next) => action = next,
            }
        }
    }

    async fn act_once(&mut self, action: Action) -> Result<Acted, Halt<P::Error>> {
        let ports = self.ports;
        if !matches!(action, Action::ReadRoute { .. } | Action::CasRoute { .. }) {
            self.release_table_lock();
        }
        let observation = match action {
            Action::AcquireLocks { lock_keys } => {
                let started_ms = ports.clock.now_ms();
                if let Err(contended) = self.locks.try_acquire(self.id, &lock_keys) {
                    self.note(MigrationEvent::LockWaitStarted {
                        lock_key: contended.key,
                    })
                    .await?;
                    let locks = self.locks;
                    let acquire = locks.acquire(self.id, &lock_keys, |_| {});
                    let halt = self.halt_signal();
                    tokio::select! {
                        biased;
                        () = until_halted(halt) => return Err(Halt::Stopped),
                        () = acquire => {}
                    }
                }
                Observation::LocksAcquired {
                    lock_keys,
                    waited_ms: ports.clock.now_ms().saturating_sub(started_ms),
                }
            }
            Action::ReadRoute { table_id } => {
                self.take_table_lock(table_id).await?;
                // A read changes nothing: a halt or a taken cancel drops it at once.
                match self
                    .interruptible(ports.metadata.table_route(table_id))
                    .await?
                {
                    Ok(Ok(route)) => Observation::RouteRead { table_id, route },
                    Ok(Err(error)) => Observation::MetadataFailed {
                        operation: format!("read the route of table {table_id}"),
                        error: error.reason,
                    },
                    Err(cancel) => cancel,
                }
            }
            Action::ReadLastHeartbeat { peer } => match self
                .interruptible(ports.lease_renewals.last_heartbeat_ms(peer))
                .await?
            {
                Ok(last_heartbeat_ms) => Observation::LastHeartbeatRead {
                    peer,
                    last_heartbeat_ms,
                },
                Err(cancel) => cancel,
            },
            Action::ReadDatanodeTable {
                datanode_id,
                table_id,
            } => match self
                .interruptible(ports.metadata.datanode_table(datanode_id, table_id))
                .await?
            {
                Ok(Ok(datanode_table)) => Observation::DatanodeTableRead {
                    datanode_id,
                    table_id,
                    datanode_table,
                },
                Ok(Err(error)) => Observation::MetadataFailed {
                    operation: format!(
                        "read the datanode table of table {table_id} on datanode {datanode_id}"
                    ),
                    error: error.reason,
                },
                Err(cancel) => cancel,
            },
            Action::CasRoute {
                table_id,
                expected_version,
                route,
                change,
                region_move,
            } => {
                self.take_table_lock(table_id).await?;
                let cas = ports.metadata.cas_table_route(
                    table_id,
                    expected_version,
                    route,
                    region_move.into_iter().collect(),
                );
                // A halt stops waiting for the write. A cancel waits for the new route's write
                // (whether it lands decides between rollback and refusal); during any other
                // write it is answered at once (see `cas_answering_cancels`).
                let written = if change == RouteChange::Upgrade {
                    self.halt_only(cas).await?
                } else {
                    match self.cas_answering_cancels(cas).await? {
                        Ok(written) => written,
                        Err(rollback) => {
                            self.release_table_lock();
                            // The rollback's first action (it reads the route afresh).
                            return Ok(Acted::Then(rollback));
                        }
                    }
                };
                let observation = match written {
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
                observation
            }
            Action::Send {
                peer,
                instruction,
                timeout_ms,
            } => {
                let kind = instruction.kind();
                if timeout_ms == 0 {
                    // A re-send whose deadline passed while the engine was down, decided by
                    // a procedure of behaviour revision 1 or 2 (revision 3 records
                    // `InstructionExpired` instead of such a send).
                    return Ok(Acted::Done(Ok(Observation::Mailbox(
                        crate::domain::MailboxOutcome::Timeout,
                    ))));
                }
                // The engine enforces the timeout itself: a mailbox that never answers
                // reads as a timeout (an answer at the deadline still counts).
                let send = tokio::time::timeout(
                    std::time::Duration::from_millis(timeout_ms),
                    ports.mailbox.send(&peer, instruction, timeout_ms),
                );
                let send =
                    async move { send.await.unwrap_or(crate::domain::MailboxOutcome::Timeout) };
                match self.interruptible(send).await? {
                    Ok(outcome) => {
                        debug!(peer = peer.id, instruction = %kind, ?outcome, "instruction answered");
                        Observation::Mailbox(outcome)
                    }
                    Err(cancel) => cancel,
                }
            }
            Action::WaitUntil { until_ms, reason } => {
                debug!(until_ms, ?reason, "waiting");
                let sleep = ports.clock.sleep_until_ms(until_ms);
                match self.interruptible(sleep).await? {
                    Ok(()) => Observation::WaitElapsed,
                    Err(cancel) => cancel,
                }
            }
            Action::Finish { outcome } => return Ok(Acted::Done(Err(outcome))),
        };
        Ok(Acted::Done(Ok(observation)))
    }

    /// Takes the table's exclusive lock for a route read and the compare-and-swap that may
    /// follow it (R2.6); it is released after the compare-and-swap, or before any other
    /// action, so a lease wait or a datanode's answer never holds it.
    async fn take_table_lock(
        &mut self,
        table_id: crate::domain::TableId,
    ) -> Result<(), Halt<P::Error>> {
        let keys = vec![table_lock_key(table_id)];
        if self.table_lock.as_ref() == Some(&keys) {
            return Ok(());
        }
        // A revision 1 procedure holds its table's lock for the whole migration.
        if crate::migration::lock_keys(&self.state).contains(&keys[0]) {
            return Ok(());
        }
        self.release_table_lock();
        if self.locks.try_acquire(self.id, &keys).is_err() {
            let locks = self.locks;
            let acquire = locks.acquire(self.id, &keys, |_| {});
            let halt = self.halt_signal();
            tokio::select! {
                biased;
                () = until_halted(halt) => return Err(Halt::Stopped),
                () = acquire => {}
            }
        }
        self.table_lock = Some(keys);
        Ok(())
    }

    fn release_table_lock(&mut self) {
        if let Some(keys) = self.table_lock.take() {
            self.locks.release(self.id, &keys);
        }
    }

    /// The halt signal, if the driver has one.
    fn halt_signal(&self) -> Option<watch::Receiver<bool>> {
        self.signals.as_ref().map(|signals| signals.halt.clone())
    }

    /// Awaits `work` while answering operator requests; `Err` carries a cancel that was
    /// taken and interrupts the work (a datanode may still carry out an instruction whose
    /// answer is dropped: every instruction is idempotent).
    async fn interruptible<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<Result<T, Observation>, Halt<P::Error>> {
        let Some(mut signals) = self.signals.take() else {
            return Ok(Ok(work.await));
        };
        let result = self.interruptible_by(&mut signals, work).await;
        self.signals = Some(signals);
        result
    }

    async fn interruptible_by<T>(
        &mut self,
        signals: &mut Signals,
        work: impl std::future::Future<Output = T>,
    ) -> Result<Result<T, Observation>, Halt<P::Error>> {
        tokio::pin!(work);
        let mut control_open = true;
        loop {
            tokio::select! {
                biased;
                () = until_halted(Some(signals.halt.clone())) => return Err(Halt::Stopped),
                control = signals.control.recv(), if control_open => match control {
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

    /// Awaits a route write that is not the new route's (marking the leader Downgrading, or
    /// clearing it) while answering operator requests (issue 15). A cancel the procedure
    /// can take is answered at once and recorded at once: the decision on it starts the
    /// rollback, whose first action, returned as `Err` once the write has answered, reads the
    /// route afresh, so it learns from the route itself whether the write landed (it clears
    /// Downgrading if it did, and the migration ends aborted either way). The write's own
    /// result is then not recorded, as after a crash in mid-write. A refused cancel is
    /// recorded and answered at once too, and the write goes on.
    async fn cas_answering_cancels<T>(
        &mut self,
        cas: impl std::future::Future<Output = T>,
    ) -> Result<Result<T, Action>, Halt<P::Error>> {
        tokio::pin!(cas);
        let cancel = match self.interruptible(cas.as_mut()).await? {
            Ok(written) => return Ok(Ok(written)),
            Err(cancel) => cancel,
        };
        let rollback = self.step(self.input(cancel)).await?;
        let _written = self.halt_only(cas).await?;
        debug!("the route write in flight at the cancel answered; the rollback reads the route to learn whether it landed");
        Ok(Err(rollback))
    }

    /// The first queued operator request the procedure takes (a cancel), answering the
    /// refused ones on the way; `None` when none is queued.
    async fn queued_cancel(&mut self) -> Result<Option<Observation>, Halt<P::Error>> {
        loop {
            let Some(control) = self
                .signals
                .as_mut()
                .and_then(|signals| signals.control.try_recv().ok())
            else {
                return Ok(None);
            };
            if let Some(cancel) = self.on_control(control).await? {
                return Ok(Some(cancel));
            }
        }
    }

    /// Handles an operator request received while waiting; `Some` interrupts the wait.
    pub(crate) async fn on_control(
        &mut self,
        control: Control,
    ) -> Result<Option<Observation>, Halt<P::Error>> {
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

    /// Persists an event the driver writes outside a decision.
    async fn note(&mut self, event: MigrationEvent) -> Result<(), Halt<P::Error>> {
        let now_ms = self.ports.clock.now_ms();
        match self.append(now_ms, &[event], false).await? {
            Next::Continue => Ok(()),
            Next::Stop => Err(Halt::Stopped),
        }
    }
}

/// The engine's persistence: the event log, then the procedure's subscribers. A deferrable
/// batch is held and appended with the procedure's next batch, in one append (one durable
/// wait); its subscribers and metrics see it then.
pub(super) struct LogPersistence<'a> {
    pub(super) inner: &'a Inner,
    /// The held batches' events, from seq `held_first_seq` on.
    held: Vec<TimedEvent>,
    held_first_seq: u64,
}

impl<'a> LogPersistence<'a> {
    pub(super) fn new(inner: &'a Inner) -> Self {
        LogPersistence {
            inner,
            held: Vec::new(),
            held_first_seq: 0,
        }
    }
}

#[async_trait]
impl Persistence for LogPersistence<'_> {
    type Error = EngineError;

    async fn persist(
        &mut self,
        batch: Batch<'_>,
        state: &MigrationState,
    ) -> Result<(), EngineError> {
        if self.held.is_empty() {
            self.held_first_seq = batch.first_seq;
        }
        debug_assert_eq!(
            self.held_first_seq + self.held.len() as u64,
            batch.first_seq,
            "a held batch is followed by the procedure's next one"
        );
        self.held
            .extend(batch.events.iter().map(|event| TimedEvent {
                at_ms: batch.at_ms,
                event: event.clone(),
            }));
        if batch.deferrable && self.held.len() < APPEND_EVENTS_MAX {
            return Ok(());
        }
        let events = std::mem::take(&mut self.held);
        let opens = if self.held_first_seq == 1 {
            state.task.as_ref().map(|task| OpenProcedure {
                region_id: task.region_id.as_u64(),
                peers: vec![task.from_peer.id, task.to_peer.id],
            })
        } else {
            None
        };
        let closes = events.iter().any(|timed| timed.event.is_terminal());
        self.inner
            .append(
                batch.procedure_id,
                self.held_first_seq,
                &events,
                opens,
                closes,
            )
            .await?;
        for (seq, timed) in (self.held_first_seq..).zip(&events) {
            self.inner
                .after_append(batch.procedure_id, seq, timed.at_ms, &timed.event);
        }
        Ok(())
    }
}

/// What a running procedure task owns.
pub(crate) struct Runner {
    pub(crate) inner: Arc<Inner>,
    pub(crate) id: Uuid,
    pub(crate) state: MigrationState,
    pub(crate) next_seq: u64,
    pub(crate) control: mpsc::Receiver<Control>,
}

impl Runner {
    /// Runs the procedure until it finishes or the engine stops.
    pub(crate) async fn run(self, first: Observation) {
        let Runner {
            inner,
            id,
            state,
            next_seq,
            control,
        } = self;
        let region = state
            .task
            .as_ref()
            .map(|task| task.region_id.to_string())
            .unwrap_or_default();
        let span = procedure_span(id, &region);
        let signals = Signals {
            halt: inner.halt_signal(),
            control,
        };
        let persistence = LogPersistence::new(&inner);
        let mut driver =
            ProcedureDriver::new(&inner.ports, &inner.locks, id, state, next_seq, persistence)
                .with_signals(signals);
        match driver.run(first).instrument(span.clone()).await {
            Ok(Ended::Finished(_)) => {
                // Its closing event is durable; the retention may archive it (and older
                // ones) before its waiters are told.
                super::retention::after_finish(&inner).await;
            }
            Ok(Ended::Stopped) => {
                span.in_scope(|| {
                    debug!("procedure halted; it resumes from the log on the next open")
                });
            }
            Err(error) => {
                span.in_scope(|| {
                    warn!(%error, "procedure stopped: the log failed; it resumes from the log on the next open")
                });
            }
        }
        inner.forget(id, Some(driver.state()));
    }
}

/// Whether write-ahead lets a decision's events wait for the procedure's next batch (see
/// [`Batch::deferrable`]). It calls no hook, and either:
/// - its action is a read or takes the in-memory locks, and every event in it is the
///   model's own decision (never the one that ends the procedure) or an input the resume
///   gets back by acting again with no effect outside: the locks taken, a route or a
///   datanode table read, a wait that elapsed; or
/// - its action is a route write and its only events are the route read it is based on:
///   what to write follows from the state already durable, and a crash after the write
///   but before its result is durable is the unlogged write the model already handles (the
///   resume reads the route again and sees whether the write landed).
///
/// A datanode's answer, a route write's result, a heartbeat read (R2.3 decides the lease on
/// it) and an operator's cancel (they were answered) are recorded before anything else
/// happens.
fn deferrable(decision: &Decision) -> bool {
    if !decision.hooks.is_empty() {
        return false;
    }
    match decision.action {
        Action::AcquireLocks { .. }
        | Action::ReadRoute { .. }
        | Action::ReadDatanodeTable { .. }
        | Action::ReadLastHeartbeat { .. } => decision.events.iter().all(|event| match event {
            MigrationEvent::LocksAcquired { .. }
            | MigrationEvent::RouteRead { .. }
            | MigrationEvent::DatanodeTableRead { .. }
            | MigrationEvent::WaitElapsed => true,
            event => event.role() == EventRole::Decision && !event.is_terminal(),
        }),
        Action::CasRoute { .. } => decision
            .events
            .iter()
            .all(|event| matches!(event, MigrationEvent::RouteRead { .. })),
        _ => false,
    }
}

/// A short name of an action, for spans.
pub(super) fn action_name(action: &Action) -> &'static str {
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

/// The span of every line about one migration (see the engine's "Tracing" docs).
pub(crate) fn procedure_span(procedure_id: Uuid, region: &str) -> tracing::Span {
    info_span!("procedure", %procedure_id, region = %region)
}

/// Returns once the engine is halted (never, without a halt signal or if the engine is gone
/// without halting).
pub(super) async fn until_halted(halt: Option<watch::Receiver<bool>>) {
    if let Some(mut halt) = halt {
        if halt.wait_for(|halted| *halted).await.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await;
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
