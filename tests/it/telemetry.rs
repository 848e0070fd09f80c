//! Fleet telemetry against a real Prometheus (Debian's `prometheus`, remote-write receiver on a
//! loopback port, started here): a push lands; an outage (the network gate closed) buffers and
//! the backlog then arrives exactly once; kill -9 while a request is in flight loses nothing and
//! duplicates nothing; the shipped rules pass `promtool test rules`.
//!
//! Exactly once is checked on `edgellm_telemetry_scrapes_total` itself: scrape k carries the value
//! k (the scrapes stored before it), so what Prometheus holds must be 0, 1, 2, ... with no value
//! missing and none twice.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::server::{Server, free_port};
use crate::support::{fake_network, get_json, http_client};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// A Prometheus with the remote-write receiver and an out-of-order window (a backlog from
/// before a restart can land); killed on drop.
struct Prometheus {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start() -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install the `prometheus` Debian package (EDGELLM_SETUP_TEST_DEPS=1 scripts/setup.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: 100h\n",
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            // The simulated days land hours of samples at once; with the default 2 h blocks the
            // head is compacted while the test queries it, and the oldest samples were missing
            // from one query in five. One block for the whole test keeps the query whole.
            .arg("--storage.tsdb.min-block-duration=200h")
            .arg("--storage.tsdb.max-block-duration=200h")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .expect("prometheus starts");
        let mut prometheus = Prometheus {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                let log = std::fs::read_to_string(prometheus._dir.path().join("prometheus.log"))
                    .unwrap_or_default();
                panic!("prometheus exited ({status}):\n{log}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http_get(&format!("http://127.0.0.1:{port}/-/ready")).is_some_and(|s| s == 200)
            {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The end of Prometheus's own log (what it said about refused samples), for failures.
    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// GET `path` of Prometheus's HTTP API with `params`, as JSON.
    async fn api(&self, path: &str, params: &[(&str, String)]) -> serde_json::Value {
        let url = reqwest::Url::parse_with_params(
            &format!("http://127.0.0.1:{}{path}", self.port),
            params,
        )
        .unwrap();
        get_json(url).await
    }

    /// Every raw sample of the series `selector` in the last `range`: (unix seconds, value).
    async fn samples(&self, selector: &str, range: &str) -> Vec<(f64, f64)> {
        let response = self
            .api(
                "/api/v1/query",
                &[("query", format!("{selector}[{range}]"))],
            )
            .await;
        assert_eq!(response["status"], "success", "{response}");
        let result = response["data"]["result"].as_array().unwrap();
        assert!(result.len() <= 1, "one series expected: {response}");
        let Some(series) = result.first() else {
            return Vec::new();
        };
        series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                (
                    pair[0].as_f64().unwrap(),
                    pair[1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Series names Prometheus holds for `device`.
    async fn names(&self, device: &str) -> Vec<String> {
        let response = self
            .api(
                "/api/v1/label/__name__/values",
                &[("match[]", format!("{{device=\"{device}\"}}"))],
            )
            .await;
        response["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut stream = TcpStream::connect(host).ok()?;
    use std::io::{Read, Write};
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn telemetry_config(url: &str, device: &str, net: &Path, run: &str) -> String {
    format!(
        "[network]\nsys_root = \"{0}/sys\"\nproc_root = \"{0}/proc\"\n\n[telemetry]\nremote_write_url = \"{url}\"\ndevice_id = \"{device}\"\nsite = \"it\"\ninterval_secs = 1\nsend_interval_secs = 1\nhistogram_interval_secs = 2\nbacklog_pause_ms = 20\nlabels = {{ run = \"{run}\" }}\n",
        net.display()
    )
}

/// Waits (up to `secs`) until `check` holds for the server's `/metrics`.
async fn wait_metrics(server: &Server, secs: u64, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = server.metrics().await;
        if check(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {secs} s; /metrics:\n{}",
            text.lines()
                .filter(|l| l.starts_with("edgellm_telemetry"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The values 0, 1, ..., n-1 in time order: every scrape once.
fn assert_every_scrape_once(samples: &[(f64, f64)], what: &str) {
    assert!(!samples.is_empty(), "{what}: no samples");
    let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let expected: Vec<f64> = (0..values.len()).map(|i| i as f64).collect();
    assert_eq!(
        values, expected,
        "{what}: a scrape is missing or came twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_recovery_delivers_every_scrape_exactly_once() {
    let prometheus = Prometheus::start();
    let net = tempfile::tempdir().unwrap();
    // Offline: no default route.
    fake_network(net.path(), None, "ethernet", false);
    let device = format!("it-outage-{}", std::process::id());
    let config = telemetry_config(&prometheus.write_url(), &device, net.path(), "1");
    let server = Server::start_with_config(Some(&config), &[]);
    // One generation, so that every family (the GenAI ones too) has series.
    let (status, _) = server
        .post(
            "/v1/completions",
            serde_json::json!({"prompt": "Hello", "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200);
    wait_metrics(&server, 60, "a backlog while offline", |m| {
        sample(m, "edgellm_telemetry_backlog_batches").is_some_and(|v| v >= 4.0)
            && sample(m, "edgellm_telemetry_held_total{reason=\"offline\"}")
                .is_some_and(|v| v >= 1.0)
    })
    .await;
    assert!(
        prometheus.names(&device).await.is_empty(),
        "nothing may leave while the gate is closed"
    );
    // A metered link (cellular) is held too: allow_metered is off by default.
    fake_network(net.path(), Some("wwan0"), "cellular", true);
    wait_metrics(&server, 30, "a hold on the metered link", |m| {
        sample(m, "edgellm_telemetry_held_total{reason=\"metered\"}").is_some_and(|v| v >= 1.0)
    })
    .await;
    assert!(prometheus.names(&device).await.is_empty());
    // Back on a wired link: the backlog drains, oldest first.
    std::fs::remove_dir_all(net.path().join("sys/class/net/wwan0")).unwrap();
    fake_network(net.path(), Some("eth0"), "ethernet", true);
    wait_metrics(&server, 60, "the backlog to drain", |m| {
        sample(m, "edgellm_telemetry_backlog_batches").is_some_and(|v| v <= 1.0)
            && sample(m, "edgellm_telemetry_batches_sent_total").is_some_and(|v| v >= 8.0)
    })
    .await;
    let metrics = server.metrics().await;
    drop(server);
    let names = prometheus.names(&device).await;
    for family in [
        "edgellm_requests_total",
        "edgellm_model_loaded",
        "edgellm_time_to_first_token_seconds_bucket",
        "edgellm_telemetry_backlog_batches",
    ] {
        assert!(
            names.iter().any(|n| n == family),
            "{family} not pushed: {names:?}"
        );
    }
    // The compatibility spellings (llama-server's, OpenTelemetry GenAI's) are on /metrics and
    // stay off the push by default.
    assert!(sample(&metrics, "llamacpp:prompt_tokens_total").is_some());
    assert!(metrics.contains("gen_ai_client_operation_duration_seconds_count{"));
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("llamacpp:") || n.starts_with("gen_ai_")),
        "{names:?}"
    );
    let selector = format!(
        "edgellm_telemetry_scrapes_total{{device=\"{device}\",site=\"it\",job=\"edgellm\",run=\"1\"}}"
    );
    let samples = prometheus.samples(&selector, "1h").await;
    assert_every_scrape_once(&samples, "outage and recovery");
    let sent = sample(&metrics, "edgellm_telemetry_batches_sent_total").unwrap();
    assert!(
        samples.len() as f64 >= sent,
        "{} samples, {sent} sent",
        samples.len()
    );
    // The identity is external labels, never a request's: one series per family and labels
    // (`samples` asserts one). An unchanged gauge travels once, not with every scrape.
    let loaded = prometheus
        .samples(
            &format!("edgellm_model_loaded{{device=\"{device}\"}}"),
            "1h",
        )
        .await;
    assert!(
        loaded.len() <= 3 && loaded.len() < samples.len(),
        "{loaded:?}"
    );
    assert_eq!(loaded.last().unwrap().1, 1.0);
}

/// A proxy in front of Prometheus that forwards each request and then, while `hold` is set,
/// never answers: the receiver has stored the samples, edgellm never hears so.
struct HoldingProxy {
    port: u16,
    forwarded: Arc<AtomicU64>,
    hold: Arc<AtomicBool>,
}

async fn holding_proxy(target: String) -> HoldingProxy {
    let forwarded = Arc::new(AtomicU64::new(0));
    let hold = Arc::new(AtomicBool::new(true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = {
        let forwarded = forwarded.clone();
        let hold = hold.clone();
        axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let forwarded = forwarded.clone();
                let hold = hold.clone();
                let target = target.clone();
                async move {
                    let mut request = http_client().post(&target).body(body);
                    for (name, value) in headers.iter() {
                        if name != "host" && name != "content-length" {
                            request = request.header(name, value);
                        }
                    }
                    let status = request.send().await.unwrap().status();
                    forwarded.fetch_add(1, Ordering::SeqCst);
                    if hold.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    axum::http::StatusCode::from_u16(status.as_u16()).unwrap()
                }
            },
        )
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    HoldingProxy {
        port,
        forwarded,
        hold,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_send_loses_nothing_and_duplicates_nothing() {
    let prometheus = Prometheus::start();
    let proxy = holding_proxy(prometheus.write_url()).await;
    let net = tempfile::tempdir().unwrap();
    fake_network(net.path(), Some("eth0"), "ethernet", true);
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap().to_string();
    let device = format!("it-kill-{}", std::process::id());
    let through_proxy = format!("http://127.0.0.1:{}/api/v1/write", proxy.port);
    let config = telemetry_config(&through_proxy, &device, net.path(), "1");
    let mut server = Server::start_with_config(Some(&config), &["--data-dir", &data_arg]);
    // Wait until the receiver has stored a request whose answer edgellm is still waiting for,
    // and a few more scrapes are buffered behind it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.forwarded.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no request reached the proxy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = prometheus
        .samples(
            &format!("edgellm_telemetry_scrapes_total{{device=\"{device}\"}}"),
            "1h",
        )
        .await;
    assert!(
        !stored.is_empty(),
        "the held request must have reached Prometheus"
    );
    // kill -9 while that request is in flight.
    unsafe { libc::kill(server.pid(), libc::SIGKILL) };
    let _ = server.child.wait();
    // What the buffer still holds is what the restart must send (read from the real file).
    let buffered = {
        let db = rusqlite::Connection::open(data.path().join("telemetry.db")).unwrap();
        let mut statement = db.prepare("SELECT body FROM batches ORDER BY id").unwrap();
        let bodies: Vec<Vec<u8>> = statement
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        bodies
    };
    assert!(
        !buffered.is_empty(),
        "the unacknowledged scrapes stay buffered"
    );
    let mut last_buffered = 0.0f64;
    for body in &buffered {
        let request = edgellm::telemetry::remote_write::decompress(body).unwrap();
        for series in request.timeseries {
            if series
                .labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == "edgellm_telemetry_scrapes_total")
            {
                for sample in &series.samples {
                    last_buffered = last_buffered.max(sample.value);
                }
            }
        }
    }
    // Restart on the same buffer, straight to the receiver.
    proxy.hold.store(false, Ordering::SeqCst);
    drop(server);
    let config = telemetry_config(&prometheus.write_url(), &device, net.path(), "2");
    let server = Server::start_with_config(Some(&config), &["--data-dir", &data_arg]);
    wait_metrics(&server, 60, "the backlog to drain after the restart", |m| {
        sample(m, "edgellm_telemetry_backlog_batches").is_some_and(|v| v <= 1.0)
            && sample(m, "edgellm_telemetry_batches_sent_total")
                .is_some_and(|v| v > buffered.len() as f64)
    })
    .await;
    drop(server);
    let first_run = prometheus
        .samples(
            &format!("edgellm_telemetry_scrapes_total{{device=\"{device}\",run=\"1\"}}"),
            "1h",
        )
        .await;
    assert_every_scrape_once(&first_run, "the killed run");
    assert_eq!(
        first_run.last().unwrap().1,
        last_buffered,
        "the last scrape the killed run stored must have arrived"
    );
    assert_every_scrape_once(
        &prometheus
            .samples(
                &format!("edgellm_telemetry_scrapes_total{{device=\"{device}\",run=\"2\"}}"),
                "1h",
            )
            .await,
        "the restarted run",
    );
}

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus")
}

#[test]
fn shipped_rules_pass_promtool() {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: install the `prometheus` Debian package"
    );
    let dir = packaging();
    let check = Command::new(PROMTOOL)
        .args(["check", "rules", "edgellm-rules.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = Command::new(PROMTOOL)
        .args(["test", "rules", "edgellm-rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

/// A device whose only metrics are a scrape counter and a constant, on a clock the test runs:
/// each scrape moves it on by one minute (the default interval), so days pass in seconds.
struct SimulatedDevice {
    scrapes: AtomicU64,
    clock: Arc<std::sync::atomic::AtomicI64>,
    /// Cancelled after this many scrapes (the offline phase ends).
    stop_after: u64,
    stop: tokio_util::sync::CancellationToken,
}

impl edgellm::telemetry::Source for SimulatedDevice {
    fn scrape(&self) -> futures::future::BoxFuture<'_, String> {
        let k = self.scrapes.fetch_add(1, Ordering::SeqCst);
        self.clock.fetch_add(60_000, Ordering::SeqCst);
        if k + 1 >= self.stop_after {
            self.stop.cancel();
        }
        Box::pin(async move {
            format!(
                "# TYPE sim_scrape gauge\nsim_scrape {k}\n# TYPE sim_constant gauge\nsim_constant 7\n"
            )
        })
    }
}

struct Simulation {
    prometheus: Prometheus,
    net: tempfile::TempDir,
    data: tempfile::TempDir,
    clock: Arc<std::sync::atomic::AtomicI64>,
    device: String,
}

impl Simulation {
    /// Starts `hours` before now, offline.
    fn new(name: &str, hours: i64) -> Simulation {
        let net = tempfile::tempdir().unwrap();
        fake_network(net.path(), None, "ethernet", false);
        let start = edgellm::gateway::unix_now() as i64 * 1000 - hours * 3_600_000;
        Simulation {
            prometheus: Prometheus::start(),
            net,
            data: tempfile::tempdir().unwrap(),
            clock: Arc::new(std::sync::atomic::AtomicI64::new(start)),
            device: format!("it-{name}-{}", std::process::id()),
        }
    }

    fn config(
        &self,
        edit: impl FnOnce(&mut edgellm::telemetry::RawTelemetry),
    ) -> edgellm::telemetry::TelemetryConfig {
        let mut raw = edgellm::telemetry::RawTelemetry {
            remote_write_url: self.prometheus.write_url(),
            device_id: self.device.clone(),
            batches_per_request: Some(100),
            backlog_pause_ms: Some(0),
            ..Default::default()
        };
        edit(&mut raw);
        let mut config = raw.validate("sim", &|_| None).unwrap();
        // Real time between scrapes and sends is milliseconds; the clock says minutes.
        config.interval = Duration::from_millis(2);
        config.send_interval = Duration::from_millis(20);
        config
    }

    fn pusher(&self, config: edgellm::telemetry::TelemetryConfig) -> edgellm::telemetry::Pusher {
        let network = edgellm::guard::network::NetworkPolicy {
            sys_root: self.net.path().join("sys"),
            proc_root: self.net.path().join("proc"),
            ..Default::default()
        };
        let clock = self.clock.clone();
        edgellm::telemetry::Pusher::new(config, network, self.data.path())
            .unwrap()
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)))
    }

    /// Runs a pusher for `scrapes` scrapes (numbered from `first`) and returns its stats.
    async fn run(
        &self,
        config: edgellm::telemetry::TelemetryConfig,
        first: u64,
        scrapes: u64,
    ) -> Arc<edgellm::telemetry::TelemetryStats> {
        let pusher = self.pusher(config);
        let stats = pusher.stats.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let device = Arc::new(SimulatedDevice {
            scrapes: AtomicU64::new(first),
            clock: self.clock.clone(),
            stop_after: first + scrapes,
            stop: stop.clone(),
        });
        tokio::time::timeout(Duration::from_secs(300), pusher.run(device, stop))
            .await
            .expect("the offline phase ends");
        stats
    }

    /// Back online: one more scrape (numbered `next`), then sends until `done` holds.
    async fn reconnect(
        &self,
        config: edgellm::telemetry::TelemetryConfig,
        next: u64,
        secs: u64,
        done: impl Fn(&edgellm::telemetry::TelemetryStats) -> bool,
    ) -> Arc<edgellm::telemetry::TelemetryStats> {
        fake_network(self.net.path(), Some("eth0"), "ethernet", true);
        let mut config = config;
        config.interval = Duration::from_secs(3600);
        let pusher = self.pusher(config);
        let stats = pusher.stats.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let device = Arc::new(SimulatedDevice {
            scrapes: AtomicU64::new(next),
            clock: self.clock.clone(),
            stop_after: u64::MAX,
            stop: tokio_util::sync::CancellationToken::new(),
        });
        let running = tokio::spawn(pusher.run(device, stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(&stats) {
            assert!(
                Instant::now() < deadline,
                "sending did not finish in {secs} s: {:?}",
                stats
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        running.await.unwrap();
        stats
    }

    async fn values(&self, name: &str) -> Vec<f64> {
        self.prometheus
            .samples(&format!("{name}{{device=\"{}\"}}", self.device), "100h")
            .await
            .into_iter()
            .map(|s| s.1)
            .collect()
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::SeqCst)
}

/// 72 hours offline at the default one-minute interval (4,320 scrapes on a simulated clock),
/// then the link comes back: every scrape reaches Prometheus once, oldest first, and the constant
/// series travels only at its hourly keepalive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventy_two_hours_offline_then_every_sample_arrives_once() {
    let sim = Simulation::new("72h", 73);
    let scrapes = 72 * 60;
    let config = sim.config(|_| {});
    let offline = sim.run(config.clone(), 0, scrapes).await;
    assert_eq!(load(&offline.scrapes), scrapes);
    assert_eq!(
        load(&offline.requests_ok),
        0,
        "nothing leaves while offline"
    );
    assert_eq!(
        load(&offline.dropped_batches),
        0,
        "72 h fit the default buffer"
    );
    let online = sim
        .reconnect(config, scrapes, 240, |s| {
            load(&s.backlog_batches) == 0 && load(&s.batches_sent) > scrapes
        })
        .await;
    assert!(load(&online.requests_ok) >= scrapes / 100);
    let values = sim.values("sim_scrape").await;
    let expected: Vec<f64> = (0..=scrapes).map(|k| k as f64).collect();
    assert_eq!(values.len(), expected.len(), "every scrape, once");
    assert_eq!(values, expected, "in order, none twice");
    // Unchanged: the first value and one keepalive an hour (72 of them), and the one scrape
    // after the reconnect's restart (a new process sends every series once).
    let constant = sim.values("sim_constant").await;
    assert!(
        (73..=75).contains(&constant.len()),
        "{} samples of an unchanged series",
        constant.len()
    );
}

/// The buffer is bounded: a long outage drops the oldest scrapes, counts them, and what arrives
/// is the newest run of scrapes without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_and_counts_them() {
    let sim = Simulation::new("overflow", 60);
    let scrapes = 3000;
    let config = sim.config(|raw| raw.buffer_max_bytes = Some(64 << 10));
    let offline = sim.run(config.clone(), 0, scrapes).await;
    assert!(
        load(&offline.dropped_batches) > 0,
        "3,000 scrapes do not fit 64 KiB"
    );
    assert!(load(&offline.backlog_bytes) <= 64 << 10);
    let online = sim
        .reconnect(config, scrapes, 120, |s| load(&s.backlog_batches) == 0)
        .await;
    // The reconnect's own scrape may push one or two more out to make room: before the first
    // send (lost), or while that send is already in flight (counted as dropped, and arrives).
    let dropped_offline = load(&offline.dropped_batches);
    let dropped = dropped_offline + load(&online.dropped_batches);
    let values = sim.values("sim_scrape").await;
    let first = scrapes - (values.len() as u64 - 1);
    let expected: Vec<f64> = (first..=scrapes).map(|k| k as f64).collect();
    assert_eq!(values, expected, "the newest scrapes, without a gap");
    assert!(
        dropped_offline <= first && first <= dropped,
        "every scrape not delivered was counted as dropped: {first} not delivered, {dropped} dropped; {offline:?} {online:?}\n{}",
        sim.prometheus.log_tail()
    );
}

/// Telemetry has its own daily byte budget: the backlog stops when today's bytes are spent
/// (held, counted), and resumes, oldest first, when the budget day turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_byte_budget_holds_the_backlog_until_the_day_turns() {
    // Far enough back that the next day's scrape is still in the past (no future samples).
    let sim = Simulation::new("budget", 40);
    let scrapes = 400;
    let budget = 8_000;
    let config = sim.config(|raw| {
        raw.daily_bytes = Some(budget);
        raw.batches_per_request = Some(20);
    });
    sim.run(config.clone(), 0, scrapes).await;
    let held = sim
        .reconnect(config.clone(), scrapes, 60, |s| {
            s.held.lock().unwrap().get("budget").copied().unwrap_or(0) > 0
        })
        .await;
    let sent_bytes = load(&held.bytes_sent);
    assert!(
        sent_bytes > 0 && sent_bytes <= budget,
        "{sent_bytes} of {budget}"
    );
    let arrived = sim.values("sim_scrape").await;
    assert!(
        !arrived.is_empty() && (arrived.len() as u64) < scrapes,
        "{} of {scrapes} arrived within the budget",
        arrived.len()
    );
    let prefix: Vec<f64> = (0..arrived.len()).map(|k| k as f64).collect();
    assert_eq!(arrived, prefix, "oldest first");
    // The next UTC day: the rest goes.
    sim.clock.fetch_add(86_400_000, Ordering::SeqCst);
    let _ = sim
        .reconnect(config, scrapes + 1, 60, |s| load(&s.backlog_batches) == 0)
        .await;
    let values = sim.values("sim_scrape").await;
    let expected: Vec<f64> = (0..=scrapes + 1).map(|k| k as f64).collect();
    assert_eq!(values, expected);
}

/// A row in the buffer file that is not a remote-write body (a damaged file, a hand edit) is
/// dropped and counted; it neither blocks the backlog nor takes the rest of its request with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_buffer_row_is_dropped_and_the_rest_arrives() {
    let sim = Simulation::new("damaged", 5);
    let scrapes = 50;
    let config = sim.config(|raw| raw.batches_per_request = Some(10));
    sim.run(config.clone(), 0, scrapes).await;
    {
        let db = rusqlite::Connection::open(sim.data.path().join("telemetry.db")).unwrap();
        // Scrape 25: the middle of the third request of ten.
        db.execute(
            "UPDATE batches SET body = X'00ff00ff' WHERE id = (SELECT id FROM batches ORDER BY id LIMIT 1 OFFSET 25)",
            [],
        )
        .unwrap();
    }
    let online = sim
        .reconnect(config, scrapes, 60, |s| load(&s.backlog_batches) == 0)
        .await;
    assert_eq!(load(&online.rejected_batches), 1, "{online:?}");
    let values = sim.values("sim_scrape").await;
    let expected: Vec<f64> = (0..=scrapes)
        .filter(|&k| k != 25)
        .map(|k| k as f64)
        .collect();
    assert_eq!(values, expected, "only the damaged scrape is missing");
}

/// `[telemetry]` fails closed at startup: a token variable that is unset, or a buffer file that
/// is not a database, stops `edgellm serve` with the reason instead of pushing without them.
#[test]
fn bad_telemetry_configuration_or_buffer_refuses_to_start() {
    let refuses = |config: &str, data: &Path| -> String {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, config.as_bytes()).unwrap();
        let output = Command::new(crate::support::edgellm_bin())
            .args(["serve", "--port", "0", "--config"])
            .arg(file.path())
            .arg("--data-dir")
            .arg(data)
            .env_remove("EDGELLM_IT_TELEMETRY_TOKEN_UNSET")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let data = tempfile::tempdir().unwrap();
    let section =
        "[telemetry]\nremote_write_url = \"http://127.0.0.1:9/api/v1/write\"\ndevice_id = \"gw\"\n";
    let stderr = refuses(
        &format!("{section}bearer_token_env = \"EDGELLM_IT_TELEMETRY_TOKEN_UNSET\"\n"),
        data.path(),
    );
    assert!(
        stderr.contains("EDGELLM_IT_TELEMETRY_TOKEN_UNSET"),
        "{stderr}"
    );
    let stderr = refuses(
        "[telemetry]\nremote_write_url = \"ftp://x/y\"\ndevice_id = \"gw\"\n",
        data.path(),
    );
    assert!(stderr.contains("remote_write_url"), "{stderr}");
    std::fs::write(data.path().join("telemetry.db"), vec![0x5a; 8192]).unwrap();
    let stderr = refuses(section, data.path());
    assert!(stderr.contains("telemetry.db"), "{stderr}");
}
