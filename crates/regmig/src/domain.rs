//! The vocabulary every layer shares: regions, peers, table routes, datanode instructions and
//! their replies. Plain data, no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A datanode's id.
pub type PeerId = u64;

/// A table's id.
pub type TableId = u32;

/// A region: a shard of a table, packed as `table_id << 32 | region_number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegionId(pub u64);

impl RegionId {
    /// Packs a table id and a region number.
    pub fn new(table_id: TableId, region_number: u32) -> Self {
        RegionId((u64::from(table_id) << 32) | u64::from(region_number))
    }

    /// The table the region belongs to.
    pub fn table_id(self) -> TableId {
        (self.0 >> 32) as TableId
    }

    /// The region's number within its table.
    pub fn region_number(self) -> u32 {
        self.0 as u32
    }

    /// The packed form.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.table_id(), self.region_number())
    }
}

/// Why a region could not be parsed from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid region {text:?}: expected TABLE:NUMBER (e.g. \"1024:1\") or the packed u64")]
pub struct ParseRegionIdError {
    /// The text that was given.
    pub text: String,
}

impl FromStr for RegionId {
    type Err = ParseRegionIdError;

    /// Parses "TABLE:NUMBER" or the packed u64.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseRegionIdError {
            text: text.to_string(),
        };
        let trimmed = text.trim();
        match trimmed.split_once(':') {
            Some((table, number)) => {
                let table_id: TableId = table.trim().parse().map_err(|_| error())?;
                let region_number: u32 = number.trim().parse().map_err(|_| error())?;
                Ok(RegionId::new(table_id, region_number))
            }
            None => trimmed.parse::<u64>().map(RegionId).map_err(|_| error()),
        }
    }
}

/// A storage node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// The datanode's id.
    pub id: PeerId,
    /// Where it listens; informative only.
    pub addr: String,
}

impl Peer {
    /// A peer whose address is derived from its id, as the simulator names them.
    pub fn sim(id: PeerId) -> Self {
        Peer {
            id,
            addr: format!("sim-{id}"),
        }
    }
}

/// The state of a region's leader in its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderState {
    /// The leader is being migrated away: it gets no new leader lease.
    Downgrading,
}

/// Where one region lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRoute {
    /// The region.
    pub region_id: RegionId,
    /// The datanode that leads it, if any.
    pub leader_peer: Option<Peer>,
    /// Datanodes holding a follower copy.
    pub follower_peers: Vec<Peer>,
    /// `Some(Downgrading)` while the leader is being migrated away.
    pub leader_state: Option<LeaderState>,
    /// When the leader became Downgrading (ms since the epoch).
    pub leader_down_since_ms: Option<u64>,
}

impl RegionRoute {
    /// Whether the leader is marked Downgrading.
    pub fn is_leader_downgrading(&self) -> bool {
        self.leader_state == Some(LeaderState::Downgrading)
    }

    /// The leader's id, if there is a leader.
    pub fn leader_id(&self) -> Option<PeerId> {
        self.leader_peer.as_ref().map(|peer| peer.id)
    }
}

/// A table's route: physical tables list their regions, logical ones point elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableRoute {
    /// A table with regions of its own.
    Physical {
        /// One route per region.
        region_routes: Vec<RegionRoute>,
    },
    /// A logical table, stored in the regions of a physical one.
    Logical {
        /// The physical table it lives in.
        physical_table_id: TableId,
    },
}

impl TableRoute {
    /// The route of one region of a physical table.
    pub fn region_route(&self, region_id: RegionId) -> Option<&RegionRoute> {
        match self {
            TableRoute::Physical { region_routes } => region_routes
                .iter()
                .find(|route| route.region_id == region_id),
            TableRoute::Logical { .. } => None,
        }
    }

    /// The mutable route of one region of a physical table.
    pub fn region_route_mut(&mut self, region_id: RegionId) -> Option<&mut RegionRoute> {
        match self {
            TableRoute::Physical { region_routes } => region_routes
                .iter_mut()
                .find(|route| route.region_id == region_id),
            TableRoute::Logical { .. } => None,
        }
    }
}

/// A table route with the version its compare-and-swap is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedTableRoute {
    /// The table.
    pub table_id: TableId,
    /// Bumped by every successful write.
    pub version: u64,
    /// The route itself.
    pub route: TableRoute,
}

/// Which WAL a table's regions write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalKind {
    /// Each datanode keeps its own WAL.
    #[default]
    Local,
    /// A shared, remote WAL: a downgraded leader need not reject writes.
    Remote,
}

/// Per (datanode, table): what another datanode needs to open the table's regions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatanodeTable {
    /// The datanode.
    pub datanode_id: PeerId,
    /// The table.
    pub table_id: TableId,
    /// The region numbers this datanode leads.
    pub region_numbers: Vec<u32>,
    /// The storage engine.
    pub engine: String,
    /// Where the table's files live.
    pub storage_path: String,
    /// Region options.
    pub region_options: BTreeMap<String, String>,
    /// WAL options, per region number.
    pub region_wal_options: BTreeMap<u32, String>,
}

/// A table's identity: its names (for lock keys) and its WAL kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    /// The table.
    pub table_id: TableId,
    /// Its catalog.
    pub catalog: String,
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// The WAL its regions write to.
    pub wal: WalKind,
}

/// An instruction sent to a datanode through the mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Instruction {
    /// Open a region as a follower (the migration's candidate).
    OpenRegion {
        /// The region to open.
        region_id: RegionId,
        /// The storage engine.
        engine: String,
        /// Where its files live.
        storage_path: String,
        /// Region options.
        region_options: BTreeMap<String, String>,
        /// WAL options of the region.
        region_wal_options: BTreeMap<u32, String>,
        /// The candidate does not replay its WAL at open; the upgrade catches it up.
        skip_wal_replay: bool,
    },
    /// Flush the leader, stop its writes and report its last entry id.
    DowngradeRegion {
        /// The region to downgrade.
        region_id: RegionId,
        /// How long the flush may take.
        flush_timeout_ms: u64,
        /// Whether the region stops accepting writes (false only with a remote WAL).
        reject_write: bool,
    },
    /// Make the candidate the leader once it has replayed up to `last_entry_id`.
    UpgradeRegion {
        /// The region to upgrade.
        region_id: RegionId,
        /// The old leader's last entry id, when the downgrade reported one.
        last_entry_id: Option<u64>,
        /// How long the replay may take.
        replay_timeout_ms: u64,
        /// The old leader's peer id.
        location_id: Option<PeerId>,
    },
    /// Close the region.
    CloseRegion {
        /// The region to close.
        region_id: RegionId,
    },
    /// Flush the leader's memtable before it is marked Downgrading (revision 2, R2.2), so the
    /// downgrade's own flush, during which it rejects writes, is short.
    FlushRegion {
        /// The region to flush.
        region_id: RegionId,
        /// How long the flush may take.
        timeout_ms: u64,
    },
}

/// The four instruction kinds, by their names in scenario files and CLI output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstructionKind {
    /// `open_region`
    OpenRegion,
    /// `downgrade_region`
    DowngradeRegion,
    /// `upgrade_region`
    UpgradeRegion,
    /// `close_region`
    CloseRegion,
    /// `flush_region` (revision 2)
    FlushRegion,
}

impl InstructionKind {
    /// Every kind, in the order of a migration.
    pub const ALL: [InstructionKind; 5] = [
        InstructionKind::OpenRegion,
        InstructionKind::FlushRegion,
        InstructionKind::DowngradeRegion,
        InstructionKind::UpgradeRegion,
        InstructionKind::CloseRegion,
    ];

    /// The name used in scenario files, `sent` counts and CLI output.
    pub fn name(self) -> &'static str {
        match self {
            InstructionKind::OpenRegion => "open_region",
            InstructionKind::DowngradeRegion => "downgrade_region",
            InstructionKind::UpgradeRegion => "upgrade_region",
            InstructionKind::CloseRegion => "close_region",
            InstructionKind::FlushRegion => "flush_region",
        }
    }

    /// Parses a name as written in scenario files.
    pub fn from_name(name: &str) -> Option<Self> {
        InstructionKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

impl fmt::Display for InstructionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Instruction {
    /// The kind of this instruction.
    pub fn kind(&self) -> InstructionKind {
        match self {
            Instruction::OpenRegion { .. } => InstructionKind::OpenRegion,
            Instruction::DowngradeRegion { .. } => InstructionKind::DowngradeRegion,
            Instruction::UpgradeRegion { .. } => InstructionKind::UpgradeRegion,
            Instruction::CloseRegion { .. } => InstructionKind::CloseRegion,
            Instruction::FlushRegion { .. } => InstructionKind::FlushRegion,
        }
    }

    /// The region the instruction is about.
    pub fn region_id(&self) -> RegionId {
        match self {
            Instruction::OpenRegion { region_id, .. }
            | Instruction::DowngradeRegion { region_id, .. }
            | Instruction::UpgradeRegion { region_id, .. }
            | Instruction::CloseRegion { region_id }
            | Instruction::FlushRegion { region_id, .. } => *region_id,
        }
    }
}

/// A datanode's answer to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to `OpenRegion`.
    OpenRegion {
        /// Whether the region is open.
        result: bool,
        /// Why not.
        error: Option<String>,
    },
    /// Answer to `DowngradeRegion`.
    DowngradeRegion {
        /// The leader's last entry id after its flush.
        last_entry_id: Option<u64>,
        /// False when the datanode does not have the region.
        exists: bool,
        /// Why it failed.
        error: Option<String>,
    },
    /// Answer to `UpgradeRegion`.
    UpgradeRegion {
        /// Whether the candidate has caught up and leads.
        ready: bool,
        /// False when the datanode does not have the region.
        exists: bool,
        /// Why it failed.
        error: Option<String>,
    },
    /// Answer to `CloseRegion`.
    CloseRegion {
        /// Whether the region is closed.
        result: bool,
        /// Why not.
        error: Option<String>,
    },
    /// Answer to `FlushRegion`.
    FlushRegion {
        /// Whether the region was flushed.
        result: bool,
        /// Why not.
        error: Option<String>,
    },
}

impl Reply {
    /// The instruction kind this reply answers.
    pub fn kind(&self) -> InstructionKind {
        match self {
            Reply::OpenRegion { .. } => InstructionKind::OpenRegion,
            Reply::DowngradeRegion { .. } => InstructionKind::DowngradeRegion,
            Reply::UpgradeRegion { .. } => InstructionKind::UpgradeRegion,
            Reply::CloseRegion { .. } => InstructionKind::CloseRegion,
            Reply::FlushRegion { .. } => InstructionKind::FlushRegion,
        }
    }
}

/// What sending an instruction through the mailbox came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxOutcome {
    /// The datanode answered.
    Reply(Reply),
    /// No answer before the timeout.
    Timeout,
    /// There is no channel to the datanode.
    Unreachable,
}

/// Moves a region's entry from one datanode table to another, in the same write as a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionMove {
    /// The region that moves.
    pub region_id: RegionId,
    /// Its old leader.
    pub from_peer: PeerId,
    /// Its new leader.
    pub to_peer: PeerId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_id_packs_table_and_number() {
        let region = RegionId::new(1024, 1);
        assert_eq!(region.as_u64(), 4398046511105);
        assert_eq!(region.table_id(), 1024);
        assert_eq!(region.region_number(), 1);
        assert_eq!(region.to_string(), "1024:1");
    }

    #[test]
    fn region_id_parses_both_forms() {
        assert_eq!("1024:1".parse::<RegionId>(), Ok(RegionId::new(1024, 1)));
        assert_eq!(
            "4398046511105".parse::<RegionId>(),
            Ok(RegionId::new(1024, 1))
        );
        assert_eq!(
            "1024-1".parse::<RegionId>(),
            Err(ParseRegionIdError {
                text: "1024-1".to_string()
            })
        );
        assert!("99999999999:1".parse::<RegionId>().is_err());
    }

    #[test]
    fn instruction_kind_names_round_trip() {
        for kind in InstructionKind::ALL {
            assert_eq!(InstructionKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(InstructionKind::from_name("open"), None);
    }
}
