//! Shared pieces of the engine tests: a scripted mailbox and a one-table cluster.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::{Mailbox, Ports, SeededEntropy, TokioClock};
use regmig::domain::*;

/// Replies forced per (peer, instruction), consumed in order; then a normal success.
#[derive(Default)]
pub struct ScriptedMailbox {
    scripts: Mutex<BTreeMap<(PeerId, InstructionKind), VecDeque<MailboxOutcome>>>,
    /// Replies forced for one region's instructions (or its part of a batch instruction),
    /// used before the peer's.
    region_scripts: Mutex<BTreeMap<(PeerId, InstructionKind, RegionId), VecDeque<MailboxOutcome>>>,
    /// Every instruction received, in order (each region's part of a batch instruction too).
    pub received: Mutex<Vec<(PeerId, Instruction)>>,
    /// Every mailbox call, in order: the peer, the kind, and the regions it carried (one
    /// for `send`, every part's for `send_batch`).
    pub calls: Mutex<Vec<(PeerId, InstructionKind, Vec<RegionId>)>>,
    /// The last entry id downgrades report.
    pub last_entry_id: u64,
    /// Virtual time an answer takes.
    pub reply_delay_ms: u64,
}

impl ScriptedMailbox {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::with_delay(0))
    }

    /// A mailbox whose answers take `reply_delay_ms` of virtual time.
    pub fn with_delay(reply_delay_ms: u64) -> Self {
        ScriptedMailbox {
            last_entry_id: 100,
            reply_delay_ms,
            ..Default::default()
        }
    }

    pub fn script(&self, peer: PeerId, kind: InstructionKind, outcomes: Vec<MailboxOutcome>) {
        self.scripts
            .lock()
            .unwrap()
            .entry((peer, kind))
            .or_default()
            .extend(outcomes);
    }

    /// What one part gets now, and how long its answer takes.
    fn answer(
        &self,
        peer: PeerId,
        instruction: &Instruction,
        timeout_ms: u64,
    ) -> (MailboxOutcome, u64) {
        self.received
            .lock()
            .unwrap()
            .push((peer, instruction.clone()));
        let for_region = self
            .region_scripts
            .lock()
            .unwrap()
            .get_mut(&(peer, instruction.kind(), instruction.region_id()))
            .and_then(VecDeque::pop_front);
        let scripted = for_region.or_else(|| {
            self.scripts
                .lock()
                .unwrap()
                .get_mut(&(peer, instruction.kind()))
                .and_then(VecDeque::pop_front)
        });
        let outcome = scripted.unwrap_or_else(|| MailboxOutcome::Reply(self.normal(instruction)));
        let delay_ms = match outcome {
            MailboxOutcome::Timeout => timeout_ms,
            _ => self.reply_delay_ms.min(timeout_ms),
        };
        (outcome, delay_ms)
    }

    /// Replies forced for `region_id`'s instructions of `kind` to `peer` only.
    pub fn script_region(
        &self,
        peer: PeerId,
        kind: InstructionKind,
        region_id: RegionId,
        outcomes: Vec<MailboxOutcome>,
    ) {
        self.region_scripts
            .lock()
            .unwrap()
            .entry((peer, kind, region_id))
            .or_default()
            .extend(outcomes);
    }

    pub fn received_kinds(&self) -> Vec<(PeerId, InstructionKind)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(peer, instruction)| (*peer, instruction.kind()))
            .collect()
    }

    fn normal(&self, instruction: &Instruction) -> Reply {
        match instruction {
            Instruction::OpenRegion { .. } => Reply::OpenRegion {
                result: true,
                error: None,
            },
            Instruction::DowngradeRegion { .. } => Reply::DowngradeRegion {
                last_entry_id: Some(self.last_entry_id),
                exists: true,
                error: None,
            },
            Instruction::UpgradeRegion { .. } => Reply::UpgradeRegion {
                ready: true,
                exists: true,
                error: None,
            },
            Instruction::CloseRegion { .. } => Reply::CloseRegion {
                result: true,
                error: None,
            },
            Instruction::FlushRegion { .. } => Reply::FlushRegion {
                result: true,
                error: None,
            },
        }
    }
}

#[async_trait]
impl Mailbox for ScriptedMailbox {
    async fn send(&self, peer: &Peer, instruction: Instruction, timeout_ms: u64) -> MailboxOutcome {
        self.calls.lock().unwrap().push((
            peer.id,
            instruction.kind(),
            vec![instruction.region_id()],
        ));
        let (outcome, delay_ms) = self.answer(peer.id, &instruction, timeout_ms);
        if delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        }
        outcome
    }

    /// Scripts apply to the parts in order; the answer comes when the slowest part's does.
    async fn send_batch(
        &self,
        peer: &Peer,
        instructions: Vec<Instruction>,
        timeout_ms: u64,
    ) -> Vec<MailboxOutcome> {
        if let Some(first) = instructions.first() {
            self.calls.lock().unwrap().push((
                peer.id,
                first.kind(),
                instructions.iter().map(Instruction::region_id).collect(),
            ));
        }
        let mut outcomes = Vec::new();
        let mut delay_ms = 0;
        for instruction in &instructions {
            let (outcome, delay) = self.answer(peer.id, instruction, timeout_ms);
            outcomes.push(outcome);
            delay_ms = delay_ms.max(delay);
        }
        if delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        }
        outcomes
    }
}

/// A physical table `table_id` whose regions 1..=regions are led by `leader`, with `followers`.
pub fn add_table(
    metadata: &MemoryMetadataStore,
    table_id: TableId,
    regions: u32,
    leader: PeerId,
    followers: &[PeerId],
) {
    let region_routes = (1..=regions)
        .map(|number| RegionRoute {
            region_id: RegionId::new(table_id, number),
            leader_peer: Some(Peer::sim(leader)),
            follower_peers: followers.iter().map(|id| Peer::sim(*id)).collect(),
            leader_state: None,
            leader_down_since_ms: None,
        })
        .collect();
    metadata.put_table_route(table_id, TableRoute::Physical { region_routes });
    metadata.put_datanode_table(DatanodeTable {
        datanode_id: leader,
        table_id,
        region_numbers: (1..=regions).collect(),
        engine: "mito".to_string(),
        storage_path: format!("data/{table_id}"),
        region_options: BTreeMap::new(),
        region_wal_options: BTreeMap::new(),
    });
    metadata.put_table_info(TableInfo {
        table_id,
        catalog: "greptime".to_string(),
        schema: "public".to_string(),
        name: format!("t{table_id}"),
        wal: WalKind::Local,
    });
}

/// 2026-01-01T00:00:00Z, the virtual clock's origin in tests.
pub const EPOCH_BASE_MS: u64 = 1_767_225_600_000;

/// Ports over the given mailbox and metadata, with a virtual clock and seeded entropy.
pub fn ports(
    mailbox: Arc<dyn Mailbox>,
    metadata: Arc<MemoryMetadataStore>,
    clock: TokioClock,
) -> Ports {
    Ports::builder(mailbox, metadata)
        .clock(Arc::new(clock))
        .entropy(Arc::new(SeededEntropy::new(7)))
        .build()
}

/// The region's route now.
pub fn region_route(metadata: &MemoryMetadataStore, region_id: RegionId) -> RegionRoute {
    metadata
        .table_route_now(region_id.table_id())
        .and_then(|route| route.route.region_route(region_id).cloned())
        .expect("region route")
}
