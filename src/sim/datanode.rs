//! Simulated datanodes, as a pure state machine: no clock, no tokio. Time enters as `now_ms`
//! (virtual ms since the cluster started); [`super::cluster`] drives it.
//!
//! # The model
//! - A region has one [`RegionWal`]: every acknowledged entry id (ids are unique per region,
//!   handed out in order), the flushed watermark (what a newly opened replica reads from shared
//!   storage), and, for a remote WAL, the current writer epoch.
//! - Each datanode holds [`Replica`]s. A replica's `history` is the set of entry ids it holds.
//!   A leader appends its own writes to it; a candidate gets the entries it replays.
//! - Local WAL: an upgraded candidate holds every acknowledged entry up to its replay target
//!   or the flushed watermark, whichever is higher (the old leader's entries, flushed to
//!   shared storage). Entries acked by anyone after both are not in its history: they are
//!   lost if it stays leader.
//! - Remote WAL: one shared log with epoch fencing. Becoming leader (upgrade or heartbeat
//!   promotion) takes a new epoch and reads the whole log; an append by an older epoch's
//!   leader fails.
//! - Writes: accepted only by a Leader (or a DowngradingLeader not rejecting writes) with a
//!   valid lease and, for a remote WAL, the current epoch.
//! - Heartbeats (see [`DataPlane::heartbeat`]): renew for [`REGION_LEASE_MS`] the lease of each
//!   region whose route names the datanode leader and is not Downgrading, making that replica
//!   Leader if it was not; a Leader or DowngradingLeader the route no longer names is demoted
//!   to Follower (as the real lease keeper does).
//! - Crash: no answers, no heartbeats; replicas keep their entries but become Followers with
//!   no lease and no replay. Restart: answers again; roles come back through heartbeats.
//!
//! # Instructions (normal behaviour; every one idempotent)
//! - `OpenRegion`: a Candidate replica holding the flushed entries (skip_wal_replay); an
//!   existing replica is left as it is. result=true.
//! - `FlushRegion` (revision 2): absent → result=false. Otherwise the flushed watermark
//!   becomes the replica's last entry, and the answer comes once the flush is done: its
//!   unflushed entries (above the watermark) / the flush rate
//!   ([`DataPlane::flush_writes_per_second`]). It keeps accepting writes meanwhile.
//! - `DowngradeRegion`: absent → exists=false. A Leader first stops accepting writes (when
//!   `reject_write`) and becomes DowngradingLeader, then flushes (the flushed watermark
//!   becomes its last entry; it answers when the flush is done, timed as `FlushRegion`'s, so
//!   the flush is part of the write pause); a DowngradingLeader stays one (reject_write only
//!   adds rejection); a Follower or Candidate is unchanged but flushes. Reports the
//!   replica's last entry id.
//! - `UpgradeRegion`: absent → exists=false; a Leader → ready at once. Otherwise it replays
//!   from the newest of its own progress and the flushed watermark up to `last_entry_id` (or,
//!   when `None`, the WAL's end when received) at [`REPLAY_ENTRIES_PER_MS`]. Caught up within
//!   `replay_timeout_ms`: answers ready=true when it is, becoming Leader with a fresh lease
//!   then. Else answers ready=false after `replay_timeout_ms` and keeps replaying (the next
//!   upgrade starts from where it got). A target past the WAL's end costs replay time but is
//!   reached.
//! - `CloseRegion`: the replica is removed. result=true.
//!
//! Scripted replies ([`ScriptedReply`]) replace this, one per instruction received.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use regmig::domain::{Instruction, InstructionKind, PeerId, RegionId, RegionRoute, Reply, WalKind};

/// How often each live datanode heartbeats.
pub const HEARTBEAT_INTERVAL_MS: u64 = 3_000;

/// How long a leader lease lasts from the heartbeat that renewed it: the model's constant,
/// which its lease waits assume.
pub use regmig::migration::decide::REGION_LEASE_MS;

/// How fast a datanode flushes its memtable by default: writes per virtual second.
pub const FLUSH_WRITES_PER_SECOND_DEFAULT: u64 = 20_000;

/// How fast a candidate replays the WAL: entries per virtual ms.
pub const REPLAY_ENTRIES_PER_MS: u64 = 1;

/// The role of a region replica on a datanode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Takes writes while its lease is valid.
    Leader,
    /// A follower copy (also every replica of a restarted datanode until a heartbeat).
    Follower,
    /// A leader told to downgrade: flushed, and rejecting writes when told so.
    DowngradingLeader,
    /// A follower opened by a migration, to be upgraded.
    Candidate,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Role::Leader => "Leader",
            Role::Follower => "Follower",
            Role::DowngradingLeader => "DowngradingLeader",
            Role::Candidate => "Candidate",
        };
        f.write_str(name)
    }
}

/// A reply forced on a datanode for one instruction, instead of its normal behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptedReply {
    /// Performs the normal effect but answers success at once (an upgrade catches up
    /// instantly). The success reply is sent even when there is nothing to act on (an absent
    /// region; a downgrade then reports no last entry id).
    Ok,
    /// Downgrade: performs it and reports this last entry id (other kinds: as `Ok`).
    OkWithLastEntryId(u64),
    /// No effect and no answer: the mailbox times out.
    Timeout,
    /// No channel to the datanode: the mailbox answers `Unreachable` at once.
    Unreachable,
    /// No effect; answers with this error.
    Error(String),
    /// No effect; downgrade/upgrade answer `exists = false` (open/close: result=false with
    /// the error "region not found").
    NotExists,
    /// No effect; upgrade answers `ready = false, exists = true` (other kinds: an error
    /// "region not ready").
    NotReady,
    /// No effect; answers with a success reply of the next instruction kind (open gets a
    /// downgrade reply, downgrade an upgrade reply, upgrade a close reply, close an open
    /// reply).
    WrongReply,
}

/// A set of entry ids, kept as sorted, disjoint, non-adjacent inclusive ranges: a history of
/// millions of entries costs a few ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntrySet {
    ranges: Vec<(u64, u64)>,
}

impl EntrySet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries `1..=last_entry_id`.
    pub fn prefix(last_entry_id: u64) -> Self {
        let mut set = Self::new();
        set.insert_range(1, last_entry_id);
        set
    }

    /// Adds `first..=last` (nothing when `first > last`).
    pub fn insert_range(&mut self, first: u64, last: u64) {
        if first > last {
            return;
        }
        match self.ranges.last_mut() {
            None => self.ranges.push((first, last)),
            Some((_, end)) if first > end.saturating_add(1) => self.ranges.push((first, last)),
            Some((start, end)) if first >= *start => *end = (*end).max(last),
            Some(_) => {
                self.ranges.push((first, last));
                self.normalize();
            }
        }
    }

    /// Adds one entry.
    pub fn insert(&mut self, entry_id: u64) {
        self.insert_range(entry_id, entry_id);
    }

    /// Adds every entry of `other`.
    pub fn union_with(&mut self, other: &EntrySet) {
        self.ranges.extend_from_slice(&other.ranges);
        self.normalize();
    }

    fn normalize(&mut self) {
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(start, end) in &self.ranges {
            match merged.last_mut() {
                Some((_, last_end)) if start <= last_end.saturating_add(1) => {
                    *last_end = (*last_end).max(end)
                }
                _ => merged.push((start, end)),
            }
        }
        self.ranges = merged;
    }

    /// The entries `<= last_entry_id`.
    pub fn up_to(&self, last_entry_id: u64) -> EntrySet {
        let mut ranges = Vec::new();
        for &(start, end) in &self.ranges {
            if start > last_entry_id {
                break;
            }
            ranges.push((start, end.min(last_entry_id)));
        }
        EntrySet { ranges }
    }

    /// Whether `entry_id` is in the set.
    pub fn contains(&self, entry_id: u64) -> bool {
        let index = self.ranges.partition_point(|&(_, end)| end < entry_id);
        self.ranges
            .get(index)
            .is_some_and(|&(start, _)| start <= entry_id)
    }

    /// The highest entry id.
    pub fn last(&self) -> Option<u64> {
        self.ranges.last().map(|&(_, end)| end)
    }

    /// How many entries.
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|&(start, end)| (end - start).saturating_add(1))
            .fold(0u64, u64::saturating_add)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The entries of `self` missing from `other`: how many, and the lowest of them.
    pub fn missing_from(&self, other: &EntrySet) -> (u64, Option<u64>) {
        let mut missing = 0u64;
        let mut first_missing = None;
        let mut skip = 0usize;
        for &(start, end) in &self.ranges {
            let mut cursor = start;
            while skip < other.ranges.len() && other.ranges[skip].1 < cursor {
                skip += 1;
            }
            let mut index = skip;
            let mut covered_to_end = false;
            while let Some(&(other_start, other_end)) = other.ranges.get(index) {
                if other_start > end {
                    break;
                }
                if other_start > cursor {
                    missing = missing.saturating_add(other_start - cursor);
                    first_missing = first_missing.or(Some(cursor));
                }
                if other_end >= end {
                    covered_to_end = true;
                    break;
                }
                cursor = cursor.max(other_end + 1);
                index += 1;
            }
            if !covered_to_end && cursor <= end {
                missing = missing.saturating_add((end - cursor).saturating_add(1));
                first_missing = first_missing.or(Some(cursor));
            }
        }
        (missing, first_missing)
    }
}

/// A replay in progress on a replica: it advances with virtual time until its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySession {
    /// When it (re)started, virtual ms.
    pub started_ms: u64,
    /// The entry id it had reached then.
    pub from_entry_id: u64,
    /// The entry id it replays up to.
    pub target_entry_id: u64,
}

impl ReplaySession {
    /// The entry id reached at `now_ms`.
    pub fn progress(&self, now_ms: u64) -> u64 {
        let elapsed_ms = now_ms.saturating_sub(self.started_ms);
        let replayed = elapsed_ms.saturating_mul(REPLAY_ENTRIES_PER_MS);
        self.from_entry_id
            .saturating_add(replayed)
            .min(self.target_entry_id.max(self.from_entry_id))
    }
}

/// One copy of a region on a datanode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its role.
    pub role: Role,
    /// Until when (virtual ms, exclusive) it holds a leader lease.
    pub lease_deadline_ms: Option<u64>,
    /// Set by a downgrade with `reject_write`.
    pub reject_writes: bool,
    /// The entry ids it holds.
    pub history: EntrySet,
    /// Remote WAL: the epoch it writes under.
    pub epoch: u64,
    /// A WAL replay in progress (a candidate being upgraded).
    pub replay: Option<ReplaySession>,
}

impl Replica {
    fn new(role: Role, history: EntrySet) -> Self {
        Replica {
            role,
            lease_deadline_ms: None,
            reject_writes: false,
            history,
            epoch: 0,
            replay: None,
        }
    }

    /// The entry id its data is current to at `now_ms`: its history or its replay progress.
    pub fn replayed_entry_id(&self, now_ms: u64) -> u64 {
        let own = self.history.last().unwrap_or(0);
        match &self.replay {
            Some(session) => own.max(session.progress(now_ms)),
            None => own,
        }
    }

    /// Whether its lease is valid at `now_ms`.
    pub fn lease_valid(&self, now_ms: u64) -> bool {
        self.lease_deadline_ms
            .is_some_and(|deadline_ms| now_ms < deadline_ms)
    }
}

/// A region's WAL, shared by its replicas (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionWal {
    /// Local or remote.
    pub wal: WalKind,
    /// Every acknowledged entry id.
    pub acked: EntrySet,
    /// The highest entry id handed out.
    pub last_entry_id: u64,
    /// Entries up to here are in shared storage (flushed).
    pub flushed_entry_id: u64,
    /// Remote WAL: the current writer epoch.
    pub epoch: u64,
}

/// A simulated datanode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datanode {
    /// Its id.
    pub id: PeerId,
    /// False while crashed.
    pub alive: bool,
    /// Bumped by every crash: answers prepared before a crash are never sent.
    pub incarnation: u64,
    /// Its region replicas.
    pub replicas: BTreeMap<RegionId, Replica>,
}

/// Model switches. Every field defaults to the correct model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimOptions {
    /// TEST-ONLY FAULT: a downgrading leader keeps accepting writes (ignores reject_write),
    /// a deliberately broken datanode the invariant checker must catch. Never set it outside
    /// a test of the checker.
    pub accept_writes_while_downgraded: bool,
}

/// Why a write was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRejection {
    /// The route names no leader.
    NoLeader,
    /// The datanode is not in the cluster.
    UnknownDatanode,
    /// The datanode is crashed.
    DatanodeDown,
    /// The datanode has no replica of the region.
    NoReplica,
    /// The replica is not a leader.
    NotLeader(Role),
    /// The replica's lease ran out (or it never had one).
    LeaseExpired,
    /// The replica was downgraded with reject_write.
    RejectingWrites,
    /// Remote WAL: a newer leader took the log.
    Fenced,
}

impl fmt::Display for WriteRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteRejection::NoLeader => f.write_str("no leader in the route"),
            WriteRejection::UnknownDatanode => f.write_str("unknown datanode"),
            WriteRejection::DatanodeDown => f.write_str("datanode down"),
            WriteRejection::NoReplica => f.write_str("no replica"),
            WriteRejection::NotLeader(role) => write!(f, "not leader ({role})"),
            WriteRejection::LeaseExpired => f.write_str("lease expired"),
            WriteRejection::RejectingWrites => f.write_str("rejecting writes"),
            WriteRejection::Fenced => f.write_str("fenced by a newer epoch"),
        }
    }
}

/// A batch of writes sent to one datanode at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Acknowledged: entries `first_entry_id..=last_entry_id` (none when the batch was empty).
    Acked {
        /// The datanode that acknowledged.
        peer: PeerId,
        /// The first entry id.
        first_entry_id: u64,
        /// The last entry id.
        last_entry_id: u64,
    },
    /// Not accepted.
    Rejected(WriteRejection),
}

/// An upgrade answer that becomes true only if the datanode is still up at `after_ms`: the
/// candidate then becomes leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The region being upgraded.
    pub region_id: RegionId,
    /// The entry id the replay reached.
    pub target_entry_id: u64,
}

/// What a datanode does with an instruction it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// There is no channel to it.
    Unreachable,
    /// It never answers.
    NoAnswer,
    /// It answers `reply` after `after_ms`; with a completion, the reply holds only once the
    /// completion is applied then ([`DataPlane::complete_upgrade`]).
    Answer {
        /// Virtual ms from receipt to the answer.
        after_ms: u64,
        /// The answer.
        reply: Reply,
        /// The upgrade to finish at `after_ms`.
        completion: Option<Completion>,
    },
}

impl Received {
    fn now(reply: Reply) -> Self {
        Received::Answer {
            after_ms: 0,
            reply,
            completion: None,
        }
    }
}

/// Every datanode and every region WAL: the data plane of the simulated cluster.
#[derive(Debug, Clone, Default)]
pub struct DataPlane {
    /// Datanodes by id.
    pub datanodes: BTreeMap<PeerId, Datanode>,
    /// Region WALs by region.
    pub regions: BTreeMap<RegionId, RegionWal>,
    /// Model switches.
    pub options: SimOptions,
    /// How fast a flush writes the unflushed entries out, per virtual second (0: the
    /// default, [`FLUSH_WRITES_PER_SECOND_DEFAULT`]).
    pub flush_writes_per_second: u64,
    /// Regions whose writers may have changed (a replica, its datanode or the region's WAL
    /// changed) since [`DataPlane::take_changed`] last ran: the invariant checks look at
    /// these, and at regions whose leases ran out, instead of every region each time.
    changed: BTreeSet<RegionId>,
}

/// A reply of `kind` that reports `text` as an error.
fn error_reply(kind: InstructionKind, text: String) -> Reply {
    match kind {
        InstructionKind::OpenRegion => Reply::OpenRegion {
            result: false,
            error: Some(text),
        },
        InstructionKind::DowngradeRegion => Reply::DowngradeRegion {
            last_entry_id: None,
            exists: true,
            error: Some(text),
        },
        InstructionKind::UpgradeRegion => Reply::UpgradeRegion {
            ready: false,
            exists: true,
            error: Some(text),
        },
        InstructionKind::CloseRegion => Reply::CloseRegion {
            result: false,
            error: Some(text),
        },
        InstructionKind::FlushRegion => Reply::FlushRegion {
            result: false,
            error: Some(text),
        },
    }
}

/// The success reply of another kind than `kind` (see [`ScriptedReply::WrongReply`]).
fn wrong_reply(kind: InstructionKind) -> Reply {
    match kind {
        InstructionKind::OpenRegion => Reply::DowngradeRegion {
            last_entry_id: None,
            exists: true,
            error: None,
        },
        InstructionKind::DowngradeRegion => Reply::UpgradeRegion {
            ready: true,
            exists: true,
            error: None,
        },
        InstructionKind::UpgradeRegion => Reply::CloseRegion {
            result: true,
            error: None,
        },
        InstructionKind::CloseRegion | InstructionKind::FlushRegion => Reply::OpenRegion {
            result: true,
            error: None,
        },
    }
}

fn upgrade_reply(ready: bool, exists: bool) -> Reply {
    Reply::UpgradeRegion {
        ready,
        exists,
        error: None,
    }
}

impl DataPlane {
    /// An empty data plane.
    pub fn new(options: SimOptions) -> Self {
        DataPlane {
            options,
            ..Self::default()
        }
    }

    /// The regions whose writers may have changed since the last call (see the field), and
    /// forgets them. Writes never change writers, so the workload marks nothing.
    pub fn take_changed(&mut self) -> BTreeSet<RegionId> {
        std::mem::take(&mut self.changed)
    }

    /// Adds a live datanode with no replicas (no-op if it exists).
    pub fn add_datanode(&mut self, peer: PeerId) {
        self.datanodes.entry(peer).or_insert_with(|| Datanode {
            id: peer,
            alive: true,
            incarnation: 0,
            replicas: BTreeMap::new(),
        });
    }

    /// Adds a region whose entries `1..=last_entry_id` are acknowledged and flushed, led by
    /// `leader` (with a lease until `lease_deadline_ms`) and followed by `followers`.
    pub fn add_region(
        &mut self,
        region_id: RegionId,
        wal: WalKind,
        last_entry_id: u64,
        leader: PeerId,
        followers: &[PeerId],
        lease_deadline_ms: u64,
    ) {
        let acked = EntrySet::prefix(last_entry_id);
        self.changed.insert(region_id);
        self.regions.insert(
            region_id,
            RegionWal {
                wal,
                acked: acked.clone(),
                last_entry_id,
                flushed_entry_id: last_entry_id,
                epoch: 1,
            },
        );
        self.add_datanode(leader);
        if let Some(datanode) = self.datanodes.get_mut(&leader) {
            let mut replica = Replica::new(Role::Leader, acked.clone());
            replica.lease_deadline_ms = Some(lease_deadline_ms);
            replica.epoch = 1;
            datanode.replicas.insert(region_id, replica);
        }
        for &follower in followers {
            self.add_datanode(follower);
            if let Some(datanode) = self.datanodes.get_mut(&follower) {
                datanode
                    .replicas
                    .insert(region_id, Replica::new(Role::Follower, acked.clone()));
            }
        }
    }

    /// The replica of `region_id` on `peer`.
    pub fn replica(&self, peer: PeerId, region_id: RegionId) -> Option<&Replica> {
        self.datanodes
            .get(&peer)
            .and_then(|datanode| datanode.replicas.get(&region_id))
    }

    /// Why `peer` would not accept a write to `region_id` at `now_ms`; `None` when it would.
    pub fn write_rejection(
        &self,
        peer: PeerId,
        region_id: RegionId,
        now_ms: u64,
    ) -> Option<WriteRejection> {
        let Some(datanode) = self.datanodes.get(&peer) else {
            return Some(WriteRejection::UnknownDatanode);
        };
        if !datanode.alive {
            return Some(WriteRejection::DatanodeDown);
        }
        let Some(replica) = datanode.replicas.get(&region_id) else {
            return Some(WriteRejection::NoReplica);
        };
        match replica.role {
            Role::Leader | Role::DowngradingLeader => {}
            role => return Some(WriteRejection::NotLeader(role)),
        }
        if !replica.lease_valid(now_ms) {
            return Some(WriteRejection::LeaseExpired);
        }
        let broken_ignores_reject =
            self.options.accept_writes_while_downgraded && replica.role == Role::DowngradingLeader;
        if replica.reject_writes && !broken_ignores_reject {
            return Some(WriteRejection::RejectingWrites);
        }
        let Some(region) = self.regions.get(&region_id) else {
            return Some(WriteRejection::NoReplica);
        };
        if region.wal == WalKind::Remote && replica.epoch < region.epoch {
            return Some(WriteRejection::Fenced);
        }
        None
    }

    /// The datanodes that would accept a write to `region_id` at `now_ms`.
    pub fn writers(&self, region_id: RegionId, now_ms: u64) -> Vec<PeerId> {
        self.datanodes
            .iter()
            .filter(|(_, datanode)| datanode.replicas.contains_key(&region_id))
            .filter(|(&peer, _)| self.write_rejection(peer, region_id, now_ms).is_none())
            .map(|(&peer, _)| peer)
            .collect()
    }

    /// Sends `count` writes of `region_id` to `leader` at `now_ms`; all are acknowledged or
    /// none.
    pub fn write_batch(
        &mut self,
        region_id: RegionId,
        leader: Option<PeerId>,
        count: u64,
        now_ms: u64,
    ) -> WriteOutcome {
        let Some(peer) = leader else {
            return WriteOutcome::Rejected(WriteRejection::NoLeader);
        };
        if let Some(rejection) = self.write_rejection(peer, region_id, now_ms) {
            return WriteOutcome::Rejected(rejection);
        }
        let (Some(region), Some(replica)) = (
            self.regions.get_mut(&region_id),
            self.datanodes
                .get_mut(&peer)
                .and_then(|datanode| datanode.replicas.get_mut(&region_id)),
        ) else {
            return WriteOutcome::Rejected(WriteRejection::NoReplica);
        };
        let first_entry_id = region.last_entry_id.saturating_add(1);
        let last_entry_id = region.last_entry_id.saturating_add(count);
        if count > 0 {
            region.last_entry_id = last_entry_id;
            region.acked.insert_range(first_entry_id, last_entry_id);
            replica.history.insert_range(first_entry_id, last_entry_id);
        }
        WriteOutcome::Acked {
            peer,
            first_entry_id,
            last_entry_id,
        }
    }

    /// A heartbeat of `peer` at `now_ms`, against the current region routes: renews the lease
    /// of each region the route names it leader of (unless Downgrading), makes such a replica
    /// Leader, and demotes to Follower a leader the route no longer names. Returns the regions
    /// renewed and the role changes made, for the trace; nothing when `peer` is down.
    pub fn heartbeat(
        &mut self,
        peer: PeerId,
        routes: &BTreeMap<RegionId, RegionRoute>,
        now_ms: u64,
    ) -> (Vec<RegionId>, Vec<String>) {
        let mut renewed = Vec::new();
        let mut notes = Vec::new();
        let Some(datanode) = self.datanodes.get_mut(&peer) else {
            return (renewed, notes);
        };
        if !datanode.alive {
            return (renewed, notes);
        }
        self.changed.extend(datanode.replicas.keys().copied());
        for (&region_id, replica) in datanode.replicas.iter_mut() {
            let route = routes.get(&region_id);
            let named_leader = route.and_then(RegionRoute::leader_id) == Some(peer);
            let downgrading = route.is_some_and(RegionRoute::is_leader_downgrading);
            if named_leader && !downgrading {
                if replica.role != Role::Leader {
                    notes.push(format!(
                        "role {peer} {region_id}: {} -> Leader (heartbeat)",
                        replica.role
                    ));
                    replica.role = Role::Leader;
                    replica.reject_writes = false;
                    replica.replay = None;
                    if let Some(region) = self.regions.get_mut(&region_id) {
                        if region.wal == WalKind::Remote {
                            region.epoch = region.epoch.saturating_add(1);
                            replica.epoch = region.epoch;
                            replica.history.union_with(&region.acked);
                        }
                    }
                }
                replica.lease_deadline_ms = Some(now_ms.saturating_add(REGION_LEASE_MS));
                renewed.push(region_id);
            } else if !named_leader
                && matches!(replica.role, Role::Leader | Role::DowngradingLeader)
            {
                notes.push(format!(
                    "role {peer} {region_id}: {} -> Follower (not leader in the route)",
                    replica.role
                ));
                replica.role = Role::Follower;
                replica.lease_deadline_ms = None;
                replica.reject_writes = false;
            }
        }
        (renewed, notes)
    }

    /// Crashes `peer`: it stops answering and its replicas lose roles, leases and replays
    /// (their entries are durable).
    pub fn crash(&mut self, peer: PeerId) -> Vec<String> {
        let mut notes = Vec::new();
        let Some(datanode) = self.datanodes.get_mut(&peer) else {
            return notes;
        };
        if !datanode.alive {
            return notes;
        }
        datanode.alive = false;
        datanode.incarnation = datanode.incarnation.saturating_add(1);
        self.changed.extend(datanode.replicas.keys().copied());
        notes.push(format!("crash {peer}"));
        for (region_id, replica) in datanode.replicas.iter_mut() {
            if replica.role != Role::Follower {
                notes.push(format!(
                    "role {peer} {region_id}: {} -> Follower (crash)",
                    replica.role
                ));
            }
            replica.role = Role::Follower;
            replica.lease_deadline_ms = None;
            replica.reject_writes = false;
            replica.replay = None;
        }
        notes
    }

    /// Restarts a crashed `peer`: it answers again; roles come back with heartbeats.
    pub fn restart(&mut self, peer: PeerId) -> Vec<String> {
        match self.datanodes.get_mut(&peer) {
            Some(datanode) if !datanode.alive => {
                datanode.alive = true;
                self.changed.extend(datanode.replicas.keys().copied());
                vec![format!("restart {peer}")]
            }
            _ => Vec::new(),
        }
    }

    /// `peer` receives `instruction` at `now_ms`, with `script` forced on it when given.
    /// Applies the immediate effect; returns what it answers and the changes it made.
    pub fn receive(
        &mut self,
        peer: PeerId,
        instruction: &Instruction,
        script: Option<ScriptedReply>,
        now_ms: u64,
    ) -> (Received, Vec<String>) {
        let kind = instruction.kind();
        let mut notes = Vec::new();
        self.changed.insert(instruction.region_id());
        let received = match script {
            None => self.perform(peer, instruction, false, None, now_ms, &mut notes),
            Some(ScriptedReply::Ok) => {
                self.perform(peer, instruction, true, None, now_ms, &mut notes)
            }
            Some(ScriptedReply::OkWithLastEntryId(entry_id)) => {
                self.perform(peer, instruction, true, Some(entry_id), now_ms, &mut notes)
            }
            Some(ScriptedReply::Timeout) => Received::NoAnswer,
            Some(ScriptedReply::Unreachable) => Received::Unreachable,
            Some(ScriptedReply::Error(text)) => Received::now(error_reply(kind, text)),
            Some(ScriptedReply::NotExists) => Received::now(match kind {
                InstructionKind::DowngradeRegion => {
                    // The model takes "not exists" at its word (fast path), so make it true:
                    // the region stops leading here, its entries flushed to shared storage.
                    self.close_leadership(peer, instruction.region_id(), &mut notes);
                    Reply::DowngradeRegion {
                        last_entry_id: None,
                        exists: false,
                        error: None,
                    }
                }
                InstructionKind::UpgradeRegion => upgrade_reply(false, false),
                _ => error_reply(kind, "region not found".to_string()),
            }),
            Some(ScriptedReply::NotReady) => Received::now(match kind {
                InstructionKind::UpgradeRegion => upgrade_reply(false, true),
                _ => error_reply(kind, "region not ready".to_string()),
            }),
            Some(ScriptedReply::WrongReply) => Received::now(wrong_reply(kind)),
        };
        (received, notes)
    }

    /// The normal effect of an instruction. `forced_ok`: a scripted `ok`, which answers
    /// success at once (an upgrade catches up instantly).
    fn perform(
        &mut self,
        peer: PeerId,
        instruction: &Instruction,
        forced_ok: bool,
        reported_entry_id: Option<u64>,
        now_ms: u64,
        notes: &mut Vec<String>,
    ) -> Received {
        match instruction {
            Instruction::OpenRegion { region_id, .. } => {
                self.open(peer, *region_id, notes);
                Received::now(Reply::OpenRegion {
                    result: true,
                    error: None,
                })
            }
            Instruction::FlushRegion { region_id, .. } => {
                let Some(flush_ms) = self.flush(peer, *region_id, notes) else {
                    return Received::now(Reply::FlushRegion {
                        result: forced_ok,
                        error: (!forced_ok)
                            .then(|| format!("region {region_id} not found on datanode {peer}")),
                    });
                };
                Received::Answer {
                    after_ms: if forced_ok { 0 } else { flush_ms },
                    reply: Reply::FlushRegion {
                        result: true,
                        error: None,
                    },
                    completion: None,
                }
            }
            Instruction::DowngradeRegion {
                region_id,
                reject_write,
                ..
            } => {
                let flush_ms = self.flush_duration_ms(peer, *region_id);
                let last_entry_id = self.downgrade(peer, *region_id, *reject_write, notes);
                match (last_entry_id, forced_ok) {
                    (None, false) => Received::now(Reply::DowngradeRegion {
                        last_entry_id: None,
                        exists: false,
                        error: None,
                    }),
                    (last_entry_id, _) => Received::Answer {
                        after_ms: if forced_ok { 0 } else { flush_ms },
                        reply: Reply::DowngradeRegion {
                            last_entry_id: reported_entry_id.or(last_entry_id),
                            exists: true,
                            error: None,
                        },
                        completion: None,
                    },
                }
            }
            Instruction::UpgradeRegion {
                region_id,
                last_entry_id,
                replay_timeout_ms,
                ..
            } => self.upgrade(
                peer,
                *region_id,
                *last_entry_id,
                *replay_timeout_ms,
                forced_ok,
                now_ms,
                notes,
            ),
            Instruction::CloseRegion { region_id } => {
                let removed = self
                    .datanodes
                    .get_mut(&peer)
                    .and_then(|datanode| datanode.replicas.remove(region_id));
                if let Some(replica) = removed {
                    notes.push(format!(
                        "role {peer} {region_id}: {} -> closed",
                        replica.role
                    ));
                }
                Received::now(Reply::CloseRegion {
                    result: true,
                    error: None,
                })
            }
        }
    }

    /// Flushes a replica's entries to shared storage and stops it leading: the datanode
    /// answered that it has no such region open, and the model believes it.
    fn close_leadership(&mut self, peer: PeerId, region_id: RegionId, notes: &mut Vec<String>) {
        let Some(replica) = self
            .datanodes
            .get_mut(&peer)
            .and_then(|datanode| datanode.replicas.get_mut(&region_id))
        else {
            return;
        };
        if matches!(replica.role, Role::Leader | Role::DowngradingLeader) {
            notes.push(format!(
                "role {peer} {region_id}: {} -> Follower (answered not_exists)",
                replica.role
            ));
        }
        replica.role = Role::Follower;
        replica.lease_deadline_ms = None;
        let last_entry_id = replica.history.last().unwrap_or(0);
        if let Some(region) = self.regions.get_mut(&region_id) {
            region.flushed_entry_id = region.flushed_entry_id.max(last_entry_id);
        }
    }

    fn open(&mut self, peer: PeerId, region_id: RegionId, notes: &mut Vec<String>) {
        let flushed = self
            .regions
            .get(&region_id)
            .map(|region| region.acked.up_to(region.flushed_entry_id))
            .unwrap_or_default();
        let Some(datanode) = self.datanodes.get_mut(&peer) else {
            return;
        };
        if datanode.replicas.contains_key(&region_id) {
            return;
        }
        notes.push(format!("role {peer} {region_id}: opened as Candidate"));
        datanode
            .replicas
            .insert(region_id, Replica::new(Role::Candidate, flushed));
    }

    /// How long a flush of `peer`'s replica takes now: its entries above the flushed
    /// watermark at the flush rate, in whole ms (a flush under 1 ms is instant; 0 when
    /// absent).
    pub fn flush_duration_ms(&self, peer: PeerId, region_id: RegionId) -> u64 {
        let (Some(replica), Some(region)) =
            (self.replica(peer, region_id), self.regions.get(&region_id))
        else {
            return 0;
        };
        let unflushed = replica
            .history
            .last()
            .unwrap_or(0)
            .saturating_sub(region.flushed_entry_id);
        let rate = match self.flush_writes_per_second {
            0 => FLUSH_WRITES_PER_SECOND_DEFAULT,
            rate => rate,
        };
        u64::try_from(u128::from(unflushed) * 1000 / u128::from(rate)).unwrap_or(u64::MAX)
    }

    /// Flushes `peer`'s replica without changing its role; returns how long the flush takes,
    /// `None` when the replica is absent.
    fn flush(&mut self, peer: PeerId, region_id: RegionId, notes: &mut Vec<String>) -> Option<u64> {
        let flush_ms = self.flush_duration_ms(peer, region_id);
        let last_entry_id = self.replica(peer, region_id)?.history.last().unwrap_or(0);
        if let Some(region) = self.regions.get_mut(&region_id) {
            if last_entry_id > region.flushed_entry_id {
                notes.push(format!(
                    "flush {peer} {region_id}: entries {}..={last_entry_id} ({flush_ms} ms)",
                    region.flushed_entry_id + 1
                ));
                region.flushed_entry_id = last_entry_id;
            }
        }
        Some(flush_ms)
    }

    /// Downgrades (writes rejected first) and flushes; returns the replica's last entry id,
    /// `None` when absent.
    fn downgrade(
        &mut self,
        peer: PeerId,
        region_id: RegionId,
        reject_write: bool,
        notes: &mut Vec<String>,
    ) -> Option<u64> {
        let replica = self
            .datanodes
            .get_mut(&peer)
            .and_then(|datanode| datanode.replicas.get_mut(&region_id))?;
        let last_entry_id = replica.history.last().unwrap_or(0);
        match replica.role {
            Role::Leader => {
                notes.push(format!(
                    "role {peer} {region_id}: Leader -> DowngradingLeader (reject_write={reject_write})"
                ));
                replica.role = Role::DowngradingLeader;
                replica.reject_writes = reject_write;
            }
            Role::DowngradingLeader => replica.reject_writes |= reject_write,
            // A follower (e.g. a leader that restarted and has no lease yet) still flushes
            // what its WAL holds.
            Role::Follower | Role::Candidate => {}
        }
        if let Some(region) = self.regions.get_mut(&region_id) {
            region.flushed_entry_id = region.flushed_entry_id.max(last_entry_id);
        }
        Some(last_entry_id)
    }

    #[allow(clippy::too_many_arguments)]
    fn upgrade(
        &mut self,
        peer: PeerId,
        region_id: RegionId,
        last_entry_id: Option<u64>,
        replay_timeout_ms: u64,
        forced_ok: bool,
        now_ms: u64,
        notes: &mut Vec<String>,
    ) -> Received {
        let Some(region) = self.regions.get(&region_id) else {
            return Received::now(upgrade_reply(forced_ok, forced_ok));
        };
        let flushed_entry_id = region.flushed_entry_id;
        let target_entry_id = last_entry_id.unwrap_or(region.last_entry_id);
        let Some(replica) = self
            .datanodes
            .get_mut(&peer)
            .and_then(|datanode| datanode.replicas.get_mut(&region_id))
        else {
            return Received::now(upgrade_reply(forced_ok, forced_ok));
        };
        if replica.role == Role::Leader {
            return Received::now(upgrade_reply(true, true));
        }
        let from_entry_id = replica.replayed_entry_id(now_ms).max(flushed_entry_id);
        let lag = target_entry_id.saturating_sub(from_entry_id);
        let catch_up_ms = lag.div_ceil(REPLAY_ENTRIES_PER_MS);
        if forced_ok || catch_up_ms == 0 {
            let reply = self.promote(peer, region_id, target_entry_id, now_ms, notes);
            return Received::now(reply);
        }
        replica.replay = Some(ReplaySession {
            started_ms: now_ms,
            from_entry_id,
            target_entry_id: target_entry_id.max(from_entry_id),
        });
        if catch_up_ms <= replay_timeout_ms {
            Received::Answer {
                after_ms: catch_up_ms,
                reply: upgrade_reply(true, true),
                completion: Some(Completion {
                    region_id,
                    target_entry_id,
                }),
            }
        } else {
            Received::Answer {
                after_ms: replay_timeout_ms,
                reply: upgrade_reply(false, true),
                completion: None,
            }
        }
    }

    /// Finishes an upgrade whose replay caught up: the replica becomes leader at `now_ms`.
    /// Returns the reply it then answers (exists=false when the replica is gone).
    pub fn complete_upgrade(
        &mut self,
        peer: PeerId,
        completion: Completion,
        now_ms: u64,
        notes: &mut Vec<String>,
    ) -> Reply {
        self.changed.insert(completion.region_id);
        self.promote(
            peer,
            completion.region_id,
            completion.target_entry_id,
            now_ms,
            notes,
        )
    }

    fn promote(
        &mut self,
        peer: PeerId,
        region_id: RegionId,
        target_entry_id: u64,
        now_ms: u64,
        notes: &mut Vec<String>,
    ) -> Reply {
        let (Some(region), Some(replica)) = (
            self.regions.get_mut(&region_id),
            self.datanodes
                .get_mut(&peer)
                .and_then(|datanode| datanode.replicas.get_mut(&region_id)),
        ) else {
            return upgrade_reply(false, false);
        };
        if replica.role == Role::Leader {
            return upgrade_reply(true, true);
        }
        match region.wal {
            // What it replayed, and whatever the old leader flushed to shared storage.
            WalKind::Local => replica.history.union_with(
                &region
                    .acked
                    .up_to(target_entry_id.max(region.flushed_entry_id)),
            ),
            WalKind::Remote => {
                region.epoch = region.epoch.saturating_add(1);
                replica.epoch = region.epoch;
                replica.history.union_with(&region.acked);
            }
        }
        notes.push(format!(
            "role {peer} {region_id}: {} -> Leader (upgraded, replayed to {target_entry_id})",
            replica.role
        ));
        replica.role = Role::Leader;
        replica.reject_writes = false;
        replica.replay = None;
        // Leases come only from heartbeats, from the routing metadata: an upgraded candidate
        // takes writes once the route names it leader. A late upgrade of a migration that
        // already rolled back so never makes a second writer.
        replica.lease_deadline_ms = None;
        let _ = now_ms;
        upgrade_reply(true, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_entry_set_merges_and_measures() {
        let mut set = EntrySet::prefix(10);
        set.insert_range(11, 20);
        set.insert_range(30, 31);
        set.insert(25);
        assert_eq!(set.ranges, vec![(1, 20), (25, 25), (30, 31)]);
        assert_eq!(set.len(), 23);
        assert_eq!(set.last(), Some(31));
        assert!(set.contains(25));
        assert!(!set.contains(26));
        assert_eq!(set.up_to(25).ranges, vec![(1, 20), (25, 25)]);
        let mut other = EntrySet::prefix(5);
        other.insert_range(21, 24);
        set.union_with(&other);
        assert_eq!(set.ranges, vec![(1, 25), (30, 31)]);
        assert_eq!(EntrySet::prefix(0).len(), 0);
    }

    #[test]
    fn sim_entry_set_reports_missing_entries() {
        let mut acked = EntrySet::prefix(100);
        acked.insert_range(200, 210);
        let mut history = EntrySet::prefix(40);
        history.insert_range(50, 100);
        history.insert_range(205, 300);
        assert_eq!(acked.missing_from(&history), (9 + 5, Some(41)));
        assert_eq!(history.up_to(100).missing_from(&acked), (0, None));
        assert_eq!(acked.missing_from(&EntrySet::new()), (111, Some(1)));
    }

    #[test]
    fn sim_replay_session_progresses_at_the_replay_rate() {
        let session = ReplaySession {
            started_ms: 1_000,
            from_entry_id: 100,
            target_entry_id: 600,
        };
        assert_eq!(session.progress(1_000), 100);
        assert_eq!(session.progress(1_250), 100 + 250 * REPLAY_ENTRIES_PER_MS);
        assert_eq!(session.progress(100_000), 600);
    }
}
