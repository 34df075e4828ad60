//! `regmig sim fuzz`: random clusters, migrations, workloads and faults, from a seed.
//!
//! Each seed becomes a scenario file's text, which goes through the same parser as a file
//! would: `--print-scenario` shows it, and `regmig sim run` on it reproduces the run. A run
//! passes when every invariant holds and every submitted migration reached a terminal state.

use std::fmt::{self, Write as _};
use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::runner::{run_scenario, RunOptions};
use super::scenario::parse_scenario;

/// A seed whose run broke an invariant or did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzFailure {
    /// The seed.
    pub seed: u64,
    /// What went wrong, one line each.
    pub problems: Vec<String>,
}

impl fmt::Display for FuzzFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} FAILED:", self.seed)?;
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        writeln!(
            f,
            "  reproduce: regmig sim fuzz --seeds {}..{}",
            self.seed,
            self.seed + 1
        )?;
        write!(
            f,
            "  as a file: regmig sim fuzz --seeds {}..{} --print-scenario > seed-{}.toml && regmig sim run seed-{}.toml",
            self.seed,
            self.seed + 1,
            self.seed,
            self.seed
        )
    }
}

/// The largest seed: a seed is written into its scenario file, whose integers are TOML's
/// (at most `i64::MAX`), so every seed can be reproduced as a file.
pub const SEED_MAX: u64 = i64::MAX as u64;

/// The most seeds one `sim fuzz` run takes (several hours at a few thousand seeds a minute).
pub const SEEDS_PER_RUN_MAX: u64 = 1_000_000;

/// Parses "A..B" (B excluded), within [`SEED_MAX`] and [`SEEDS_PER_RUN_MAX`].
pub fn parse_seed_range(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| format!("expected A..B (e.g. 0..200), got {text:?}"))?;
    let start: u64 = start
        .trim()
        .parse()
        .map_err(|_| format!("{start:?} is not a seed (a whole number)"))?;
    let end: u64 = end
        .trim()
        .parse()
        .map_err(|_| format!("{end:?} is not a seed (a whole number)"))?;
    if end <= start {
        return Err(format!("the range {text:?} is empty"));
    }
    if end - 1 > SEED_MAX {
        return Err(format!(
            "the range {text:?} goes past the largest seed, {SEED_MAX}: a seed is written into its \
             scenario file, where an integer is at most {SEED_MAX}"
        ));
    }
    if end - start > SEEDS_PER_RUN_MAX {
        return Err(format!(
            "the range {text:?} holds {} seeds, more than the {SEEDS_PER_RUN_MAX} one run may take",
            end - start
        ));
    }
    Ok(start..end)
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

/// The scenario a seed stands for, as a scenario file's text.
pub fn scenario_text(seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = String::new();
    let peer_count: u64 = rng.gen_range(2..=5);
    let peers: Vec<u64> = (1..=peer_count).collect();
    let _ = writeln!(out, "name = \"fuzz seed {seed}\"\nseed = {seed}\n");
    let _ = writeln!(out, "[cluster]\npeers = {peers:?}\n");
    let mut regions: Vec<(u32, u32, u64, Vec<u64>)> = Vec::new();
    for table_index in 0..rng.gen_range(1..=2u32) {
        let table_id = 100 + table_index;
        let wal = if rng.gen_bool(0.2) { "remote" } else { "local" };
        let _ = writeln!(
            out,
            "[[cluster.tables]]\nid = {table_id}\nwal = \"{wal}\"\nregions = ["
        );
        for number in 1..=rng.gen_range(1..=3u32) {
            let leader = *pick(&mut rng, &peers);
            let followers: Vec<u64> = peers
                .iter()
                .copied()
                .filter(|peer| *peer != leader && rng.gen_bool(0.3))
                .collect();
            let last_entry_id: u64 = rng.gen_range(0..500);
            let _ = writeln!(
                out,
                "  {{ number = {number}, leader = {leader}, followers = {followers:?}, last_entry_id = {last_entry_id} }},"
            );
            regions.push((table_id, number, leader, followers));
        }
        let _ = writeln!(out, "]\n");
    }
    if rng.gen_bool(0.6) {
        let _ = writeln!(
            out,
            "[workload]\nwrites_per_second = {}\n",
            rng.gen_range(10..=200)
        );
    }
    let migration_count = rng.gen_range(1..=regions.len().min(3));
    let mut chosen: Vec<usize> = (0..regions.len()).collect();
    for index in 0..migration_count {
        let swap = rng.gen_range(index..chosen.len());
        chosen.swap(index, swap);
        let (table_id, number, leader, followers) = &regions[chosen[index]];
        let from = if rng.gen_bool(0.9) {
            *leader
        } else {
            *pick(&mut rng, &peers)
        };
        let others: Vec<u64> = peers.iter().copied().filter(|p| p != leader).collect();
        let to = if !followers.is_empty() && rng.gen_bool(0.3) {
            *pick(&mut rng, followers)
        } else if others.is_empty() {
            *leader
        } else {
            *pick(&mut rng, &others)
        };
        let timeout = pick(&mut rng, &["2s", "5s", "10s", "30s"]);
        let at_ms: u64 = rng.gen_range(0..5_000);
        let _ = writeln!(
            out,
            "[[migrations]]\nregion = \"{table_id}:{number}\"\nfrom = {from}\nto = {to}\ntimeout = \"{timeout}\"\nat = \"{at_ms}ms\"\n"
        );
    }
    let instructions = [
        "open_region",
        "flush_region",
        "downgrade_region",
        "upgrade_region",
        "close_region",
    ];
    let mut scripted = std::collections::BTreeSet::new();
    for _ in 0..rng.gen_range(0..=3) {
        let peer = *pick(&mut rng, &peers);
        let instruction = *pick(&mut rng, &instructions);
        if !scripted.insert((peer, instruction)) {
            continue;
        }
        let mut tokens: Vec<String> = vec![
            "ok".into(),
            "timeout".into(),
            "unreachable".into(),
            "error:injected".into(),
            "wrong_reply".into(),
        ];
        match instruction {
            "downgrade_region" => {
                tokens.push("not_exists".into());
                tokens.push(format!("ok(last_entry_id={})", rng.gen_range(0..600)));
            }
            "upgrade_region" => {
                tokens.push("not_exists".into());
                tokens.push("not_ready".into());
            }
            _ => {}
        }
        let replies: Vec<String> = (0..rng.gen_range(1..=4))
            .map(|_| format!("{:?}", pick(&mut rng, &tokens)))
            .collect();
        let _ = writeln!(
            out,
            "[[script]]\npeer = {peer}\ninstruction = \"{instruction}\"\nreplies = [{}]\n",
            replies.join(", ")
        );
    }
    for _ in 0..rng.gen_range(0..=3) {
        match rng.gen_range(0..8) {
            0 => {
                let _ = writeln!(
                    out,
                    "[[faults]]\nkind = \"metadata_cas_conflict\"\ncount = {}\n",
                    rng.gen_range(1..=3)
                );
            }
            1 => {
                let _ = writeln!(
                    out,
                    "[[faults]]\nkind = \"metadata_unavailable\"\ncount = {}\nat = \"{}ms\"\n",
                    rng.gen_range(1..=3),
                    rng.gen_range(0..3_000)
                );
            }
            2 => {
                if rng.gen_bool(0.5) {
                    let _ = writeln!(
                        out,
                        "[[faults]]\nkind = \"engine_crash\"\nafter_events = {}\n",
                        rng.gen_range(1..=40)
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "[[faults]]\nkind = \"engine_crash\"\nat = \"{}ms\"\n",
                        rng.gen_range(0..20_000)
                    );
                }
            }
            3 => {
                let peer = *pick(&mut rng, &peers);
                let _ = write!(
                    out,
                    "[[faults]]\nkind = \"datanode_crash\"\npeer = {peer}\nat = \"{}ms\"\n",
                    rng.gen_range(0..10_000)
                );
                if rng.gen_bool(0.7) {
                    let _ = writeln!(
                        out,
                        "restart_after = \"{}ms\"",
                        rng.gen_range(1_000..15_000)
                    );
                }
                out.push('\n');
            }
            5 => {
                // A timed metadata outage (revision 2's `until`).
                let kind = if rng.gen_bool(0.5) {
                    "metadata_unavailable"
                } else {
                    "metadata_cas_conflict"
                };
                let at_ms = rng.gen_range(0..10_000);
                let _ = writeln!(
                    out,
                    "[[faults]]\nkind = \"{kind}\"\nat = \"{at_ms}ms\"\nuntil = \"{}ms\"\n",
                    at_ms + rng.gen_range(1..40_000)
                );
            }
            6 => {
                let peer = *pick(&mut rng, &peers);
                let _ = write!(
                    out,
                    "[[faults]]\nkind = \"partition\"\npeer = {peer}\nat = \"{}ms\"\n",
                    rng.gen_range(0..10_000)
                );
                if rng.gen_bool(0.7) {
                    let _ = writeln!(out, "heal_after = \"{}ms\"", rng.gen_range(500..20_000));
                }
                out.push('\n');
            }
            7 => {
                let _ = writeln!(
                    out,
                    "[[faults]]\nkind = \"engine_crash\"\nat = \"{}ms\"\nrestart_after = \"{}ms\"\n",
                    rng.gen_range(0..20_000),
                    rng.gen_range(0..15_000)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "[[faults]]\nkind = \"message_delay\"\npeer = {}\ndelay = \"{}ms\"\n",
                    pick(&mut rng, &peers),
                    rng.gen_range(100..3_000)
                );
            }
        }
    }
    out
}

/// Runs one seed; `Err` names every problem.
pub fn fuzz_seed(seed: u64) -> Result<(), FuzzFailure> {
    let fail = |problems: Vec<String>| FuzzFailure { seed, problems };
    let text = scenario_text(seed);
    let scenario = parse_scenario(&text, &format!("fuzz-seed-{seed}.toml"))
        .map_err(|error| fail(vec![format!("the generated scenario is invalid: {error}")]))?;
    let run = run_scenario(
        &scenario,
        &RunOptions {
            discard_data_dir: true,
            unsynced_log: true,
            ..RunOptions::default()
        },
    )
    .map_err(|error| fail(vec![format!("the run failed: {error}")]))?;
    let mut problems = run.outcome.failures.clone();
    problems.extend(run.outcome.invariants.violations.iter().cloned());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(fail(problems))
    }
}
