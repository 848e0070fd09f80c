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
use crate::support::{fake_network, http_client};

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

    fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Every raw sample of the series `selector` in the last `range`: (unix seconds, value).
    async fn samples(&self, selector: &str, range: &str) -> Vec<(f64, f64)> {
        let response: serde_json::Value = http_client()
            .get(
                reqwest::Url::parse_with_params(
                    &format!("http://127.0.0.1:{}/api/v1/query", self.port),
                    &[("query", format!("{selector}[{range}]"))],
                )
                .unwrap(),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
        let response: serde_json::Value = http_client()
            .get(
                reqwest::Url::parse_with_params(
                    &format!(
                        "http://127.0.0.1:{}/api/v1/label/__name__/values",
                        self.port
                    ),
                    &[("match[]", format!("{{device=\"{device}\"}}"))],
                )
                .unwrap(),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
        "[network]\nsys_root = \"{0}/sys\"\nproc_root = \"{0}/proc\"\n\n[telemetry]\nremote_write_url = \"{url}\"\ndevice_id = \"{device}\"\nsite = \"it\"\ninterval_secs = 1\nbacklog_pause_ms = 20\nlabels = {{ run = \"{run}\" }}\n",
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
        "llamacpp:prompt_tokens_total",
        "edgellm_telemetry_backlog_batches",
    ] {
        assert!(
            names.iter().any(|n| n == family),
            "{family} not pushed: {names:?}"
        );
    }
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
    // The identity is external labels, never a request's: one series per family and labels.
    assert_eq!(
        prometheus
            .samples(
                &format!("edgellm_model_loaded{{device=\"{device}\"}}"),
                "1h"
            )
            .await
            .len(),
        samples.len()
    );
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
                last_buffered = last_buffered.max(series.samples[0].value);
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
