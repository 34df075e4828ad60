//! Issue 16's takeover measurement: engines elected on one PostgreSQL database, the leader
//! killed mid-campaign, again and again; the time from the kill to the first event the new
//! leader appends for a resumed migration (its `Resumed`), as p50/p99 over the kills.
//!
//! Each kill is one round in a PostgreSQL schema of its own (dropped afterwards): two
//! engines (`regmig_takeover_a`, `regmig_takeover_b`, their sessions' `application_name`),
//! four migrations in flight on the leader (every datanode answer takes
//! [`REPLY_DELAY`]), then the leader's tasks are aborted and its database sessions
//! terminated, as its machine dying would. The standby takes the lease once it lapses by the
//! database's clock, so the target is one lease plus one second.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use super::world::{datanode_table, region_of, table_info, table_of, table_route, InstantMailbox};
use super::world::{FIRST_LEADER, OTHER_PEER};
use regmig::cluster::pg_store::PgMetadataStore;
use regmig::cluster::{Mailbox, Ports};
use regmig::domain::{Instruction, MailboxOutcome, Peer};
use regmig::engine::leadership::{
    Candidate, LeadershipConfig, LeaseGrant, OpenAsLeader, OpenError,
};
use regmig::engine::{Engine, EngineConfig, MigrationRequest, SubmitOutcome};
use regmig::log::{EventLog, LogOptions, PgStore};
use regmig::migration::MigrationEvent;
use regmig::pg::lease::PgLeaderLease;
use regmig::pg::PgConfig;

/// How long each datanode answer takes: migrations are in flight at the kill.
pub const REPLY_DELAY: Duration = Duration::from_millis(50);
/// Migrations per round.
const MIGRATIONS: u32 = 4;
/// Events the leader appends before it is killed (past the submissions).
const KILL_AFTER_EVENTS: u64 = 12;
/// How long one round may take before the measurement gives up.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the measurement could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TakeoverError {
    /// The URL or the lease settings are unusable.
    #[error("{0}")]
    Config(String),
    /// The database failed.
    #[error("round {round}: {reason}")]
    Round {
        /// The round (1-based).
        round: u32,
        /// What failed.
        reason: String,
    },
}

/// The figures of the takeover measurement.
#[derive(Debug, Clone, Serialize)]
pub struct TakeoverFigures {
    /// The store, without its password.
    pub store: String,
    /// The lease (ms).
    pub lease_ms: u64,
    /// Kills measured.
    pub kills: u32,
    /// Kill to the new leader's first resumed event, median (ms).
    pub p50_ms: u64,
    /// The same, 99th percentile (ms).
    pub p99_ms: u64,
    /// The same, slowest (ms).
    pub max_ms: u64,
    /// The target: one lease plus one second (ms).
    pub target_ms: u64,
    /// Every round's takeover (ms), in order.
    pub takeovers_ms: Vec<u64>,
}

/// A mailbox whose datanodes answer every instruction with success after [`REPLY_DELAY`].
struct SlowMailbox(InstantMailbox);

#[async_trait]
impl Mailbox for SlowMailbox {
    async fn send(&self, peer: &Peer, instruction: Instruction, timeout_ms: u64) -> MailboxOutcome {
        tokio::time::sleep(REPLY_DELAY).await;
        self.0.send(peer, instruction, timeout_ms).await
    }
}

/// Opens an engine on the round's schema with the granted epoch, and notes when it first
/// appends a `Resumed`.
struct Opener {
    config: PgConfig,
    appended: Arc<AtomicU64>,
    first_resume: Arc<Mutex<Option<Instant>>>,
}

#[async_trait]
impl OpenAsLeader for Opener {
    async fn open(&self, grant: &LeaseGrant) -> Result<Engine, OpenError> {
        let store = PgStore::open_async(
            self.config.clone(),
            LogOptions::default(),
            Some(grant.epoch),
        )
        .await?;
        let log = EventLog::with_store(Arc::new(store));
        let metadata = Arc::new(PgMetadataStore::open(&log).await?);
        let ports = Ports::builder(Arc::new(SlowMailbox(InstantMailbox::new())), metadata).build();
        let engine = Engine::with_log(log, EngineConfig::default(), ports).await?;
        let appended = self.appended.clone();
        let first_resume = self.first_resume.clone();
        engine.set_observer(Box::new(move |event| {
            appended.fetch_add(1, Ordering::SeqCst);
            if matches!(event.event, MigrationEvent::Resumed) {
                let mut first = first_resume.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(Instant::now);
            }
        }));
        Ok(engine)
    }
}

/// `url` with the sessions named `name` (`application_name`), so a round can terminate them.
fn named(url: &str, name: &str, schema: &str) -> Result<PgConfig, TakeoverError> {
    let separator = if url.contains('?') { '&' } else { '?' };
    PgConfig::from_url(&format!("{url}{separator}application_name={name}"))
        .and_then(|config| config.with_schema(schema))
        .map_err(|error| TakeoverError::Config(error.to_string()))
}

struct Node {
    candidate: Candidate,
    appended: Arc<AtomicU64>,
    first_resume: Arc<Mutex<Option<Instant>>>,
}

fn node(config: PgConfig, name: &str, lease: Duration) -> Result<Node, String> {
    let lease_port = Arc::new(PgLeaderLease::new(config.clone()).map_err(|e| e.to_string())?);
    let appended = Arc::new(AtomicU64::new(0));
    let first_resume = Arc::new(Mutex::new(None));
    let opener = Arc::new(Opener {
        config,
        appended: appended.clone(),
        first_resume: first_resume.clone(),
    });
    let mut leadership = LeadershipConfig::new(name, lease);
    leadership.retry_every = Duration::from_millis(20);
    let candidate = Candidate::start(lease_port, leadership, opener).map_err(|e| e.to_string())?;
    Ok(Node {
        candidate,
        appended,
        first_resume,
    })
}

/// One round: returns the takeover time.
async fn round(url: &str, schema: &str, lease: Duration) -> Result<Duration, String> {
    let config_a = named(url, "regmig_takeover_a", schema).map_err(|e| e.to_string())?;
    let config_b = named(url, "regmig_takeover_b", schema).map_err(|e| e.to_string())?;
    let control = regmig::pg::connect_session(&config_a)
        .await
        .map_err(|e| e.to_string())?;
    // Setup, before any election: the tables the migrations move.
    {
        let store = PgStore::open_async(config_a.clone(), LogOptions::default(), None)
            .await
            .map_err(|e| e.to_string())?;
        let log = EventLog::with_store(Arc::new(store));
        let metadata = PgMetadataStore::open(&log)
            .await
            .map_err(|e| e.to_string())?;
        for index in 0..MIGRATIONS {
            let table_id = table_of(index);
            metadata
                .put_table_route(table_id, table_route(table_id, FIRST_LEADER))
                .await
                .map_err(|e| e.to_string())?;
            metadata
                .put_datanode_table(datanode_table(FIRST_LEADER, table_id))
                .await
                .map_err(|e| e.to_string())?;
            metadata
                .put_table_info(table_info(table_id))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let a = node(config_a, "regmig_takeover_a", lease)?;
    let (_, engine_a) = a.candidate.wait_leader().await.map_err(|e| e.to_string())?;
    let b = node(config_b, "regmig_takeover_b", lease)?;
    let mut procedures = Vec::new();
    for index in 0..MIGRATIONS {
        let request = MigrationRequest::new(
            region_of(index),
            Peer::sim(FIRST_LEADER),
            Peer::sim(OTHER_PEER),
        );
        match engine_a.submit(request).await {
            Ok(SubmitOutcome::Started(id)) => procedures.push(id),
            other => return Err(format!("a migration did not start: {other:?}")),
        }
    }
    while a.appended.load(Ordering::SeqCst) < KILL_AFTER_EVENTS {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The kill: the leader's tasks, then its sessions.
    a.candidate.kill();
    let killed = Instant::now();
    drop(engine_a);
    control
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'regmig_takeover_a' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| format!("terminate the leader's sessions: {e}"))?;
    let (_, engine_b) = b.candidate.wait_leader().await.map_err(|e| e.to_string())?;
    for id in &procedures {
        engine_b.wait(*id).await.map_err(|e| e.to_string())?;
    }
    let first_resume = *b.first_resume.lock().unwrap_or_else(|e| e.into_inner());
    b.candidate.stop().await;
    drop(a);
    let first_resume = first_resume.ok_or("the new leader resumed nothing")?;
    Ok(first_resume.saturating_duration_since(killed))
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        0
    } else {
        sorted[((sorted.len() - 1) * p) / 100]
    }
}

/// Runs `kills` rounds against the database at `url` (its owner's rights suffice: each
/// round creates and drops a schema of its own), with a `lease`.
pub fn measure(
    url: &str,
    kills: u32,
    lease: Duration,
    progress: &mut dyn FnMut(String),
) -> Result<TakeoverFigures, TakeoverError> {
    let store = PgConfig::from_url(url)
        .map_err(|error| TakeoverError::Config(error.to_string()))?
        .redacted();
    LeadershipConfig::new("check", lease)
        .validate()
        .map_err(|error| TakeoverError::Config(error.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| TakeoverError::Config(format!("cannot start the runtime: {error}")))?;
    let run_id = std::process::id();
    let mut takeovers_ms = Vec::new();
    for number in 1..=kills {
        let schema = format!("regmig_takeover_{run_id}_{number}");
        let result = runtime.block_on(async {
            let outcome = tokio::time::timeout(ROUND_TIMEOUT, round(url, &schema, lease))
                .await
                .unwrap_or_else(|_| Err(format!("did not finish in {ROUND_TIMEOUT:?}")));
            let dropped = drop_schema(url, &schema).await;
            outcome.and_then(|takeover| dropped.map(|()| takeover))
        });
        let takeover = result.map_err(|reason| TakeoverError::Round {
            round: number,
            reason,
        })?;
        let takeover_ms = takeover.as_millis() as u64;
        progress(format!("kill {number}/{kills}: takeover {takeover_ms} ms"));
        takeovers_ms.push(takeover_ms);
    }
    runtime.shutdown_background();
    let mut sorted = takeovers_ms.clone();
    sorted.sort_unstable();
    let lease_ms = lease.as_millis() as u64;
    Ok(TakeoverFigures {
        store,
        lease_ms,
        kills,
        p50_ms: percentile(&sorted, 50),
        p99_ms: percentile(&sorted, 99),
        max_ms: sorted.last().copied().unwrap_or(0),
        target_ms: lease_ms + 1_000,
        takeovers_ms,
    })
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), String> {
    let config = named(url, "regmig_takeover_cleanup", schema).map_err(|e| e.to_string())?;
    let client = regmig::pg::connect_session(&config)
        .await
        .map_err(|e| e.to_string())?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .map_err(|e| format!("drop schema {schema}: {e}"))
}

/// The figures as a few lines for a terminal.
pub fn render(figures: &TakeoverFigures) -> String {
    let mut text = format!(
        "takeover on {} (leader killed: tasks aborted, sessions terminated -> first resumed \
         event by the new leader), lease {} ms, {} kills\n",
        figures.store, figures.lease_ms, figures.kills
    );
    let _ = writeln!(
        text,
        "  p50 {} ms   p99 {} ms   max {} ms   (target: at most {} ms, one lease + 1 s: {})",
        figures.p50_ms,
        figures.p99_ms,
        figures.max_ms,
        figures.target_ms,
        if figures.p99_ms <= figures.target_ms {
            "met"
        } else {
            "missed"
        }
    );
    text
}
