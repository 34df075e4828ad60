//! The demo's migration campaign: a simulated cluster whose routing metadata is durable (in the
//! log's sled database), rebalanced and then evacuated, resumable after a kill.
//!
//! The simulated datanodes live in memory; the routing metadata does not. On every start the
//! cluster is rebuilt from the durable routes, the engine resumes the open migrations from
//! the log, and the campaign continues from its recorded phase.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::cluster::{ClusterSetup, RegionSetup, SimCluster, SimMetadataStore, TableSetup};
use regmig::cluster::sled_store::SledMetadataStore;
use regmig::cluster::{
    CasConflict, MetadataError, MetadataErrorKind, MetadataStore, MetadataStoreLayer, RegionMove,
};
use regmig::domain::{
    DatanodeTable, PeerId, RegionId, RegionRoute, TableId, TableInfo, TableRoute,
    VersionedTableRoute, WalKind,
};
use regmig::log::{EventLog, SledStore};
use regmig::migration::{fold, StateName};

/// Why the campaign cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    /// The durable metadata failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] regmig::log::LogError),
    /// A procedure's history could not be loaded.
    #[error(transparent)]
    Load(#[from] regmig::engine::LoadError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] regmig::engine::EngineError),
    /// The simulated cluster could not be built.
    #[error(transparent)]
    Setup(#[from] super::cluster::SetupError),
}

/// The shape of the demo cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignConfig {
    /// Datanodes, ids 1..=datanodes.
    pub datanodes: u64,
    /// Tables, ids 1024.. .
    pub tables: u32,
    /// Regions per table.
    pub regions_per_table: u32,
    /// Writes per second to each region, in virtual time.
    pub writes_per_second: u64,
    /// Seeds the simulated cluster (jitter, ids).
    pub seed: u64,
    /// Inject a few faults on the first run.
    pub faults: bool,
}

/// The fewest datanodes a campaign can run on: evacuating one needs another to move to.
pub const DATANODES_MIN: u64 = 2;
/// The most datanodes: each one is a simulated task with heartbeats and leases, and the
/// planner weighs every region against every datanode; 64 keeps a run to seconds.
pub const DATANODES_MAX: u64 = 64;
/// The most tables.
pub const TABLES_MAX: u32 = 1_000;
/// The most regions per table.
pub const REGIONS_PER_TABLE_MAX: u32 = 1_000;
/// The most regions in all (tables × regions per table): 50 times the default. Since the
/// simulator's invariant checks look only at what changed (issue 17), a migration costs
/// about the same real time whatever the cluster's size (about 40 ms in a release build on
/// a 2-core machine, mostly the log's syncs), so 10,000 regions is a few minutes' run.
pub const REGIONS_MAX: u64 = 10_000;

/// A campaign size outside its bounds: names the setting, the value and the allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} is {value}, outside the allowed range {range}")]
pub struct ConfigBoundsError {
    /// The setting, as the command line spells it (`--datanodes`).
    pub setting: String,
    /// The value given.
    pub value: String,
    /// The allowed range, e.g. `2..=64`.
    pub range: String,
}

impl CampaignConfig {
    /// Checks every size against its bound; `flag` turns a field name into how the caller
    /// spells it (`--datanodes` on the command line, `datanodes` in a saved config).
    pub fn check_bounds(&self, flag: impl Fn(&str) -> String) -> Result<(), ConfigBoundsError> {
        let error = |name: &str, value: String, range: String| ConfigBoundsError {
            setting: flag(name),
            value,
            range,
        };
        if !(DATANODES_MIN..=DATANODES_MAX).contains(&self.datanodes) {
            return Err(error(
                "datanodes",
                self.datanodes.to_string(),
                format!("{DATANODES_MIN}..={DATANODES_MAX}"),
            ));
        }
        if !(1..=TABLES_MAX).contains(&self.tables) {
            return Err(error(
                "tables",
                self.tables.to_string(),
                format!("1..={TABLES_MAX}"),
            ));
        }
        if !(1..=REGIONS_PER_TABLE_MAX).contains(&self.regions_per_table) {
            return Err(error(
                "regions-per-table",
                self.regions_per_table.to_string(),
                format!("1..={REGIONS_PER_TABLE_MAX}"),
            ));
        }
        let regions = u64::from(self.tables) * u64::from(self.regions_per_table);
        if regions > REGIONS_MAX {
            return Err(ConfigBoundsError {
                setting: format!("{} × {}", flag("tables"), flag("regions-per-table")),
                value: format!("{} × {} = {regions}", self.tables, self.regions_per_table),
                range: format!("1..={REGIONS_MAX} regions"),
            });
        }
        if self.writes_per_second > WRITES_PER_SECOND_MAX {
            return Err(error(
                "writes_per_second",
                self.writes_per_second.to_string(),
                format!("0..={WRITES_PER_SECOND_MAX}"),
            ));
        }
        Ok(())
    }
}

/// The most writes per second to each region (not a flag; bounds a saved config).
pub const WRITES_PER_SECOND_MAX: u64 = 1_000;

impl Default for CampaignConfig {
    fn default() -> Self {
        CampaignConfig {
            datanodes: 5,
            tables: 20,
            regions_per_table: 10,
            writes_per_second: 20,
            seed: 42,
            faults: true,
        }
    }
}

/// Where a campaign stands; recorded durably beside the routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Spread regions evenly over every datanode.
    Rebalance,
    /// Move every region off the last datanode.
    Evacuate,
    /// Nothing left to do.
    Done,
}

impl Phase {
    /// The trigger recorded in the migrations this phase submits.
    pub fn trigger(self, config: &CampaignConfig) -> String {
        match self {
            Phase::Rebalance => "rebalance".to_string(),
            Phase::Evacuate => format!("evacuate datanode {}", config.datanodes),
            Phase::Done => "done".to_string(),
        }
    }

    /// The reason recorded in the migrations this phase submits.
    pub fn reason(self, config: &CampaignConfig) -> String {
        match self {
            Phase::Rebalance => format!(
                "spread the regions evenly over the {} datanodes",
                config.datanodes
            ),
            Phase::Evacuate => format!(
                "drain datanode {} before taking it out of service",
                config.datanodes
            ),
            Phase::Done => "nothing left to do".to_string(),
        }
    }
}

const CAMPAIGN_TREE: &str = "demo_campaign";
const CONFIG_KEY: &[u8] = b"config";
const PHASE_KEY: &[u8] = b"phase";

/// The campaign's durable record: its config and phase, in their own sled tree.
pub struct CampaignRecord {
    tree: sled::Tree,
    /// Last: the tree must be gone before the log's last handle closes (see
    /// `SledMetadataStore`).
    log: EventLog,
}

fn record_error(what: &str, error: impl std::fmt::Display) -> MetadataError {
    MetadataError::new(
        MetadataErrorKind::Other,
        format!("demo campaign record: {what}: {error}"),
    )
}

impl CampaignRecord {
    /// Opens the record in the log's database.
    pub fn open(log: &EventLog) -> Result<Self, MetadataError> {
        let Some(sled) = SledStore::of(log) else {
            return Err(record_error(
                "it needs a sled-backed log; the log is at",
                log.store().location(),
            ));
        };
        let tree = sled
            .db()
            .open_tree(CAMPAIGN_TREE)
            .map_err(|e| record_error("cannot open its tree", e))?;
        Ok(CampaignRecord {
            tree,
            log: log.clone(),
        })
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, MetadataError> {
        match self
            .tree
            .get(key)
            .map_err(|e| record_error("cannot read", e))?
        {
            Some(bytes) => rmp_serde::from_slice(&bytes)
                .map(Some)
                .map_err(|e| record_error("cannot decode", e)),
            None => Ok(None),
        }
    }

    async fn put<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), MetadataError> {
        let bytes = rmp_serde::to_vec_named(value).map_err(|e| record_error("cannot encode", e))?;
        self.tree
            .insert(key, bytes)
            .map_err(|e| record_error("cannot write", e))?;
        self.log
            .sync()
            .await
            .map_err(|e| record_error("cannot make durable", e))
    }

    /// The config of a campaign already started here.
    pub fn config(&self) -> Result<Option<CampaignConfig>, MetadataError> {
        self.get(CONFIG_KEY)
    }

    /// The phase reached.
    pub fn phase(&self) -> Result<Option<Phase>, MetadataError> {
        self.get(PHASE_KEY)
    }

    /// Records the config (first run).
    pub async fn set_config(&self, config: &CampaignConfig) -> Result<(), MetadataError> {
        self.put(CONFIG_KEY, config).await
    }

    /// Records the phase.
    pub async fn set_phase(&self, phase: Phase) -> Result<(), MetadataError> {
        self.put(PHASE_KEY, &phase).await
    }
}

/// The first layout: regions spread unevenly (the first datanode heaviest), so that the
/// rebalance has work to do. Region r of table t is led by datanode `1 + (t + r) % k` over a
/// skewed subset, followed by none.
pub fn initial_routes(config: &CampaignConfig) -> Vec<(TableId, TableRoute)> {
    let datanodes = config.datanodes.max(2);
    (0..config.tables)
        .map(|table_index| {
            let table_id = 1024 + table_index;
            let region_routes = (1..=config.regions_per_table)
                .map(|number| {
                    // Skew: half the regions on datanode 1, the rest round-robin.
                    let slot = u64::from(table_index * config.regions_per_table + number);
                    let leader = if slot % 2 == 0 {
                        1
                    } else {
                        1 + slot % datanodes
                    };
                    RegionRoute {
                        region_id: RegionId::new(table_id, number),
                        leader_peer: Some(regmig::domain::Peer::sim(leader)),
                        follower_peers: Vec::new(),
                        leader_state: None,
                        leader_down_since_ms: None,
                    }
                })
                .collect();
            (table_id, TableRoute::Physical { region_routes })
        })
        .collect()
}

/// The first layout's region routes, by region (what the first phase plans from).
pub fn initial_routes_by_region(config: &CampaignConfig) -> BTreeMap<RegionId, RegionRoute> {
    initial_routes(config)
        .into_iter()
        .flat_map(|(_, route)| match route {
            TableRoute::Physical { region_routes } => region_routes,
            TableRoute::Logical { .. } => Vec::new(),
        })
        .map(|route| (route.region_id, route))
        .collect()
}

/// Sets a campaign up durably, or finishes a setup a kill interrupted; returns the phase it
/// starts in. `written` is called after each durable write (the demo's
/// `--exit-after-setup-writes`).
///
/// The config is recorded first, so that a rerun finishes this campaign whatever its
/// arguments; then the first layout; then the phase, last: a recorded phase vouches for a
/// complete setup, and a data directory without one is set up again (each write here can be
/// made twice).
pub async fn set_up(
    store: &SledMetadataStore,
    record: &CampaignRecord,
    config: &CampaignConfig,
    written: &mut dyn FnMut(),
) -> Result<Phase, MetadataError> {
    record.set_config(config).await?;
    written();
    write_initial_layout(store, config, written).await?;
    record.set_phase(Phase::Rebalance).await?;
    written();
    Ok(Phase::Rebalance)
}

/// Writes the first layout to the durable store: datanode tables, table infos, routes;
/// `written` is called after each durable write. A table's route is its last write, so a
/// table that has one is complete and is left as it is (its route's version unchanged).
async fn write_initial_layout(
    store: &SledMetadataStore,
    config: &CampaignConfig,
    written: &mut dyn FnMut(),
) -> Result<(), MetadataError> {
    for (table_id, route) in initial_routes(config) {
        if store.table_route(table_id).await?.is_some() {
            continue;
        }
        let mut by_leader: BTreeMap<PeerId, Vec<u32>> = BTreeMap::new();
        if let TableRoute::Physical { region_routes } = &route {
            for region in region_routes {
                if let Some(leader) = region.leader_id() {
                    by_leader
                        .entry(leader)
                        .or_default()
                        .push(region.region_id.region_number());
                }
            }
        }
        for (datanode_id, region_numbers) in by_leader {
            store
                .put_datanode_table(DatanodeTable {
                    datanode_id,
                    table_id,
                    region_numbers,
                    engine: super::cluster::SIM_ENGINE.to_string(),
                    storage_path: format!("data/{table_id}"),
                    region_options: BTreeMap::new(),
                    region_wal_options: BTreeMap::new(),
                })
                .await?;
            written();
        }
        store
            .put_table_info(TableInfo {
                table_id,
                catalog: "greptime".to_string(),
                schema: "public".to_string(),
                name: format!("metrics_{table_id}"),
                wal: WalKind::Local,
            })
            .await?;
        written();
        store.put_table_route(table_id, route).await?;
        written();
    }
    Ok(())
}

/// Every region's durable route.
pub async fn durable_routes(
    store: &SledMetadataStore,
) -> Result<Vec<VersionedTableRoute>, MetadataError> {
    let mut routes = Vec::new();
    for table_id in store.table_ids()? {
        if let Some(route) = store.table_route(table_id).await? {
            routes.push(route);
        }
    }
    Ok(routes)
}

/// The cluster to simulate, from the durable routes; the candidates of open migrations that
/// had opened them are opened again (a restarted datanode reopens them from shared storage).
pub async fn cluster_setup(
    store: &SledMetadataStore,
    log: &EventLog,
    config: &CampaignConfig,
    epoch_base_ms: u64,
) -> Result<(ClusterSetup, Vec<VersionedTableRoute>), CampaignError> {
    let routes = durable_routes(store).await?;
    let mut candidates: BTreeMap<RegionId, PeerId> = BTreeMap::new();
    for (procedure_id, _) in log.open_procedures()? {
        let state = fold(&regmig::engine::load_procedure(log, procedure_id)?);
        let opened = matches!(
            state.state,
            StateName::UpdateMetadataDowngrade
                | StateName::DowngradeLeaderRegion
                | StateName::UpgradeCandidateRegion
                | StateName::UpdateMetadataUpgrade
        );
        if let (true, Some(task)) = (opened, &state.task) {
            candidates.insert(task.region_id, task.to_peer.id);
        }
    }
    let mut tables = Vec::new();
    for versioned in &routes {
        let TableRoute::Physical { region_routes } = &versioned.route else {
            continue;
        };
        let info = store.table_info(versioned.table_id).await.ok().flatten();
        tables.push(TableSetup {
            id: versioned.table_id,
            catalog: info
                .as_ref()
                .map_or("greptime".to_string(), |i| i.catalog.clone()),
            schema: info
                .as_ref()
                .map_or("public".to_string(), |i| i.schema.clone()),
            wal: info.as_ref().map_or(WalKind::Local, |i| i.wal),
            logical: false,
            regions: region_routes
                .iter()
                .filter_map(|region| {
                    let leader = region.leader_id()?;
                    let mut followers: Vec<PeerId> =
                        region.follower_peers.iter().map(|p| p.id).collect();
                    if let Some(candidate) = candidates.get(&region.region_id) {
                        if *candidate != leader && !followers.contains(candidate) {
                            followers.push(*candidate);
                        }
                    }
                    Some(RegionSetup {
                        number: region.region_id.region_number(),
                        leader,
                        followers,
                        last_entry_id: 0,
                    })
                })
                .collect(),
        });
    }
    Ok((
        ClusterSetup {
            seed: config.seed,
            peers: (1..=config.datanodes).collect(),
            tables,
            writes_per_second: Some(config.writes_per_second).filter(|w| *w > 0),
            flush_writes_per_second: None,
            epoch_base_ms,
        },
        routes,
    ))
}

/// Makes the simulated cluster's routes exactly the durable ones (Downgrading marks and
/// followers included), after it was built from a setup.
pub fn restore_routes(cluster: &SimCluster, routes: &[VersionedTableRoute]) {
    let metadata = cluster.metadata();
    for versioned in routes {
        metadata.put_table_route(versioned.table_id, versioned.route.clone());
    }
}

/// The simulated cluster's metadata, with every accepted route write also made durable in
/// sled before it is acknowledged. Reads and injected faults are the simulated store's.
pub struct MirroredMetadataStore {
    primary: Arc<SimMetadataStore>,
    durable: SledMetadataStore,
}

impl MirroredMetadataStore {
    /// Mirrors `primary`'s accepted writes into `durable`.
    pub fn new(primary: Arc<SimMetadataStore>, durable: SledMetadataStore) -> Self {
        MirroredMetadataStore { primary, durable }
    }
}

#[async_trait]
impl MetadataStoreLayer for MirroredMetadataStore {
    fn inner(&self) -> &dyn MetadataStore {
        &*self.primary
    }

    async fn cas_table_route(
        &self,
        table_id: TableId,
        expected_version: u64,
        route: TableRoute,
        region_moves: Vec<RegionMove>,
    ) -> Result<Result<u64, CasConflict>, MetadataError> {
        let result = self
            .primary
            .cas_table_route(
                table_id,
                expected_version,
                route.clone(),
                region_moves.clone(),
            )
            .await?;
        if let Ok(version) = result {
            self.durable
                .put_versioned(
                    VersionedTableRoute {
                        table_id,
                        version,
                        route,
                    },
                    region_moves,
                )
                .await?;
        }
        Ok(result)
    }
}

/// A migration the campaign wants: (region, from, to).
pub type PlannedMove = (RegionId, PeerId, PeerId);

/// The moves of a phase, from the current routes. Deterministic: regions in id order.
pub fn plan(
    phase: Phase,
    config: &CampaignConfig,
    routes: &BTreeMap<RegionId, RegionRoute>,
) -> Vec<PlannedMove> {
    let mut load: BTreeMap<PeerId, u64> = (1..=config.datanodes).map(|peer| (peer, 0)).collect();
    for route in routes.values() {
        if let Some(leader) = route.leader_id() {
            *load.entry(leader).or_insert(0) += 1;
        }
    }
    let targets: Vec<PeerId> = match phase {
        Phase::Rebalance => (1..=config.datanodes).collect(),
        Phase::Evacuate => (1..config.datanodes).collect(),
        Phase::Done => return Vec::new(),
    };
    let total: u64 = load.values().sum();
    let per_target = total.div_ceil(targets.len().max(1) as u64);
    let mut moves = Vec::new();
    for route in routes.values() {
        let Some(leader) = route.leader_id() else {
            continue;
        };
        let over = match phase {
            Phase::Evacuate => leader == config.datanodes,
            _ => load.get(&leader).copied().unwrap_or(0) > per_target,
        };
        if !over {
            continue;
        }
        let Some(&to) = targets
            .iter()
            .filter(|peer| **peer != leader)
            .min_by_key(|peer| (load.get(peer).copied().unwrap_or(0), **peer))
        else {
            continue;
        };
        if phase == Phase::Rebalance && load.get(&to).copied().unwrap_or(0) >= per_target {
            continue;
        }
        *load.entry(leader).or_insert(0) -= 1;
        *load.entry(to).or_insert(0) += 1;
        moves.push((route.region_id, leader, to));
    }
    moves
}

/// A migration a phase already submitted, as its log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmittedMove {
    /// The region.
    pub region_id: RegionId,
    /// Its leader when the migration was planned.
    pub from: PeerId,
    /// Where it was to go.
    pub to: PeerId,
    /// Whether it completed (the only outcome that moves the leader).
    pub completed: bool,
}

/// The moves of a phase still to submit, given the routes now and the migrations the phase
/// already submitted (in submit order, all of them finished).
///
/// The phase's plan is the one made from the routes it started with: those are the routes
/// now with the phase's completed moves undone. Planning from the routes now instead would
/// plan a region whose migration was aborted a second time after a restart, so a resumed
/// campaign would not end as an uninterrupted one does.
pub fn remaining_moves(
    phase: Phase,
    config: &CampaignConfig,
    routes_now: &BTreeMap<RegionId, RegionRoute>,
    submitted: &[SubmittedMove],
) -> Vec<PlannedMove> {
    let mut routes_at_start = routes_now.clone();
    for done in submitted.iter().rev().filter(|done| done.completed) {
        if let Some(route) = routes_at_start.get_mut(&done.region_id) {
            if route.leader_id() == Some(done.to) {
                route.leader_peer = Some(regmig::domain::Peer::sim(done.from));
            }
        }
    }
    plan(phase, config, &routes_at_start)
        .into_iter()
        .filter(|(region_id, _, _)| !submitted.iter().any(|done| done.region_id == *region_id))
        .collect()
}

/// The migrations of `phase` in the log, in submit order (procedure ids are time-ordered).
pub fn submitted_moves(
    log: &EventLog,
    phase: Phase,
    config: &CampaignConfig,
) -> Result<Vec<SubmittedMove>, CampaignError> {
    let trigger = phase.trigger(config);
    let mut moves = Vec::new();
    for procedure_id in log.procedures()? {
        let state = fold(&regmig::engine::load_procedure(log, procedure_id)?);
        if state.report.trigger != trigger {
            continue;
        }
        if let Some(task) = &state.task {
            moves.push(SubmittedMove {
                region_id: task.region_id,
                from: task.from_peer.id,
                to: task.to_peer.id,
                completed: state.outcome == Some(regmig::migration::Outcome::Completed),
            });
        }
    }
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes_of(config: &CampaignConfig) -> BTreeMap<RegionId, RegionRoute> {
        initial_routes_by_region(config)
    }

    fn apply(routes: &mut BTreeMap<RegionId, RegionRoute>, moves: &[PlannedMove]) {
        for (region, _, to) in moves {
            if let Some(route) = routes.get_mut(region) {
                route.leader_peer = Some(regmig::domain::Peer::sim(*to));
            }
        }
    }

    fn load(routes: &BTreeMap<RegionId, RegionRoute>) -> BTreeMap<PeerId, u64> {
        let mut load = BTreeMap::new();
        for route in routes.values() {
            *load.entry(route.leader_id().unwrap_or(0)).or_insert(0) += 1;
        }
        load
    }

    #[test]
    fn rebalance_evens_the_load_and_evacuation_empties_the_last_datanode() {
        let config = CampaignConfig::default();
        let mut routes = routes_of(&config);
        assert_eq!(routes.len(), 200);
        assert_eq!(load(&routes).get(&1), Some(&120));
        let rebalance = plan(Phase::Rebalance, &config, &routes);
        apply(&mut routes, &rebalance);
        assert_eq!(
            load(&routes),
            BTreeMap::from([(1, 40), (2, 40), (3, 40), (4, 40), (5, 40)])
        );
        // Planning again finds nothing more to do: a rerun does not start over.
        assert!(plan(Phase::Rebalance, &config, &routes).is_empty());
        let evacuate = plan(Phase::Evacuate, &config, &routes);
        assert_eq!(evacuate.len(), 40);
        apply(&mut routes, &evacuate);
        assert_eq!(
            load(&routes),
            BTreeMap::from([(1, 50), (2, 50), (3, 50), (4, 50)])
        );
        assert!(plan(Phase::Evacuate, &config, &routes).is_empty());
    }

    #[test]
    fn a_resumed_phase_plans_what_an_uninterrupted_one_would_have_left() {
        let config = CampaignConfig::default();
        let start = routes_of(&config);
        let full = plan(Phase::Rebalance, &config, &start);
        assert_eq!(full.len(), 80);
        // The first ten were submitted before a kill: the first aborted, the rest completed.
        let submitted: Vec<SubmittedMove> = full[..10]
            .iter()
            .enumerate()
            .map(|(index, &(region_id, from, to))| SubmittedMove {
                region_id,
                from,
                to,
                completed: index != 0,
            })
            .collect();
        let mut now = start.clone();
        apply(&mut now, &full[1..10]);
        let remaining = remaining_moves(Phase::Rebalance, &config, &now, &submitted);
        assert_eq!(remaining, full[10..].to_vec());
        // Planning from the routes now would move the aborted region again.
        let naive = plan(Phase::Rebalance, &config, &now);
        assert!(naive
            .iter()
            .any(|(region_id, _, _)| *region_id == full[0].0));
        // Once everything was submitted, nothing is left, whatever the outcomes.
        let all: Vec<SubmittedMove> = full
            .iter()
            .map(|&(region_id, from, to)| SubmittedMove {
                region_id,
                from,
                to,
                completed: region_id != full[0].0,
            })
            .collect();
        let mut end = start;
        apply(&mut end, &full[1..]);
        assert!(remaining_moves(Phase::Rebalance, &config, &end, &all).is_empty());
    }
}
