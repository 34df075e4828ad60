//! The safety properties every simulated run is held to, and the event trace that explains a
//! violation.
//!
//! 1. At most one datanode accepts writes for a region at any instant
//!    ([`InvariantChecker::observe`], run at every write tick, instruction, heartbeat and
//!    crash).
//! 2. No acknowledged write is lost: at the end, every acknowledged entry of a region is held
//!    by the leader its route names ([`InvariantChecker::check_lost_writes`]).
//! 3. No region is left Downgrading after its migration ends: the cluster lists such regions
//!    ([`super::cluster::SimCluster::downgrading_regions`]) and the runner checks them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use super::datanode::DataPlane;
use regmig::domain::{PeerId, RegionId, RegionRoute};

/// How many events the trace keeps; older ones are dropped (and counted).
pub const TRACE_EVENTS_MAX: usize = 100_000;

/// How many violations are recorded; later ones are dropped.
pub const VIOLATIONS_MAX: usize = 100;

/// How many trace events a violation carries as context.
pub const CONTEXT_EVENTS: usize = 10;

/// One thing that happened in the cluster, at a virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// Virtual ms since the cluster started.
    pub at_ms: u64,
    /// What happened.
    pub text: String,
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} ms] {}", self.at_ms, self.text)
    }
}

/// The cluster's event trace (instructions, replies, heartbeats, role changes, metadata
/// writes, faults), bounded by [`TRACE_EVENTS_MAX`].
#[derive(Debug, Clone, Default)]
pub struct EventTrace {
    events: VecDeque<TraceEvent>,
    dropped: u64,
}

impl EventTrace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an event.
    pub fn push(&mut self, at_ms: u64, text: impl Into<String>) {
        if self.events.len() >= TRACE_EVENTS_MAX {
            self.events.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
        self.events.push_back(TraceEvent {
            at_ms,
            text: text.into(),
        });
    }

    /// The last `count` events, oldest first, as text.
    pub fn last(&self, count: usize) -> Vec<String> {
        let skip = self.events.len().saturating_sub(count);
        self.events
            .iter()
            .skip(skip)
            .map(ToString::to_string)
            .collect()
    }

    /// Every kept event, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &TraceEvent> {
        self.events.iter()
    }

    /// How many old events were dropped to respect the bound.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// When it was seen, virtual ms since the cluster started.
    pub at_ms: u64,
    /// The region, "TABLE:NUMBER".
    pub region: String,
    /// What was seen.
    pub message: String,
    /// The last cluster events before it, oldest first.
    pub context: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant violated at {} ms, region {}: {}",
            self.at_ms, self.region, self.message
        )?;
        if !self.context.is_empty() {
            write!(f, "\n  events before it:")?;
            for line in &self.context {
                write!(f, "\n    {line}")?;
            }
        }
        Ok(())
    }
}

/// Watches the data plane and records violations.
#[derive(Debug, Clone, Default)]
pub struct InvariantChecker {
    violations: Vec<Violation>,
    lost_writes: Vec<Violation>,
    /// The datanodes accepting writes per region when last observed.
    writers: BTreeMap<RegionId, Vec<PeerId>>,
    /// When each region's writers change on their own: the first lease of a writer to run
    /// out.
    lease_ends: LeaseSchedule,
}

/// When each region must be looked at again because a lease runs out, so an observation
/// looks only at the regions that changed and those whose time came, not at every region.
#[derive(Debug, Clone, Default)]
struct LeaseSchedule {
    due: BTreeSet<(u64, RegionId)>,
    by_region: BTreeMap<RegionId, u64>,
}

impl LeaseSchedule {
    /// Looks at `region_id` again once `at_ms` is reached (`None`: only when it changes).
    fn set(&mut self, region_id: RegionId, at_ms: Option<u64>) {
        if let Some(previous) = self.by_region.remove(&region_id) {
            self.due.remove(&(previous, region_id));
        }
        if let Some(at_ms) = at_ms {
            self.due.insert((at_ms, region_id));
            self.by_region.insert(region_id, at_ms);
        }
    }

    /// `changed` and every region whose time came by `now_ms`, in region order.
    fn regions_to_observe(&self, changed: &BTreeSet<RegionId>, now_ms: u64) -> BTreeSet<RegionId> {
        let mut regions = changed.clone();
        regions.extend(
            self.due
                .iter()
                .take_while(|(at_ms, _)| *at_ms <= now_ms)
                .map(|(_, region_id)| *region_id),
        );
        regions
    }
}

impl InvariantChecker {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks "at most one writer per region" at `now_ms`, for the regions in `changed`
    /// (from [`DataPlane::take_changed`]) and those a writer's lease ran out for since (the
    /// only ways writers change). Changes of a region's writers are traced; a region that
    /// goes from at most one writer to several records one violation.
    pub fn observe(
        &mut self,
        plane: &DataPlane,
        changed: &BTreeSet<RegionId>,
        now_ms: u64,
        trace: &mut EventTrace,
    ) {
        for region_id in self.lease_ends.regions_to_observe(changed, now_ms) {
            let writers = plane.writers(region_id, now_ms);
            let first_lease_end_ms = writers
                .iter()
                .filter_map(|&peer| plane.replica(peer, region_id)?.lease_deadline_ms)
                .min();
            self.lease_ends.set(region_id, first_lease_end_ms);
            let previous = self.writers.get(&region_id).cloned().unwrap_or_default();
            if previous == writers {
                continue;
            }
            trace.push(
                now_ms,
                format!("writers {region_id}: {previous:?} -> {writers:?}"),
            );
            if writers.len() > 1 && previous.len() <= 1 {
                let details: Vec<String> = writers
                    .iter()
                    .map(|&peer| match plane.replica(peer, region_id) {
                        Some(replica) => format!(
                            "peer {peer} ({}, lease until {} ms)",
                            replica.role,
                            replica.lease_deadline_ms.unwrap_or(0)
                        ),
                        None => format!("peer {peer}"),
                    })
                    .collect();
                let message = format!(
                    "{} datanodes accept writes at once: {}",
                    writers.len(),
                    details.join(", ")
                );
                record(
                    &mut self.violations,
                    Violation {
                        at_ms: now_ms,
                        region: region_id.to_string(),
                        message,
                        context: trace.last(CONTEXT_EVENTS),
                    },
                );
            }
            self.writers.insert(region_id, writers);
        }
    }

    /// Checks "no acknowledged write is lost" against the final routes; replaces the result
    /// of any earlier call.
    pub fn check_lost_writes(
        &mut self,
        plane: &DataPlane,
        routes: &BTreeMap<RegionId, RegionRoute>,
        now_ms: u64,
        trace: &EventTrace,
    ) {
        self.lost_writes.clear();
        for (&region_id, region) in &plane.regions {
            let acked = region.acked.len();
            let leader = routes.get(&region_id).and_then(RegionRoute::leader_id);
            let message = match leader {
                None if acked > 0 => Some(format!(
                    "the route names no leader: all {acked} acknowledged writes are lost"
                )),
                None => None,
                Some(peer) => match plane.replica(peer, region_id) {
                    None if acked > 0 => Some(format!(
                        "the route's leader (peer {peer}) has no replica: all {acked} \
                         acknowledged writes are lost"
                    )),
                    None => None,
                    Some(replica) => match region.acked.missing_from(&replica.history) {
                        (0, _) => None,
                        (missing, first) => Some(format!(
                            "{missing} of {acked} acknowledged writes are missing from the \
                             final leader (peer {peer}, {}, last entry {}); first missing entry \
                             {}",
                            replica.role,
                            replica.history.last().unwrap_or(0),
                            first.unwrap_or(0)
                        )),
                    },
                },
            };
            if let Some(message) = message {
                record(
                    &mut self.lost_writes,
                    Violation {
                        at_ms: now_ms,
                        region: region_id.to_string(),
                        message,
                        context: trace.last(CONTEXT_EVENTS),
                    },
                );
            }
        }
    }

    /// Every violation: the continuous ones in order, then those of the last lost-write
    /// check.
    pub fn violations(&self) -> Vec<Violation> {
        self.violations
            .iter()
            .chain(self.lost_writes.iter())
            .cloned()
            .collect()
    }
}

/// When each region could take no write: the stretches during which no datanode would have
/// accepted one (the write-availability measure of revision 2).
///
/// The data plane only changes when the cluster observes it (instructions, heartbeats, write
/// ticks, crashes), except for leases, which run out on their own: between two observations
/// a region stays writable until the latest lease of its writers ends.
#[derive(Debug, Clone, Default)]
pub struct WriteAvailability {
    regions: BTreeMap<RegionId, RegionAvailability>,
    /// When each region's writability can change on its own: the last lease to run out.
    lease_ends: LeaseSchedule,
}

#[derive(Debug, Clone, Default)]
struct RegionAvailability {
    /// While writable: until when (the latest lease deadline of its writers).
    writable_until_ms: Option<u64>,
    /// While unwritable: since when.
    unwritable_since_ms: Option<u64>,
    /// Finished unwritable stretches, `(start, end)`, in order.
    stretches: Vec<(u64, u64)>,
}

impl WriteAvailability {
    /// An availability that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the writability at `now_ms` (after a change of the data plane) of the
    /// regions in `changed` and of those whose last lease ran out since.
    pub fn observe(&mut self, plane: &DataPlane, changed: &BTreeSet<RegionId>, now_ms: u64) {
        for region_id in self.lease_ends.regions_to_observe(changed, now_ms) {
            let writable_until_ms = plane
                .writers(region_id, now_ms)
                .into_iter()
                .filter_map(|peer| plane.replica(peer, region_id)?.lease_deadline_ms)
                .max();
            self.lease_ends.set(region_id, writable_until_ms);
            let region = self.regions.entry(region_id).or_default();
            if let Some(until_ms) = region.writable_until_ms {
                if until_ms <= now_ms {
                    region.unwritable_since_ms = Some(until_ms);
                    region.writable_until_ms = None;
                }
            }
            match writable_until_ms {
                Some(until_ms) => {
                    if let Some(since_ms) = region.unwritable_since_ms.take() {
                        region.stretches.push((since_ms, now_ms));
                    }
                    region.writable_until_ms = Some(until_ms);
                }
                None => {
                    region.writable_until_ms = None;
                    if region.unwritable_since_ms.is_none() {
                        region.unwritable_since_ms = Some(now_ms);
                    }
                }
            }
        }
    }

    /// The longest stretch within `[from_ms, to_ms]` during which `region_id` could take no
    /// write, as far as observed (a stretch still going on is counted up to `to_ms`).
    pub fn longest_unwritable_ms(&self, region_id: RegionId, from_ms: u64, to_ms: u64) -> u64 {
        let Some(region) = self.regions.get(&region_id) else {
            return 0;
        };
        let open = match (region.unwritable_since_ms, region.writable_until_ms) {
            (Some(since_ms), _) => Some((since_ms, u64::MAX)),
            (None, Some(until_ms)) => Some((until_ms, u64::MAX)),
            (None, None) => None,
        };
        region
            .stretches
            .iter()
            .copied()
            .chain(open)
            .map(|(start_ms, end_ms)| end_ms.min(to_ms).saturating_sub(start_ms.max(from_ms)))
            .max()
            .unwrap_or(0)
    }
}

fn record(violations: &mut Vec<Violation>, violation: Violation) {
    if violations.len() < VIOLATIONS_MAX {
        violations.push(violation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::datanode::{Role, SimOptions};
    use regmig::domain::{Peer, WalKind};

    fn route(region_id: RegionId, leader: PeerId) -> RegionRoute {
        RegionRoute {
            region_id,
            leader_peer: Some(Peer::sim(leader)),
            follower_peers: Vec::new(),
            leader_state: None,
            leader_down_since_ms: None,
        }
    }

    /// Every region: the tests below change the plane's fields directly, so they name what
    /// changed themselves.
    fn every_region(plane: &DataPlane) -> BTreeSet<RegionId> {
        plane.regions.keys().copied().collect()
    }

    #[test]
    fn sim_two_writers_record_one_violation_with_context() {
        let region_id = RegionId::new(7, 1);
        let mut plane = DataPlane::new(SimOptions::default());
        plane.add_region(region_id, WalKind::Local, 5, 1, &[2], 10_000);
        let mut trace = EventTrace::new();
        let mut checker = InvariantChecker::new();
        checker.observe(&plane, &every_region(&plane), 0, &mut trace);
        assert!(checker.violations().is_empty());
        if let Some(replica) = plane
            .datanodes
            .get_mut(&2)
            .and_then(|datanode| datanode.replicas.get_mut(&region_id))
        {
            replica.role = Role::Leader;
            replica.lease_deadline_ms = Some(9_000);
        }
        trace.push(5, "something");
        checker.observe(&plane, &every_region(&plane), 10, &mut trace);
        checker.observe(&plane, &every_region(&plane), 20, &mut trace);
        let violations = checker.violations();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].at_ms, 10);
        assert_eq!(violations[0].region, "7:1");
        assert_eq!(
            violations[0].message,
            "2 datanodes accept writes at once: peer 1 (Leader, lease until 10000 ms), \
             peer 2 (Leader, lease until 9000 ms)"
        );
        assert_eq!(
            violations[0].context,
            vec![
                "[0 ms] writers 7:1: [] -> [1]".to_string(),
                "[5 ms] something".to_string(),
                "[10 ms] writers 7:1: [1] -> [1, 2]".to_string(),
            ]
        );
    }

    #[test]
    fn sim_write_availability_counts_lease_expiry_and_clips_to_the_window() {
        let region_id = RegionId::new(7, 1);
        let mut plane = DataPlane::new(SimOptions::default());
        plane.add_region(region_id, WalKind::Local, 5, 1, &[2], 10_000);
        let mut availability = WriteAvailability::new();
        availability.observe(&plane, &every_region(&plane), 0);
        assert_eq!(availability.longest_unwritable_ms(region_id, 0, 9_000), 0);
        // The lease runs out at 10 s with nobody observing; peer 2 leads from 13 s.
        if let Some(replica) = plane
            .datanodes
            .get_mut(&2)
            .and_then(|datanode| datanode.replicas.get_mut(&region_id))
        {
            replica.role = Role::Leader;
            replica.lease_deadline_ms = Some(23_000);
        }
        availability.observe(&plane, &every_region(&plane), 13_000);
        assert_eq!(
            availability.longest_unwritable_ms(region_id, 0, 20_000),
            3_000
        );
        assert_eq!(
            availability.longest_unwritable_ms(region_id, 11_000, 20_000),
            2_000
        );
        // Peer 2's lease is never renewed: unwritable from 23 s on, counted to the window's end.
        availability.observe(&plane, &every_region(&plane), 30_000);
        assert_eq!(
            availability.longest_unwritable_ms(region_id, 0, 40_000),
            17_000
        );
    }

    #[test]
    fn sim_lost_writes_name_the_first_missing_entry() {
        let region_id = RegionId::new(7, 1);
        let mut plane = DataPlane::new(SimOptions::default());
        plane.add_region(region_id, WalKind::Local, 5, 1, &[2], 10_000);
        plane.write_batch(region_id, Some(1), 3, 0);
        let trace = EventTrace::new();
        let mut checker = InvariantChecker::new();
        let routes = BTreeMap::from([(region_id, route(region_id, 1))]);
        checker.check_lost_writes(&plane, &routes, 50, &trace);
        assert!(checker.violations().is_empty());
        let routes = BTreeMap::from([(region_id, route(region_id, 2))]);
        checker.check_lost_writes(&plane, &routes, 60, &trace);
        let violations = checker.violations();
        assert_eq!(violations.len(), 1);
        assert_eq!(
            violations[0].message,
            "3 of 8 acknowledged writes are missing from the final leader (peer 2, Follower, \
             last entry 5); first missing entry 6"
        );
        let routes = BTreeMap::from([(region_id, route(region_id, 3))]);
        checker.check_lost_writes(&plane, &routes, 70, &trace);
        assert_eq!(
            checker.violations()[0].message,
            "the route's leader (peer 3) has no replica: all 8 acknowledged writes are lost"
        );
    }

    /// One step of the data plane in [`observing_what_changed_equals_observing_everything`].
    #[derive(Debug, Clone)]
    enum PlaneStep {
        Advance(u64),
        Heartbeat(PeerId, Option<PeerId>, bool),
        Crash(PeerId),
        Restart(PeerId),
        Send(PeerId, u32, u8),
        CompleteUpgrade(PeerId, u32),
    }

    fn plane_step() -> impl proptest::strategy::Strategy<Value = PlaneStep> {
        use proptest::prelude::*;
        prop_oneof![
            (1u64..8_000).prop_map(PlaneStep::Advance),
            (1u64..4, proptest::option::of(1u64..4), any::<bool>()).prop_map(
                |(peer, leader, downgrading)| PlaneStep::Heartbeat(peer, leader, downgrading)
            ),
            (1u64..4).prop_map(PlaneStep::Crash),
            (1u64..4).prop_map(PlaneStep::Restart),
            (1u64..4, 1u32..4, 0u8..5)
                .prop_map(|(peer, number, kind)| PlaneStep::Send(peer, number, kind)),
            (1u64..4, 1u32..4).prop_map(|(peer, number)| PlaneStep::CompleteUpgrade(peer, number)),
        ]
    }

    fn instruction(region_id: RegionId, kind: u8) -> regmig::domain::Instruction {
        use regmig::domain::Instruction;
        match kind {
            0 => Instruction::OpenRegion {
                region_id,
                engine: "mito".to_string(),
                storage_path: "p".to_string(),
                region_options: BTreeMap::new(),
                region_wal_options: BTreeMap::new(),
                skip_wal_replay: false,
            },
            1 => Instruction::DowngradeRegion {
                region_id,
                flush_timeout_ms: 1_000,
                reject_write: true,
            },
            2 => Instruction::UpgradeRegion {
                region_id,
                last_entry_id: None,
                replay_timeout_ms: 1_000,
                location_id: None,
            },
            3 => Instruction::FlushRegion {
                region_id,
                timeout_ms: 1_000,
            },
            _ => Instruction::CloseRegion { region_id },
        }
    }

    proptest::proptest! {
        /// The incremental observation (what the plane says changed, plus leases that ran
        /// out) traces, flags and measures exactly what looking at every region each time
        /// does, whatever the plane goes through.
        #[test]
        fn observing_what_changed_equals_observing_everything(
            steps in proptest::collection::vec(plane_step(), 1..60)
        ) {
            let regions: Vec<RegionId> = (1..4).map(|number| RegionId::new(7, number)).collect();
            let mut plane = DataPlane::new(SimOptions::default());
            for (index, &region_id) in regions.iter().enumerate() {
                let leader = index as PeerId % 3 + 1;
                plane.add_region(region_id, WalKind::Local, 5, leader, &[leader % 3 + 1], 10_000);
            }
            let (mut fast, mut full) = (
                (InvariantChecker::new(), WriteAvailability::new(), EventTrace::new()),
                (InvariantChecker::new(), WriteAvailability::new(), EventTrace::new()),
            );
            let mut now_ms = 0;
            for step in steps {
                match step {
                    PlaneStep::Advance(ms) => now_ms += ms,
                    PlaneStep::Heartbeat(peer, leader, downgrading) => {
                        let routes = regions
                            .iter()
                            .map(|&region_id| {
                                let mut route = route(region_id, leader.unwrap_or(0));
                                if leader.is_none() {
                                    route.leader_peer = None;
                                }
                                route.leader_state =
                                    downgrading.then_some(regmig::domain::LeaderState::Downgrading);
                                (region_id, route)
                            })
                            .collect();
                        plane.heartbeat(peer, &routes, now_ms);
                    }
                    PlaneStep::Crash(peer) => {
                        plane.crash(peer);
                    }
                    PlaneStep::Restart(peer) => {
                        plane.restart(peer);
                    }
                    PlaneStep::Send(peer, number, kind) => {
                        let region_id = RegionId::new(7, number);
                        plane.receive(peer, &instruction(region_id, kind), None, now_ms);
                    }
                    PlaneStep::CompleteUpgrade(peer, number) => {
                        let completion = crate::sim::datanode::Completion {
                            region_id: RegionId::new(7, number),
                            target_entry_id: 5,
                        };
                        plane.complete_upgrade(peer, completion, now_ms, &mut Vec::new());
                    }
                }
                let changed = plane.take_changed();
                fast.0.observe(&plane, &changed, now_ms, &mut fast.2);
                fast.1.observe(&plane, &changed, now_ms);
                let every = every_region(&plane);
                full.0.observe(&plane, &every, now_ms, &mut full.2);
                full.1.observe(&plane, &every, now_ms);
                proptest::prop_assert_eq!(fast.2.last(usize::MAX), full.2.last(usize::MAX));
                proptest::prop_assert_eq!(fast.0.violations(), full.0.violations());
                for &region_id in &regions {
                    proptest::prop_assert_eq!(
                        fast.1.longest_unwritable_ms(region_id, 0, now_ms),
                        full.1.longest_unwritable_ms(region_id, 0, now_ms)
                    );
                }
            }
        }
    }
}
