//! Runs the measurements in order and turns them into figures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::appends;
use super::campaign::CampaignResult;
use super::child::{ChildJob, Launcher};
use super::error::BenchError;
use super::fixture::{self, FixtureSpec, FixtureSummary};
use super::migrations::{self, Design, MigrationRun, RunLength};
use super::recovery::ResumeResult;
use super::replay;
use super::table::{self, Check, Figure, Quantity, Unit, Verdict};
use super::world;

/// The sizes of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// "full" or "quick".
    pub label: String,
    /// Writes of the raw fdatasync loop.
    pub raw_samples: usize,
    /// How long each durable-append point runs.
    pub append_run: Duration,
    /// Procedures appending concurrently, per point.
    pub append_concurrency: Vec<usize>,
    /// Single-writer appends whose median is taken.
    pub latency_samples: usize,
    /// Concurrent migrations, per point.
    pub migration_concurrency: Vec<usize>,
    /// How long each migrations point runs, per round.
    pub migration_run: Duration,
    /// Rounds of the three designs, interleaved so that a slow spell of the shared machine
    /// hits every design; each design's rate is its migrations over its time, all rounds.
    pub migration_rounds: usize,
    /// The small recovery fixture.
    pub recovery_small: FixtureSpec,
    /// The large recovery fixture.
    pub recovery_large: FixtureSpec,
    /// Region queries per fixture.
    pub audit_queries: usize,
    /// Resumes per fixture, each in a new process on a new copy; the median is reported.
    pub resume_repeats: usize,
    /// Distinct procedures replayed.
    pub replay_procedures: u64,
    /// Events decoded and folded.
    pub replay_events: u64,
    /// Migrations of the memory campaign.
    pub campaign_migrations: u64,
}

impl Sizes {
    /// The sizes issue 7 asks for.
    pub fn full() -> Self {
        Sizes {
            label: "full".to_string(),
            raw_samples: 2000,
            append_run: Duration::from_secs(4),
            append_concurrency: vec![1, 16, 256],
            latency_samples: 2000,
            migration_concurrency: vec![16, 256],
            migration_run: Duration::from_secs(4),
            migration_rounds: 3,
            recovery_small: FixtureSpec {
                events: 100_000,
                finished: 5_000,
                open: 1_000,
            },
            recovery_large: FixtureSpec {
                events: 1_000_000,
                finished: 50_000,
                open: 1_000,
            },
            audit_queries: 200,
            resume_repeats: 3,
            replay_procedures: 5_000,
            replay_events: 2_000_000,
            campaign_migrations: 10_000,
        }
    }

    /// Smaller sizes that finish in under two minutes; the table says they are quick.
    pub fn quick() -> Self {
        Sizes {
            label: "quick".to_string(),
            raw_samples: 300,
            append_run: Duration::from_millis(1500),
            append_concurrency: vec![1, 16, 256],
            latency_samples: 300,
            migration_concurrency: vec![16, 256],
            migration_run: Duration::from_secs(2),
            migration_rounds: 1,
            recovery_small: FixtureSpec {
                events: 10_000,
                finished: 500,
                open: 100,
            },
            recovery_large: FixtureSpec {
                events: 100_000,
                finished: 5_000,
                open: 100,
            },
            audit_queries: 50,
            resume_repeats: 3,
            replay_procedures: 500,
            replay_events: 300_000,
            campaign_migrations: 1_000,
        }
    }

    /// Tiny sizes for tests of the bench code (not of timings).
    pub fn tiny() -> Self {
        Sizes {
            label: "tiny".to_string(),
            raw_samples: 5,
            append_run: Duration::from_millis(100),
            append_concurrency: vec![1, 4],
            latency_samples: 5,
            migration_concurrency: vec![2],
            migration_run: Duration::from_millis(200),
            migration_rounds: 1,
            recovery_small: FixtureSpec {
                events: 500,
                finished: 20,
                open: 5,
            },
            recovery_large: FixtureSpec {
                events: 1_000,
                finished: 40,
                open: 5,
            },
            audit_queries: 3,
            resume_repeats: 1,
            replay_procedures: 10,
            replay_events: 1_000,
            campaign_migrations: 10,
        }
    }
}

/// A group of figures, by its number in issue 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Section {
    /// 1: durable appends.
    Appends,
    /// 2: migrations per second.
    Migrations,
    /// 3 and 4: recovery and audit (they share the fixtures).
    RecoveryAndAudit,
    /// 5: replay.
    Replay,
    /// 6: space and memory.
    SpaceAndMemory,
}

impl Section {
    /// Every section, in run order.
    pub const ALL: [Section; 5] = [
        Section::Appends,
        Section::Migrations,
        Section::Replay,
        Section::RecoveryAndAudit,
        Section::SpaceAndMemory,
    ];

    /// From a figure number (3 and 4 are one section).
    pub fn from_number(number: u32) -> Option<Section> {
        match number {
            1 => Some(Section::Appends),
            2 => Some(Section::Migrations),
            3 | 4 => Some(Section::RecoveryAndAudit),
            5 => Some(Section::Replay),
            6 => Some(Section::SpaceAndMemory),
            _ => None,
        }
    }

    /// The figures it measures, as the table numbers them ("figures 3-4").
    pub fn figures(self) -> &'static str {
        match self {
            Section::Appends => "figure 1",
            Section::Migrations => "figure 2",
            Section::RecoveryAndAudit => "figures 3-4",
            Section::Replay => "figure 5",
            Section::SpaceAndMemory => "figure 6",
        }
    }
}

/// What [`run`] tells as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// A section starts: the `number`-th (from 1) of the `sections` this run measures.
    Section {
        /// The section.
        section: Section,
        /// Its place in the run, from 1.
        number: usize,
        /// How many sections the run measures.
        sections: usize,
    },
    /// A measurement of the section starts.
    Measuring(&'a str),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The sizes.
    pub sizes: Sizes,
    /// Which sections.
    pub sections: Vec<Section>,
    /// Scratch space (removed afterwards by the caller).
    pub work_dir: PathBuf,
    /// Where recovery fixtures are kept between runs; `None` builds them in `work_dir`.
    pub cache_dir: Option<PathBuf>,
    /// How recovery and the campaign run (a child process for a clean peak RSS).
    pub launcher: Launcher,
}

/// A run's figures and what they were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The sizes.
    pub sizes: Sizes,
    /// The figures, in order.
    pub figures: Vec<ReportedFigure>,
    /// What else the reader should know (sizes, fixture contents, durations).
    pub notes: Vec<String>,
}

/// A figure with its ratio and verdict worked out (for JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ReportedFigure {
    /// The figure.
    #[serde(flatten)]
    pub figure: Figure,
    /// value / baseline.
    pub ratio: Option<f64>,
    /// Met or missed.
    pub verdict: Verdict,
}

impl Report {
    /// The table, with a heading that names the sizes.
    pub fn render(&self) -> String {
        let figures: Vec<Figure> = self.figures.iter().map(|f| f.figure.clone()).collect();
        let mut out = String::new();
        if self.sizes.label == "full" {
            out.push_str("regmig bench (full sizes). Every ratio is value / baseline, both measured in this run.\n\n");
        } else {
            out.push_str(&format!(
                "regmig bench ({} sizes: SMALLER than issue 7's; figures are not comparable with the targets' sizes). Every ratio is value / baseline, both measured in this run.\n\n",
                self.sizes.label.to_uppercase()
            ));
        }
        out.push_str(&table::render_table(&figures));
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        out
    }

    /// Figures whose target was missed.
    pub fn missed(&self) -> Vec<&Figure> {
        self.figures
            .iter()
            .filter(|f| f.verdict == Verdict::Missed)
            .map(|f| &f.figure)
            .collect()
    }
}

fn count(value: u64) -> String {
    table::group_thousands(value as f64)
}

/// Runs the chosen sections; `progress` hears each section and each measurement as it starts.
pub fn run(options: &RunOptions, progress: &mut dyn FnMut(Step)) -> Result<Report, BenchError> {
    let sizes = &options.sizes;
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    std::fs::create_dir_all(&options.work_dir)
        .map_err(|error| BenchError::io("create directory", &options.work_dir, error))?;
    let mut sections = options.sections.clone();
    sections.sort_by_key(|section| Section::ALL.iter().position(|s| s == section));
    sections.dedup();
    let section_count = sections.len();
    for (index, section) in sections.into_iter().enumerate() {
        progress(Step::Section {
            section,
            number: index + 1,
            sections: section_count,
        });
        let progress = &mut |text: &str| progress(Step::Measuring(text));
        let started = Instant::now();
        match section {
            Section::Appends => appends_section(options, progress, &mut figures, &mut notes)?,
            Section::Migrations => migrations_section(options, progress, &mut figures, &mut notes)?,
            Section::RecoveryAndAudit => {
                recovery_section(options, progress, &mut figures, &mut notes)?
            }
            Section::Replay => {
                progress("5: decoding and folding events");
                let result = replay::measure(sizes.replay_procedures, sizes.replay_events)?;
                figures.push(
                    Figure::new(
                        "5",
                        format!(
                            "fold (replay), {} events of {} procedures",
                            count(result.events),
                            count(result.procedures)
                        ),
                        Quantity::new(result.fold_per_second, Unit::EventsPerSecond),
                    )
                    .baseline(
                        "decoding the same events",
                        Quantity::new(result.decode_per_second, Unit::EventsPerSecond),
                    )
                    .check(Check::ValueAtLeast(1_000_000.0)),
                );
            }
            Section::SpaceAndMemory => {
                campaign_section(options, progress, &mut figures, &mut notes)?
            }
        }
        notes.push(format!(
            "section {section:?} took {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    let figures = figures
        .into_iter()
        .map(|figure| ReportedFigure {
            ratio: figure.ratio(),
            verdict: figure.verdict(),
            figure,
        })
        .collect();
    Ok(Report {
        sizes: sizes.clone(),
        figures,
        notes,
    })
}

fn appends_section(
    options: &RunOptions,
    progress: &mut dyn FnMut(&str),
    figures: &mut Vec<Figure>,
    notes: &mut Vec<String>,
) -> Result<(), BenchError> {
    let sizes = &options.sizes;
    let dir = options.work_dir.join("appends");
    progress("1: raw write + fdatasync loop");
    let raw = appends::raw_fdatasync(&dir, sizes.raw_samples)?;
    let raw_rate = Quantity::new(raw.per_second, Unit::WritesPerSecond);
    progress("1: raw write + fdatasync of two files at once (the log's data and its mark)");
    let pair = appends::raw_fdatasync_pair(&dir, sizes.raw_samples)?;
    notes.push(format!(
        "1: the high-water mark's floor: a 64 B write + fdatasync of two files at once (sled's and the mark, as a group commit does), median {:.1} µs, against {:.1} µs for one file ({:.2}×)",
        pair.median.as_secs_f64() * 1e6,
        raw.median.as_secs_f64() * 1e6,
        pair.median.as_secs_f64() / raw.median.as_secs_f64().max(1e-9)
    ));
    let letters = ["a", "b", "c", "d", "e", "f"];
    let last = sizes.append_concurrency.iter().copied().max().unwrap_or(0);
    for (index, procedures) in sizes.append_concurrency.iter().copied().enumerate() {
        progress(&format!("1: durable appends, {procedures} procedures"));
        let rate = appends::durable_throughput(
            &dir.join(format!("throughput-{procedures}")),
            procedures,
            sizes.append_run,
        )?;
        let mut figure = Figure::new(
            &format!("1.{}", letters[index.min(letters.len() - 1)]),
            format!(
                "durable appends, {procedures} concurrent procedure{}, 1-event batches",
                if procedures == 1 { "" } else { "s" }
            ),
            Quantity::new(rate, Unit::EventsPerSecond),
        )
        .baseline(
            format!("raw {} B write + fdatasync", appends::RAW_WRITE_BYTES),
            raw_rate,
        );
        if procedures == 256 || (procedures == last && last < 256 && sizes.label == "tiny") {
            figure = figure.check(Check::ValueAtLeast(40_000.0));
        }
        figures.push(figure);
    }
    progress("1: single-writer append latency");
    let mut latencies =
        appends::single_writer_latencies(&dir.join("latency"), sizes.latency_samples)?;
    let median = appends::median(&mut latencies);
    figures.push(
        Figure::new(
            &format!(
                "1.{}",
                letters[sizes.append_concurrency.len().min(letters.len() - 1)]
            ),
            "single-writer durable append, median latency",
            Quantity::new(median.as_secs_f64() * 1e6, Unit::Microseconds),
        )
        .baseline(
            "raw write + fdatasync median",
            Quantity::new(raw.median.as_secs_f64() * 1e6, Unit::Microseconds),
        )
        .check(Check::RatioAtMost(1.5))
        .target_from("issue 17"),
    );
    progress("1: what the mark costs: single writer and 256-way, with and without it");
    let (mut with_mark, mut without_mark) = appends::single_writer_latencies_with_and_without_mark(
        &dir.join("mark-cost"),
        sizes.latency_samples,
    )?;
    let (with_median, without_median) = (
        appends::median(&mut with_mark),
        appends::median(&mut without_mark),
    );
    let widest = sizes.append_concurrency.iter().copied().max().unwrap_or(1);
    let rate_with = appends::durable_throughput_of(
        &dir.join("mark-cost-with"),
        widest,
        sizes.append_run,
        true,
    )?;
    let rate_without = appends::durable_throughput_of(
        &dir.join("mark-cost-without"),
        widest,
        sizes.append_run,
        false,
    )?;
    notes.push(format!(
        "1: what the high-water mark costs (same run, samples interleaved): single-writer median {:.1} µs with it, {:.1} µs without ({:+.1} µs, {:.2}×); {widest}-way {} events/s with it, {} without ({:.2}×)",
        with_median.as_secs_f64() * 1e6,
        without_median.as_secs_f64() * 1e6,
        (with_median.as_secs_f64() - without_median.as_secs_f64()) * 1e6,
        with_median.as_secs_f64() / without_median.as_secs_f64().max(1e-9),
        rate_with.round(),
        rate_without.round(),
        rate_with / rate_without.max(1e-9),
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn migrations_section(
    options: &RunOptions,
    progress: &mut dyn FnMut(&str),
    figures: &mut Vec<Figure>,
    notes: &mut Vec<String>,
) -> Result<(), BenchError> {
    let sizes = &options.sizes;
    let largest = sizes
        .migration_concurrency
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    let mut letter = b'a';
    for concurrency in sizes.migration_concurrency.iter().copied() {
        let designs = [
            Design::EventLog,
            Design::AsOriginal,
            Design::SnapshotEveryStep,
        ];
        let mut runs: Vec<MigrationRun> = Vec::new();
        for round in 0..sizes.migration_rounds.max(1) {
            for (index, design) in designs.into_iter().enumerate() {
                progress(&format!(
                    "2: {}, {concurrency} concurrent migrations, round {}",
                    design.name(),
                    round + 1
                ));
                let dir = options
                    .work_dir
                    .join(format!("migrations-{concurrency}-{design:?}-{round}"));
                let run = migrations::measure(
                    &dir,
                    design,
                    concurrency,
                    RunLength::Time(sizes.migration_run),
                )?;
                let _ = std::fs::remove_dir_all(&dir);
                match runs.get_mut(index) {
                    Some(total) => total.add(&run),
                    None => runs.push(run),
                }
            }
        }
        for run in &runs {
            notes.push(format!(
                "2: {} at {concurrency}-way: {} migrations in {:.2} s ({} rounds), {:.2} ms CPU per migration{}",
                run.design.name(),
                count(run.completed),
                run.elapsed.as_secs_f64(),
                sizes.migration_rounds.max(1),
                run.cpu_per_migration().as_secs_f64() * 1e3,
                if run.design == Design::EventLog {
                    String::new()
                } else {
                    format!(
                        ", {} durable snapshot operations ({:.1} per migration)",
                        count(run.snapshot_operations),
                        run.snapshot_operations as f64 / run.completed.max(1) as f64
                    )
                }
            ));
        }
        let ours = Quantity::new(runs[0].per_second(), Unit::MigrationsPerSecond);
        for (baseline, checks) in [
            (&runs[1], Check::RatioAtLeast(0.5)),
            (&runs[2], Check::RatioAtLeast(3.0)),
        ] {
            let mut figure = Figure::new(
                &format!("2.{}", letter as char),
                format!(
                    "migrations/s, {concurrency} concurrent, event log vs {}",
                    if baseline.design == Design::AsOriginal {
                        "(a)"
                    } else {
                        "(b)"
                    }
                ),
                ours,
            )
            .baseline(
                baseline.design.name(),
                Quantity::new(baseline.per_second(), Unit::MigrationsPerSecond),
            );
            if concurrency == largest && concurrency >= 256 {
                figure = figure.check(checks);
            }
            // Issue 17: at moderate concurrency, recording every event costs no more than
            // the original's sparse snapshots.
            if concurrency == 16 && baseline.design == Design::AsOriginal {
                figure = figure
                    .check(Check::RatioAtLeast(1.0))
                    .target_from("issue 17");
            }
            figures.push(figure);
            letter += 1;
        }
    }
    Ok(())
}

fn recovery_section(
    options: &RunOptions,
    progress: &mut dyn FnMut(&str),
    figures: &mut Vec<Figure>,
    notes: &mut Vec<String>,
) -> Result<(), BenchError> {
    let sizes = &options.sizes;
    let mut results: Vec<(FixtureSummary, ResumeResult)> = Vec::new();
    // The same regions in both fixtures: each holds the same amount of history.
    let sample_space = sizes
        .recovery_small
        .history_regions()
        .min(sizes.recovery_large.history_regions());
    let queries = (sizes.audit_queries as u64).clamp(1, sample_space);
    let audit_regions: Vec<_> = (0..queries)
        .map(|index| world::region_of((index * sample_space / queries) as u32))
        .collect();
    for (spec, full_scan) in [(sizes.recovery_small, true), (sizes.recovery_large, false)] {
        progress(&format!(
            "3: fixture of {} events ({} finished, {} open procedures)",
            count(spec.events),
            count(spec.finished),
            count(spec.open)
        ));
        let started = Instant::now();
        let (dir, summary, cached) =
            fixture::obtain(&spec, options.cache_dir.as_deref(), &options.work_dir)?;
        notes.push(format!(
            "3: fixture {}: {} events, {} finished ({} whole path, {} already moved, {} cancel-refused events), {} open ({} events), {} regions; {} in {:.1} s",
            spec.cache_name(),
            count(summary.events),
            count(summary.finished),
            count(summary.completed_full_path),
            count(summary.already_moved),
            count(summary.cancel_refused),
            count(summary.open),
            count(summary.open_events),
            count(summary.regions),
            if cached { "cached, checked" } else { "built" },
            started.elapsed().as_secs_f64()
        ));
        progress(&format!("3: resuming {} open procedures", count(spec.open)));
        let mut repeats: Vec<ResumeResult> = Vec::new();
        for repeat in 0..sizes.resume_repeats.max(1) {
            repeats.push(options.launcher.run(&ChildJob::Resume {
                fixture_dir: dir.clone(),
                work_dir: options.work_dir.join("resume"),
                audit_regions: audit_regions.clone(),
                full_scan: full_scan && repeat == 0,
            })?);
        }
        let result = median_resume(repeats);
        if result.resumed != spec.open {
            return Err(BenchError::Task(format!(
                "the engine resumed {} procedures, the fixture has {} open",
                result.resumed, spec.open
            )));
        }
        results.push((summary, result));
    }
    let (small_summary, small) = &results[0];
    let (large_summary, large) = &results[1];
    let resume_name = |summary: &FixtureSummary| {
        format!(
            "open engine + resume {} open procedures, {} events in the log",
            count(summary.open),
            count(summary.events)
        )
    };
    figures.push(Figure::new(
        "3.a",
        resume_name(small_summary),
        Quantity::new(small.resume_ms, Unit::Milliseconds),
    ));
    figures.push(
        Figure::new(
            "3.b",
            resume_name(large_summary),
            Quantity::new(large.resume_ms, Unit::Milliseconds),
        )
        .baseline(
            format!("the same with {} events", count(small_summary.events)),
            Quantity::new(small.resume_ms, Unit::Milliseconds),
        )
        .check(Check::ValueBelow(1000.0))
        .check(Check::RatioAtMost(1.5)),
    );
    if let (Some(large_peak), Some(small_peak)) = (large.peak_rss_mib, small.peak_rss_mib) {
        figures.push(
            Figure::new(
                "3.c",
                format!(
                    "peak RSS while resuming, {} events (child process)",
                    count(large_summary.events)
                ),
                Quantity::new(large_peak, Unit::Mebibytes),
            )
            .baseline(
                format!("the same with {} events", count(small_summary.events)),
                Quantity::new(small_peak, Unit::Mebibytes),
            ),
        );
    }
    let mut audit = Figure::new(
        "4.a",
        format!(
            "region query (index + {:.0} procedure summaries), median, {} events",
            small.audit_procedures_mean,
            count(small_summary.events)
        ),
        Quantity::new(small.audit_median_ms, Unit::Milliseconds),
    );
    if let Some(scan_ms) = small.full_scan_ms {
        audit = audit.baseline(
            "the same query by scanning every event",
            Quantity::new(scan_ms, Unit::Milliseconds),
        );
    }
    figures.push(audit);
    figures.push(
        Figure::new(
            "4.b",
            format!(
                "region query (index + {:.0} procedure summaries), median, {} events",
                large.audit_procedures_mean,
                count(large_summary.events)
            ),
            Quantity::new(large.audit_median_ms, Unit::Milliseconds),
        )
        .baseline(
            format!("the same at {} events", count(small_summary.events)),
            Quantity::new(small.audit_median_ms, Unit::Milliseconds),
        )
        .check(Check::ValueBelow(5.0)),
    );
    for (summary, result) in &results {
        notes.push(format!(
            "3/4: {} events (median of {} resumes, each a new process on a new copy): resumed {} in {:.1} ms (log open {:.1} ms, engine open {:.1} ms, first steps {:.1} ms); RSS {} → peak {} MiB{}; {} region queries, median {:.3} ms, max {:.3} ms",
            count(summary.events),
            sizes.resume_repeats.max(1),
            count(result.resumed),
            result.resume_ms,
            result.open_log_ms,
            result.engine_open_ms,
            result.resume_ms - result.open_log_ms - result.engine_open_ms,
            result.rss_before_mib.map(|v| format!("{v:.1}")).unwrap_or_else(|| "?".into()),
            result.peak_rss_mib.map(|v| format!("{v:.1}")).unwrap_or_else(|| "?".into()),
            if result.peak_reset { "" } else { " (peak not reset: whole process)" },
            result.audit_queries,
            result.audit_median_ms,
            result.audit_max_ms
        ));
    }
    Ok(())
}

/// The run with the median resume time, with the median of the other figures.
fn median_resume(mut repeats: Vec<ResumeResult>) -> ResumeResult {
    let full_scan_ms = repeats.iter().find_map(|result| result.full_scan_ms);
    let middle = repeats.len() / 2;
    let median_of = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mut audit: Vec<f64> = repeats.iter().map(|r| r.audit_median_ms).collect();
    let mut peaks: Vec<f64> = repeats.iter().filter_map(|r| r.peak_rss_mib).collect();
    let audit_median_ms = median_of(&mut audit);
    let peak = (!peaks.is_empty()).then(|| median_of(&mut peaks));
    repeats.sort_by(|a, b| a.resume_ms.total_cmp(&b.resume_ms));
    let mut result = repeats.swap_remove(middle);
    result.audit_median_ms = audit_median_ms;
    result.peak_rss_mib = peak;
    result.full_scan_ms = full_scan_ms;
    result
}

fn campaign_section(
    options: &RunOptions,
    progress: &mut dyn FnMut(&str),
    figures: &mut Vec<Figure>,
    notes: &mut Vec<String>,
) -> Result<(), BenchError> {
    let sizes = &options.sizes;
    progress(&format!(
        "6: {} migrations at once (child process)",
        count(sizes.campaign_migrations)
    ));
    let result: CampaignResult = options.launcher.run(&ChildJob::Campaign {
        work_dir: options.work_dir.clone(),
        migrations: sizes.campaign_migrations,
    })?;
    let events = result.events.max(1) as f64;
    figures.push(
        Figure::new(
            "6.a",
            format!(
                "bytes on disk per event (sled dir after {} migrations, {} events)",
                count(result.migrations),
                count(result.events)
            ),
            Quantity::new(result.disk_bytes as f64 / events, Unit::Bytes),
        )
        .baseline(
            "key + record bytes per event",
            Quantity::new(result.logical_bytes as f64 / events, Unit::Bytes),
        )
        .check(Check::ValueAtMost(400.0)),
    );
    if let (Some(before), Some(peak), Some(after)) = (
        result.rss_before_mib,
        result.peak_rss_mib,
        result.rss_after_mib,
    ) {
        figures.push(
            Figure::new(
                "6.b",
                format!(
                    "peak RSS while {} migrations run at once",
                    count(result.migrations)
                ),
                Quantity::new(peak, Unit::Mebibytes),
            )
            .baseline("RSS before", Quantity::new(before, Unit::Mebibytes)),
        );
        figures.push(
            Figure::new(
                "6.c",
                "RSS after they all finished",
                Quantity::new(after, Unit::Mebibytes),
            )
            .baseline("RSS before", Quantity::new(before, Unit::Mebibytes))
            .check(Check::RatioAtMost(1.2)),
        );
        if let Some(trimmed) = result.rss_after_trim_mib {
            figures.push(
                Figure::new(
                    "6.d",
                    "RSS after, once malloc returned its free memory (malloc_trim; diagnosis)",
                    Quantity::new(trimmed, Unit::Mebibytes),
                )
                .baseline("RSS before", Quantity::new(before, Unit::Mebibytes)),
            );
        }
    }
    notes.push(format!(
        "6: {} migrations at once took {:.1} s; {} events, {} bytes on disk, {} logical{}",
        count(result.migrations),
        result.elapsed_ms / 1e3,
        count(result.events),
        count(result.disk_bytes),
        count(result.logical_bytes),
        if result.peak_reset {
            ""
        } else {
            "; peak RSS not reset (whole process)"
        }
    ));
    Ok(())
}
