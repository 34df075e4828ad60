//! `regmig bench --postgres URL` (issue 16): durable appends on the PostgreSQL store at 1,
//! 16 and 256-way beside a raw INSERT + COMMIT loop, on a throwaway server. The full run
//! for BENCHMARKS.md: `cargo test --release --test bench_pg -- --ignored --nocapture`.

use std::process::Command;
use std::sync::OnceLock;

use pg_testkit::PgServer;

fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().expect("start a throwaway PostgreSQL server"))
}

fn bench(url: &str, extra: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(["bench", "--postgres", url])
        .args(extra)
        .env_remove("PGPASSWORD")
        .output()
        .expect("run regmig bench");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_postgres_bench_measures_every_concurrency_beside_the_raw_loop_and_cleans_up() {
    let url = server().create_database("bench_quick").expect("a database");
    let (code, stdout, stderr) = bench(&url, &["--quick", "--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert!(report["raw_commits_per_second"].as_f64().expect("raw") > 0.0);
    let appends = report["appends"].as_array().expect("appends");
    let procedures: Vec<u64> = appends
        .iter()
        .map(|rate| rate["procedures"].as_u64().expect("procedures"))
        .collect();
    assert_eq!(procedures, vec![1, 16, 256]);
    for rate in appends {
        let events = rate["events_per_second"].as_f64().expect("rate");
        assert!(events > 0.0, "{rate}");
        let ratio = rate["ratio_to_raw"].as_f64().expect("ratio");
        let raw = report["raw_commits_per_second"].as_f64().expect("raw");
        assert!(
            (ratio - events / raw).abs() < 1e-6 * ratio.max(1.0),
            "{rate}"
        );
    }
    assert!(report["server_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    // Every scratch schema is gone.
    assert_eq!(
        server()
            .psql(
                "bench_quick",
                "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'regmig_bench_%'"
            )
            .expect("psql")
            .trim(),
        "0"
    );
}

#[test]
fn an_unreachable_server_fails_without_showing_the_password() {
    let (code, stdout, stderr) = bench("postgres://u:hunter2-x@127.0.0.1:1/d", &["--quick"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(!stderr.contains("hunter2-x"), "{stderr}");
    assert!(
        stderr
            .starts_with("error: postgres://u@127.0.0.1:1/d?sslmode=disable&schema=regmig_bench_")
            && stderr.contains("could not connect"),
        "{stderr}"
    );
}

#[test]
#[ignore = "the full 5 s-per-figure run, for BENCHMARKS.md"]
fn full_postgres_bench_table() {
    let url = server().create_database("bench_full").expect("a database");
    let (code, stdout, stderr) = bench(&url, &[]);
    println!("{stdout}");
    assert_eq!(code, 0, "{stderr}");
}
