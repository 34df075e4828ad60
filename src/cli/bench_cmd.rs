//! `regmig bench`: every figure of issue 7 beside its baseline, in one table.
//!
//! The work happens in [`crate::bench`]; this module parses the arguments, picks the sizes
//! and directories, prints progress on stderr (each measurement as a timestamped line, and
//! on a terminal a bar over the sections, kills or runs) and the table (or `--json`) on
//! stdout.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::progress::Progress;
use crate::bench::child::{self, Launcher};
use crate::bench::{self, RunOptions, Section, Sizes, Step};

/// Arguments of `regmig bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Smaller sizes that finish in under two minutes (the table says so).
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Only these figures (1-6, comma-separated; 3 and 4 run together).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<u32>,
    /// Scratch directory (default: a new temporary directory, removed afterwards).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Where the recovery fixtures are kept between runs (default: target/regmig-bench-cache
    /// when ./target exists).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Build the recovery fixtures afresh in the scratch directory.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    /// Only issue 12's measurement: evacuate a datanode leading this many regions of one
    /// table as single migrations and as one batch (e.g. 100).
    #[arg(long, conflicts_with = "only")]
    pub batch_evacuation: Option<u32>,
    /// Only issue 16's measurement, on this PostgreSQL server: durable appends at 1, 16 and
    /// 256-way beside a raw INSERT + COMMIT loop (in scratch schemas, dropped afterwards).
    #[arg(long, value_name = "URL", conflicts_with_all = ["only", "batch_evacuation"])]
    pub postgres: Option<String>,
    /// The PostgreSQL password: the first line of this file (with --postgres).
    #[arg(long, value_name = "FILE", requires = "postgres")]
    pub password_file: Option<PathBuf>,
    /// Only issue 16's measurement: two engines elected on the PostgreSQL database at this
    /// URL, the leader killed `--kills` times mid-campaign; prints the takeover time (kill to
    /// the new leader's first resumed event) as p50/p99. Each kill runs in a schema of its
    /// own, dropped afterwards.
    #[arg(long, value_name = "POSTGRES_URL", conflicts_with_all = ["only", "batch_evacuation", "postgres"])]
    pub takeover: Option<String>,
    /// Only issue 17's instruction count: this many migrations (default 100) and twice as
    /// many through the engine on a durable log, each run under `valgrind --tool=callgrind`;
    /// prints the instructions of one migration (the difference over the extra ones) and
    /// keeps both profiles in the scratch directory (give `--work-dir` to keep them).
    #[arg(long, value_name = "MIGRATIONS", num_args = 0..=1, default_missing_value = "100",
          conflicts_with_all = ["only", "batch_evacuation", "postgres", "takeover"])]
    pub instructions: Option<u64>,
    /// Migrations at once for `--instructions` (it must divide the count).
    #[arg(long, default_value_t = 1, requires = "instructions")]
    pub instructions_concurrency: usize,
    /// Kills for `--takeover`.
    #[arg(long, default_value_t = 20, requires = "takeover")]
    pub kills: u32,
    /// The leader lease for `--takeover`, in ms (renewed every quarter of it).
    #[arg(long, default_value_t = 1000, requires = "takeover")]
    pub lease_ms: u64,
}

/// The default fixture cache: `target/regmig-bench-cache` under the current directory, when
/// there is a `target/` (a checkout that was built).
pub fn default_cache_dir() -> Option<PathBuf> {
    let target = PathBuf::from("target");
    target.is_dir().then(|| target.join("regmig-bench-cache"))
}

/// Runs the command; returns the exit code.
pub fn run(args: BenchArgs) -> u8 {
    // A measurement that needs a process of its own (see `bench::child`).
    if let Some(code) = child::run_from_env() {
        return code;
    }
    if let Some(url) = &args.postgres {
        return postgres(url, args.password_file.as_deref(), args.quick, args.json);
    }
    if let Some(url) = &args.takeover {
        let started = std::time::Instant::now();
        let kills = args.kills.max(1);
        let progress = Progress::new("kills", args.json);
        progress.start("takeover", u64::from(kills));
        let figures = bench::takeover::measure(
            url,
            kills,
            std::time::Duration::from_millis(args.lease_ms),
            &mut |step| {
                progress.eprintln(&timestamped(started, &step));
                progress.inc();
            },
        );
        progress.finish();
        return match figures {
            Ok(figures) if args.json => match serde_json::to_string_pretty(&figures) {
                Ok(json) => {
                    println!("{json}");
                    0
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    super::EXIT_FAILED
                }
            },
            Ok(figures) => {
                print!("{}", bench::takeover::render(&figures));
                0
            }
            Err(error @ bench::takeover::TakeoverError::Config(_)) => {
                eprintln!("error: {error}");
                super::EXIT_USAGE
            }
            Err(error) => {
                eprintln!("error: {error}");
                super::EXIT_FAILED
            }
        };
    }
    if let Some(migrations) = args.instructions {
        return instructions(&args, migrations);
    }
    if let Some(regions) = args.batch_evacuation {
        return match bench::batch::evacuation(regions.max(1)) {
            Ok(figures) if args.json => match serde_json::to_string_pretty(&figures) {
                Ok(json) => {
                    println!("{json}");
                    0
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    super::EXIT_FAILED
                }
            },
            Ok(figures) => {
                print!("{}", bench::batch::render(&figures));
                0
            }
            Err(error) => {
                eprintln!("error: {error}");
                super::EXIT_FAILED
            }
        };
    }
    let mut sections = Vec::new();
    for number in &args.only {
        match Section::from_number(*number) {
            Some(section) => sections.push(section),
            None => {
                eprintln!("error: --only takes figure numbers 1 to 6, not {number}");
                return super::EXIT_USAGE;
            }
        }
    }
    if sections.is_empty() {
        sections = Section::ALL.to_vec();
    }
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(error) => {
            eprintln!(
                "error: cannot find this program to run measurements in a child process: {error}"
            );
            return super::EXIT_FAILED;
        }
    };
    let scratch = match &args.work_dir {
        Some(dir) => Scratch::Given(dir.clone()),
        None => match tempfile::Builder::new().prefix("regmig-bench-").tempdir() {
            Ok(dir) => Scratch::Temporary(dir),
            Err(error) => {
                eprintln!("error: cannot create a temporary directory: {error}");
                return super::EXIT_FAILED;
            }
        },
    };
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    let options = RunOptions {
        sizes: if args.quick {
            Sizes::quick()
        } else {
            Sizes::full()
        },
        sections,
        work_dir: scratch.path(),
        cache_dir,
        launcher: Launcher::Process {
            program,
            args: vec!["bench".into()],
        },
    };
    let started = std::time::Instant::now();
    let progress = Progress::new("sections", args.json);
    let report = bench::run(&options, &mut |step| match step {
        Step::Section {
            section,
            number: 1,
            sections,
        } => progress.start(section.figures(), sections as u64),
        Step::Section { section, .. } => {
            progress.inc();
            progress.set_message(section.figures());
        }
        Step::Measuring(text) => progress.eprintln(&timestamped(started, text)),
    });
    progress.finish();
    match report {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("error: cannot encode the report: {error}");
                        return super::EXIT_FAILED;
                    }
                }
            } else {
                print!("{}", report.render());
            }
            0
        }
        Err(error) => {
            eprintln!("error: {error}");
            super::EXIT_FAILED
        }
    }
}

/// `regmig bench --instructions [N]`: issue 17's instruction count ([`bench::instructions`]).
fn instructions(args: &BenchArgs, migrations: u64) -> u8 {
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(error) => {
            eprintln!("error: cannot find this program to run it under valgrind: {error}");
            return super::EXIT_FAILED;
        }
    };
    let scratch = match &args.work_dir {
        Some(dir) => Scratch::Given(dir.clone()),
        None => match tempfile::Builder::new().prefix("regmig-bench-").tempdir() {
            Ok(dir) => Scratch::Temporary(dir),
            Err(error) => {
                eprintln!("error: cannot create a temporary directory: {error}");
                return super::EXIT_FAILED;
            }
        },
    };
    let options = bench::instructions::InstructionOptions {
        migrations,
        concurrency: args.instructions_concurrency,
        work_dir: scratch.path(),
        program,
        args: vec!["bench".into()],
    };
    let started = std::time::Instant::now();
    // One step per run under callgrind, told as it starts: the one before it has ended.
    let progress = Progress::new("runs", args.json);
    progress.start("callgrind", bench::instructions::RUNS);
    let mut runs_started = 0;
    let figures = bench::instructions::measure(&options, &mut |step| {
        if runs_started > 0 {
            progress.inc();
        }
        runs_started += 1;
        progress.eprintln(&timestamped(started, &step));
    });
    progress.finish();
    match figures {
        Ok(figures) if args.json => match serde_json::to_string_pretty(&figures) {
            Ok(json) => {
                println!("{json}");
                0
            }
            Err(error) => {
                eprintln!("error: {error}");
                super::EXIT_FAILED
            }
        },
        Ok(figures) => {
            print!("{}", bench::instructions::render(&figures));
            0
        }
        Err(error @ crate::bench::BenchError::InvalidSizes(_)) => {
            eprintln!("error: {error}");
            super::EXIT_USAGE
        }
        Err(error) => {
            eprintln!("error: {error}");
            super::EXIT_FAILED
        }
    }
}

/// A progress line on stderr: `step`, after the time since `started`.
fn timestamped(started: std::time::Instant, step: &str) -> String {
    format!("[{:>6.1} s] {step}", started.elapsed().as_secs_f64())
}

/// The scratch directory: removed afterwards when it is ours.
enum Scratch {
    Given(PathBuf),
    Temporary(tempfile::TempDir),
}

impl Scratch {
    fn path(&self) -> PathBuf {
        match self {
            Scratch::Given(dir) => dir.clone(),
            Scratch::Temporary(dir) => dir.path().to_path_buf(),
        }
    }
}

/// `regmig bench --postgres URL`: issue 16's measurement ([`bench::pg`]); 5 s per figure, 1 s
/// with `--quick`.
fn postgres(url: &str, password_file: Option<&std::path::Path>, quick: bool, json: bool) -> u8 {
    let config = regmig::pg::PgConfig::from_url(url).and_then(|config| match password_file {
        Some(path) => config.password_file(path),
        None => Ok(config),
    });
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return super::EXIT_USAGE;
        }
    };
    let run = Duration::from_secs(if quick { 1 } else { 5 });
    match bench::pg::run(&config, &[1, 16, 256], run) {
        Ok(report) if json => match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                println!("{text}");
                0
            }
            Err(error) => {
                eprintln!("error: {error}");
                super::EXIT_FAILED
            }
        },
        Ok(report) => {
            print!("{}", bench::pg::table(&report));
            0
        }
        Err(error) => {
            eprintln!("error: {error}");
            super::EXIT_FAILED
        }
    }
}
