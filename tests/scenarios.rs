//! Every scenario under tests/scenarios/ passes on the simulator, and a run is reproducible.

use std::path::PathBuf;

use regmig::sim::runner::{run_scenario, RunOptions};
use regmig::sim::scenario::{load_scenario, render_text};

fn scenario_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/scenarios exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_scenario_in_the_repository_passes() {
    let files = scenario_files();
    assert!(files.len() >= 3, "scenario files found: {files:?}");
    let mut failed = Vec::new();
    for file in &files {
        let scenario = load_scenario(file).expect("valid scenario");
        let run = run_scenario(
            &scenario,
            &RunOptions {
                discard_data_dir: true,
                ..RunOptions::default()
            },
        )
        .expect("scenario runs");
        if !run.outcome.ok {
            failed.push(format!(
                "{}:\n{}",
                file.display(),
                render_text(&run.outcome)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
