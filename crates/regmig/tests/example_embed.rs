//! The embedding example (`crates/regmig/examples/embed.rs`) runs and does what it says:
//! three regions move to datanode 2 through its own mailbox and metadata store, one upgrade
//! is retried after a timeout, and the history reads back after the engine is reopened.

#[path = "../examples/embed.rs"]
mod embed;

use regmig::migration::Outcome;

#[tokio::test]
async fn the_embedding_example_moves_every_region_and_reads_the_history_back() {
    let dir = tempfile::tempdir().unwrap();
    let run = embed::run(dir.path()).await.unwrap();
    assert_eq!(run.outcomes, vec![Some(Outcome::Completed); 3]);
    assert_eq!(run.leaders, vec![Some(2); 3]);
    assert_eq!(
        run.upgrades_sent, 4,
        "one upgrade timed out and was sent again"
    );
    assert_eq!(run.history_lengths.len(), 3);
    assert!(
        run.history_lengths.iter().all(|length| *length > 5),
        "{:?}",
        run.history_lengths
    );
}
