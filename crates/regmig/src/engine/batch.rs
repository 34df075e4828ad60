//! The batch driver (spec R2.5): runs every region of a batch in one task, on top of one
//! [`ProcedureDriver`] per region, so that a batch step reaches each datanode as ONE
//! instruction carrying every region in that step and each table's route as ONE
//! compare-and-swap covering all of its regions.
//!
//! # Design
//! A batch keeps one procedure, and so one log stream, per region (its `BatchJoined` event
//! names the batch): every per-region rule (deadline, budget, retries, rollback, dedupe,
//! resume) stays the single migration's, folded from that region's own events, and every
//! reader of the log (CLI, audit, replay) is unchanged. What the batch changes is who acts:
//!
//! 1. Every region that has an observation to take in is stepped at once: the model decides
//!    for it, its decided events are appended to its own stream (write-ahead: durable before
//!    any instruction or route write they announce) and its hooks are called
//!    ([`ProcedureDriver::step`]).
//! 2. The decided actions are grouped: `Send`s by (datanode, instruction kind) into one
//!    [`Mailbox::send_batch`](crate::cluster::Mailbox::send_batch) call; route reads by
//!    table into one read; route compare-and-swaps by (table, version read) into one write
//!    whose route carries every member's change to its own region and whose region moves
//!    are all of theirs. A group of one send, and every other action (locks, datanode-table
//!    and heartbeat reads, waits, finish), is performed by the region's own driver as in a
//!    single migration ([`ProcedureDriver::act`]).
//! 3. The driver waits for the first group to finish, takes every other group that finished
//!    at the same moment, and hands each region its own observation: its part of a
//!    multi-region reply, the route read, or the write's result. Then 1 again, for those.
//!
//! So regions in the same step move in lockstep and share each instruction and route write;
//! a region whose part fails (an error reply, an unreachable datanode) takes its own retry
//! wait and re-sends alone — a smaller instruction — or rolls back alone, while the others
//! carry on. A resumed batch starts from each region's own folded state.
//!
//! Timeouts: a grouped send waits for the largest timeout of its members; a member whose own
//! timeout passed when the answer came reads a `Timeout`. Route locks (R2.6): as in a single
//! migration, a table's exclusive lock is held from a grouped route read until the grouped
//! compare-and-swap after it (or until the regions go on to something else), under the id
//! of the read's first region, so two batches of one table take turns writing its route. A cancel of a region in
//! a grouped send is answered while the send waits, as in a single migration; that
//! region's part of the answer is then dropped. So is one during a grouped route write that
//! is not the new route (issue 15): the region's rollback then reads the route to learn
//! whether the write landed.

use std::sync::Arc;
use std::task::Poll;

use tracing::{debug, info, info_span, warn, Instrument};
use uuid::Uuid;

use super::procedure::{until_halted, Control, Halt, LogPersistence, Signals};
use super::{EngineError, Inner, ProcedureDriver};
use crate::concurrent::{join_all, Boxed, Pending};
use crate::domain::{
    Instruction, InstructionKind, MailboxOutcome, Peer, PeerId, TableId, TableRoute,
};
use crate::migration::{
    lock_keys, table_lock_key, Action, MigrationState, Observation, Outcome, RouteChange,
};

type Driver<'a> = ProcedureDriver<'a, LogPersistence<'a>>;

/// What came of an action, for one region: an observation, the outcome of a `Finish`, or a
/// reason to stop.
type Acted = Result<Result<Observation, Outcome>, Halt<EngineError>>;

/// The regions a finished group of actions hands back, each with what came of its action.
type Done<'a> = Vec<(usize, Driver<'a>, Acted)>;

/// One region of a batch to run.
pub(crate) struct Member {
    pub(crate) id: Uuid,
    pub(crate) state: MigrationState,
    pub(crate) next_seq: u64,
    pub(crate) first: Observation,
    pub(crate) control: tokio::sync::mpsc::Receiver<Control>,
}

/// What a running batch task owns.
pub(crate) struct BatchRunner {
    pub(crate) inner: Arc<Inner>,
    pub(crate) batch_id: Uuid,
    pub(crate) members: Vec<Member>,
}

impl BatchRunner {
    /// Runs every region of the batch until each finishes or the engine stops.
    pub(crate) async fn run(self) {
        let BatchRunner {
            inner,
            batch_id,
            members,
        } = self;
        let span = info_span!("batch", id = %batch_id, regions = members.len());
        run_batch(&inner, members).instrument(span).await;
    }
}

/// Why the batch loop stopped early.
struct Stopped;

async fn run_batch(inner: &Arc<Inner>, members: Vec<Member>) {
    let ids: Vec<Uuid> = members.iter().map(|member| member.id).collect();
    let mut ended = vec![false; ids.len()];
    let mut ready: Vec<(usize, Driver<'_>, crate::migration::Input)> = Vec::new();
    for (index, member) in members.into_iter().enumerate() {
        let signals = Signals {
            halt: inner.halt_signal(),
            control: member.control,
        };
        let driver = ProcedureDriver::new(
            &inner.ports,
            &inner.locks,
            member.id,
            member.state,
            member.next_seq,
            LogPersistence::new(inner),
        )
        .with_signals(signals);
        ready.push((index, driver, crate::migration::Input::new(member.first)));
    }
    let mut pending: Pending<'_, Group<'_>> = Pending::new();
    let mut route_locks = RouteLocks::default();
    let result: Result<(), Stopped> = async {
        loop {
            // 1. Decide for every region with something to take in; mark the sends that
            // will share one instruction; then persist every decision at once (their appends
            // share the log's group commit), each before its action.
            let mut decided = Vec::with_capacity(ready.len());
            let mut stopped = false;
            for (index, mut driver, input) in ready.drain(..) {
                match driver.decide(input) {
                    Ok((now_ms, decision)) => decided.push((index, driver, now_ms, decision)),
                    Err(Halt::Stopped) => stopped = true,
                    Err(Halt::Failed(error)) => {
                        warn!(id = %driver.procedure_id(), %error, "batch region stopped: the model refused its log; it stays open for an operator");
                        ended[index] = true;
                        end_region(inner, &mut driver, &ids, &ended);
                    }
                }
            }
            if stopped {
                return Err(Stopped);
            }
            // Fresh sends before re-sends: an instruction is counted in the event of the first
            // region it carries, and a re-send's event is not counted.
            decided.sort_by_key(|(index, _, _, decision)| (is_resend(decision), *index));
            mark_shared_sends(&mut decided);
            let stepped = join_all(decided.into_iter().map(
                |(index, mut driver, now_ms, decision)| async move {
                    let step = driver.commit(now_ms, decision).await;
                    (index, driver, step)
                },
            ))
            .await;
            let mut actions = Vec::with_capacity(stepped.len());
            for (index, mut driver, step) in stepped {
                match step {
                    Ok(action) => actions.push((index, driver, action)),
                    Err(Halt::Stopped) => stopped = true,
                    Err(Halt::Failed(error)) => {
                        warn!(id = %driver.procedure_id(), %error, "batch region stopped: the log failed; it resumes from the log on the next open");
                        ended[index] = true;
                        end_region(inner, &mut driver, &ids, &ended);
                    }
                }
            }
            if stopped {
                return Err(Stopped);
            }
            // 2. Group the actions and start them.
            dispatch(inner, actions, &mut pending, &mut route_locks);
            if pending.is_empty() {
                return Ok(());
            }
            // 3. Take every group done at this moment.
            let mut done = pending.next_done().await;
            loop {
                tokio::task::yield_now().await;
                let more = pending.done_now().await;
                if more.is_empty() {
                    break;
                }
                done.extend(more);
            }
            let done = done.into_iter().flat_map(|group| {
                route_locks.done(inner, group.route);
                group.regions
            });
            for (index, mut driver, acted) in done {
                match acted {
                    Ok(Ok(observation)) => {
                        let input = driver.input(observation);
                        ready.push((index, driver, input));
                    }
                    Ok(Err(outcome)) => {
                        info!(id = %driver.procedure_id(), outcome = outcome.name(), "batch region finished");
                        ended[index] = true;
                        end_region(inner, &mut driver, &ids, &ended);
                        // Its closing event is durable; the retention may archive it.
                        super::retention::after_finish(inner).await;
                    }
                    Err(Halt::Stopped) => stopped = true,
                    Err(Halt::Failed(error)) => {
                        warn!(id = %driver.procedure_id(), %error, "batch region stopped: the log failed; it resumes from the log on the next open");
                        ended[index] = true;
                        end_region(inner, &mut driver, &ids, &ended);
                    }
                }
            }
            if stopped || inner.halted() {
                return Err(Stopped);
            }
            ready.sort_by_key(|(index, _, _)| *index);
        }
    }
    .await;
    if result.is_err() {
        debug!("batch halted; its regions resume from the log on the next open");
    }
    // Whatever did not end stays unfinished in the log; its locks go, its waiters learn it
    // is not running. Drivers still in flight are dropped with their futures.
    drop(pending);
    drop(ready);
    for (index, id) in ids.iter().enumerate() {
        if !ended[index] {
            inner.locks.release_all(*id);
            inner.forget(*id, None);
        }
    }
}

/// The key a send is grouped by: one instruction per datanode and instruction kind.
fn send_key(action: &Action) -> Option<(PeerId, InstructionKind)> {
    match action {
        Action::Send {
            peer, instruction, ..
        } => Some((peer.id, instruction.kind())),
        _ => None,
    }
}

/// Whether a decision re-sends an instruction outstanding at a crash.
fn is_resend(decision: &crate::migration::Decision) -> bool {
    decision.events.iter().any(|event| {
        matches!(
            event,
            crate::migration::MigrationEvent::InstructionSent { resend: true, .. }
        )
    })
}

/// Records, in the `InstructionSent` event of each send that will share one instruction
/// with others, every region that instruction carries (what `sent` counts and the log
/// shows as one instruction).
fn mark_shared_sends(decided: &mut [(usize, Driver<'_>, u64, crate::migration::Decision)]) {
    let mut groups: Vec<((PeerId, InstructionKind), Vec<crate::domain::RegionId>)> = Vec::new();
    for (_, driver, _, decision) in decided.iter() {
        let (Some(key), Some(task)) = (send_key(&decision.action), driver.state().task.as_ref())
        else {
            continue;
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, regions)) => regions.push(task.region_id),
            None => groups.push((key, vec![task.region_id])),
        }
    }
    for (_, _, _, decision) in decided.iter_mut() {
        let Some(key) = send_key(&decision.action) else {
            continue;
        };
        let Some((_, carried)) = groups.iter().find(|(k, _)| *k == key) else {
            continue;
        };
        if carried.len() < 2 {
            continue;
        }
        for event in &mut decision.events {
            if let crate::migration::MigrationEvent::InstructionSent { regions, .. } = event {
                regions.clone_from(carried);
            }
        }
    }
}

/// A region's procedure ended (or stopped for good in this engine): its locks go, and the
/// batch task's handle moves to a region still running so a shutdown still waits for it.
fn end_region(inner: &Inner, driver: &mut Driver<'_>, ids: &[Uuid], ended: &[bool]) {
    driver.release_locks();
    let heir = ids
        .iter()
        .zip(ended)
        .find(|(_, ended)| !**ended)
        .map(|(id, _)| *id);
    inner.forget_batch_member(driver.procedure_id(), Some(driver.state()), heir);
}

/// A group of actions done: its regions, and the route call it made, if any.
struct Group<'a> {
    regions: Done<'a>,
    route: Option<RouteCall>,
}

impl<'a> From<Done<'a>> for Group<'a> {
    fn from(regions: Done<'a>) -> Self {
        Group {
            regions,
            route: None,
        }
    }
}

/// A grouped route call: a read, or a compare-and-swap.
#[derive(Debug, Clone, Copy)]
struct RouteCall {
    table_id: TableId,
    write: bool,
}

/// The table locks the batch holds (R2.6), as a single migration does: from a route read
/// until the compare-and-swap after it, or until the round that follows the read has no
/// route call on that table (the regions went on to something else).
#[derive(Default)]
struct RouteLocks {
    /// Per table: the owner the lock is held under, and the route calls in flight.
    held: std::collections::BTreeMap<TableId, (Uuid, usize)>,
}

impl RouteLocks {
    /// The owner a new route call on `table_id` takes the lock under (`first`, unless the
    /// batch already holds it), counted in flight.
    fn start(&mut self, table_id: TableId, first: Uuid) -> Uuid {
        let (owner, in_flight) = self.held.entry(table_id).or_insert((first, 0));
        *in_flight += 1;
        *owner
    }

    /// A route call ended; a write lets the lock go when no other call is in flight.
    fn done(&mut self, inner: &Inner, call: Option<RouteCall>) {
        let Some(RouteCall { table_id, write }) = call else {
            return;
        };
        let Some((owner, in_flight)) = self.held.get_mut(&table_id) else {
            return;
        };
        *in_flight = in_flight.saturating_sub(1);
        if write && *in_flight == 0 {
            inner.locks.release(*owner, &[table_lock_key(table_id)]);
            self.held.remove(&table_id);
        }
    }

    /// Lets go of every table lock no call is in flight on and `keep` does not name.
    fn release_unused(&mut self, inner: &Inner, keep: &[TableId]) {
        self.held.retain(|table_id, (owner, in_flight)| {
            let kept = *in_flight > 0 || keep.contains(table_id);
            if !kept {
                inner.locks.release(*owner, &[table_lock_key(*table_id)]);
            }
            kept
        });
    }
}

/// Groups the actions (see the module doc) and pushes one future per group.
fn dispatch<'a>(
    inner: &'a Inner,
    actions: Vec<(usize, Driver<'a>, Action)>,
    pending: &mut Pending<'a, Group<'a>>,
    route_locks: &mut RouteLocks,
) {
    let mut sends: Vec<((PeerId, InstructionKind), Peer, Vec<SendPart<'a>>)> = Vec::new();
    let mut reads: Vec<(TableId, Vec<(usize, Driver<'a>)>)> = Vec::new();
    let mut writes: Vec<((TableId, u64), Vec<CasPart<'a>>)> = Vec::new();
    for (index, driver, action) in actions {
        // A revision 1 procedure holds its table's lock for the whole migration: it writes
        // its route alone, through its own driver.
        let holds_table =
            |table_id: TableId| lock_keys(driver.state()).contains(&table_lock_key(table_id));
        match action {
            Action::Send {
                peer,
                instruction,
                timeout_ms,
            } => {
                let key = (peer.id, instruction.kind());
                let part = SendPart {
                    index,
                    driver,
                    instruction,
                    timeout_ms,
                };
                match sends.iter_mut().find(|(k, _, _)| *k == key) {
                    Some((_, _, parts)) => parts.push(part),
                    None => sends.push((key, peer, vec![part])),
                }
            }
            Action::ReadRoute { table_id } if !holds_table(table_id) => {
                match reads.iter_mut().find(|(t, _)| *t == table_id) {
                    Some((_, parts)) => parts.push((index, driver)),
                    None => reads.push((table_id, vec![(index, driver)])),
                }
            }
            Action::CasRoute {
                table_id,
                expected_version,
                route,
                change,
                region_move,
            } if !holds_table(table_id) => {
                let key = (table_id, expected_version);
                let part = CasPart {
                    index,
                    driver,
                    route,
                    change,
                    region_move,
                };
                match writes.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, parts)) => parts.push(part),
                    None => writes.push((key, vec![part])),
                }
            }
            action => pending.push(alone(index, driver, action)),
        }
    }
    for (_, peer, mut parts) in sends {
        if parts.len() == 1 {
            let SendPart {
                index,
                driver,
                instruction,
                timeout_ms,
            } = parts.remove(0);
            let action = Action::Send {
                peer,
                instruction,
                timeout_ms,
            };
            pending.push(alone(index, driver, action));
        } else {
            pending.push(Box::pin(async move {
                send_group(inner, peer, parts).await.into()
            }));
        }
    }
    let route_tables: Vec<TableId> = reads
        .iter()
        .map(|(table_id, _)| *table_id)
        .chain(writes.iter().map(|((table_id, _), _)| *table_id))
        .collect();
    route_locks.release_unused(inner, &route_tables);
    for (table_id, parts) in reads {
        let owner = route_locks.start(table_id, parts[0].1.procedure_id());
        pending.push(Box::pin(async move {
            Group {
                regions: read_group(inner, owner, table_id, parts).await,
                route: Some(RouteCall {
                    table_id,
                    write: false,
                }),
            }
        }));
    }
    for ((table_id, expected_version), parts) in writes {
        let owner = route_locks.start(table_id, parts[0].driver.procedure_id());
        pending.push(Box::pin(async move {
            Group {
                regions: cas_group(inner, owner, table_id, expected_version, parts).await,
                route: Some(RouteCall {
                    table_id,
                    write: true,
                }),
            }
        }));
    }
}

/// An action one region's driver performs by itself.
fn alone<'a>(index: usize, mut driver: Driver<'a>, action: Action) -> Boxed<'a, Group<'a>> {
    Box::pin(async move {
        let span = tracing::debug_span!("step", id = %driver.procedure_id(), state = %driver.state().state, action = super::procedure::action_name(&action));
        let acted = driver.act(action).instrument(span).await;
        vec![(index, driver, acted)].into()
    })
}

/// One region's part of a grouped send.
struct SendPart<'a> {
    index: usize,
    driver: Driver<'a>,
    instruction: Instruction,
    timeout_ms: u64,
}

/// One datanode, one instruction kind, many regions: one mailbox call.
async fn send_group<'a>(inner: &'a Inner, peer: Peer, parts: Vec<SendPart<'a>>) -> Done<'a> {
    let ports = &inner.ports;
    let mut results: Vec<Option<Acted>> = parts.iter().map(|_| None).collect();
    let mut drivers = Vec::with_capacity(parts.len());
    let mut instructions = Vec::new();
    let mut carried = Vec::new();
    let mut timeout_ms = 0;
    for (position, part) in parts.into_iter().enumerate() {
        if part.timeout_ms == 0 {
            // A re-send whose deadline passed while the engine was down.
            results[position] = Some(Ok(Ok(Observation::Mailbox(MailboxOutcome::Timeout))));
        } else {
            timeout_ms = timeout_ms.max(part.timeout_ms);
            instructions.push(part.instruction);
            carried.push((position, part.timeout_ms));
        }
        drivers.push((part.index, part.driver));
    }
    if !instructions.is_empty() {
        let kind = instructions[0].kind();
        let regions = instructions.len();
        let started_ms = ports.clock.now_ms();
        // The engine enforces the timeout itself, as for a single send.
        let send = tokio::time::timeout(
            std::time::Duration::from_millis(timeout_ms),
            ports.mailbox.send_batch(&peer, instructions, timeout_ms),
        );
        tokio::pin!(send);
        let halt = Some(inner.halt_signal());
        let answered = loop {
            // Cancels of the regions still waiting for their part.
            let next_control = std::future::poll_fn(|cx| {
                for (position, (_, driver)) in drivers.iter_mut().enumerate() {
                    if results[position].is_some() {
                        continue;
                    }
                    if let Poll::Ready(control) = driver.poll_control(cx) {
                        return Poll::Ready((position, control));
                    }
                }
                Poll::Pending
            });
            tokio::select! {
                biased;
                () = until_halted(halt.clone()) => {
                    return drivers
                        .into_iter()
                        .map(|(index, driver)| (index, driver, Err(Halt::Stopped)))
                        .collect();
                }
                (position, control) = next_control => {
                    match drivers[position].1.on_control(control).await {
                        Ok(Some(cancel)) => results[position] = Some(Ok(Ok(cancel))),
                        Ok(None) => {}
                        Err(halt) => results[position] = Some(Err(halt)),
                    }
                    if results.iter().all(Option::is_some) {
                        break None;
                    }
                }
                answered = &mut send => break Some(answered),
            }
        };
        let elapsed_ms = ports.clock.now_ms().saturating_sub(started_ms);
        let mut outcomes = match answered {
            Some(Ok(outcomes)) => outcomes.into_iter().map(Some).collect(),
            _ => Vec::new(),
        };
        outcomes.resize(carried.len(), None);
        debug!(peer = peer.id, instruction = %kind, regions, elapsed_ms, "batch instruction answered");
        for ((position, own_timeout_ms), outcome) in carried.into_iter().zip(outcomes) {
            if results[position].is_some() {
                continue;
            }
            // Past its own timeout (or no answer for its part): a timeout for this region.
            let outcome = match outcome {
                Some(outcome) if elapsed_ms <= own_timeout_ms => outcome,
                _ => MailboxOutcome::Timeout,
            };
            results[position] = Some(Ok(Ok(Observation::Mailbox(outcome))));
        }
    }
    drivers
        .into_iter()
        .zip(results)
        .map(|((index, driver), acted)| {
            (
                index,
                driver,
                acted.unwrap_or(Ok(Ok(Observation::Mailbox(MailboxOutcome::Timeout)))),
            )
        })
        .collect()
}

/// Takes `table_id`'s lock under `owner` for one route call, unless the engine halts.
async fn table_lock(
    inner: &Inner,
    owner: Uuid,
    table_id: TableId,
) -> Result<(), Halt<EngineError>> {
    let keys = [table_lock_key(table_id)];
    if inner.locks.try_acquire(owner, &keys).is_ok() {
        return Ok(());
    }
    tokio::select! {
        biased;
        () = until_halted(Some(inner.halt_signal())) => Err(Halt::Stopped),
        () = inner.locks.acquire(owner, &keys, |_| {}) => Ok(()),
    }
}

/// Awaits a port call unless the engine halts first.
async fn or_halt<T>(inner: &Inner, work: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        () = until_halted(Some(inner.halt_signal())) => None,
        output = work => Some(output),
    }
}

fn all_stopped(drivers: Vec<(usize, Driver<'_>)>) -> Done<'_> {
    drivers
        .into_iter()
        .map(|(index, driver)| (index, driver, Err(Halt::Stopped)))
        .collect()
}

/// One read of a table's route for every region of the batch that asked for it.
async fn read_group<'a>(
    inner: &'a Inner,
    owner: Uuid,
    table_id: TableId,
    parts: Vec<(usize, Driver<'a>)>,
) -> Done<'a> {
    if table_lock(inner, owner, table_id).await.is_err() {
        return all_stopped(parts);
    }
    let read = or_halt(inner, inner.ports.metadata.table_route(table_id)).await;
    let Some(read) = read else {
        return all_stopped(parts);
    };
    parts
        .into_iter()
        .map(|(index, driver)| {
            let observation = match &read {
                Ok(route) => Observation::RouteRead {
                    table_id,
                    route: route.clone(),
                },
                Err(error) => Observation::MetadataFailed {
                    operation: format!("read the route of table {table_id}"),
                    error: error.reason.clone(),
                },
            };
            (index, driver, Ok(Ok(observation)))
        })
        .collect()
}

/// One region's part of a grouped route write.
struct CasPart<'a> {
    index: usize,
    driver: Driver<'a>,
    route: TableRoute,
    change: crate::migration::RouteChange,
    region_move: Option<crate::domain::RegionMove>,
}

/// One compare-and-swap of a table's route carrying every member's change to its region.
async fn cas_group<'a>(
    inner: &'a Inner,
    owner: Uuid,
    table_id: TableId,
    expected_version: u64,
    parts: Vec<CasPart<'a>>,
) -> Done<'a> {
    // Each member's route is the version read with its own region changed: the write is
    // that version with every member's region as the member wants it.
    let mut route = parts[0].route.clone();
    for part in &parts[1..] {
        let Some(task) = part.driver.state().task.as_ref() else {
            continue;
        };
        let region_id = task.region_id;
        if let (Some(wanted), Some(entry)) = (
            part.route.region_route(region_id),
            route.region_route_mut(region_id),
        ) {
            *entry = wanted.clone();
        }
    }
    let region_moves: Vec<_> = parts
        .iter()
        .filter_map(|part| part.region_move.clone())
        .collect();
    let mut drivers: Vec<(usize, Driver<'a>, crate::migration::RouteChange)> = parts
        .into_iter()
        .map(|part| (part.index, part.driver, part.change))
        .collect();
    let stop = |drivers: Vec<(usize, Driver<'a>, crate::migration::RouteChange)>| {
        drivers
            .into_iter()
            .map(|(index, driver, _)| (index, driver, Err(Halt::Stopped)))
            .collect::<Done<'a>>()
    };
    if table_lock(inner, owner, table_id).await.is_err() {
        return stop(drivers);
    }
    // A halt stops waiting for the write (its result is learnt from the route on resume). A
    // cancel of a region is answered at once unless the write is its new route (issue 15,
    // as in a single migration); a region that took one gets the cancel as its observation
    // once the write has answered, so its rollback reads the route to learn whether it
    // landed.
    let cas = inner
        .ports
        .metadata
        .cas_table_route(table_id, expected_version, route, region_moves);
    tokio::pin!(cas);
    let mut cancelled: Vec<Option<Acted>> = drivers.iter().map(|_| None).collect();
    let halt = Some(inner.halt_signal());
    let written = loop {
        let next_control = std::future::poll_fn(|cx| {
            for (position, (_, driver, change)) in drivers.iter_mut().enumerate() {
                if cancelled[position].is_some() || *change == RouteChange::Upgrade {
                    continue;
                }
                if let Poll::Ready(control) = driver.poll_control(cx) {
                    return Poll::Ready((position, control));
                }
            }
            Poll::Pending
        });
        tokio::select! {
            biased;
            () = until_halted(halt.clone()) => return stop(drivers),
            (position, control) = next_control => {
                match drivers[position].1.on_control(control).await {
                    Ok(Some(cancel)) => cancelled[position] = Some(Ok(Ok(cancel))),
                    Ok(None) => {}
                    Err(halt) => cancelled[position] = Some(Err(halt)),
                }
            }
            written = &mut cas => break written,
        }
    };
    debug!(
        table_id,
        regions = drivers.len(),
        ?written,
        "batch route written"
    );
    drivers
        .into_iter()
        .zip(cancelled)
        .map(|((index, driver, change), cancelled)| {
            if let Some(acted) = cancelled {
                return (index, driver, acted);
            }
            let observation = match &written {
                Ok(Ok(to_version)) => Observation::CasApplied {
                    table_id,
                    change,
                    from_version: expected_version,
                    to_version: *to_version,
                },
                Ok(Err(conflict)) => Observation::CasRefused {
                    table_id,
                    change,
                    expected_version,
                    actual_version: conflict.actual_version,
                },
                Err(error) => Observation::MetadataFailed {
                    operation: format!("write the route of table {table_id}"),
                    error: error.reason.clone(),
                },
            };
            (index, driver, Ok(Ok(observation)))
        })
        .collect()
}
