//! `edgellm bench` through its library entry point: short real runs against the embedded engine,
//! a real `edgellm serve`, and a scripted loopback server; the report files it writes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;

use clap::Parser;
use edgellm::bench::BenchArgs;
use serde_json::Value;

use crate::server::Server;
use crate::support::default_model;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

/// The benchmark tests run one at a time: two benchmarks at once on a small machine measure
/// each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn args(flags: &[&str]) -> BenchArgs {
    Cli::try_parse_from(std::iter::once("bench").chain(flags.iter().copied()))
        .expect("flags parse")
        .args
}

/// Runs `edgellm bench` with these flags, writing into a new directory; returns it and the JSON.
fn bench(flags: &[&str]) -> (tempfile::TempDir, Value) {
    let out = tempfile::tempdir().unwrap();
    let mut all = flags.to_vec();
    let dir = out.path().to_str().unwrap().to_string();
    all.extend(["--no-progress", "--out", &dir]);
    edgellm::bench::run(&args(&all), &default_model()).expect("bench runs");
    let json = std::fs::read_to_string(out.path().join("report.json")).unwrap();
    (out, serde_json::from_str(&json).unwrap())
}

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A fake sysfs: two CPUs at full speed, one zone at 85 °C over an 80 °C passive trip point.
fn hot_sysfs() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for cpu in 0..2 {
        let dir = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
        write(root.path(), &format!("{dir}/scaling_cur_freq"), "1800000\n");
        write(root.path(), &format!("{dir}/scaling_max_freq"), "1800000\n");
    }
    let zone = "sys/class/thermal/thermal_zone0";
    write(root.path(), &format!("{zone}/type"), "cpu-thermal\n");
    write(root.path(), &format!("{zone}/temp"), "85000\n");
    write(root.path(), &format!("{zone}/trip_point_0_temp"), "80000\n");
    write(
        root.path(),
        &format!("{zone}/trip_point_0_type"),
        "passive\n",
    );
    root
}

fn phase_count(report: &Value, target: u64, phase: &str) -> usize {
    report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == target && r["phase"] == phase)
        .count()
}

/// Checks that every tag opened in the SVG is closed, in order, and returns the tag names.
fn svg_tags(svg: &str) -> Vec<String> {
    let mut open: Vec<String> = Vec::new();
    let mut names = Vec::new();
    for piece in svg.split('<').skip(1) {
        let tag = &piece[..piece.find('>').expect("tag closed with >")];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop().as_deref(), Some(name), "closing </{name}>");
        } else {
            let name = tag.split_whitespace().next().unwrap().trim_end_matches('/');
            names.push(name.to_string());
            if !tag.ends_with('/') {
                open.push(name.to_string());
            }
        }
    }
    assert!(open.is_empty(), "unclosed tags {open:?}");
    names
}

fn polyline_points(svg: &str, id: &str) -> Option<usize> {
    let start = svg.find(&format!(r#"<polyline id="{id}""#))?;
    let tag = &svg[start..start + svg[start..].find("/>")?];
    let points = tag.split(r#" points=""#).nth(1)?.trim_end_matches('"');
    Some(points.split(' ').count())
}

#[test]
fn bench_embedded_engine_short_sustained_run_with_hot_sysfs() {
    let _serial = one_at_a_time();
    let sysfs = hot_sysfs();
    let (out, report) = bench(&[
        "-t",
        "2",
        "--requests",
        "3",
        "--concurrency",
        "2",
        "--prompt-tokens",
        "48",
        "--gen-tokens",
        "8",
        "-r",
        "2",
        "--duration",
        "2s",
        "--sample-interval",
        "500ms",
        "--sysfs-root",
        sysfs.path().to_str().unwrap(),
    ]);
    assert_eq!(report["schema"], "edgellm-bench/1");
    assert_eq!(report["settings"]["prompt_tokens"], 48);
    let target = &report["targets"][0];
    assert_eq!(target["kind"], "engine");
    assert_eq!(target["model"], "gemma-3-270m-q4_k_m");
    assert_eq!(target["prefill"]["test"], "pp48");
    assert_eq!(target["decode"]["test"], "tg8");
    assert_eq!(target["prefill"]["tokens_per_second"]["count"], 2);
    assert!(
        target["prefill"]["tokens_per_second"]["mean"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        target["decode"]["tokens_per_second"]["mean"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(target["peak_resident_bytes"].as_u64().unwrap() > 50 << 20);
    let latency = &target["latency"];
    assert_eq!(latency["requests"], 3);
    assert_eq!(latency["concurrency"], 2);
    assert_eq!(
        latency["generated_tokens"], 24,
        "ignore-eos: exactly 8 tokens each"
    );
    for key in ["ttft_ms", "e2e_ms"] {
        let p = &latency[key];
        let (p50, p95, p99) = (
            p["p50"].as_f64().unwrap(),
            p["p95"].as_f64().unwrap(),
            p["p99"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{key}: {p}");
    }
    assert!(latency["ttft_ms"]["max"].as_f64() <= latency["e2e_ms"]["max"].as_f64());
    assert!(report["comparison"].is_null());

    // Every request is in the JSON, with its phase.
    assert_eq!(phase_count(&report, 0, "prefill"), 2);
    assert_eq!(phase_count(&report, 0, "decode"), 2);
    assert_eq!(phase_count(&report, 0, "latency"), 3);
    for request in report["requests"].as_array().unwrap() {
        assert_eq!(request["timing"], "engine");
        match request["phase"].as_str().unwrap() {
            "prefill" => assert_eq!(
                (
                    request["prompt_tokens"].as_u64(),
                    request["generated_tokens"].as_u64()
                ),
                (Some(48), Some(1))
            ),
            _ => assert_eq!(request["generated_tokens"], 8),
        }
    }

    // The sustained series carries the fake sysfs readings, and the trip point flags throttling.
    let sustained = &report["sustained"];
    let samples = sustained["samples"].as_array().unwrap();
    assert!((1..=4).contains(&samples.len()), "2 s at 500 ms");
    assert!(samples.last().unwrap()["t_s"].as_f64().unwrap() >= 2.0);
    for sample in samples {
        assert_eq!(sample["cpus"].as_array().unwrap().len(), 2);
        assert_eq!(sample["zones"][0]["temp_c"], 85.0);
        assert!(sample["resident_bytes"].as_u64().unwrap() > 0);
    }
    // Tokens per interval depend on the machine's load; the totals must agree with the requests.
    let sustained_tokens: u64 = report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["phase"] == "sustained")
        .map(|r| r["generated_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(sustained["generated_tokens"], sustained_tokens);
    let throttling = &sustained["throttling"];
    assert_eq!(throttling["throttled"], true);
    assert_eq!(throttling["frequency_available"], true);
    assert_eq!(throttling["thermal_available"], true);
    let kinds: Vec<&str> = throttling["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"trip_point_crossed") && !kinds.contains(&"frequency_below_max"),
        "{kinds:?}"
    );
    assert_eq!(report["system"]["thermal_available"], true);

    // The chart is well-formed SVG with both series, one point per sample, and a latency bar.
    let svg = std::fs::read_to_string(out.path().join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    let tags = svg_tags(&svg);
    assert_eq!(tags[0], "svg");
    assert_eq!(
        polyline_points(&svg, "tokens-per-second"),
        Some(samples.len())
    );
    assert_eq!(polyline_points(&svg, "temperature"), Some(samples.len()));
    assert!(svg.contains(r#"class="latency-bar""#));
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for expected in [
        "pp48 t/s",
        "tg8 t/s",
        "## Sustained run",
        "throttling: DETECTED",
        "passive trip point",
        "chart.svg",
    ] {
        assert!(
            markdown.contains(expected),
            "report.md lacks {expected:?}:\n{markdown}"
        );
    }
}

#[test]
fn bench_edgellm_serve_over_both_apis_with_comparison_and_background_load() {
    let _serial = one_at_a_time();
    let server = Server::start(&["--slots", "2"]);
    let url = server.base.clone();
    let (_out, report) = bench(&[
        "--url",
        &url,
        "--compare",
        &url,
        "--requests",
        "2",
        "--prompt-tokens",
        "40",
        "--gen-tokens",
        "6",
        "-r",
        "2",
        "--background-cmd",
        "sleep 600",
    ]);
    assert_eq!(report["targets"].as_array().unwrap().len(), 2);
    for (index, target) in report["targets"].as_array().unwrap().iter().enumerate() {
        assert_eq!(target["kind"], "http");
        assert_eq!(target["api"], "llama");
        assert!(target["peak_resident_bytes"].is_null());
        assert_eq!(
            target["latency"]["generated_tokens"],
            6 * phase_count(&report, index as u64, "latency")
        );
        assert!(
            target["prefill"]["tokens_per_second"]["mean"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }
    // Latency requests alternate in rounds: 2 requests in 2 rounds of 1 per target.
    assert_eq!(
        phase_count(&report, 0, "latency") + phase_count(&report, 1, "latency"),
        4
    );
    for request in report["requests"].as_array().unwrap() {
        assert_eq!(
            request["timing"], "server",
            "llama.cpp API timings are used"
        );
        let prompt = request["prompt_tokens"].as_u64().unwrap();
        if request["phase"] == "prefill" {
            assert!(
                (30..=50).contains(&prompt),
                "about 40 prompt tokens, got {prompt}"
            );
        }
    }
    let comparison = &report["comparison"];
    assert_eq!(comparison["rounds"].as_array().unwrap().len(), 2);
    for key in ["prefill", "decode", "ttft", "e2e"] {
        let ratio = comparison["median"][key].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio.is_finite(), "{key}: {ratio}");
    }
    let background = &report["background"];
    assert_eq!(background["threads"], 0);
    assert_eq!(background["command"], "sleep 600");
    assert!(background["command_exited_early"].is_null(), "{background}");

    let (_out, report) = bench(&[
        "--url",
        &url,
        "--api",
        "openai",
        "--requests",
        "2",
        "--concurrency",
        "2",
        "--prompt-tokens",
        "40",
        "--gen-tokens",
        "6",
        "-r",
        "1",
    ]);
    let target = &report["targets"][0];
    assert_eq!(target["api"], "openai");
    assert_eq!(
        target["model"], "gemma-3-270m-q4_k_m",
        "found with GET /v1/models"
    );
    for request in report["requests"].as_array().unwrap() {
        assert_eq!(request["timing"], "client");
        assert!(
            request["prompt_tokens"].as_u64().unwrap() > 0,
            "usage read from the stream"
        );
    }
}

/// A scripted llama.cpp-style server: a body without chunked encoding (ended by closing the
/// connection), two tokens, then a final event carrying the last token and server timings.
fn scripted_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if line.trim().is_empty() {
                    break;
                }
            }
            if length == 0 {
                let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                continue;
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let prompt_chars = serde_json::from_slice::<Value>(&body).unwrap()["prompt"]
                .as_str()
                .unwrap()
                .len();
            let events = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n\
                 data: {{\"content\":\"a\",\"stop\":false}}\n\n\
                 data: {{\"content\":\"b\",\"stop\":false}}\n\n\
                 data: {{\"content\":\"c\",\"stop\":true,\"tokens_predicted\":3,\"tokens_evaluated\":{},\
                 \"timings\":{{\"prompt_per_second\":1000.0,\"predicted_per_second\":50.0}}}}\n\n",
                prompt_chars / 5
            );
            let _ = stream.write_all(events.as_bytes());
        }
    });
    base
}

#[test]
fn bench_reads_a_llama_server_style_stream() {
    let _serial = one_at_a_time();
    let url = scripted_server();
    let report = edgellm::bench::measure(
        &args(&[
            "--duration",
            "1s",
            "--sample-interval",
            "250ms",
            "--concurrency",
            "2",
            "--url",
            &url,
            "--requests",
            "2",
            "--prompt-tokens",
            "100",
            "--gen-tokens",
            "3",
            "-r",
            "1",
            "--no-progress",
        ]),
        &default_model(),
    )
    .expect("bench runs");
    let report = serde_json::to_value(&report).unwrap();
    let target = &report["targets"][0];
    assert_eq!(target["prefill"]["tokens_per_second"]["mean"], 1000.0);
    assert_eq!(target["decode"]["tokens_per_second"]["mean"], 50.0);
    // The sustained series counts streamed tokens and finished requests per interval.
    let samples = report["sustained"]["samples"].as_array().unwrap();
    assert!(!samples.is_empty());
    for sample in samples {
        assert!(
            sample["tokens_per_second"].as_f64().unwrap() > 0.0,
            "{sample}"
        );
        assert!(
            sample["completed_requests"].as_u64().unwrap() > 0,
            "{sample}"
        );
        assert!(sample["resident_bytes"].is_null(), "no embedded engine");
        assert_eq!(sample["cpus"], serde_json::json!([]), "no cpufreq here");
    }
    let throttling = &report["sustained"]["throttling"];
    assert_eq!(throttling["frequency_available"], false);
    assert_eq!(throttling["thermal_available"], false);
    for request in report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["phase"] != "sustained")
    {
        assert_eq!(
            request["generated_tokens"], 3,
            "the final event's token counts"
        );
        let prompt = request["prompt_tokens"].as_u64().unwrap();
        if request["phase"] == "prefill" || request["phase"] == "latency" {
            assert!(
                (95..=105).contains(&prompt),
                "calibrated to 5 chars per token: {prompt}"
            );
        }
    }
}

#[test]
fn bench_flags_and_errors() {
    let defaults = args(&[]);
    assert_eq!(
        (
            defaults.requests,
            defaults.concurrency,
            defaults.prompt_tokens,
            defaults.gen_tokens
        ),
        (16, 1, 512, 128)
    );
    assert!(defaults.duration.is_zero());
    assert_eq!(defaults.sample_interval, std::time::Duration::from_secs(1));
    assert_eq!(args(&["--duration", "10m"]).duration.as_secs(), 600);
    assert!(Cli::try_parse_from(["bench", "-m", "x.gguf", "--url", "http://h"]).is_err());
    assert!(Cli::try_parse_from(["bench", "--duration", "ten"]).is_err());

    let closed = format!("http://127.0.0.1:{}", crate::server::free_port());
    let error = edgellm::bench::measure(
        &args(&["--url", &closed, "--no-progress"]),
        &default_model(),
    )
    .unwrap_err();
    assert!(format!("{error:#}").contains("cannot reach"), "{error:#}");
    let error =
        edgellm::bench::measure(&args(&["--concurrency", "0"]), &default_model()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("--concurrency must be at least 1"),
        "{error}"
    );
    let error = edgellm::bench::measure(
        &args(&["--url", "https://api.example.com"]),
        &default_model(),
    )
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("only plain http://"),
        "{error:#}"
    );
}
