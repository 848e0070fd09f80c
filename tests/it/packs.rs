//! Knowledge packs end to end: `edgellm pack build/query` on a fixture document set, refusals
//! of files that are not packs, and pack requests answered locally and forced remote through
//! the recording stand-in upstream (passages redacted, chunk ids in the audit rows).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::server::Server;
use crate::support::{edgellm_bin, network_opt_in};
use crate::upstream_stub::{Mode, Stub};

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/packs/docs");
/// Values planted in the fixture documents that the guard must keep on the device.
const PLANTED: [&str; 2] = ["service.desk@plant-7.example", "AKIAZ7Q2EXAMPLE4KEY9"];

fn edgellm(args: &[&str]) -> std::process::Output {
    std::process::Command::new(edgellm_bin())
        .args(args)
        .args([
            "--embedding-model",
            edgellm::paths::default_embedding_model().to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

fn build_fixture(dir: &std::path::Path) -> std::path::PathBuf {
    let pack = dir.join("fixture.pack");
    let out = edgellm(&[
        "pack",
        "build",
        DOCS,
        "-o",
        pack.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["documents"], 3, "{report}");
    let skipped = report["skipped"].to_string();
    assert!(
        skipped.contains("binary.txt") && skipped.contains("not UTF-8"),
        "{report}"
    );
    assert!(skipped.contains("notes.pdf"), "{report}");
    pack
}

fn query(pack: &std::path::Path, question: &str, mode: &str) -> Vec<Value> {
    let out = edgellm(&[
        "pack",
        "query",
        pack.to_str().unwrap(),
        question,
        "-k",
        "3",
        "--json",
        "--mode",
        mode,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn build_and_query_a_pack() {
    let dir = tempfile::tempdir().unwrap();
    let pack = build_fixture(dir.path());
    for (question, path, heading) in [
        (
            "What does alarm E17 mean?",
            "compressor.md",
            "Compressor C-200 > Alarms",
        ),
        (
            "how often should the valve stem be greased",
            "valves/ball-valve.html",
            "Ball valve maintenance",
        ),
        ("static IP address for the gateway", "network.txt", ""),
        (
            "the seat of the valve leaks",
            "valves/ball-valve.html",
            "Ball valve maintenance > Leaks",
        ),
    ] {
        for mode in ["hybrid", "bm25", "vector"] {
            let hits = query(&pack, question, mode);
            assert!(!hits.is_empty(), "{mode}: {question}");
            assert_eq!(hits[0]["path"], path, "{mode}: {question}: {hits:?}");
            if mode == "hybrid" {
                assert_eq!(hits[0]["heading"], heading, "{question}: {hits:?}");
            }
        }
    }
    // Provenance: the offsets point at the chunk's text in the document.
    let hit = &query(&pack, "What does alarm E17 mean?", "hybrid")[0];
    let doc = std::fs::read_to_string(format!("{DOCS}/compressor.md")).unwrap();
    let (start, end) = (
        hit["start"].as_u64().unwrap() as usize,
        hit["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(doc[start..end].trim(), hit["text"].as_str().unwrap());
    // The HTML's script is not text.
    let hits = query(&pack, "not part of the text document write", "bm25");
    assert!(
        hits.iter()
            .all(|h| !h["text"].as_str().unwrap().contains("document.write")),
        "{hits:?}"
    );
    // Questions that are all FTS5 syntax or punctuation are not errors.
    for odd in ["\"* OR NEAR(", "???", "ünïcödé ☃"] {
        let out = edgellm(&["pack", "query", pack.to_str().unwrap(), odd, "--json"]);
        assert!(
            out.status.success(),
            "{odd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn files_that_are_not_packs_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pack = build_fixture(dir.path());
    let bytes = std::fs::read(&pack).unwrap();
    let garbage = dir.path().join("garbage.pack");
    std::fs::write(
        &garbage,
        b"definitely not a database, just some bytes ........",
    )
    .unwrap();
    let truncated = dir.path().join("truncated.pack");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let other_db = dir.path().join("other.pack");
    rusqlite::Connection::open(&other_db)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let future = dir.path().join("future.pack");
    std::fs::write(&future, &bytes).unwrap();
    rusqlite::Connection::open(&future)
        .unwrap()
        .pragma_update(None, "user_version", 9)
        .unwrap();
    let empty = dir.path().join("empty.pack");
    std::fs::write(&empty, b"").unwrap();
    for (file, expect) in [
        (&garbage, "not an edgellm knowledge pack"),
        (&truncated, ""),
        (&other_db, "not an edgellm knowledge pack"),
        (&future, "schema version 9"),
        (&empty, "not an edgellm knowledge pack"),
        (&dir.path().join("missing.pack"), "cannot open pack"),
    ] {
        let out = edgellm(&["pack", "query", file.to_str().unwrap(), "alarm"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: accepted", file.display());
        assert!(
            stderr.starts_with("error: "),
            "{}: {stderr}",
            file.display()
        );
        assert!(stderr.contains(expect), "{}: {stderr}", file.display());
        assert!(!stderr.contains("panicked"), "{}: {stderr}", file.display());
        // And a server configured with it refuses to start, naming the pack.
        let stderr = serve_refuses(
            dir.path(),
            &format!(
                "[[packs]]\nname = \"manuals\"\npath = \"{}\"\n",
                file.display()
            ),
        );
        assert!(stderr.contains("[[packs]] manuals"), "{stderr}");
    }
    // Per-route packs: a route that takes no pack, and two packs for one route, are refused.
    let pack_entry = |name: &str, routes: &str| {
        format!(
            "[[packs]]\nname = \"{name}\"\npath = \"{}\"\nroutes = {routes}\n",
            pack.display()
        )
    };
    for (config_text, expect) in [
        (
            pack_entry("manuals", "[\"/v1/completions\"]"),
            "routes: \"/v1/completions\" is not one of",
        ),
        (
            pack_entry("manuals", "[\"/api/chat\"]") + &pack_entry("more", "[\"/api/chat\"]"),
            "[[packs]] more and manuals are both the pack of /api/chat",
        ),
    ] {
        let stderr = serve_refuses(dir.path(), &config_text);
        assert!(stderr.contains(expect), "{stderr}");
    }
}

/// `edgellm serve` with `config_text`, which must refuse to start: its stderr.
fn serve_refuses(dir: &std::path::Path, config_text: &str) -> String {
    let config = dir.join("refused.toml");
    std::fs::write(&config, config_text).unwrap();
    let out = std::process::Command::new(edgellm_bin())
        .args(["serve", "--port", "0", "--config", config.to_str().unwrap()])
        .env("EDGELLM_DATA_DIR", dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "started: {stderr}");
    stderr
}

async fn chat(
    server: &Server,
    body: Value,
    remote: bool,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = crate::support::http_client()
        .post(server.url("/v1/chat/completions"))
        .json(&body);
    if remote {
        request = request.header("x-edgellm-route", "remote");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A pack request answered on the device, then 500 forced to the cloud tier: every passage the
/// upstream saw was redacted, nothing planted in the documents reached it, and every audit row
/// names the chunks that left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_requests_locally_and_through_the_egress_guard() {
    let dir = tempfile::tempdir().unwrap();
    let pack = build_fixture(dir.path());
    let stub = Stub::start(Mode::Echo);
    let config = format!(
        "[model]\nslots = 1\nctx_size = 2048\n[routing]\nbreaker_failures = 100000\n\
         [[tiers]]\nname = \"local\"\ntype = \"local\"\n\
         [[tiers]]\nname = \"cloud\"\ntype = \"openai_chat\"\nurl = \"{}\"\nmodel = \"big\"\ntimeout_secs = 10\n\
         [[packs]]\nname = \"manuals\"\npath = \"{}\"\ntop_k = 3\n\
         [[packs]]\nname = \"ollama-default\"\npath = \"{}\"\ntop_k = 2\nroutes = [\"/api/chat\"]\n{}",
        stub.base,
        pack.display(),
        pack.display(),
        network_opt_in()
    );
    let server = Server::start_with_config(Some(&config), &[]);

    // On the device.
    let (status, headers, body) = chat(
        &server,
        json!({"messages": [{"role": "user", "content": "Who do I report repeated E17 alarms to?"}],
               "max_tokens": 8, "edgellm": {"pack": "manuals"}}),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-edgellm-tier"], "local");
    let cited = &body["edgellm"]["pack"];
    assert_eq!(cited["name"], "manuals", "{body}");
    let chunks: Vec<i64> = cited["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(chunks.len(), 3);
    assert_eq!(cited["chunks"][0]["path"], "compressor.md", "{body}");
    let header_ids = headers["x-edgellm-pack-chunks"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        header_ids,
        chunks
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(stub.received().is_empty(), "nothing left the device");

    // A request that names no pack: on /api/chat, the pack configured for that route; on Chat
    // Completions (no pack for its route, none is the default), none.
    let response = crate::support::http_client()
        .post(server.url("/api/chat"))
        .json(&json!({"messages": [{"role": "user", "content": "Who do I report repeated E17 alarms to?"}],
                      "stream": false, "options": {"num_predict": 2}}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["edgellm"]["pack"]["name"], "ollama-default", "{body}");
    assert_eq!(
        body["edgellm"]["pack"]["chunks"].as_array().map(Vec::len),
        Some(2)
    );
    let (status, headers, body) = chat(
        &server,
        json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["edgellm"].get("pack").is_none() && headers.get("x-edgellm-pack-chunks").is_none()
    );

    // The same citation on the other chat routes, whole and streamed: Responses, Ollama's chat,
    // and a Chat Completions stream (on its last chunk, the one with the `edgellm` object).
    let question = "Who do I report repeated E17 alarms to?";
    let ids_of = |edgellm: &Value| -> Vec<i64> {
        edgellm["pack"]["chunks"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["id"].as_i64()).collect())
            .unwrap_or_default()
    };
    let pack = json!({"pack": "manuals"});
    let messages = json!([{"role": "user", "content": question}]);
    let routes = [
        (
            "/v1/chat/completions",
            json!({"messages": messages, "stream": true, "max_tokens": 4, "edgellm": pack}),
        ),
        (
            "/v1/responses",
            json!({"input": question, "max_output_tokens": 16, "edgellm": pack}),
        ),
        (
            "/v1/responses",
            json!({"input": question, "stream": true, "max_output_tokens": 16, "edgellm": pack}),
        ),
        (
            "/api/chat",
            json!({"messages": messages, "stream": false, "options": {"num_predict": 4}, "edgellm": pack}),
        ),
        (
            "/api/chat",
            json!({"messages": messages, "options": {"num_predict": 4}, "edgellm": pack}),
        ),
    ];
    for (path, body) in routes {
        let response = crate::support::http_client()
            .post(server.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path} {body}");
        assert_eq!(
            response.headers()["x-edgellm-pack-chunks"]
                .to_str()
                .unwrap(),
            header_ids,
            "{path}"
        );
        let text = response.text().await.unwrap();
        // Every JSON value in the answer (SSE data lines, NDJSON lines, or the whole body)
        // that carries an `edgellm` object.
        let cited: Vec<Vec<i64>> = text
            .lines()
            .map(|l| l.strip_prefix("data: ").unwrap_or(l))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| {
                [&v["edgellm"], &v["response"]["edgellm"]]
                    .into_iter()
                    .find(|e| e.is_object())
                    .map(ids_of)
            })
            .collect();
        assert!(!cited.is_empty(), "{path}: no edgellm object in {text}");
        assert!(
            cited.iter().all(|ids| ids == &chunks),
            "{path}: {cited:?} in {text}"
        );
    }

    // Unknown packs and bad top_k are 400s naming the field.
    let (status, _, body) = chat(
        &server,
        json!({"messages": [{"role": "user", "content": "x"}], "edgellm": {"pack": "nope"}}),
        false,
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("edgellm.pack")),
        "{body}"
    );
    let (status, _, body) = chat(&server, json!({"messages": [{"role": "user", "content": "x"}], "edgellm": {"pack": "manuals", "top_k": 0}}), false).await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("edgellm.top_k")),
        "{body}"
    );

    // Off the device, 500 times: questions that pull the documents with planted values.
    let questions = [
        "Who do I report repeated E17 alarms to?",
        "Which key does remote maintenance use for the backup upload?",
        "What is the email of the service desk?",
        "How is the cellular modem configured?",
        "What does alarm E17 mean and who gets the report?",
    ];
    let server = &server;
    let results: Vec<(u16, String, Value)> =
        futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
            futures::stream::iter((0..500).map(|i| {
                let question = questions[i % questions.len()];
                async move {
                    let (status, headers, body) = chat(
                    server,
                    json!({"messages": [{"role": "user", "content": question}], "max_tokens": 16,
                           "edgellm": {"pack": "manuals"}}),
                    true,
                )
                .await;
                    let tier = headers
                        .get("x-edgellm-tier")
                        .map_or(String::new(), |v| v.to_str().unwrap().to_string());
                    (status, tier, body)
                }
            })),
            8,
        ))
        .await;
    for (status, tier, body) in &results {
        assert_eq!((*status, tier.as_str()), (200, "cloud"), "{body}");
    }
    let received = stub.received();
    assert_eq!(received.len(), 500);
    let upstream = stub.bytes();
    for planted in PLANTED {
        assert!(
            !crate::egress::contains(&upstream, planted.as_bytes()),
            "{planted} reached the upstream"
        );
    }
    let upstream_text = String::from_utf8_lossy(&upstream);
    assert!(
        upstream_text.contains("PASSAGES"),
        "the passages went with the question"
    );
    assert!(
        upstream_text.contains("[EMAIL_") || upstream_text.contains("EMAIL"),
        "redacted, not dropped"
    );
    // The echoed answers come back restored to the client (the placeholder mapping is local).
    assert!(
        results
            .iter()
            .any(|(_, _, b)| b.to_string().contains("service.desk@plant-7.example")),
        "answers are restored on the device"
    );

    // Every egress audit row names the chunks that left.
    let ledger = edgellm::ledger::Ledger::open_reader(
        &server.data_dir.path().join(edgellm::ledger::FILE_NAME),
        edgellm::ledger::LedgerOptions::default(),
    )
    .unwrap();
    let rows = ledger
        .audit_list(jiff::Timestamp::MIN, jiff::Timestamp::MAX, 10_000)
        .unwrap();
    let egress: Vec<_> = rows
        .iter()
        .filter(|r| r.record.tier.as_deref() == Some("cloud"))
        .collect();
    assert_eq!(egress.len(), 500);
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for row in egress {
        assert_eq!(row.record.sources.len(), 3, "{:?}", row.record);
        assert!(
            row.record
                .sources
                .iter()
                .all(|s| s.starts_with("pack:manuals#"))
        );
        seen.extend(row.record.sources.iter().cloned());
    }
    assert!(seen.len() >= 3);
}

/// An encrypted pack: `pack encrypt` for one device's key. The container holds none of the
/// documents' text; that device queries and serves it (from memory) with the plain pack's hits;
/// another device, a key file not allowed, and a model path given a pack are refused by name;
/// nothing the server wrote holds the documents' text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_pack_opens_only_on_its_device_and_stays_off_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let pack = build_fixture(dir.path());
    let store = dir.path().join("device/keys/device.json");
    let with_store = |args: &[&str], store: &std::path::Path| {
        let out = std::process::Command::new(edgellm_bin())
            .args(args)
            .args(["--key-store", store.to_str().unwrap()])
            .env_remove("EDGELLM_TPM_TCTI")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, recipient, err) = with_store(&["key", "init", "--backend", "file"], &store);
    assert!(ok, "{err}");
    let enc = dir.path().join("fixture.pack.enc");
    let out = std::process::Command::new(edgellm_bin())
        .args(["pack", "encrypt", pack.to_str().unwrap(), "-o"])
        .arg(&enc)
        .args(["--recipient", &recipient, "--data-key"])
        .arg(dir.path().join("data.key"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["model"], "fixture", "{report}");
    let sealed = std::fs::read(&enc).unwrap();
    let holds =
        |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(holds(&std::fs::read(&pack).unwrap(), PLANTED[0]));
    for needle in PLANTED.iter().chain(&["compressor", "alarm"]) {
        assert!(!holds(&sealed, needle), "{needle} in the container");
    }

    // The device queries it as it queries the plain pack.
    let question = "Who do I report repeated E17 alarms to?";
    let plain: Vec<Value> = query(&pack, question, "hybrid");
    let query_args = |pack: &std::path::Path| {
        vec![
            "pack".to_string(),
            "query".into(),
            pack.display().to_string(),
            question.into(),
            "-k".into(),
            "3".into(),
            "--json".into(),
            "--embedding-model".into(),
            edgellm::paths::default_embedding_model()
                .display()
                .to_string(),
        ]
    };
    let mut allowed = query_args(&enc);
    allowed.push("--allow-key-file".into());
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let (ok, hits, err) = with_store(&allowed, &store);
    assert!(ok, "{err}");
    let hits: Vec<Value> = hits
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits, plain);

    // Refusals, each naming its reason.
    let not_allowed = query_args(&enc);
    let not_allowed: Vec<&str> = not_allowed.iter().map(String::as_str).collect();
    let (ok, _, err) = with_store(&not_allowed, &store);
    assert!(!ok && err.contains("allow_key_file"), "{err}");
    let other = dir.path().join("other/keys/device.json");
    assert!(with_store(&["key", "init", "--backend", "file"], &other).0);
    let (ok, _, err) = with_store(&allowed, &other);
    assert!(!ok && err.contains("not a recipient"), "{err}");
    let (ok, _, err) = with_store(
        &[
            "run",
            "-m",
            enc.to_str().unwrap(),
            "-p",
            "x",
            "-n",
            "1",
            "--allow-key-file",
        ],
        &store,
    );
    assert!(
        !ok && err.contains("holds a knowledge pack, not a model"),
        "{err}"
    );
    let (ok, checked, err) = with_store(
        &["key", "check", enc.to_str().unwrap(), "--allow-key-file"],
        &store,
    );
    assert!(ok && checked.contains("a knowledge pack"), "{checked}{err}");

    // Served from memory: the same chunks as the plain pack, and no file the server wrote
    // (its data directory) or /dev/shm holds the documents' text.
    let config = format!(
        "[model]\nslots = 1\nctx_size = 2048\n[keys]\nstore = \"{}\"\nallow_key_file = true\n\
         [[packs]]\nname = \"manuals\"\npath = \"{}\"\ntop_k = 3\n",
        store.display(),
        enc.display()
    );
    let server = Server::start_with_config(Some(&config), &[]);
    let (status, _, body) = chat(
        &server,
        json!({"messages": [{"role": "user", "content": question}],
               "max_tokens": 4, "edgellm": {"pack": "manuals"}}),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let served: Vec<i64> = body["edgellm"]["pack"]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = plain
        .iter()
        .map(|h| h["chunk_id"].as_i64().unwrap())
        .collect();
    assert_eq!(served, expected, "{body}");
    let mut files = Vec::new();
    for root in [server.data_dir.path(), std::path::Path::new("/dev/shm")] {
        files_under(root, &mut files);
    }
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !PLANTED.iter().any(|p| holds(&bytes, p)),
            "{} holds the pack's text",
            file.display()
        );
    }
}

fn files_under(root: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => files_under(&entry.path(), out),
            Ok(kind) if kind.is_file() => out.push(entry.path()),
            _ => {}
        }
    }
}
