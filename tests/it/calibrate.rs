//! `edgellm calibrate` end to end: the fixture set on the real model, a stand-in stronger tier on
//! loopback reached through the routing walk and its egress guard, the report's files, and the
//! `routing.toml` it writes, loaded by a real `edgellm serve` that escalates the answers the
//! records say it will (and no others).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::server::Server;
use crate::support::{default_model, edgellm_bin, network_opt_in};
use crate::upstream_stub::{Mode, Stub};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/calibrate/fixture.jsonl"
);

/// Every line of a JSON-lines file.
fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A local tier, then `cloud` on the stub; one slot, as `calibrate` and `serve` both run it.
fn tiers(stub: &Stub) -> String {
    format!(
        "[model]\nslots = 1\nctx_size = 1024\n[[tiers]]\nname = \"local\"\ntype = \"local\"\n[[tiers]]\nname = \"cloud\"\ntype = \"openai_chat\"\nurl = \"{}\"\nmodel = \"big\"\ntimeout_secs = 5\n{}",
        stub.base,
        network_opt_in()
    )
}

fn calibrate(
    set: &Path,
    config: &Path,
    out: &Path,
    data: &Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(edgellm_bin())
        .arg("calibrate")
        .arg("--set")
        .arg(set)
        .args(["--bootstrap", "100", "-t", "2", "-m"])
        .arg(default_model())
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("EDGELLM_DATA_DIR", data)
        .env_remove("EDGELLM_API_KEY")
        .output()
        .unwrap()
}

#[tokio::test]
async fn calibrate_reports_and_writes_a_config_that_routes_as_reported() {
    let items = read_jsonl(Path::new(FIXTURE));
    // The stronger tier knows every answer of the fixture.
    let stub = Stub::start(Mode::Lookup);
    stub.set_answers(
        items
            .iter()
            .map(|i| {
                let prompt = i["prompt"].as_str().unwrap().to_string();
                (prompt, format!(" {}", i["answers"][0].as_str().unwrap()))
            })
            .collect::<HashMap<_, _>>(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, tiers(&stub)).unwrap();
    let out = dir.path().join("out");
    let run = calibrate(
        Path::new(FIXTURE),
        &config,
        &out,
        dir.path(),
        &["--reference"],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("chosen: "), "{stdout}");

    // Every item ran locally and once on the stronger tier (through the guard: audited).
    let records = read_jsonl(&out.join("records.jsonl"));
    assert_eq!(records.len(), items.len());
    assert_eq!(stub.received().len(), items.len());
    for r in &records {
        assert_eq!(r["reference_correct"], true, "{r}");
        assert!(r["signals"]["tokens"].as_u64().unwrap() >= 1, "{r}");
        assert!(r["signals"]["first_margin"].as_f64().unwrap() >= 0.0, "{r}");
    }
    let correct = records.iter().filter(|r| r["correct"] == true).count();
    assert!(correct > 0 && correct < records.len(), "{correct}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["items"], items.len());
    assert_eq!(
        report["fit_items"].as_u64().unwrap() + report["report_items"].as_u64().unwrap(),
        items.len() as u64
    );
    let names: Vec<&str> = report["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["signal"].as_str().unwrap())
        .collect();
    for want in ["mean", "q10", "first_margin", "mean_entropy", "combined"] {
        assert!(names.contains(&want), "{names:?}");
    }
    // The stronger tier is always right here: the real cascade's accuracy is the one with an
    // always-correct reference.
    let threshold = &report["threshold"];
    assert_eq!(
        threshold["report_accuracy_real_cascade"],
        threshold["report_accuracy_cascade"]
    );
    let svg = std::fs::read_to_string(out.join("curve.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("real reference tier"));
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("fitted on"), "{markdown}");

    // The same prompts unlabelled: the reference tier's answers are the labels (agreement).
    let unlabelled = dir.path().join("unlabelled.jsonl");
    let mut lines = String::new();
    for item in &items {
        let mut item = item.clone();
        item.as_object_mut().unwrap().remove("answers");
        item.as_object_mut().unwrap().remove("match");
        lines.push_str(&format!("{item}\n"));
    }
    std::fs::write(&unlabelled, lines).unwrap();
    let agreement_out = dir.path().join("agreement");
    let run = calibrate(
        &unlabelled,
        &config,
        &agreement_out,
        dir.path(),
        &["--reference"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let agreed = read_jsonl(&agreement_out.join("records.jsonl"));
    assert_eq!(agreed.len(), items.len());
    for (r, labelled) in agreed.iter().zip(&records) {
        let reference = r["reference_answer"].as_str().unwrap();
        let answer = r["answer"].as_str().unwrap();
        assert_eq!(answer, labelled["answer"].as_str().unwrap(), "{r}");
        assert!(r["reference_correct"].is_null(), "{r}");
        assert_eq!(
            r["correct"] == true,
            edgellm::calibrate::items::agree(answer, reference),
            "{r}"
        );
    }
    let agreeing = agreed.iter().filter(|r| r["correct"] == true).count();
    assert!(agreeing > 0 && agreeing < agreed.len(), "{agreeing}");

    // The snippet, merged into the same configuration, loads; the triggers it sets are the
    // ones the records are judged by.
    let snippet = std::fs::read_to_string(out.join("routing.toml")).unwrap();
    let merged = format!("{snippet}\n{}", tiers(&stub));
    let merged_path = dir.path().join("merged.toml");
    std::fs::write(&merged_path, &merged).unwrap();
    let loaded = edgellm::config::ServeConfig::from_raw(
        edgellm::config::RawConfig::from_file(&merged_path).unwrap(),
    )
    .unwrap();
    let triggers = loaded.routing.triggers.clone();
    assert!(triggers.confidence_enabled(), "{snippet}");
    let predicted: Vec<bool> = records
        .iter()
        .map(|r| {
            let signals: edgellm::route::confidence::Signals =
                serde_json::from_value(r["signals"].clone()).unwrap();
            edgellm::route::confidence::is_low(&triggers, &signals)
        })
        .collect();
    let low = predicted.iter().filter(|l| **l).count();
    assert!(low > 0 && low < records.len(), "{low} of {}", records.len());

    // A real server with that configuration escalates exactly those answers.
    let server = Server::start_with_config(Some(&merged), &[]);
    let client = crate::support::http_client();
    let mut escalated = 0;
    for (item, want_low) in items.iter().zip(&predicted) {
        let response = client
            .post(server.url("/v1/completions"))
            .json(&json!({
                "prompt": item["prompt"], "max_tokens": item["max_tokens"],
                "stop": ["\n"], "temperature": 0
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let tier = response.headers()["x-edgellm-tier"]
            .to_str()
            .unwrap()
            .to_string();
        let reason = response.headers()["x-edgellm-reason"]
            .to_str()
            .unwrap()
            .to_string();
        let body: Value = response.json().await.unwrap();
        if tier == "cloud" {
            escalated += 1;
            assert_eq!(reason, "low_confidence", "{item}");
            assert_eq!(
                body["choices"][0]["text"].as_str().unwrap().trim(),
                item["answers"][0].as_str().unwrap()
            );
        }
        assert_eq!(
            tier == "cloud",
            *want_low,
            "item {}: the report predicted {}, the server answered on {tier} ({reason})",
            item["id"],
            if *want_low { "low" } else { "not low" }
        );
    }
    assert_eq!(escalated, low);
    // The live view counts every judged answer and the low ones.
    let status = crate::support::get_json(server.url("/v1/status").parse().unwrap()).await;
    assert_eq!(status["confidence"]["judged"], items.len());
    assert_eq!(status["confidence"]["low"], low);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!("edgellm_route_confidence_low_total {low}")),
        "{metrics}"
    );
    assert!(metrics.contains("edgellm_route_confidence_token_probability_bucket"));
}

#[test]
fn calibrate_refits_from_records_and_refuses_what_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[model]\nslots = 1\n").unwrap();
    // An unlabelled item without --reference: refused before loading anything.
    let unlabelled = dir.path().join("unlabelled.jsonl");
    std::fs::write(&unlabelled, "{\"id\":\"a\",\"prompt\":\"Hello\"}\n").unwrap();
    let run = Command::new(edgellm_bin())
        .args(["calibrate", "--set"])
        .arg(&unlabelled)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("need --reference"), "{stderr}");
    // --reference without a remote tier.
    let run = Command::new(edgellm_bin())
        .args(["calibrate", "--reference", "--set"])
        .arg(&unlabelled)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("x"))
        .arg("-m")
        .arg(default_model())
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("needs a tier besides"), "{stderr}");
    // Replaying records: no model, same figures for the same seed.
    let records = dir.path().join("records.jsonl");
    let mut lines = String::new();
    for i in 0..60 {
        let correct = i % 3 != 0;
        let mean = if correct { -0.2 } else { -1.5 } - f64::from(i) * 0.013;
        lines.push_str(
            &json!({"id": format!("r{i}"), "task": if i % 2 == 0 {"a"} else {"b"},
                "answer": "x", "correct": correct, "millis": 1,
                "signals": {"mean": mean, "window_min": mean, "min": mean, "q10": mean,
                    "q25": mean, "sum": mean, "first": mean, "tokens": 2,
                    "first_margin": 1.0, "mean_entropy": 0.5}})
            .to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(&records, lines).unwrap();
    let replay = |out: &str| {
        let run = Command::new(edgellm_bin())
            .args(["calibrate", "--bootstrap", "50", "--target-share", "0.34"])
            .arg("--records")
            .arg(&records)
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(dir.path().join(out))
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        std::fs::read_to_string(dir.path().join(out).join("report.json")).unwrap()
    };
    let first: Value = serde_json::from_str(&replay("one")).unwrap();
    let second: Value = serde_json::from_str(&replay("two")).unwrap();
    assert_eq!(first["threshold"], second["threshold"]);
    let mean = first["signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["signal"] == "mean")
        .unwrap();
    assert_eq!(mean["report"]["auroc"], 1.0, "{mean}");
    let share = first["threshold"]["fit_share_escalated"].as_f64().unwrap();
    assert!((share - 0.34).abs() < 0.05, "{share}");
}
