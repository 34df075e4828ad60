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

use std::collections::{BTreeMap, VecDeque};
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
}

impl InvariantChecker {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks "at most one writer per region" at `now_ms`. Changes of a region's writers are
    /// traced; a region that goes from at most one writer to several records one violation.
    pub fn observe(&mut self, plane: &DataPlane, now_ms: u64, trace: &mut EventTrace) {
        for &region_id in plane.regions.keys() {
            let writers = plane.writers(region_id, now_ms);
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

    /// Records the regions' writability at `now_ms` (after a change of the data plane).
    pub fn observe(&mut self, plane: &DataPlane, now_ms: u64) {
        for &region_id in plane.regions.keys() {
            let writable_until_ms = plane
                .writers(region_id, now_ms)
                .into_iter()
                .filter_map(|peer| plane.replica(peer, region_id)?.lease_deadline_ms)
                .max();
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

    #[test]
    fn sim_two_writers_record_one_violation_with_context() {
        let region_id = RegionId::new(7, 1);
        let mut plane = DataPlane::new(SimOptions::default());
        plane.add_region(region_id, WalKind::Local, 5, 1, &[2], 10_000);
        let mut trace = EventTrace::new();
        let mut checker = InvariantChecker::new();
        checker.observe(&plane, 0, &mut trace);
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
        checker.observe(&plane, 10, &mut trace);
        checker.observe(&plane, 20, &mut trace);
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
        availability.observe(&plane, 0);
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
        availability.observe(&plane, 13_000);
        assert_eq!(
            availability.longest_unwritable_ms(region_id, 0, 20_000),
            3_000
        );
        assert_eq!(
            availability.longest_unwritable_ms(region_id, 11_000, 20_000),
            2_000
        );
        // Peer 2's lease is never renewed: unwritable from 23 s on, counted to the window's end.
        availability.observe(&plane, 30_000);
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
}
