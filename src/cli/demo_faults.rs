//! The demo's injected faults, tied to regions so that a resumed campaign ends as an
//! uninterrupted one does.
//!
//! The simulator scripts replies per (datanode, instruction): whichever migration sends that
//! instruction to that datanode first gets the scripted reply. In an uninterrupted run that
//! is one region; after a kill, the resumed migrations run with other timings and another
//! region would get it (another region aborted). Here each fault names the region it hits,
//! chosen from the first run's plan, and a mailbox wrapper scripts the reply into the
//! simulator just before that region's instruction is delivered. What earlier runs already
//! used is counted from the log, so a resumed run injects only the rest.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::sim::campaign::{initial_routes_by_region, plan, CampaignConfig, CampaignError, Phase};
use crate::sim::cluster::{SimCluster, SimMetadataStore};
use crate::sim::datanode::ScriptedReply;
use regmig::cluster::{
    CasConflict, Mailbox, MetadataError, MetadataStore, MetadataStoreLayer, RegionMove,
};
use regmig::domain::{
    Instruction, InstructionKind, MailboxOutcome, Peer, PeerId, RegionId, TableId, TableRoute,
};
use regmig::engine::load_procedure;
use regmig::log::EventLog;
use regmig::migration::MigrationEvent;

/// Where a scripted reply strikes: a region's instruction of one kind to one datanode.
pub type FaultTarget = (RegionId, PeerId, InstructionKind);

/// A fault of the routing metadata, on a region's route writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetadataFault {
    /// A concurrent writer wins the region's next route compare-and-swap.
    CasConflict,
    /// The store fails the region's next route write.
    Unavailable,
}

/// The demo's faults, each tied to its own region of the first phase's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Replies forced on a region's instructions, in order.
    pub replies: BTreeMap<FaultTarget, Vec<ScriptedReply>>,
    /// Route writes of a region that fail, and how many.
    pub metadata: BTreeMap<(RegionId, MetadataFault), u64>,
}

/// The faults of a campaign, from its config alone (the same on every run).
pub fn fault_plan(config: &CampaignConfig) -> FaultPlan {
    let moves = plan(Phase::Rebalance, config, &initial_routes_by_region(config));
    let mut taken: BTreeSet<RegionId> = BTreeSet::new();
    let mut pick = |matches: &dyn Fn(PeerId, PeerId) -> bool| {
        let region_id = moves
            .iter()
            .find(|(region_id, from, to)| !taken.contains(region_id) && matches(*from, *to))
            .map(|(region_id, _, _)| *region_id)?;
        taken.insert(region_id);
        Some(region_id)
    };
    let mut faults = FaultPlan::default();
    let mut script = |region: Option<RegionId>, peer, kind, replies: Vec<ScriptedReply>| {
        if let Some(region_id) = region {
            faults.replies.insert((region_id, peer, kind), replies);
        }
    };
    // A candidate that needs two tries to open.
    script(
        pick(&|_, to| to == 2),
        2,
        InstructionKind::OpenRegion,
        vec![ScriptedReply::Timeout],
    );
    // An old leader whose first flush fails.
    script(
        pick(&|from, _| from == 1),
        1,
        InstructionKind::DowngradeRegion,
        vec![ScriptedReply::Error("flush failed: disk busy".to_string())],
    );
    // An old leader that cannot be reached: the slow path waits out its lease.
    script(
        pick(&|from, _| from == 1),
        1,
        InstructionKind::DowngradeRegion,
        vec![ScriptedReply::Unreachable],
    );
    // A candidate still replaying its WAL: upgrades retried 500 ms later.
    script(
        pick(&|_, to| to == 3),
        3,
        InstructionKind::UpgradeRegion,
        vec![ScriptedReply::NotReady, ScriptedReply::NotReady],
    );
    // A candidate whose region vanished: rolled back and aborted.
    script(
        pick(&|_, to| to == 4),
        4,
        InstructionKind::UpgradeRegion,
        vec![ScriptedReply::NotExists],
    );
    // Concurrent writers to the routing metadata, then a short outage of the store.
    if let Some(region_id) = pick(&|_, _| true) {
        faults
            .metadata
            .insert((region_id, MetadataFault::CasConflict), 2);
    }
    if let Some(region_id) = pick(&|_, _| true) {
        faults
            .metadata
            .insert((region_id, MetadataFault::Unavailable), 1);
    }
    faults
}

/// What earlier runs recorded of the faults' targets: answers to their instructions and
/// failures of their route writes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FaultsUsed {
    /// Answers (replies, timeouts, unreachable) per (region, peer, instruction): each used
    /// one scripted reply of its target, if one was left.
    pub answers: BTreeMap<FaultTarget, u64>,
    /// Route writes of a region refused or failed.
    pub metadata: BTreeMap<(RegionId, MetadataFault), u64>,
}

/// Counts what earlier runs recorded in the log.
pub fn faults_used(log: &EventLog) -> Result<FaultsUsed, CampaignError> {
    let mut used = FaultsUsed::default();
    for id in log.procedures()? {
        let mut region: Option<RegionId> = None;
        let mut last_sent: Option<InstructionKind> = None;
        for timed in load_procedure(log, id)? {
            let Some(region_id) = region else {
                if let MigrationEvent::Submitted { task, .. } = &timed.event {
                    region = Some(task.region_id);
                }
                continue;
            };
            let answered = match &timed.event {
                MigrationEvent::InstructionSent { instruction, .. } => {
                    last_sent = Some(instruction.kind());
                    None
                }
                // An instruction sent before a restart never reached the datanode of this
                // run: the timeout recorded for it after the restart used no scripted reply.
                MigrationEvent::Resumed => {
                    last_sent = None;
                    None
                }
                MigrationEvent::ReplyReceived { peer, .. } => {
                    last_sent.take().map(|kind| (*peer, kind))
                }
                MigrationEvent::MailboxTimedOut { peer, instruction }
                | MigrationEvent::PeerUnreachable { peer, instruction } => {
                    last_sent.take().map(|_| (*peer, *instruction))
                }
                MigrationEvent::RouteCasRefused { .. } => {
                    *used
                        .metadata
                        .entry((region_id, MetadataFault::CasConflict))
                        .or_insert(0) += 1;
                    None
                }
                MigrationEvent::MetadataFailed { operation, .. }
                    if operation.starts_with("write the route") =>
                {
                    *used
                        .metadata
                        .entry((region_id, MetadataFault::Unavailable))
                        .or_insert(0) += 1;
                    None
                }
                _ => None,
            };
            if let Some((peer, kind)) = answered {
                *used.answers.entry((region_id, peer, kind)).or_insert(0) += 1;
            }
        }
    }
    Ok(used)
}

/// A slow datanode's extra reply delay.
pub const SLOW_DATANODE_DELAY_MS: u64 = 150;

/// A mailbox that delivers the region-targeted faults through the simulator's scripts.
pub struct FaultyMailbox {
    inner: Arc<dyn Mailbox>,
    cluster: Arc<SimCluster>,
    /// The replies still to force, per target.
    left: Mutex<BTreeMap<FaultTarget, VecDeque<ScriptedReply>>>,
}

/// The faults still to deliver: the plan less what earlier runs used.
pub fn faults_left(plan: FaultPlan, used: &FaultsUsed) -> FaultPlan {
    FaultPlan {
        replies: plan
            .replies
            .into_iter()
            .map(|(target, replies)| {
                let skip = used.answers.get(&target).copied().unwrap_or(0);
                let skip = usize::try_from(skip).unwrap_or(usize::MAX);
                (target, replies.into_iter().skip(skip).collect())
            })
            .collect(),
        metadata: plan
            .metadata
            .into_iter()
            .map(|(target, count)| {
                let used = used.metadata.get(&target).copied().unwrap_or(0);
                (target, count.saturating_sub(used))
            })
            .collect(),
    }
}

/// Injects the demo's faults, less what earlier runs used: `ports` get the mailbox and the
/// metadata store that deliver them.
pub fn inject(
    cluster: &Arc<SimCluster>,
    ports: &mut regmig::cluster::Ports,
    config: &CampaignConfig,
    used: &FaultsUsed,
) {
    let left = faults_left(fault_plan(config), used);
    cluster.inject_message_delay(
        config.datanodes.saturating_sub(1).max(1),
        SLOW_DATANODE_DELAY_MS,
        0,
    );
    ports.mailbox = Arc::new(FaultyMailbox {
        inner: ports.mailbox.clone(),
        cluster: cluster.clone(),
        left: Mutex::new(
            left.replies
                .into_iter()
                .map(|(target, replies)| (target, replies.into_iter().collect()))
                .collect(),
        ),
    });
    ports.metadata = Arc::new(FaultyMetadata {
        inner: ports.metadata.clone(),
        primary: cluster.metadata(),
        left: Mutex::new(left.metadata),
    });
}

#[async_trait]
impl Mailbox for FaultyMailbox {
    async fn send(&self, peer: &Peer, instruction: Instruction, timeout_ms: u64) -> MailboxOutcome {
        // A datanode that is down receives nothing, so it would not use the reply either.
        if self.cluster.is_alive(peer.id) {
            let target = (instruction.region_id(), peer.id, instruction.kind());
            let reply = self
                .left
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_mut(&target)
                .and_then(VecDeque::pop_front);
            if let Some(reply) = reply {
                // The simulator takes the script when the send is first polled, below, with
                // no await in between: no other instruction can take it first.
                self.cluster
                    .script_replies(peer.id, instruction.kind(), [reply]);
            }
        }
        self.inner.send(peer, instruction, timeout_ms).await
    }
}

/// A metadata store that fails the targeted regions' route writes through the simulated
/// store's injected faults.
pub struct FaultyMetadata {
    inner: Arc<dyn MetadataStore>,
    primary: Arc<SimMetadataStore>,
    /// The failures still to cause, per target.
    left: Mutex<BTreeMap<(RegionId, MetadataFault), u64>>,
}

impl FaultyMetadata {
    /// The regions whose route `route` changes, against the table's route now.
    fn changed_regions(&self, table_id: TableId, route: &TableRoute) -> Vec<RegionId> {
        let TableRoute::Physical { region_routes } = route else {
            return Vec::new();
        };
        let now = self.primary.route_now(table_id);
        region_routes
            .iter()
            .filter(|region| {
                let before = now
                    .as_ref()
                    .and_then(|versioned| versioned.route.region_route(region.region_id));
                before != Some(*region)
            })
            .map(|region| region.region_id)
            .collect()
    }
}

#[async_trait]
impl MetadataStoreLayer for FaultyMetadata {
    fn inner(&self) -> &dyn MetadataStore {
        &*self.inner
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let changed = self.changed_regions(table_id, &route);
        {
            let mut left = self
                .left
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (fault, inject) in [
                (MetadataFault::Unavailable, 0),
                (MetadataFault::CasConflict, 1),
            ] {
                let Some(key) = changed
                    .iter()
                    .map(|region_id| (*region_id, fault))
                    .find(|key| left.get(key).is_some_and(|count| *count > 0))
                else {
                    continue;
                };
                if let Some(count) = left.get_mut(&key) {
                    *count -= 1;
                }
                // Taken by the write below when it is first polled, with no await in between.
                if inject == 0 {
                    self.primary.inject_unavailable(1, 0);
                } else {
                    self.primary.inject_cas_conflicts(1, 0);
                }
                break;
            }
        }
        self.inner
            .cas_table_route(table_id, expected_version, route, region_moves)
            .await
    }
}
