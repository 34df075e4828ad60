//! The CLI on a batch (spec R2.5): `sim run --json` reports each region, `list --batch` and
//! `list --region` find the regions of a batch, `show` names the batch, `replay --check`
//! agrees on every region's procedure.

use std::process::Command;

fn regmig(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_regmig"))
        .args(args)
        .output()
        .expect("regmig runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Runs the scenario of a 3-region batch whose second region fails into `dir/data`;
/// returns the data directory and `sim run --json`'s result.
fn run_partial_batch(dir: &std::path::Path) -> (String, serde_json::Value) {
    let data_dir = dir.join("data");
    let data = data_dir.to_str().expect("utf-8 path").to_string();
    let (ok, out) = regmig(&[
        "sim",
        "run",
        "--json",
        "--data-dir",
        &data,
        "tests/scenarios/batch_with_one_failing_region_is_partial.toml",
    ]);
    assert!(ok, "{out}");
    (data, serde_json::from_str(&out).expect("one JSON object"))
}

#[test]
fn a_partial_batch_shows_each_region_in_every_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (data, result) = run_partial_batch(dir.path());
    let data = data.as_str();
    let batch = &result["migrations"][0];
    assert_eq!(batch["outcome"], "partial");
    let batch_id = batch["procedure_id"]
        .as_str()
        .expect("a batch id")
        .to_string();
    let outcomes: Vec<(&str, &str)> = batch["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| {
            (
                r["region"].as_str().unwrap_or_default(),
                r["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("1024:1", "completed"),
            ("1024:2", "failed"),
            ("1024:3", "completed")
        ]
    );

    let (ok, out) = regmig(&["list", "--json", "--data-dir", data, "--batch", &batch_id]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(list["count"], 3);
    let mut regions: Vec<String> = list["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| m["region"].as_str().unwrap_or_default().to_string())
        .collect();
    regions.sort();
    assert_eq!(regions, vec!["1024:1", "1024:2", "1024:3"]);

    let (ok, out) = regmig(&["list", "--json", "--data-dir", data, "--region", "1024:2"]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(list["count"], 1);
    let failed = &list["migrations"][0];
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["batch"]["batch_id"], batch_id.as_str());
    let id = failed["procedure_id"].as_str().expect("id").to_string();

    let (ok, out) = regmig(&["show", &id, "--data-dir", data]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "batch:           {batch_id} (3 regions: 1024:1, 1024:2, 1024:3)"
        )),
        "{out}"
    );

    let svg = dir.path().join("batch.svg");
    let (ok, out) = regmig(&[
        "timeline",
        &id,
        "-o",
        svg.to_str().expect("utf-8 path"),
        "--json",
        "--data-dir",
        data,
    ]);
    assert!(ok, "{out}");
    let timeline: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        timeline["rows"], 3,
        "one row per region of the batch: {out}"
    );
    let picture = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(
        picture.contains(&format!("batch {batch_id}: 3 regions")),
        "the title names the batch"
    );

    for migration in list_ids(data) {
        let (ok, out) = regmig(&["replay", &migration, "--check", "--data-dir", data]);
        assert!(ok, "{out}");
        assert!(out.contains("today's logic agrees with the log"), "{out}");
    }
}

fn list_ids(data: &str) -> Vec<String> {
    let (_, out) = regmig(&["list", "--json", "--data-dir", data]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    list["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| m["procedure_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The ids of the batch's migrations, region by region (1024:1, 1024:2, 1024:3).
fn ids_by_region(data: &str, batch_id: &str) -> Vec<String> {
    let (_, out) = regmig(&["list", "--json", "--data-dir", data, "--batch", batch_id]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let mut rows: Vec<(String, String)> = list["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| {
            (
                m["region"].as_str().unwrap_or_default().to_string(),
                m["procedure_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, id)| id).collect()
}

/// `show`, `events`, `replay` and `timeline` take a batch's id (which no migration has)
/// and show the batch and each of its regions; `audit --json` names each region's batch.
#[test]
fn a_batch_id_shows_the_batch_and_each_region() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (data, result) = run_partial_batch(dir.path());
    let data = data.as_str();
    let batch_id = result["migrations"][0]["procedure_id"]
        .as_str()
        .expect("a batch id")
        .to_string();
    let ids = ids_by_region(data, &batch_id);
    assert_eq!(ids.len(), 3);

    let (ok, out) = regmig(&["show", &batch_id, "--data-dir", data]);
    assert!(ok, "{out}");
    // 1024:2's duration is its retries' jittered waits, drawn in the batch task's order.
    assert_eq!(
        out,
        format!(
            "batch:           {batch_id}\n\
             regions:         3 (1024:1, 1024:2, 1024:3)\n\
             outcome:         partial\n\
             \n\
             REGION  MIGRATION                             FROM→TO  STATE                STATUS     DURATION\n\
             1024:1  {}  1→2      End                  completed  0ms\n\
             1024:2  {}  1→2      OpenCandidateRegion  failed     4.018s\n\
             1024:3  {}  1→2      End                  completed  0ms\n",
            ids[0], ids[1], ids[2]
        )
    );
    let (ok, out) = regmig(&["show", &batch_id, "--json", "--data-dir", data]);
    assert!(ok, "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["outcome"], "partial");
    assert_eq!(
        shown["regions"],
        serde_json::json!(["1024:1", "1024:2", "1024:3"])
    );
    let shown_ids: Vec<&str> = shown["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| m["procedure_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(shown_ids, ids);

    let (ok, out) = regmig(&["events", &batch_id, "--json", "--data-dir", data]);
    assert!(ok, "{out}");
    let events: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(events["batch_id"], batch_id.as_str());
    let counts: Vec<(&str, u64)> = events["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| {
            (
                m["procedure_id"].as_str().unwrap_or_default(),
                m["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            (ids[0].as_str(), 34),
            (ids[1].as_str(), 26),
            (ids[2].as_str(), 34)
        ]
    );
    let (ok, out) = regmig(&["events", &batch_id, "--data-dir", data]);
    assert!(ok, "{out}");
    let headings: Vec<&str> = out.lines().filter(|line| line.starts_with("== ")).collect();
    assert_eq!(
        headings,
        vec![
            format!("== region 1024:1 of batch {batch_id}: migration {}", ids[0]),
            format!("== region 1024:2 of batch {batch_id}: migration {}", ids[1]),
            format!("== region 1024:3 of batch {batch_id}: migration {}", ids[2]),
        ]
    );

    let (ok, out) = regmig(&["replay", &batch_id, "--check", "--data-dir", data]);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        format!(
            "== region 1024:1 of batch {batch_id}: migration {0}\n\
             replay check of migration {0}: today's logic agrees with the log (12 decisions checked over 34 events)\n\
             \n\
             == region 1024:2 of batch {batch_id}: migration {1}\n\
             replay check of migration {1}: today's logic agrees with the log (11 decisions checked over 26 events)\n\
             \n\
             == region 1024:3 of batch {batch_id}: migration {2}\n\
             replay check of migration {2}: today's logic agrees with the log (12 decisions checked over 34 events)\n",
            ids[0], ids[1], ids[2]
        )
    );
    let (ok, out) = regmig(&[
        "replay",
        &batch_id,
        "--until",
        "2",
        "--json",
        "--data-dir",
        data,
    ]);
    assert!(ok, "{out}");
    let replayed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(replayed["agrees"], serde_json::Value::Null);
    let kinds: Vec<Vec<&str>> = replayed["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| {
            m["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .map(|step| step["kind"].as_str().unwrap_or_default())
                .collect()
        })
        .collect();
    assert_eq!(kinds, vec![vec!["Submitted", "BatchJoined"]; 3]);

    let svg = dir.path().join("batch.svg");
    let svg = svg.to_str().expect("utf-8 path");
    let (ok, out) = regmig(&["timeline", &batch_id, "-o", svg, "--data-dir", data]);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        format!(
            "wrote the timeline of batch {batch_id}: 3 regions (3 migrations drawn) to {svg}\n"
        )
    );

    let (ok, out) = regmig(&["audit", "--json", "--data-dir", data]);
    assert!(ok, "{out}");
    let audit: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let batches: Vec<&str> = audit["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| m["batch_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(batches, vec![batch_id.as_str(); 3]);

    // An id that is neither a migration nor a batch.
    let unknown = "019b76da-a800-7e18-8ec7-000000000000";
    let (ok, out) = regmig(&["show", unknown, "--data-dir", data]);
    assert!(!ok);
    assert_eq!(out, format!("error: no migration with id {unknown}\n"));
}
