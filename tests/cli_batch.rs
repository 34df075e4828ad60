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

#[test]
fn a_partial_batch_shows_each_region_in_every_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().expect("utf-8 path");
    let (ok, out) = regmig(&[
        "sim",
        "run",
        "--json",
        "--data-dir",
        data,
        "tests/scenarios/batch_with_one_failing_region_is_partial.toml",
    ]);
    assert!(ok, "{out}");
    let result: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
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
