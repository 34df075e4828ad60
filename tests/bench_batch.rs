//! Issue 12's measurement runs and meets its target on a small evacuation.

use regmig_tools::bench::batch::{evacuation, render};

#[test]
fn a_batch_evacuation_takes_at_most_twice_one_migration() {
    let figures = evacuation(20).expect("the measurement runs");
    assert_eq!(figures.regions, 20);
    // The old leader answers no downgrade: one region alone waits out its lease (10 s).
    assert!(
        figures.single_migration_ms >= 10_000,
        "{}",
        render(&figures)
    );
    assert!(figures.batch_to_single_ratio <= 2.0, "{}", render(&figures));
    assert!(render(&figures).contains("one batch of 20 regions"));
    // A batch's step is one instruction per datanode carrying every region: the batch sends
    // as many instructions as one migration, 20 single migrations twenty times as many.
    let [single, singles, batch] = figures.instructions;
    assert!(single >= 5, "{}", render(&figures));
    assert_eq!(batch, single, "{}", render(&figures));
    assert_eq!(singles, 20 * single, "{}", render(&figures));
}
