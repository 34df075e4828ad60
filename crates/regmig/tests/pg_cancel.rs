//! Cancel requests recorded in PostgreSQL (issue 18) and answered by the engine that leads
//! on the database (a real server, one per test binary, one database per test), with leader
//! election as in production (`Candidate`, `PgLeaderLease`, the log opened with the granted
//! epoch):
//! - before the new route: the migration ends aborted, naming the actor and the reason;
//! - after it: refused, with the reason, and recorded in the log; the migration completes;
//! - an unknown id and a finished migration are answered with the reason;
//! - a request made while no engine leads is honoured by the next leader once it resumes.

mod engine_support;
mod pg_support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine_support::{add_table, ScriptedMailbox};
use pg_support::{database_name, new_database, server};
use regmig::cluster::memory::MemoryMetadataStore;
use regmig::cluster::Ports;
use regmig::domain::*;
use regmig::engine::leadership::{
    Candidate, LeadershipConfig, LeaseGrant, OpenAsLeader, OpenError,
};
use regmig::engine::{
    CancelAnswer, CancelOutcome, CancelRequest, Engine, EngineConfig, MigrationRequest,
    SubmitOutcome,
};
use regmig::log::{EventLog, LogOptions, PgStore};
use regmig::migration::{MigrationEvent, Outcome, RouteChange, StateName};
use regmig::pg::cancel::PgCancelRequests;
use regmig::pg::lease::PgLeaderLease;
use regmig::pg::PgConfig;
use uuid::Uuid;

const REGION: RegionId = RegionId(4398046511105); // 1024:1
const LEASE: Duration = Duration::from_millis(800);
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Opens the leader's engine on the database with the granted epoch; the datanodes and the
/// metadata are shared by every engine of a test.
struct Opener {
    config: PgConfig,
    mailbox: Arc<ScriptedMailbox>,
    metadata: Arc<MemoryMetadataStore>,
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
        let ports = Ports::builder(self.mailbox.clone(), self.metadata.clone()).build();
        Ok(Engine::with_log(log, EngineConfig::default(), ports).await?)
    }
}

struct Setup {
    config: PgConfig,
    mailbox: Arc<ScriptedMailbox>,
    metadata: Arc<MemoryMetadataStore>,
}

impl Setup {
    /// A fresh database and one table whose region 1024:1 is led by peer 1; every datanode
    /// answer takes `reply_delay_ms` of real time.
    fn new(prefix: &str, reply_delay_ms: u64) -> Setup {
        let metadata = Arc::new(MemoryMetadataStore::new());
        add_table(&metadata, 1024, 1, 1, &[]);
        Setup {
            config: new_database(prefix),
            mailbox: Arc::new(ScriptedMailbox::with_delay(reply_delay_ms)),
            metadata,
        }
    }

    /// The configuration of engine `name` (its sessions carry the name).
    fn config_of(&self, name: &str) -> PgConfig {
        let url = format!(
            "{}?application_name={name}",
            server().url(&database_name(&self.config))
        );
        PgConfig::from_url(&url).expect("the test server's URL parses")
    }

    fn candidate(&self, name: &str) -> Candidate {
        let config = self.config_of(name);
        let lease = Arc::new(PgLeaderLease::new(config.clone()).expect("a lease"));
        let opener = Arc::new(Opener {
            config,
            mailbox: self.mailbox.clone(),
            metadata: self.metadata.clone(),
        });
        let mut leadership = LeadershipConfig::new(name, LEASE);
        leadership.retry_every = Duration::from_millis(50);
        Candidate::start(lease, leadership, opener).expect("a valid config")
    }

    fn requests(&self) -> PgCancelRequests {
        PgCancelRequests::new(self.config.clone()).expect("the requests' pool")
    }
}

async fn submit(engine: &Engine) -> Uuid {
    let request = MigrationRequest::new(REGION, Peer::sim(1), Peer::sim(2));
    match engine.submit(request).await {
        Ok(SubmitOutcome::Started(id)) => id,
        other => panic!("not started: {other:?}"),
    }
}

fn request(procedure_id: Uuid, actor: &str, reason: &str) -> CancelRequest {
    CancelRequest {
        procedure_id,
        actor: actor.to_string(),
        reason: reason.to_string(),
        requested_at_ms: 0,
        awaited: true,
    }
}

async fn events(engine: &Engine, id: Uuid) -> Vec<MigrationEvent> {
    engine
        .history(id)
        .await
        .expect("the history")
        .into_iter()
        .map(|timed| timed.event)
        .collect()
}

async fn wait_for(engine: &Engine, id: Uuid) -> regmig::engine::MigrationSummary {
    tokio::time::timeout(Duration::from_secs(30), engine.wait(id))
        .await
        .expect("the migration ends in time")
        .expect("its summary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_before_the_new_route_aborts_the_migration_naming_actor_and_reason() {
    let setup = Setup::new("cancel_before", 300);
    let leader = setup.candidate("engine_a");
    let (grant, engine) = leader.wait_leader().await.expect("a leads");
    let id = submit(&engine).await;
    let requests = setup.requests();
    let request_id = requests
        .request(&request(id, "alice", "maintenance window closed"))
        .await
        .expect("recorded");
    assert!(requests.engine_running().await.unwrap());
    let answer = requests
        .wait_answer(request_id, ANSWER_WAIT)
        .await
        .unwrap()
        .expect("the leader answers");
    assert_eq!(
        answer,
        CancelAnswer {
            procedure_id: id,
            outcome: CancelOutcome::Cancelled,
            reason: String::new(),
        }
    );
    let summary = wait_for(&engine, id).await;
    assert_eq!(summary.outcome, Some(Outcome::Aborted));
    assert_eq!(
        summary.cancelled_by,
        Some(("alice".to_string(), "maintenance window closed".to_string()))
    );
    assert!(
        summary
            .final_error
            .as_deref()
            .is_some_and(|error| error.contains("cancelled by alice: maintenance window closed")),
        "{:?}",
        summary.final_error
    );
    let stored = requests.get(request_id).await.unwrap().expect("the row");
    assert_eq!(stored.answered_epoch, Some(grant.epoch));
    assert!(stored.taken_by.is_some());
    leader.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_the_new_route_is_refused_and_recorded_and_the_migration_completes() {
    let setup = Setup::new("cancel_after", 50);
    // The close of the old leader times out (1 s): the migration waits there, past its
    // new route.
    setup.mailbox.script(
        1,
        InstructionKind::CloseRegion,
        vec![MailboxOutcome::Timeout],
    );
    let leader = setup.candidate("engine_a");
    let (_, engine) = leader.wait_leader().await.expect("a leads");
    let id = submit(&engine).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let written = events(&engine, id).await.iter().any(|event| {
            matches!(
                event,
                MigrationEvent::RouteCasApplied {
                    change: RouteChange::Upgrade,
                    ..
                }
            )
        });
        if written {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the new route is written in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let requests = setup.requests();
    let request_id = requests
        .request(&request(id, "bob", "too late"))
        .await
        .unwrap();
    let answer = requests
        .wait_answer(request_id, ANSWER_WAIT)
        .await
        .unwrap()
        .expect("the leader answers");
    let refusal = format!(
        "the new route is already written (state {}): the migration can only go forward",
        StateName::CloseDowngradedRegion
    );
    assert_eq!(answer.outcome, CancelOutcome::Refused);
    assert_eq!(answer.reason, refusal);
    let summary = wait_for(&engine, id).await;
    assert_eq!(summary.outcome, Some(Outcome::Completed));
    assert!(events(&engine, id).await.iter().any(|event| matches!(
        event,
        MigrationEvent::CancelRefused { actor, reason, refusal: recorded }
            if actor == "bob" && reason == "too late" && *recorded == refusal
    )));
    // A finished migration and an unknown id: answered with the reason.
    let finished = requests
        .request(&request(id, "bob", "again"))
        .await
        .unwrap();
    let unknown_id = Uuid::now_v7();
    let unknown = requests
        .request(&request(unknown_id, "bob", "typo"))
        .await
        .unwrap();
    let finished = requests
        .wait_answer(finished, ANSWER_WAIT)
        .await
        .unwrap()
        .expect("answered");
    assert_eq!(finished.outcome, CancelOutcome::Refused);
    assert_eq!(
        finished.reason,
        "the migration already finished (completed)"
    );
    let unknown = requests
        .wait_answer(unknown, ANSWER_WAIT)
        .await
        .unwrap()
        .expect("answered");
    assert_eq!(unknown.outcome, CancelOutcome::UnknownMigration);
    assert_eq!(unknown.reason, format!("no migration with id {unknown_id}"));
    leader.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_made_while_no_engine_leads_is_honoured_by_the_next_leader() {
    let setup = Setup::new("cancel_no_leader", 300);
    let first = setup.candidate("engine_a");
    let (_, engine) = first.wait_leader().await.expect("a leads");
    let id = submit(&engine).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The leader dies mid-migration (before the new route: 300 ms per datanode answer).
    first.kill();
    drop(engine);
    let requests = setup.requests();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while requests.engine_running().await.unwrap() {
        assert!(
            tokio::time::Instant::now() < until,
            "the dead leader's lease lapses"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let request_id = requests
        .request(&request(id, "carol", "datanode 2 is being drained"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        requests
            .get(request_id)
            .await
            .unwrap()
            .and_then(|stored| stored.answer),
        None,
        "nobody answers while no engine leads"
    );
    let next = setup.candidate("engine_b");
    let (grant, engine) = next.wait_leader().await.expect("b leads");
    assert_eq!(grant.epoch, 2);
    let answer = requests
        .wait_answer(request_id, ANSWER_WAIT)
        .await
        .unwrap()
        .expect("the next leader answers");
    assert_eq!(answer.outcome, CancelOutcome::Cancelled);
    let summary = wait_for(&engine, id).await;
    assert_eq!(summary.outcome, Some(Outcome::Aborted));
    assert_eq!(
        summary.cancelled_by,
        Some((
            "carol".to_string(),
            "datanode 2 is being drained".to_string()
        ))
    );
    let history = events(&engine, id).await;
    assert!(history
        .iter()
        .any(|event| matches!(event, MigrationEvent::Resumed)));
    let stored = requests.get(request_id).await.unwrap().expect("the row");
    assert_eq!(stored.answered_epoch, Some(2));
    next.stop().await;
}
