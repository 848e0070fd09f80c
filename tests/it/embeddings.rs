//! Embeddings end to end: the default embedding model (all-MiniLM-L6-v2, converted by
//! `edgellm model import` during setup) served by `edgellm serve` beside the generation model.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::server::Server;

fn model_dir() -> std::path::PathBuf {
    let dir = edgellm::paths::home().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "embedding model source missing at {}: run scripts/install-embedding-model.sh",
        dir.display()
    );
    dir
}

fn embedding_model() -> std::path::PathBuf {
    let path = edgellm::paths::default_embedding_model();
    assert!(
        path.is_file(),
        "default embedding model missing at {}: run scripts/install-embedding-model.sh",
        path.display()
    );
    path
}

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    server.post(path, body).await
}

fn vectors(body: &Value) -> Vec<Vec<f32>> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {body}"))
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    edgellm::embeddings::cosine(a, b)
}

/// The OpenAI client's `embeddings.create` against an independent NumPy forward pass of the
/// original Hugging Face weights (tests/py/embedding_reference.py): the converter and the
/// engine agree with it to cosine >= 0.999 on every text, with the same token counts.
#[test]
fn openai_client_matches_an_independent_reference() {
    let server = Server::start(&[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/embedding_reference.py"
    );
    let output = std::process::Command::new("python3")
        .args([script, &server.url("/v1"), model_dir().to_str().unwrap()])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "embedding reference check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(result["min_cosine"].as_f64().unwrap() >= 0.999, "{result}");
}

/// The converter is deterministic: converting the source again gives the pinned file, byte
/// for byte (the sha256 `scripts/install-embedding-model.sh` checks).
#[test]
fn import_reproduces_the_installed_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("again.gguf");
    let done = edgellm::model::import::import_bert(&model_dir(), &out).unwrap();
    let installed = edgellm::model::import::sha256_file(&embedding_model()).unwrap();
    assert_eq!(done.sha256, installed);
    assert_eq!(done.embedding_length, 384);
    assert_eq!(done.pooling, "mean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_behave_like_embeddings() {
    let server = Server::start(&[]);
    let texts = [
        "The pump on line 2 is overheating.",
        "Line two's pump is running too hot.",
        "Invoices are due at the end of the month.",
        "The pump on line 2 is overheating.",
    ];
    let (status, body) = post(
        &server,
        "/v1/embeddings",
        json!({"input": texts, "model": "x"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "all-minilm-l6-v2-f16");
    let v = vectors(&body);
    assert_eq!(v.len(), 4);
    assert!(v.iter().all(|x| x.len() == 384));
    for x in &v {
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
    }
    // Identical inputs, identical vectors (in one batch, at different positions).
    assert!(cosine(&v[0], &v[3]) > 0.99999, "{}", cosine(&v[0], &v[3]));
    // Paraphrases score above unrelated text.
    let similar = cosine(&v[0], &v[1]);
    let unrelated = cosine(&v[0], &v[2]);
    assert!(
        similar > unrelated + 0.3,
        "similar {similar}, unrelated {unrelated}"
    );
    let tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(body["usage"]["total_tokens"].as_u64().unwrap(), tokens);
    assert!(tokens > 20, "{body}");

    // Batch equals one by one.
    for (i, text) in texts.iter().enumerate() {
        let (status, one) = post(&server, "/v1/embeddings", json!({"input": text})).await;
        assert_eq!(status, 200, "{one}");
        let single = &vectors(&one)[0];
        let max_diff = single
            .iter()
            .zip(&v[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < 1e-4,
            "input {i}: batch and single differ by {max_diff}"
        );
    }

    // base64: little-endian f32, the same numbers.
    let (status, b64) = post(
        &server,
        "/v1/embeddings",
        json!({"input": texts[0], "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(status, 200, "{b64}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded.len(), 384);
    assert!(cosine(&decoded, &v[0]) > 0.99999);

    // Token arrays: the same vector as the text they tokenize to.
    let embedder = edgellm::engine::embed::Embedder::start(
        edgellm::engine::embed::EmbedConfig::new(embedding_model()),
    )
    .unwrap();
    let ids = embedder.tokenize(texts[2]);
    let (status, by_ids) = post(&server, "/v1/embeddings", json!({"input": [ids.clone()]})).await;
    assert_eq!(status, 200, "{by_ids}");
    assert!(cosine(&vectors(&by_ids)[0], &v[2]) > 0.99999);
    let (status, flat) = post(&server, "/v1/embeddings", json!({"input": ids})).await;
    assert_eq!(status, 200, "{flat}");
    assert_eq!(vectors(&flat).len(), 1);

    // llama-server's /embedding: pooled vector as the one row; embd_normalize -1 is raw.
    let (status, llama) = post(&server, "/embedding", json!({"content": texts[0]})).await;
    assert_eq!(status, 200, "{llama}");
    let row: Vec<f32> = llama[0]["embedding"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(llama[0]["index"], 0);
    assert!(cosine(&row, &v[0]) > 0.99999);
    let (status, raw) = post(
        &server,
        "/embedding",
        json!({"content": [texts[0], texts[2]], "embd_normalize": -1}),
    )
    .await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(raw.as_array().unwrap().len(), 2);
    let raw0: Vec<f32> = raw[0]["embedding"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let norm: f32 = raw0.iter().map(|a| a * a).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 0.01,
        "mean pooling is not unit length before normalising"
    );
    assert!(cosine(&raw0, &v[0]) > 0.99999);

    // Metrics count what was embedded.
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("edgellm_embedding_requests_total{status=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgellm_embedding_inputs_total")
            && metrics.contains("gen_ai_operation_name=\"embeddings\""),
        "{metrics}"
    );
    // llama-server's families count embedding work as prompt processing and decode calls.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    let embedded = value("edgellm_embedding_tokens_total");
    assert!(embedded > 0.0);
    assert!(value("llamacpp:prompt_tokens_total") >= embedded);
    assert!(value("llamacpp:n_decode_total") >= value("edgellm_embedding_batches_total"));
    assert!(value("edgellm_embedding_batches_total") > 0.0);
}

/// Many clients at once (within the admission limit, `queue_depth` = 16 requests in flight):
/// every answer is right (cross-request batching does not mix inputs up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_without_mixing_inputs() {
    let server = Server::start(&[]);
    let texts: Vec<String> = (0..14)
        .map(|i| format!("Sensor {i} reports {} degrees at station {}.", i * 7, i % 5))
        .collect();
    let (status, reference) = post(&server, "/v1/embeddings", json!({"input": texts})).await;
    assert_eq!(status, 200, "{reference}");
    let reference = vectors(&reference);
    let mut handles = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let url = server.url("/v1/embeddings");
        let body = json!({"input": [text, "an unrelated filler sentence"]});
        handles.push(tokio::spawn(async move {
            let response = crate::support::http_client()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                i,
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }));
    }
    for handle in handles {
        let (i, status, body) = handle.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let got = &vectors(&body)[0];
        let c = cosine(got, &reference[i]);
        assert!(c > 0.9999, "request {i}: cosine {c} to its own text");
    }
}

/// Hostile requests: each is a 400 (or 413) in OpenAI's error shape naming the field, and the
/// server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_embedding_requests_are_refused_clearly() {
    let config = "[embedding]\nmax_inputs = 8\nmax_request_tokens = 600\n";
    let server = Server::start_with_config(Some(config), &[]);
    let long = "word ".repeat(700);
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/embeddings/hostile.jsonl"
    ))
    .unwrap();
    let mut cases: Vec<(Value, &str)> = corpus
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let case: Value = serde_json::from_str(l).unwrap();
            (case["body"].clone(), "")
        })
        .collect();
    cases.push((json!({"input": long}), "input"));
    cases.push((json!({"input": vec!["a"; 9]}), "input"));
    cases.push((json!({"input": vec!["word ".repeat(100); 7]}), "input"));
    cases.push((json!({"input": [vec![0; 600]]}), "input"));
    for (body, param) in cases {
        let (status, answer) = post(&server, "/v1/embeddings", body.clone()).await;
        assert!(
            status == 400 || status == 413,
            "{body} -> {status} {answer}"
        );
        let error = &answer["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body} -> {answer}"
        );
        assert!(error["type"].is_string(), "{body} -> {answer}");
        if !param.is_empty() {
            assert_eq!(error["param"], param, "{body} -> {answer}");
        }
    }
    let (status, long_answer) = post(&server, "/v1/embeddings", json!({"input": long})).await;
    assert_eq!(status, 400);
    assert_eq!(
        long_answer["error"]["code"], "context_length_exceeded",
        "{long_answer}"
    );
    let (status, _) = post(&server, "/embedding", json!({"nothing": 1})).await;
    assert_eq!(status, 400);
    // Still serving.
    let (status, ok) = post(&server, "/v1/embeddings", json!({"input": "still here"})).await;
    assert_eq!(status, 200, "{ok}");
}

/// Without an embedding model, the endpoints say so (501, llama-server's status) and name how
/// to get one; generation is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_embedding_model_the_endpoints_say_so() {
    let server = Server::start_with_config(Some("[embedding]\nenabled = false\n"), &[]);
    let (status, body) = post(&server, "/v1/embeddings", json!({"input": "x"})).await;
    assert_eq!(status, 501, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[embedding]"),
        "{body}"
    );
    let (status, _) = post(
        &server,
        "/v1/completions",
        json!({"prompt": "Hello", "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200);
}

/// `--pooling none` (llama-server's): `/embedding` answers one unnormalised vector per token,
/// whose mean is the mean-pooled vector; the routes that need one pooled vector per input say
/// so with a 400; knowledge packs, which need pooled vectors, refuse the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooling_none_answers_token_vectors() {
    let server = Server::start(&["--pooling", "none"]);
    let text = "hello hello hello";
    let (status, body) = post(&server, "/embedding", json!({"input": text})).await;
    assert_eq!(status, 200, "{body}");
    let rows: Vec<Vec<f32>> = body[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let mut pooled = edgellm::engine::embed::EmbedConfig::new(embedding_model());
    pooled.pooling = Some(edgellm::engine::embed::Pooling::Mean);
    let embedder = edgellm::engine::embed::Embedder::start(pooled).unwrap();
    let tokens = embedder.tokenize(text);
    assert_eq!(
        rows.len(),
        tokens.len(),
        "one row per token (CLS and SEP too)"
    );
    let n_embd = embedder.info().n_embd;
    assert!(rows.iter().all(|r| r.len() == n_embd));
    for row in &rows {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() > 0.01,
            "token vectors are not normalised"
        );
    }
    let mut mean = vec![0f32; n_embd];
    for row in &rows {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x / rows.len() as f32;
        }
    }
    let reference = embedder
        .embed(vec![tokens])
        .unwrap()
        .await
        .unwrap()
        .unwrap();
    assert!(cosine(&mean, &reference[0]) > 0.9999);

    for (path, body) in [
        ("/v1/embeddings", json!({"input": text})),
        ("/api/embed", json!({"model": "x", "input": text})),
    ] {
        let (status, answer) = post(&server, path, body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let message = answer["error"]["message"]
            .as_str()
            .or_else(|| answer["error"].as_str())
            .unwrap_or_else(|| panic!("{path}: {answer}"));
        assert!(message.contains("pooling \"none\""), "{path}: {answer}");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("packs.toml");
    std::fs::write(
        &config,
        format!(
            "[embedding]\nmodel = {:?}\npooling = \"none\"\n[[packs]]\nname = \"docs\"\npath = \"/nonexistent.pack\"\n",
            embedding_model()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .args(["serve", "--port", "0", "--config", config.to_str().unwrap()])
        .env("EDGELLM_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(stderr.contains("pooled vectors"), "{stderr}");
}

/// A configured embedding model that is not there, or is a generation model, refuses to start
/// with a line naming it.
#[test]
fn a_bad_embedding_model_refuses_to_start() {
    for (model, expect) in [
        ("/nonexistent/embed.gguf", "not found"),
        (
            crate::support::default_model()
                .to_str()
                .unwrap()
                .to_string()
                .leak() as &str,
            "not an embedding model",
        ),
    ] {
        let output = std::process::Command::new(crate::support::edgellm_bin())
            .args([
                "serve",
                "--port",
                "0",
                "--embedding-model",
                model,
                "-t",
                "2",
            ])
            .env("EDGELLM_DATA_DIR", tempfile::tempdir().unwrap().path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{model}: {stderr}");
        assert!(stderr.contains(expect), "{model}: {stderr}");
    }
}

/// llama-server's rerank endpoint on the embedding model: documents ordered by their cosine
/// similarity to the query, in Jina's shape and TEI's, `top_n`, and clear refusals.
#[tokio::test]
async fn rerank_orders_documents_by_similarity() {
    let server = Server::start(&[]);
    let documents = [
        "Invoices are due at the end of the month.",
        "The coolant pump on line 2 is overheating and must be stopped.",
        "La tour Eiffel est à Paris.",
        "A pump that runs hot may have a blocked coolant filter.",
    ];
    let query = "Why is the pump overheating?";
    let (status, body) = post(
        &server,
        "/rerank",
        json!({"query": query, "documents": documents}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let order: Vec<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    // The two pump documents first, best first; scores are cosines, descending.
    let mut top: Vec<u64> = order[..2].to_vec();
    top.sort_unstable();
    assert_eq!(top, [1, 3], "{body}");
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["relevance_score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores.iter().all(|s| (-1.0..=1.0001).contains(s)));
    // Each score is the cosine of the two embeddings /v1/embeddings gives.
    let (_, embedded) = post(
        &server,
        "/v1/embeddings",
        json!({"input": [query, documents[order[0] as usize]]}),
    )
    .await;
    let v = vectors(&embedded);
    assert!((cosine(&v[0], &v[1]) as f64 - scores[0]).abs() < 1e-4);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 10);

    // TEI's shape, top_n, and the text back.
    let (status, tei) = post(
        &server,
        "/v1/rerank",
        json!({"query": query, "texts": documents, "top_n": 2, "return_text": true}),
    )
    .await;
    assert_eq!(status, 200, "{tei}");
    let list = tei.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["index"].as_u64(), Some(order[0]));
    assert_eq!(list[0]["text"], documents[order[0] as usize]);
    assert!(list[0]["score"].is_number());

    for (bad, param) in [
        (json!({"query": query, "documents": []}), "documents"),
        (json!({"query": query, "documents": 123}), "documents"),
        (json!({"query": query, "documents": [1, 2]}), "documents[0]"),
        (json!({"query": query}), "documents"),
        (json!({"query": 5, "documents": ["a"]}), "query"),
        (
            json!({"query": query, "documents": ["a"], "texts": ["b"]}),
            "texts",
        ),
    ] {
        let (status, body) = post(&server, "/rerank", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["param"], param, "{bad}: {body}");
    }
}
