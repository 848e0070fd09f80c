//! `loadgen`: the two halves of bench/route-overhead.sh.
//!
//! ```text
//! loadgen upstream --port P [--threads N]
//!     A stand-in OpenAI Chat Completions server on 127.0.0.1:P. `POST /v1/chat/completions` (and
//!     `/chat/completions`) answers at once with a fixed, valid non-streaming completion (usage
//!     included), echoing the request's `model`. `GET /stats` counts the requests answered, per
//!     model name; `GET /health` is 200.
//!
//! loadgen load --url URL --rate R --duration S [--concurrency C] [--warmup S] [--header k:v]...
//!              [--model M] [--expect-header k:v] [--expect-body TEXT] [--threads N] [--timeout S]
//!     --rate R > 0: open loop. Sends are scheduled at fixed intervals of 1/R from a timing thread;
//!     latency is measured from each request's *scheduled* send time, so a slow server cannot slow
//!     the sender down and hide its own queueing (no coordinated omission). At most C requests are
//!     in flight (default 256); a request that waits for one of them waits on the clock.
//!     --rate 0: closed loop with C connections, each sending its next request as soon as the last
//!     answer arrived: the most requests/s the target sustains at that concurrency.
//!     Either way: a keep-alive connection pool, a small chat body
//!     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
//!     `--warmup` seconds (default 2) run first and are not counted, and a JSON report goes to
//!     stdout: achieved requests/s, errors by kind, latency p50/p90/p99/p99.9/max (ms).
//!     A request counts as ok only with status 200, every --expect-header present with that value,
//!     and the body holding every --expect-body text.
//! ```

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        usage();
    }
    let command = args.remove(0);
    let opts = Opts::parse(args);
    match command.as_str() {
        "upstream" => upstream(opts),
        "load" => load(opts),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen upstream --port P [--threads N]\n       loadgen load --url URL --rate R --duration S [--concurrency C] [--warmup S] [--header k:v]... [--model M] [--expect-header k:v]... [--expect-body TEXT]... [--threads N] [--timeout S]"
    );
    std::process::exit(2)
}

/// `--name value` pairs; repeatable ones keep every value.
struct Opts(HashMap<String, Vec<String>>);

impl Opts {
    fn parse(args: Vec<String>) -> Opts {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        let mut it = args.into_iter();
        while let Some(name) = it.next() {
            let Some(name) = name.strip_prefix("--") else {
                eprintln!("unexpected argument {name:?}");
                usage()
            };
            let Some(value) = it.next() else {
                eprintln!("--{name} needs a value");
                usage()
            };
            map.entry(name.to_string()).or_default().push(value);
        }
        Opts(map)
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.last()).map(String::as_str)
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.0.get(name).cloned().unwrap_or_default()
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> T {
        match self.get(name) {
            Some(text) => text.parse().unwrap_or_else(|_| {
                eprintln!("--{name}: not a number: {text:?}");
                usage()
            }),
            None => default.unwrap_or_else(|| {
                eprintln!("--{name} is required");
                usage()
            }),
        }
    }
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// upstream
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Counts {
    total: AtomicU64,
    by_model: Mutex<BTreeMap<String, u64>>,
}

fn upstream(opts: Opts) {
    let port: u16 = opts.num("port", None);
    let threads: usize = opts.num("threads", Some(1));
    let counts = Arc::new(Counts::default());
    runtime(threads).block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        eprintln!("loadgen upstream: listening on http://{addr}/v1");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let counts = counts.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, counts.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn answer(
    request: Request<Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(response)
    };
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => {
            let body = match request.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return reply(StatusCode::BAD_REQUEST, error_body(&e.to_string())),
            };
            let parsed: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return reply(StatusCode::BAD_REQUEST, error_body(&e.to_string())),
            };
            let Some(model) = parsed["model"].as_str() else {
                return reply(StatusCode::BAD_REQUEST, error_body("model is required"));
            };
            if parsed["messages"].as_array().is_none_or(|m| m.is_empty()) {
                return reply(StatusCode::BAD_REQUEST, error_body("messages is required"));
            }
            if parsed["stream"].as_bool() == Some(true) {
                return reply(
                    StatusCode::BAD_REQUEST,
                    error_body("this stand-in upstream does not stream"),
                );
            }
            counts.total.fetch_add(1, Ordering::Relaxed);
            {
                let mut by_model = counts.by_model.lock().unwrap();
                match by_model.get_mut(model) {
                    Some(n) => *n += 1,
                    None => {
                        by_model.insert(model.to_string(), 1);
                    }
                }
            }
            reply(StatusCode::OK, completion_body(model))
        }
        (&Method::GET, "/stats") => {
            let by_model = counts.by_model.lock().unwrap().clone();
            reply(
                StatusCode::OK,
                json!({"requests": counts.total.load(Ordering::Relaxed), "by_model": by_model})
                    .to_string(),
            )
        }
        (&Method::GET, "/health") => reply(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        _ => reply(StatusCode::NOT_FOUND, error_body("not found")),
    }
}

fn error_body(message: &str) -> String {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
        .to_string()
}

/// A fixed OpenAI chat completion (non-streaming), as the API returns it.
fn completion_body(model: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let model = serde_json::to_string(model).unwrap();
    format!(
        concat!(
            r#"{{"id":"chatcmpl-loadgen{:012}","object":"chat.completion","created":{},"model":{},"#,
            r#""system_fingerprint":"fp_loadgen","choices":[{{"index":0,"message":{{"role":"assistant","#,
            r#""content":"Hello! How can I help you today?","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"#,
            r#""usage":{{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18,"#,
            r#""prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#
        ),
        id, created, model
    )
}

// ---------------------------------------------------------------------------------------------
// load
// ---------------------------------------------------------------------------------------------

struct Target {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    expect_headers: Vec<(HeaderName, String)>,
    expect_body: Vec<String>,
    timeout: Duration,
    /// Every ok answer, warm-up and stragglers included: what the upstream should have counted.
    ok_total: AtomicU64,
    /// Failed requests outside the counted window (warm-up, stragglers), by kind.
    uncounted_errors: Mutex<BTreeMap<&'static str, u64>>,
}

/// One finished request.
#[derive(Clone, Copy)]
struct Sample {
    /// From the scheduled (open loop) or actual (closed loop) send to the end of the body.
    latency: Duration,
    /// Open loop: from the scheduled send time to the actual one (the generator's own lag).
    lag: Duration,
    error: Option<&'static str>,
}

fn header_pair(text: &str, what: &str) -> (HeaderName, String) {
    let Some((name, value)) = text.split_once(':') else {
        eprintln!("--{what} {text:?}: expected name:value");
        usage()
    };
    let name = HeaderName::from_bytes(name.trim().as_bytes()).unwrap_or_else(|_| {
        eprintln!("--{what} {text:?}: bad header name");
        usage()
    });
    (name, value.trim().to_string())
}

impl Target {
    async fn send(&self) -> Option<&'static str> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        let exchange = async {
            let response = match self.client.request(request).await {
                Ok(r) => r,
                Err(e) if e.is_connect() => return Some("connect"),
                Err(_) => return Some("transport"),
            };
            let status = response.status();
            let headers_ok = self.expect_headers.iter().all(|(name, want)| {
                response
                    .headers()
                    .get(name)
                    .is_some_and(|v| v.as_bytes() == want.as_bytes())
            });
            let body = match response.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Some("transport"),
            };
            if status != StatusCode::OK {
                return Some(match status.as_u16() {
                    400..=499 => "status_4xx",
                    _ => "status_5xx",
                });
            }
            if !headers_ok {
                return Some("header_mismatch");
            }
            if !self
                .expect_body
                .iter()
                .all(|want| contains(&body, want.as_bytes()))
            {
                return Some("body_mismatch");
            }
            None
        };
        let result = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Some("timeout"),
        };
        if result.is_none() {
            self.ok_total.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn uncounted(&self, error: Option<&'static str>) {
        if let Some(kind) = error {
            *self.uncounted_errors.lock().unwrap().entry(kind).or_default() += 1;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn load(opts: Opts) {
    let url: String = opts
        .get("url")
        .unwrap_or_else(|| {
            eprintln!("--url is required");
            usage()
        })
        .to_string();
    let uri: Uri = url.parse().unwrap_or_else(|_| {
        eprintln!("--url {url:?} is not a URL");
        usage()
    });
    if uri.scheme_str() != Some("http") {
        eprintln!("--url: only http:// is supported");
        usage()
    }
    let rate: f64 = opts.num("rate", None);
    let duration: f64 = opts.num("duration", None);
    let warmup: f64 = opts.num("warmup", Some(2.0));
    let concurrency: usize = opts.num("concurrency", Some(if rate > 0.0 { 256 } else { 16 }));
    let threads: usize = opts.num("threads", Some(1));
    let timeout: f64 = opts.num("timeout", Some(10.0));
    let model = opts.get("model").unwrap_or("bench-model").to_string();
    if duration <= 0.0 || warmup < 0.0 || rate < 0.0 || concurrency == 0 || timeout <= 0.0 {
        eprintln!("--duration and --timeout must be > 0, --warmup and --rate >= 0, --concurrency >= 1");
        usage()
    }
    let headers = opts
        .all("header")
        .iter()
        .map(|h| {
            let (name, value) = header_pair(h, "header");
            let value = HeaderValue::from_str(&value).unwrap_or_else(|_| {
                eprintln!("--header {h:?}: bad value");
                usage()
            });
            (name, value)
        })
        .collect();
    let expect_headers = opts
        .all("expect-header")
        .iter()
        .map(|h| header_pair(h, "expect-header"))
        .collect();
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16});
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(usize::MAX)
        .build(connector);
    let target = Arc::new(Target {
        client,
        uri,
        headers,
        body: Bytes::from(body.to_string()),
        expect_headers,
        expect_body: opts.all("expect-body"),
        timeout: Duration::from_secs_f64(timeout),
        ok_total: AtomicU64::new(0),
        uncounted_errors: Mutex::new(BTreeMap::new()),
    });
    let warmup = Duration::from_secs_f64(warmup);
    let duration = Duration::from_secs_f64(duration);
    let counted = target.clone();
    let mut report = runtime(threads).block_on(async move {
        if rate > 0.0 {
            open_loop(target, rate, warmup, duration, concurrency).await
        } else {
            closed_loop(target, warmup, duration, concurrency).await
        }
    });
    report["ok_total"] = json!(counted.ok_total.load(Ordering::Relaxed));
    report["uncounted_error_kinds"] = json!(*counted.uncounted_errors.lock().unwrap());
    report["url"] = json!(url);
    report["model"] = json!(model);
    report["concurrency"] = json!(concurrency);
    report["loadgen_threads"] = json!(threads);
    println!("{report}");
}

/// Sends on a fixed schedule; latency from the scheduled time.
async fn open_loop(
    target: Arc<Target>,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    concurrency: usize,
) -> Value {
    let period = Duration::from_secs_f64(1.0 / rate);
    let total = ((warmup + duration).as_secs_f64() * rate).floor() as u64;
    let counted_from = (warmup.as_secs_f64() * rate).ceil() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let start = Instant::now() + Duration::from_millis(50);
    // A plain thread keeps the schedule: tokio's timer has 1 ms granularity, nanosleep does not.
    let timer = std::thread::spawn(move || {
        for i in 0..total {
            let at = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send((i, at)).is_err() {
                break;
            }
        }
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let samples: Arc<Mutex<Vec<Sample>>> =
        Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    while let Some((i, at)) = rx.recv().await {
        let target = target.clone();
        let permits = permits.clone();
        let samples = samples.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            let sent = Instant::now();
            let error = target.send().await;
            let done = Instant::now();
            if i >= counted_from {
                samples.lock().unwrap().push(Sample {
                    latency: done - at,
                    lag: sent.saturating_duration_since(at),
                    error,
                });
            } else {
                target.uncounted(error);
            }
        });
    }
    let _ = timer.join();
    // Every permit back: every request has finished (the semaphore is fair, so this waits last).
    let _all = permits
        .acquire_many(concurrency as u32)
        .await
        .expect("semaphore");
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let mut report = summarize(&samples, duration);
    report["mode"] = json!("open");
    report["target_rps"] = json!(rate);
    report["scheduled"] = json!(total - counted_from);
    report
}

/// `concurrency` senders, each sending again as soon as its answer arrived.
async fn closed_loop(
    target: Arc<Target>,
    warmup: Duration,
    duration: Duration,
    concurrency: usize,
) -> Value {
    let start = Instant::now();
    let counted_from = start + warmup;
    let end = counted_from + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let error = target.send().await;
                let done = Instant::now();
                if error == Some("connect") {
                    // Nothing listening: do not spin.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if sent >= counted_from && done <= end {
                    samples.push(Sample {
                        latency: done - sent,
                        lag: Duration::ZERO,
                        error,
                    });
                } else {
                    target.uncounted(error);
                }
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("sender task"));
    }
    let mut report = summarize(&samples, duration);
    report["mode"] = json!("closed");
    report
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Nearest-rank percentiles over sorted durations.
fn percentiles(sorted: &[Duration]) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let at = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        ms(sorted[rank - 1])
    };
    let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
    json!({"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p99.9": at(0.999),
           "max": ms(sorted[sorted.len() - 1]), "mean": ms(mean), "n": sorted.len()})
}

fn summarize(samples: &[Sample], duration: Duration) -> Value {
    let mut ok: Vec<Duration> = samples
        .iter()
        .filter(|s| s.error.is_none())
        .map(|s| s.latency)
        .collect();
    ok.sort_unstable();
    let mut all: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    all.sort_unstable();
    let mut lag: Vec<Duration> = samples.iter().map(|s| s.lag).collect();
    lag.sort_unstable();
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    for s in samples {
        if let Some(kind) = s.error {
            *errors.entry(kind).or_default() += 1;
        }
    }
    let n_errors: u64 = errors.values().sum();
    json!({
        "duration_s": duration.as_secs_f64(),
        "requests": samples.len(),
        "ok": ok.len(),
        "errors": n_errors,
        "error_kinds": errors,
        "achieved_rps": (ok.len() as f64 / duration.as_secs_f64() * 10.0).round() / 10.0,
        "latency_ms": percentiles(&ok),
        "latency_all_ms": percentiles(&all),
        "send_lag_ms": percentiles(&lag),
    })
}
