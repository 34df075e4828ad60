//! The benchmark table: ratios, verdicts, and MISSED when a target is not met.

use regmig_tools::bench::table::{render_table, Check, Figure, Quantity, Unit, Verdict};

fn appends(value: f64) -> Figure {
    Figure::new(
        "1.c",
        "durable appends, 256 concurrent procedures",
        Quantity::new(value, Unit::EventsPerSecond),
    )
    .baseline(
        "raw 64 B write + fdatasync",
        Quantity::new(5_000.0, Unit::WritesPerSecond),
    )
    .check(Check::ValueAtLeast(40_000.0))
}

/// The last cell of the row whose first cell is `id`.
fn verdict_cell(table: &str, id: &str) -> String {
    table
        .lines()
        .map(|line| line.split('|').map(str::trim).collect::<Vec<_>>())
        .find(|cells| cells.get(1) == Some(&id))
        .and_then(|cells| cells.get(cells.len() - 2).map(|cell| cell.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_missed_target_says_missed() {
    let figure = appends(25_000.0);
    assert_eq!(figure.verdict(), Verdict::Missed);
    let table = render_table(&[figure]);
    assert_eq!(verdict_cell(&table, "1.c"), "MISSED", "{table}");
}

#[test]
fn a_met_target_says_met() {
    let figure = appends(45_000.0);
    assert_eq!(figure.verdict(), Verdict::Met);
    assert_eq!(figure.ratio(), Some(9.0));
    assert_eq!(verdict_cell(&render_table(&[figure]), "1.c"), "met");
}

#[test]
fn every_check_must_pass() {
    let resume = Figure::new("3.b", "resume", Quantity::new(800.0, Unit::Milliseconds))
        .baseline(
            "the same with 100,000 events",
            Quantity::new(400.0, Unit::Milliseconds),
        )
        .check(Check::ValueBelow(1000.0))
        .check(Check::RatioAtMost(1.5));
    assert_eq!(resume.verdict(), Verdict::Missed, "2× the baseline");
}

#[test]
fn a_ratio_target_without_a_baseline_is_missed() {
    let figure = Figure::new("6.c", "rss", Quantity::new(10.0, Unit::Mebibytes))
        .check(Check::RatioAtMost(1.2));
    assert_eq!(figure.ratio(), None);
    assert_eq!(figure.verdict(), Verdict::Missed);
}

#[test]
fn the_table_renders_as_committed() {
    let figures = vec![
        appends(25_000.0),
        Figure::new(
            "5",
            "fold",
            Quantity::new(2_500_000.0, Unit::EventsPerSecond),
        )
        .baseline(
            "decoding",
            Quantity::new(1_000_000.0, Unit::EventsPerSecond),
        )
        .check(Check::ValueAtLeast(1_000_000.0)),
        Figure::new("6.b", "peak RSS", Quantity::new(120.5, Unit::Mebibytes))
            .baseline("RSS before", Quantity::new(12.0, Unit::Mebibytes)),
        Figure::new(
            "1.d",
            "single-writer append, median",
            Quantity::new(550.0, Unit::Microseconds),
        )
        .baseline("raw median", Quantity::new(275.0, Unit::Microseconds))
        .check(Check::RatioAtMost(2.0))
        .target_from("issue 2"),
    ];
    let rendered = render_table(&figures);
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench_table.md");
    // REGMIG_UPDATE_GOLDEN=1 rewrites the committed table after a deliberate change.
    if std::env::var("REGMIG_UPDATE_GOLDEN").is_ok_and(|value| value == "1") {
        std::fs::write(&path, &rendered).expect("write the golden table");
    }
    let expected = std::fs::read_to_string(&path).expect("the committed table");
    assert_eq!(rendered, expected);
}
