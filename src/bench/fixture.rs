//! Recovery fixtures: a data directory holding exactly `events` events from `finished`
//! finished and `open` open procedures, with the metadata the open ones need to resume.
//!
//! Every procedure is a real migration: its events come from `migration::decide` run against
//! a zero-latency world ([`super::driver`]). Finished procedures are of two kinds, mixed to
//! hit the event count exactly: completed migrations through the whole path, and migrations
//! that found at Start that the region had already moved (a short history). When the counts
//! leave a remainder, completed migrations also carry that many `CancelRefused` events in
//! all (an operator's cancel that came after the new route was written). Open procedures stop after
//! 1, 2, 3... of their batches in turn, as a crash would leave them.
//!
//! History is spread over regions ten finished procedures to a region, so that a region
//! query reads the same amount of history whatever the size of the log; each open procedure
//! is the last one of its own region.
//!
//! The events are written with [`Durability::UnsyncedForTestsOnly`], each procedure in one
//! append, many appends per group; the directory is then synced once by reopening it
//! durably. The engine cannot tell: the records, keys and indexes are the ones it writes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::driver::{self, drive};
use super::error::BenchError;
use super::runtime;
use super::world::{self, InstantMailbox, FIRST_LEADER, OTHER_PEER};
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::sled_store::SledMetadataStore;
use regmig::cluster::{Clock, Entropy, Ports, SeededEntropy};
use regmig::domain::{Peer, PeerId, RegionId};
use regmig::engine::{encode_events, LockTable};
use regmig::engine::{Batch, Next, Persistence};
use regmig::log::{
    AppendRequest, Durability, EventLog, LogOptions, NewEvent, OpenProcedure, SledStore,
};
use regmig::migration::{MigrationEvent, MigrationState};

/// Bumped whenever the fixture's content changes, so a cached one is rebuilt.
pub const FIXTURE_VERSION: u32 = 3;
/// The file in a fixture's data directory that says it is complete, and what it holds.
pub const SUMMARY_FILE: &str = "bench-fixture.json";
/// Finished procedures per region of history.
pub const HISTORY_PER_REGION: u64 = 10;
/// The fixture's clock starts here (2025-01-01T00:00:00Z) and moves 1 ms per reading.
pub const FIXTURE_EPOCH_MS: u64 = 1_735_689_600_000;
/// Appends in flight while writing (they share group commits).
const APPENDS_IN_FLIGHT: usize = 512;

/// The counts a fixture must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixtureSpec {
    /// Events in the log.
    pub events: u64,
    /// Finished procedures.
    pub finished: u64,
    /// Open procedures.
    pub open: u64,
}

impl FixtureSpec {
    /// Regions that hold the finished procedures' history.
    pub fn history_regions(&self) -> u64 {
        self.finished.div_ceil(HISTORY_PER_REGION).max(1)
    }

    /// Regions (tables) in the fixture.
    pub fn regions(&self) -> u64 {
        self.history_regions().max(self.open)
    }

    /// The cache directory name for this spec.
    pub fn cache_name(&self) -> String {
        format!(
            "recovery-v{FIXTURE_VERSION}-{}ev-{}fin-{}open",
            self.events, self.finished, self.open
        )
    }
}

/// What a fixture holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixtureSummary {
    /// The version of the builder.
    pub version: u32,
    /// What was asked.
    pub spec: FixtureSpec,
    /// Events written.
    pub events: u64,
    /// Finished procedures.
    pub finished: u64,
    /// ... of which completed the whole path.
    pub completed_full_path: u64,
    /// ... of which found the region already moved.
    pub already_moved: u64,
    /// `CancelRefused` events added to reach the count.
    pub cancel_refused: u64,
    /// Open procedures.
    pub open: u64,
    /// Events of the open procedures.
    pub open_events: u64,
    /// Regions with history.
    pub history_regions: u64,
    /// Tables (one region each).
    pub regions: u64,
}

/// A clock that reads [`FIXTURE_EPOCH_MS`] plus one ms per reading, and never sleeps.
#[derive(Debug)]
pub struct SteppingClock {
    now_ms: AtomicU64,
}

impl SteppingClock {
    /// A clock starting at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        SteppingClock {
            now_ms: AtomicU64::new(start_ms),
        }
    }
}

#[async_trait]
impl Clock for SteppingClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.fetch_add(1, Ordering::Relaxed)
    }

    async fn sleep_until_ms(&self, deadline_ms: u64) {
        self.now_ms.fetch_max(deadline_ms, Ordering::Relaxed);
    }
}

/// Collects a procedure's batches; stops after `stop_after` batches; may add
/// `CancelRefused` events once the new route is written.
struct FixtureRecorder {
    batches: Vec<(u64, Vec<MigrationEvent>)>,
    stop_after: Option<usize>,
    cancel_refused: u64,
}

#[async_trait]
impl Persistence for FixtureRecorder {
    type Error = BenchError;

    async fn persisted(
        &mut self,
        batch: Batch<'_>,
        state: &MigrationState,
    ) -> Result<Next, BenchError> {
        let (at_ms, events) = (batch.at_ms, batch.events);
        self.batches.push((at_ms, events.to_vec()));
        if self.cancel_refused > 0 && state.new_route_written && !state.is_finished() {
            let refused = MigrationEvent::CancelRefused {
                actor: "operator".to_string(),
                reason: "bench fixture".to_string(),
                refusal: "the new route is already written: the migration can only go forward"
                    .to_string(),
            };
            for _ in 0..std::mem::take(&mut self.cancel_refused) {
                self.batches.push((at_ms, vec![refused.clone()]));
            }
        }
        if self.stop_after == Some(self.batches.len()) {
            return Ok(Next::Stop);
        }
        Ok(Next::Continue)
    }
}

/// The world procedures are generated in.
struct World {
    ports: Ports,
    metadata: Arc<MemoryMetadataStore>,
    locks: LockTable,
}

impl World {
    fn new(regions: u32) -> World {
        let metadata = Arc::new(MemoryMetadataStore::new());
        world::create_tables_in_memory(&metadata, regions);
        let clock: Arc<dyn Clock> = Arc::new(SteppingClock::new(FIXTURE_EPOCH_MS));
        let entropy: Arc<dyn Entropy> = Arc::new(SeededEntropy::new(7));
        let ports = Ports::builder(Arc::new(InstantMailbox::new()), metadata.clone())
            .clock(clock)
            .entropy(entropy)
            .build();
        World {
            ports,
            metadata,
            locks: LockTable::new(),
        }
    }

    fn leader(&self, region: RegionId) -> Result<PeerId, BenchError> {
        self.metadata
            .table_route_now(region.table_id())
            .and_then(|route| route.route.region_route(region).and_then(|r| r.leader_id()))
            .ok_or_else(|| BenchError::Task(format!("region {region} has no leader")))
    }

    /// Runs one procedure of `region`; returns its id, batches and last state.
    async fn procedure(
        &self,
        region: RegionId,
        already_moved: bool,
        stop_after: Option<usize>,
        cancel_refused: u64,
    ) -> Result<(Uuid, Vec<(u64, Vec<MigrationEvent>)>, MigrationState), BenchError> {
        let leader = self.leader(region)?;
        let other = if leader == FIRST_LEADER {
            OTHER_PEER
        } else {
            FIRST_LEADER
        };
        // "Already moved": asked to move the region to where it already is.
        let (from, to) = if already_moved {
            (other, leader)
        } else {
            (leader, other)
        };
        let submitted = driver::submitted_event(
            self.metadata.as_ref(),
            region,
            Peer::sim(from),
            Peer::sim(to),
        )
        .await?;
        let procedure_id = driver::procedure_id(&self.ports);
        let mut recorder = FixtureRecorder {
            batches: Vec::new(),
            stop_after,
            cancel_refused,
        };
        let state = drive(
            &self.ports,
            &self.locks,
            procedure_id,
            submitted,
            &mut recorder,
        )
        .await?;
        Ok((procedure_id, recorder.batches, state))
    }
}

fn event_count(batches: &[(u64, Vec<MigrationEvent>)]) -> u64 {
    batches.iter().map(|(_, events)| events.len() as u64).sum()
}

/// How the finished procedures are mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    full: u64,
    already_moved: u64,
    cancel_refused: u64,
    open_stops: usize,
    open_events: u64,
}

/// Works out the mix, from the lengths of one procedure of each kind.
fn plan(
    spec: &FixtureSpec,
    full_batches: &[u64],
    already_moved_events: u64,
) -> Result<Plan, BenchError> {
    let full_events: u64 = full_batches.iter().sum();
    // Open procedure j keeps the first 1 + j % open_stops batches (never the last one).
    let open_stops = full_batches.len().saturating_sub(1).max(1);
    let open_events: u64 = (0..spec.open)
        .map(|j| {
            let kept = 1 + (j as usize % open_stops);
            full_batches[..kept.min(full_batches.len())]
                .iter()
                .sum::<u64>()
        })
        .sum();
    let history = spec.events.checked_sub(open_events).ok_or_else(|| {
        BenchError::InvalidSizes(format!(
            "{} events cannot hold {} open procedures ({open_events} events)",
            spec.events, spec.open
        ))
    })?;
    let shortest = already_moved_events * spec.finished;
    let step = full_events - already_moved_events;
    let too_few = || {
        BenchError::InvalidSizes(format!(
            "{} events of history cannot hold {} finished procedures ({already_moved_events} to {} events each)",
            history, spec.finished, full_events + 1
        ))
    };
    if history < shortest || step == 0 {
        return Err(too_few());
    }
    let full = (history - shortest) / step;
    let cancel_refused = (history - shortest) % step;
    if full > spec.finished || (cancel_refused > 0 && full == 0) {
        return Err(too_few());
    }
    Ok(Plan {
        full,
        already_moved: spec.finished - full,
        cancel_refused,
        open_stops,
        open_events,
    })
}

/// One procedure as one append: all of its events.
fn append_request(
    procedure_id: Uuid,
    region: RegionId,
    state: &MigrationState,
    batches: Vec<(u64, Vec<MigrationEvent>)>,
) -> Result<AppendRequest, BenchError> {
    let mut events: Vec<NewEvent> = Vec::new();
    for (at_ms, batch) in batches {
        events.extend(encode_events(at_ms, &batch)?);
    }
    let peers = state
        .task
        .as_ref()
        .map(|task| vec![task.from_peer.id, task.to_peer.id])
        .unwrap_or_default();
    Ok(AppendRequest {
        procedure_id,
        expected_next_seq: 1,
        events,
        opens: Some(OpenProcedure {
            region_id: region.as_u64(),
            peers,
        }),
        closes: state.is_finished(),
    })
}

async fn write_all(log: &EventLog, requests: &mut Vec<AppendRequest>) -> Result<(), BenchError> {
    let mut appends = tokio::task::JoinSet::new();
    for request in requests.drain(..) {
        let log = log.clone();
        appends.spawn(async move { log.append(request).await });
    }
    while let Some(joined) = appends.join_next().await {
        match joined {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(conflict))) => {
                return Err(BenchError::Task(format!(
                    "fixture append conflict: {conflict}"
                )))
            }
            Ok(Err(error)) => return Err(BenchError::Log(error)),
            Err(error) => return Err(BenchError::Task(format!("fixture append: {error}"))),
        }
    }
    Ok(())
}

/// Builds a fixture in the new data directory `dir`.
pub fn build(dir: &Path, spec: &FixtureSpec) -> Result<FixtureSummary, BenchError> {
    let regions = u32::try_from(spec.regions())
        .map_err(|_| BenchError::InvalidSizes(format!("{} regions", spec.regions())))?;
    let runtime = runtime::current_thread()?;
    let summary = runtime.block_on(async {
        // One probe of each kind, in a world of its own, gives the lengths.
        let probe = World::new(1);
        let region = world::region_of(0);
        let (_, full, _) = probe.procedure(region, false, None, 0).await?;
        let full_batches: Vec<u64> = full.iter().map(|(_, events)| events.len() as u64).collect();
        let (_, short, _) = probe.procedure(region, true, None, 0).await?;
        let plan = plan(spec, &full_batches, event_count(&short))?;

        let sled = Arc::new(SledStore::open(
            dir,
            LogOptions {
                durability: Durability::UnsyncedForTestsOnly,
                ..LogOptions::default()
            },
        )?);
        let log = EventLog::with_store(sled.clone());
        let world = World::new(regions);
        let history_regions = spec.history_regions();
        let mut pending = Vec::with_capacity(APPENDS_IN_FLIGHT);
        let mut written = 0u64;
        let mut cancel_refused_left = plan.cancel_refused;
        // Spread over the full paths, a few per procedure when they are many.
        let cancel_refused_each = plan.cancel_refused.div_ceil(plan.full.max(1));
        for index in 0..spec.finished {
            let region = world::region_of((index % history_regions) as u32);
            // Spread the full paths evenly among the finished procedures.
            let full_path = (index + 1) * plan.full / spec.finished.max(1)
                > index * plan.full / spec.finished.max(1);
            let cancel_refused = if full_path {
                cancel_refused_each.min(cancel_refused_left)
            } else {
                0
            };
            cancel_refused_left -= cancel_refused;
            let (procedure_id, batches, state) = world
                .procedure(region, !full_path, None, cancel_refused)
                .await?;
            if !state.is_finished() {
                return Err(BenchError::Task(format!(
                    "fixture procedure {procedure_id} did not finish"
                )));
            }
            written += event_count(&batches);
            pending.push(append_request(procedure_id, region, &state, batches)?);
            if pending.len() >= APPENDS_IN_FLIGHT {
                write_all(&log, &mut pending).await?;
            }
        }
        for index in 0..spec.open {
            let region = world::region_of(index as u32);
            let kept = 1 + (index as usize % plan.open_stops);
            let (procedure_id, batches, state) =
                world.procedure(region, false, Some(kept), 0).await?;
            written += event_count(&batches);
            pending.push(append_request(procedure_id, region, &state, batches)?);
            if pending.len() >= APPENDS_IN_FLIGHT {
                write_all(&log, &mut pending).await?;
            }
        }
        write_all(&log, &mut pending).await?;
        if written != spec.events {
            return Err(BenchError::Task(format!(
                "the fixture has {written} events, {} were planned",
                spec.events
            )));
        }

        // The metadata as the history left it, in the durable store the engine will read.
        let store = SledMetadataStore::open(&log)?;
        let snapshot = world.metadata.snapshot();
        for route in snapshot.table_routes.values() {
            store
                .put_table_route(route.table_id, route.route.clone())
                .await?;
        }
        for table in snapshot.datanode_tables.values() {
            store.put_datanode_table(table.clone()).await?;
        }
        for info in snapshot.table_infos.values() {
            store.put_table_info(info.clone()).await?;
        }
        sled.db()
            .flush()
            .map_err(|error| BenchError::Log(error.into()))?;
        Ok::<_, BenchError>(FixtureSummary {
            version: FIXTURE_VERSION,
            spec: *spec,
            events: written,
            finished: spec.finished,
            completed_full_path: plan.full,
            already_moved: plan.already_moved,
            cancel_refused: plan.cancel_refused,
            open: spec.open,
            open_events: plan.open_events,
            history_regions,
            regions: spec.regions(),
        })
    })?;
    drop(runtime);
    // Reopening durably flushes sled and fdatasyncs every file it wrote.
    drop(EventLog::open(dir, LogOptions::default())?);
    let path = dir.join(SUMMARY_FILE);
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|error| BenchError::Task(format!("encode the fixture summary: {error}")))?;
    std::fs::write(&path, json).map_err(|error| BenchError::io("write", &path, error))?;
    Ok(summary)
}

/// Reads the summary of a complete fixture, if `dir` holds one built for `spec`.
pub fn read_summary(dir: &Path, spec: &FixtureSpec) -> Option<FixtureSummary> {
    let bytes = std::fs::read(dir.join(SUMMARY_FILE)).ok()?;
    let summary: FixtureSummary = serde_json::from_slice(&bytes).ok()?;
    (summary.version == FIXTURE_VERSION && summary.spec == *spec).then_some(summary)
}

/// A fixture for `spec`: the cached one in `cache_dir` if it is complete, else a new one
/// built there (or under `scratch_dir` when there is no cache). Returns its directory.
pub fn obtain(
    spec: &FixtureSpec,
    cache_dir: Option<&Path>,
    scratch_dir: &Path,
) -> Result<(PathBuf, FixtureSummary, bool), BenchError> {
    let dir = cache_dir.unwrap_or(scratch_dir).join(spec.cache_name());
    if let Some(summary) = read_summary(&dir, spec) {
        return Ok((dir, summary, true));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|error| BenchError::io("remove", &dir, error))?;
    }
    let summary = build(&dir, spec)?;
    Ok((dir, summary, false))
}

/// An encoded event: kind code, time, payload.
pub type EncodedEvent = (u16, u64, Vec<u8>);

/// `count` finished procedures' histories, encoded as the log stores their payloads: three
/// in five complete the whole path, two in five find the region already moved.
pub fn histories(count: u64) -> Result<Vec<Vec<EncodedEvent>>, BenchError> {
    let regions = count.div_ceil(HISTORY_PER_REGION).max(1);
    let regions_u32 = u32::try_from(regions)
        .map_err(|_| BenchError::InvalidSizes(format!("{regions} regions")))?;
    let runtime = runtime::current_thread()?;
    runtime.block_on(async {
        let world = World::new(regions_u32);
        let mut histories = Vec::with_capacity(count as usize);
        for index in 0..count {
            let region = world::region_of((index % regions) as u32);
            let already_moved = index % 5 >= 3;
            let (_, batches, _) = world.procedure(region, already_moved, None, 0).await?;
            let mut history = Vec::new();
            for (at_ms, events) in batches {
                for event in events {
                    history.push((event.kind_code(), at_ms, event.encode()?));
                }
            }
            histories.push(history);
        }
        Ok(histories)
    })
}
