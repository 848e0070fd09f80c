//! Fleet telemetry: edgellm pushes its own metrics to a Prometheus remote-write 1.0 receiver
//! (Prometheus, Mimir, Thanos, VictoriaMetrics), store-and-forward (docs/telemetry.md).
//!
//! Every `interval` the pusher reads the same text `/metrics` serves (one definition of every
//! metric), keeps at most `max_series` distinct series ([`exposition::SeriesCap`]), adds the
//! device's identity as external labels (never per request), and stores the scrape in the
//! buffer file ([`buffer`]). The sender then sends the backlog oldest first, a bounded number of
//! scrapes per request and a pause between requests, while the network gates allow it
//! (telemetry is egress: offline, interface, kind, and metered links unless `allow_metered`) and
//! today's telemetry byte budget lasts. A scrape leaves the buffer only once the receiver
//! answered 2xx. Telemetry never carries prompt or answer text: `/metrics` holds none.

pub mod buffer;
pub mod exposition;
pub mod remote_write;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::guard::network::NetworkPolicy;
use remote_write::{Label, Sample, TimeSeries, WriteRequest};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_SERIES: usize = 1000;
pub const DEFAULT_BUFFER_BYTES: u64 = 16 << 20;
pub const DEFAULT_DAILY_BYTES: u64 = 4 << 20;
pub const DEFAULT_BATCHES_PER_REQUEST: usize = 10;
pub const DEFAULT_BACKLOG_PAUSE: Duration = Duration::from_millis(500);
/// How often the buffer is sent: scrapes gather for ten minutes and travel as one request.
pub const DEFAULT_SEND_INTERVAL: Duration = Duration::from_secs(600);
/// An unchanged gauge is sent again after this long (docs/telemetry.md, "What travels").
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(3600);
/// Histogram series are pushed at a coarser cadence than counters and gauges: under traffic their
/// buckets are most of the samples that change, and fleet queries read them over windows of an
/// hour or more (`histogram_quantile(rate(..[1h]))`).
pub const DEFAULT_HISTOGRAM_INTERVAL: Duration = Duration::from_secs(1800);
/// Most external labels besides the built-in ones.
const MAX_EXTRA_LABELS: usize = 16;

/// `[telemetry]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The receiver's remote-write URL, e.g. `https://mimir.example/api/v1/push`.
    pub remote_write_url: String,
    /// This device's identity (external label `device`); required.
    pub device_id: String,
    pub site: Option<String>,
    /// More external labels, e.g. `{ fleet = "line-a" }`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub interval_secs: Option<u64>,
    /// How often buffered scrapes are sent (one request, a series' labels once).
    pub send_interval_secs: Option<u64>,
    /// An unchanged series is re-sent after this long; between, only changes travel.
    pub keepalive_secs: Option<u64>,
    /// How often histogram series (`_bucket`, `_sum`, `_count`) are read and stored; counters
    /// and gauges go at `interval_secs`.
    pub histogram_interval_secs: Option<u64>,
    /// Also push the compatibility families (`llamacpp:*`, `gen_ai_*`); default false.
    pub push_compat_families: Option<bool>,
    pub max_series: Option<usize>,
    pub buffer_max_bytes: Option<u64>,
    /// Telemetry's own budget: most bytes on the wire per UTC day.
    pub daily_bytes: Option<u64>,
    /// Upload on a metered link (cellular, `network.metered_interfaces`); default `false`.
    pub allow_metered: Option<bool>,
    pub batches_per_request: Option<usize>,
    /// Pause between requests while a backlog drains.
    pub backlog_pause_ms: Option<u64>,
    pub timeout_secs: Option<u64>,
    /// Environment variable holding a bearer token for the receiver.
    pub bearer_token_env: Option<String>,
}

/// Validated `[telemetry]`.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub url: String,
    /// External labels, sorted by name: job, device, site, model, version and the extra ones.
    pub external: Vec<(String, String)>,
    pub interval: Duration,
    pub send_interval: Duration,
    pub keepalive: Duration,
    /// Histogram series are stored every this many scrapes (1: every scrape).
    pub histogram_every: u64,
    pub push_compat_families: bool,
    pub max_series: usize,
    pub buffer_max_bytes: u64,
    pub daily_bytes: u64,
    pub allow_metered: bool,
    pub batches_per_request: usize,
    pub backlog_pause: Duration,
    pub timeout: Duration,
    pub bearer_token: Option<String>,
}

impl RawTelemetry {
    /// Checks the section; `model` is the served model's name (external label `model`).
    pub fn validate(
        &self,
        model: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TelemetryConfig, String> {
        let url = self.remote_write_url.trim();
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("remote_write_url {url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!(
                "remote_write_url {url:?} must be an http:// or https:// URL with a host"
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(
                "remote_write_url must not hold credentials: use bearer_token_env".to_string(),
            );
        }
        let device = self.device_id.trim();
        if device.is_empty() || device.len() > exposition::MAX_LABEL_VALUE {
            return Err(format!(
                "device_id must be 1 to {} characters",
                exposition::MAX_LABEL_VALUE
            ));
        }
        if self.labels.len() > MAX_EXTRA_LABELS {
            return Err(format!(
                "labels: at most {MAX_EXTRA_LABELS} external labels"
            ));
        }
        let mut external = BTreeMap::new();
        external.insert("job".to_string(), "edgellm".to_string());
        external.insert("device".to_string(), device.to_string());
        external.insert(
            "model".to_string(),
            exposition::bound_value(model).to_string(),
        );
        external.insert("version".to_string(), env!("CARGO_PKG_VERSION").to_string());
        if let Some(site) = &self.site {
            external.insert(
                "site".to_string(),
                exposition::bound_value(site).to_string(),
            );
        }
        for (name, value) in &self.labels {
            if !exposition::valid_label_name(name) || name.starts_with("__") {
                return Err(format!(
                    "labels: {name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                ));
            }
            if external.contains_key(name) {
                return Err(format!("labels: {name:?} is set by edgellm itself"));
            }
            if value.is_empty() || value.len() > exposition::MAX_LABEL_VALUE {
                return Err(format!(
                    "labels.{name}: a value of 1 to {} characters",
                    exposition::MAX_LABEL_VALUE
                ));
            }
            external.insert(name.clone(), value.clone());
        }
        let positive = |name: &str, value: Option<u64>, default: u64| match value {
            Some(0) => Err(format!("{name} must be at least 1")),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let interval = positive(
            "interval_secs",
            self.interval_secs,
            DEFAULT_INTERVAL.as_secs(),
        )?;
        let send_interval = positive(
            "send_interval_secs",
            self.send_interval_secs,
            DEFAULT_SEND_INTERVAL.as_secs().max(interval),
        )?;
        let keepalive = positive(
            "keepalive_secs",
            self.keepalive_secs,
            DEFAULT_KEEPALIVE.as_secs(),
        )?;
        if keepalive < interval {
            return Err(format!(
                "keepalive_secs ({keepalive}) must be at least interval_secs ({interval})"
            ));
        }
        let histogram_interval = positive(
            "histogram_interval_secs",
            self.histogram_interval_secs,
            DEFAULT_HISTOGRAM_INTERVAL.as_secs().max(interval),
        )?;
        if histogram_interval < interval || histogram_interval % interval != 0 {
            return Err(format!(
                "histogram_interval_secs ({histogram_interval}) must be a multiple of interval_secs ({interval})"
            ));
        }
        let max_series = positive(
            "max_series",
            self.max_series.map(|v| v as u64),
            DEFAULT_MAX_SERIES as u64,
        )? as usize;
        let buffer_max_bytes = self.buffer_max_bytes.unwrap_or(DEFAULT_BUFFER_BYTES);
        if buffer_max_bytes < 64 << 10 {
            return Err("buffer_max_bytes must be at least 65536".to_string());
        }
        let daily_bytes = positive("daily_bytes", self.daily_bytes, DEFAULT_DAILY_BYTES)?;
        let batches_per_request = positive(
            "batches_per_request",
            self.batches_per_request.map(|v| v as u64),
            DEFAULT_BATCHES_PER_REQUEST as u64,
        )? as usize;
        let timeout = positive("timeout_secs", self.timeout_secs, 10)?;
        let bearer_token = match &self.bearer_token_env {
            None => None,
            // Fail closed: a token that was meant to be sent and is missing stops the start.
            Some(var) => match env(var).filter(|t| !t.trim().is_empty()) {
                Some(token) => Some(token.trim().to_string()),
                None => {
                    return Err(format!(
                        "bearer_token_env: the environment variable {var} is unset or empty"
                    ));
                }
            },
        };
        Ok(TelemetryConfig {
            url: url.to_string(),
            external: external.into_iter().collect(),
            interval: Duration::from_secs(interval),
            send_interval: Duration::from_secs(send_interval),
            keepalive: Duration::from_secs(keepalive),
            histogram_every: histogram_interval / interval,
            push_compat_families: self.push_compat_families.unwrap_or(false),
            max_series,
            buffer_max_bytes,
            daily_bytes,
            allow_metered: self.allow_metered.unwrap_or(false),
            batches_per_request: batches_per_request.min(1000),
            backlog_pause: self
                .backlog_pause_ms
                .map_or(DEFAULT_BACKLOG_PAUSE, Duration::from_millis),
            timeout: Duration::from_secs(timeout),
            bearer_token,
        })
    }
}

/// The pusher's own counters, rendered into `/metrics` as `edgellm_telemetry_*`.
#[derive(Debug, Default)]
pub struct TelemetryStats {
    pub scrapes: AtomicU64,
    pub samples_buffered: AtomicU64,
    /// Samples left out because their series had not changed (sent again at the keepalive).
    pub samples_unchanged: AtomicU64,
    pub requests_ok: AtomicU64,
    pub batches_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub rejected_batches: AtomicU64,
    /// Scrapes dropped because the buffer was full (this process), and since the file exists.
    pub dropped_batches: AtomicU64,
    pub series_dropped: AtomicU64,
    pub series_active: AtomicU64,
    pub unreadable_lines: AtomicU64,
    pub backlog_batches: AtomicU64,
    pub backlog_bytes: AtomicU64,
    /// Sends held back, by what held them: offline, interface, network_kind, metered, budget.
    pub held: std::sync::Mutex<BTreeMap<&'static str, u64>>,
}

impl TelemetryStats {
    fn hold(&self, reason: &'static str) {
        if let Ok(mut held) = self.held.lock() {
            *held.entry(reason).or_default() += 1;
        }
    }

    /// The Prometheus text of these counters.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let families: [(&str, &str, &str, u64); 14] = [
            (
                "scrapes_total",
                "counter",
                "Scrapes taken for the push.",
                get(&self.scrapes),
            ),
            (
                "samples_buffered_total",
                "counter",
                "Samples stored in the buffer.",
                get(&self.samples_buffered),
            ),
            (
                "samples_unchanged_total",
                "counter",
                "Samples not buffered because their series had not changed since it was last sent.",
                get(&self.samples_unchanged),
            ),
            (
                "requests_total",
                "counter",
                "Remote-write requests the receiver acknowledged.",
                get(&self.requests_ok),
            ),
            (
                "batches_sent_total",
                "counter",
                "Scrapes the receiver acknowledged.",
                get(&self.batches_sent),
            ),
            (
                "sent_bytes_total",
                "counter",
                "Request bytes sent (bodies and headers edgellm writes).",
                get(&self.bytes_sent),
            ),
            (
                "send_errors_total",
                "counter",
                "Remote-write requests that failed (network, 5xx, 429); retried.",
                get(&self.send_errors),
            ),
            (
                "rejected_batches_total",
                "counter",
                "Scrapes the receiver refused for good (4xx); dropped.",
                get(&self.rejected_batches),
            ),
            (
                "dropped_batches_total",
                "counter",
                "Scrapes dropped, oldest first, because the buffer was full.",
                get(&self.dropped_batches),
            ),
            (
                "series_dropped_total",
                "counter",
                "Samples of new series left out by the series cap.",
                get(&self.series_dropped),
            ),
            (
                "unreadable_lines_total",
                "counter",
                "Exposition lines the pusher could not read.",
                get(&self.unreadable_lines),
            ),
            (
                "series_active",
                "gauge",
                "Distinct series the push admits (bounded by max_series).",
                get(&self.series_active),
            ),
            (
                "backlog_batches",
                "gauge",
                "Scrapes in the buffer waiting for the receiver.",
                get(&self.backlog_batches),
            ),
            (
                "backlog_bytes",
                "gauge",
                "Bytes in the buffer waiting for the receiver.",
                get(&self.backlog_bytes),
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(
                out,
                "# HELP edgellm_telemetry_{name} {help}\n# TYPE edgellm_telemetry_{name} {kind}\nedgellm_telemetry_{name} {value}"
            );
        }
        out.push_str("# HELP edgellm_telemetry_held_total Sends held back, by what held them.\n# TYPE edgellm_telemetry_held_total counter\n");
        if let Ok(held) = self.held.lock() {
            for (reason, count) in held.iter() {
                let _ = writeln!(
                    out,
                    "edgellm_telemetry_held_total{{reason=\"{reason}\"}} {count}"
                );
            }
        }
    }
}

/// Which samples of a series travel: a new series, a changed value (with the last unsent value
/// before it, so `rate()` and `increase()` see the step where it happened), and an unchanged
/// gauge once every `keepalive` (a counter's or histogram's unchanged value says nothing new).
/// Everything else stays on the device. One entry per admitted series: bounded by the series cap.
#[derive(Debug)]
pub struct Changes {
    keepalive_ms: i64,
    last: std::collections::HashMap<String, Last>,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    bits: u64,
    seen_ms: i64,
    sent_ms: i64,
}

impl Changes {
    pub fn new(keepalive: Duration) -> Changes {
        Changes {
            keepalive_ms: keepalive.as_millis().min(i64::MAX as u128) as i64,
            last: std::collections::HashMap::new(),
        }
    }

    /// The samples of series `key` to send for `value` at `now_ms` (none, one or two); `level`
    /// for a gauge (re-sent unchanged at the keepalive).
    pub fn samples(&mut self, key: &str, value: f64, level: bool, now_ms: i64) -> Vec<Sample> {
        let bits = value.to_bits();
        let current = Sample {
            value,
            timestamp: now_ms,
        };
        let Some(last) = self.last.get_mut(key) else {
            self.last.insert(
                key.to_string(),
                Last {
                    bits,
                    seen_ms: now_ms,
                    sent_ms: now_ms,
                },
            );
            return vec![current];
        };
        if last.bits != bits {
            let mut out = Vec::with_capacity(2);
            if last.seen_ms > last.sent_ms {
                out.push(Sample {
                    value: f64::from_bits(last.bits),
                    timestamp: last.seen_ms,
                });
            }
            out.push(current);
            *last = Last {
                bits,
                seen_ms: now_ms,
                sent_ms: now_ms,
            };
            return out;
        }
        last.seen_ms = now_ms;
        if level && now_ms.saturating_sub(last.sent_ms) >= self.keepalive_ms {
            last.sent_ms = now_ms;
            return vec![current];
        }
        Vec::new()
    }
}

/// Families `/metrics` shows that the push leaves out: they move with every scrape because of the
/// push itself, and would be most of an idle device's bytes.
const PUSH_EXCLUDED: &[&str] = &[
    "edgellm_telemetry_samples_buffered_total",
    "edgellm_telemetry_samples_unchanged_total",
];

/// Prefixes of the compatibility families, left out of the push unless `push_compat_families`:
/// llama-server's `llamacpp:*` (for scrapers written against llama-server; most repeat
/// `edgellm_*` families, the rest are engine diagnostics for a local scrape) and OpenTelemetry's
/// GenAI `gen_ai_*` (the same requests as the `edgellm_*` histograms, in the conventions'
/// spelling and buckets). Sending both spellings of each request over a metered link would
/// double what travels (docs/telemetry.md, "What travels").
const COMPAT_PREFIXES: &[&str] = &["llamacpp:", "gen_ai_"];

/// Which lines of one scrape travel.
#[derive(Debug, Clone, Copy)]
pub struct Select {
    /// Histogram series are due this scrape (`histogram_interval_secs`).
    pub histograms: bool,
    /// The compatibility families travel too (`push_compat_families`).
    pub compat: bool,
}

impl Select {
    fn pushed(&self, line: &exposition::Line) -> bool {
        let name = line.name.as_str();
        !PUSH_EXCLUDED.contains(&name)
            && (self.compat || !COMPAT_PREFIXES.iter().any(|p| name.starts_with(p)))
            && (self.histograms || !line.histogram)
    }
}

/// Turns one scrape's text into a remote-write request at `timestamp_ms`: the series cap, the
/// external labels, bounded label values, and only the samples [`Changes`] lets through.
/// Which lines are read is `select`'s (histogram cadence, compatibility families).
pub fn to_request(
    text: &str,
    timestamp_ms: i64,
    select: Select,
    external: &[(String, String)],
    cap: &mut exposition::SeriesCap,
    changes: &mut Changes,
    stats: &TelemetryStats,
) -> WriteRequest {
    let (lines, unreadable) = exposition::parse(text);
    stats
        .unreadable_lines
        .fetch_add(unreadable as u64, Ordering::Relaxed);
    let mut timeseries = Vec::with_capacity(lines.len());
    let mut dropped = 0u64;
    let mut seen = std::collections::HashSet::new();
    for line in lines {
        if !select.pushed(&line) {
            continue;
        }
        let mut labels: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, value) in &line.labels {
            // The device's identity wins over a metric's own label of the same name.
            labels.insert(name, exposition::bound_value(value));
        }
        for (name, value) in external {
            labels.insert(name, value);
        }
        labels.insert("__name__", &line.name);
        let key = labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(",");
        if !cap.admit(&key) {
            dropped += 1;
            continue;
        }
        // Two lines that became one series (values cut to the same prefix): the first counts;
        // a receiver refuses a request with two values for one series at one time.
        if seen.contains(&key) {
            continue;
        }
        let samples = changes.samples(&key, line.value, line.level, timestamp_ms);
        seen.insert(key);
        if samples.is_empty() {
            stats.samples_unchanged.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        timeseries.push(TimeSeries {
            labels: labels
                .into_iter()
                .map(|(name, value)| Label {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            samples,
        });
    }
    stats.series_dropped.fetch_add(dropped, Ordering::Relaxed);
    stats
        .series_active
        .store(cap.active() as u64, Ordering::Relaxed);
    WriteRequest { timeseries }
}

/// What the pusher needs from the server: the metrics text, and the network gate's policy.
pub trait Source: Send + Sync + 'static {
    fn scrape(&self) -> futures::future::BoxFuture<'_, String>;
}

/// The running pusher.
/// Milliseconds since the Unix epoch; a test's simulated clock replaces the system's.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub struct Pusher {
    config: TelemetryConfig,
    clock: Clock,
    network: NetworkPolicy,
    buffer_path: PathBuf,
    pub stats: Arc<TelemetryStats>,
    client: reqwest::Client,
}

impl Pusher {
    /// Opens (or creates) the buffer in `data_dir` so that a bad path fails the start.
    pub fn new(
        config: TelemetryConfig,
        network: NetworkPolicy,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Pusher> {
        use anyhow::Context;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let buffer_path = data_dir.join(buffer::FILE_NAME);
        let buffer = buffer::Buffer::open(&buffer_path, config.buffer_max_bytes)
            .with_context(|| format!("cannot open {}", buffer_path.display()))?;
        let stats = Arc::new(TelemetryStats::default());
        publish_backlog(&buffer, &stats);
        crate::upstream::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the telemetry HTTP client")?;
        Ok(Pusher {
            config,
            clock: Arc::new(|| jiff::Timestamp::now().as_millisecond()),
            network,
            buffer_path,
            stats,
            client,
        })
    }

    /// Timestamps scrapes and counts budget days by `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Pusher {
        self.clock = clock;
        self
    }

    fn day(&self) -> String {
        jiff::Timestamp::from_millisecond((self.clock)())
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }

    /// Scrapes and sends until `stop` is cancelled. Scraping and sending are two loops: a slow
    /// or hanging receiver never delays a scrape.
    pub async fn run(self, source: Arc<dyn Source>, stop: tokio_util::sync::CancellationToken) {
        let buffer = match buffer::Buffer::open(&self.buffer_path, self.config.buffer_max_bytes) {
            Ok(buffer) => Arc::new(std::sync::Mutex::new(buffer)),
            Err(error) => {
                tracing::error!(%error, "telemetry buffer unavailable: telemetry stopped");
                return;
            }
        };
        let this = Arc::new(self);
        let sender = tokio::spawn(this.clone().send_loop(buffer.clone(), stop.clone()));
        let mut cap = exposition::SeriesCap::new(this.config.max_series);
        let mut changes = Changes::new(this.config.keepalive);
        let mut ticker = tokio::time::interval(this.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scrapes = 0u64;
        loop {
            // Biased: once stopped, no scrape more, even when the tick is due too (an unbiased
            // select took one more about half the time).
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let text = source.scrape().await;
            let now_ms = (this.clock)();
            let select = Select {
                histograms: scrapes.is_multiple_of(this.config.histogram_every),
                compat: this.config.push_compat_families,
            };
            scrapes += 1;
            let request = to_request(
                &text,
                now_ms,
                select,
                &this.config.external,
                &mut cap,
                &mut changes,
                &this.stats,
            );
            this.stats.scrapes.fetch_add(1, Ordering::Relaxed);
            if request.timeseries.is_empty() {
                continue;
            }
            let samples = request
                .timeseries
                .iter()
                .map(|s| s.samples.len() as u64)
                .sum::<u64>();
            let body = remote_write::compress(&request);
            let stored = {
                let buffer = buffer.clone();
                tokio::task::spawn_blocking(move || {
                    let mut buffer = buffer.lock().map_err(|_| "poisoned".to_string())?;
                    buffer
                        .push(now_ms, samples, &body)
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
            };
            match stored {
                Ok(dropped) => {
                    this.stats
                        .samples_buffered
                        .fetch_add(samples, Ordering::Relaxed);
                    this.stats
                        .dropped_batches
                        .fetch_add(dropped, Ordering::Relaxed);
                }
                Err(error) => tracing::warn!(%error, "cannot store a telemetry scrape"),
            }
            // The backlog gauges move with the send loop only (after each send or hold): a
            // healthy device's backlog then reads 0 at every scrape, and costs nothing to push.
        }
        let _ = sender.await;
    }

    /// Sends every `send_interval`, backing off exponentially (at most 5 minutes) after failures.
    async fn send_loop(
        self: Arc<Self>,
        buffer: Arc<std::sync::Mutex<buffer::Buffer>>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let kinds = crate::netstate::KindCache::default();
        let mut failures = 0u32;
        let mut ticker = tokio::time::interval(self.config.send_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = self.drain(&buffer, &kinds, &stop) => outcome,
            };
            self.publish(&buffer);
            match outcome {
                Ok(()) => failures = 0,
                Err(_) => {
                    failures = failures.saturating_add(1);
                    let wait = (self.config.send_interval * (1u32 << failures.min(8)))
                        .min(Duration::from_secs(300));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    fn publish(&self, buffer: &std::sync::Mutex<buffer::Buffer>) {
        if let Ok(buffer) = buffer.lock() {
            publish_backlog(&buffer, &self.stats);
        }
    }

    /// Sends the backlog, oldest first, until it is empty, a gate holds it, or a send fails
    /// (`Err` with the consecutive failures so far).
    async fn drain(
        &self,
        buffer: &Arc<std::sync::Mutex<buffer::Buffer>>,
        kinds: &crate::netstate::KindCache,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), u32> {
        let mut first = true;
        loop {
            if let Some(reason) = self.gate(kinds) {
                self.stats.hold(reason);
                return Ok(());
            }
            let day = self.day();
            let (batches, sent_today) = {
                let Ok(buffer) = buffer.lock() else {
                    return Ok(());
                };
                let batches = buffer
                    .oldest(self.config.batches_per_request, 1 << 20)
                    .unwrap_or_default();
                (batches, buffer.sent_on(&day).unwrap_or(0))
            };
            if batches.is_empty() {
                return Ok(());
            }
            let bodies: Vec<Vec<u8>> = batches.iter().map(|b| b.body.clone()).collect();
            let ids: Vec<i64> = batches.iter().map(|b| b.id).collect();
            let body = match remote_write::merge(&bodies) {
                Ok(body) => body,
                Err(corrupt) => {
                    // A corrupt row cannot be sent: drop it rather than block the backlog.
                    if let Ok(mut buffer) = buffer.lock() {
                        let _ = buffer.reject(&ids[corrupt..=corrupt], &day, 0);
                    }
                    self.stats.rejected_batches.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            let wire = body.len() as u64 + REQUEST_OVERHEAD;
            if sent_today + wire > self.config.daily_bytes {
                self.stats.hold("budget");
                return Ok(());
            }
            if !first {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.config.backlog_pause) => {}
                }
            }
            first = false;
            let mut request = self
                .client
                .post(&self.config.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("User-Agent", concat!("edgellm/", env!("CARGO_PKG_VERSION")))
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(body);
            if let Some(token) = &self.config.bearer_token {
                request = request.bearer_auth(token);
            }
            let outcome = request.send().await;
            let status = match outcome {
                Ok(response) => response.status(),
                Err(error) => {
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %crate::upstream::chain(&error), "telemetry send failed");
                    return Err(1);
                }
            };
            let settle = {
                let buffer = buffer.clone();
                let ids = ids.clone();
                let day = day.clone();
                let ok = status.is_success();
                tokio::task::spawn_blocking(move || {
                    let Ok(mut buffer) = buffer.lock() else {
                        return Err("poisoned".to_string());
                    };
                    if ok {
                        buffer.acknowledge(&ids, &day, wire)
                    } else {
                        buffer.reject(&ids, &day, wire)
                    }
                    .map_err(|e| e.to_string())
                })
            };
            if status.is_success() {
                if let Ok(Ok(())) = settle.await {
                    self.stats.requests_ok.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .batches_sent
                        .fetch_add(ids.len() as u64, Ordering::Relaxed);
                    self.stats.bytes_sent.fetch_add(wire, Ordering::Relaxed);
                } else {
                    tracing::warn!("telemetry: cannot delete acknowledged scrapes");
                    return Err(1);
                }
            } else if status.is_client_error() && status.as_u16() != 429 {
                // Refused for good (malformed, out of bounds): resending cannot help.
                let _ = settle.await;
                self.stats
                    .rejected_batches
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
                self.stats.bytes_sent.fetch_add(wire, Ordering::Relaxed);
                tracing::warn!(%status, batches = ids.len(), "telemetry receiver refused scrapes; dropped");
            } else {
                drop(settle);
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%status, "telemetry receiver failed; retrying later");
                return Err(1);
            }
        }
    }

    /// Which network gate holds the send now, if one does.
    fn gate(&self, kinds: &crate::netstate::KindCache) -> Option<&'static str> {
        let mut policy = self.network.clone();
        policy.deny_metered = !self.config.allow_metered;
        let state = crate::netstate::read_cached(&policy.proc_root, &policy.sys_root, kinds);
        crate::guard::network::check_network(&policy, &state)
            .err()
            .map(|refusal| refusal.reason())
    }
}

/// Request line, headers and framing edgellm writes besides the body (measured with a capturing
/// receiver, docs/telemetry.md): counted against the daily byte budget with every request.
pub const REQUEST_OVERHEAD: u64 = 300;

fn publish_backlog(buffer: &buffer::Buffer, stats: &TelemetryStats) {
    if let Ok(s) = buffer.stats() {
        stats.backlog_batches.store(s.batches, Ordering::Relaxed);
        stats.backlog_bytes.store(s.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Histograms due, compatibility families left home (the defaults at a due step).
    const DUE: Select = Select {
        histograms: true,
        compat: false,
    };
    const BETWEEN: Select = Select {
        histograms: false,
        compat: false,
    };

    fn raw(url: &str) -> RawTelemetry {
        RawTelemetry {
            remote_write_url: url.into(),
            device_id: "gw-1".into(),
            ..RawTelemetry::default()
        }
    }

    #[test]
    fn configuration_fails_closed() {
        let none = |_: &str| None;
        assert!(
            raw("http://127.0.0.1:9090/api/v1/write")
                .validate("m", &none)
                .is_ok()
        );
        for bad in ["", "ftp://x/y", "http://", "not a url", "http://u:p@host/x"] {
            assert!(raw(bad).validate("m", &none).is_err(), "{bad:?}");
        }
        let mut no_device = raw("http://h/w");
        no_device.device_id = " ".into();
        assert!(no_device.validate("m", &none).is_err());
        let mut token = raw("http://h/w");
        token.bearer_token_env = Some("EDGELLM_TELEMETRY_TOKEN_UNSET".into());
        assert!(token.validate("m", &none).unwrap_err().contains("unset"));
        let mut labels = raw("http://h/w");
        labels.labels.insert("device".into(), "x".into());
        assert!(labels.validate("m", &none).is_err());
        labels.labels.clear();
        labels.labels.insert("__name__".into(), "x".into());
        assert!(labels.validate("m", &none).is_err());
        let mut zero = raw("http://h/w");
        zero.interval_secs = Some(0);
        assert!(zero.validate("m", &none).is_err());
    }

    #[test]
    fn external_labels_identify_the_device_not_the_request() {
        let mut section = raw("http://h/w");
        section.site = Some("plant-3".into());
        section.labels.insert("fleet".into(), "a".into());
        let config = section.validate("gemma", &|_| None).unwrap();
        let names: Vec<&str> = config.external.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["device", "fleet", "job", "model", "site", "version"]
        );
        let stats = TelemetryStats::default();
        let mut cap = exposition::SeriesCap::new(10);
        let text = "edgellm_x_total{device=\"spoofed\",tier=\"t\"} 2\n";
        let mut changes = Changes::new(Duration::from_secs(60));
        let request = to_request(
            text,
            1000,
            DUE,
            &config.external,
            &mut cap,
            &mut changes,
            &stats,
        );
        let labels = &request.timeseries[0].labels;
        let get = |n: &str| {
            labels
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.as_str())
        };
        assert_eq!(get("__name__"), Some("edgellm_x_total"));
        assert_eq!(get("device"), Some("gw-1"));
        assert_eq!(get("tier"), Some("t"));
        let mut sorted = labels.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(&sorted, labels, "labels must be sorted by name");
    }

    #[test]
    fn the_series_cap_holds_under_hostile_label_values() {
        let config = raw("http://h/w").validate("m", &|_| None).unwrap();
        let stats = TelemetryStats::default();
        let mut cap = exposition::SeriesCap::new(50);
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!(
                "edgellm_routed_requests_total{{tier=\"{i}{}\",reason=\"default\"}} 1\n",
                "x".repeat(300)
            ));
        }
        let mut changes = Changes::new(Duration::from_secs(60));
        let request = to_request(
            &text,
            1,
            DUE,
            &config.external,
            &mut cap,
            &mut changes,
            &stats,
        );
        assert_eq!(request.timeseries.len(), 50);
        assert_eq!(stats.series_dropped.load(Ordering::Relaxed), 4950);
        assert_eq!(stats.series_active.load(Ordering::Relaxed), 50);
        for series in &request.timeseries {
            assert!(
                series
                    .labels
                    .iter()
                    .all(|l| l.value.len() <= exposition::MAX_LABEL_VALUE)
            );
        }
    }

    #[test]
    fn only_changes_travel_with_the_step_before_them_and_a_keepalive() {
        let mut changes = Changes::new(Duration::from_secs(10));
        let times = |samples: Vec<Sample>| -> Vec<(i64, f64)> {
            samples.iter().map(|s| (s.timestamp, s.value)).collect()
        };
        assert_eq!(times(changes.samples("a", 1.0, true, 0)), [(0, 1.0)]);
        assert!(changes.samples("a", 1.0, true, 1000).is_empty());
        assert!(changes.samples("a", 1.0, true, 2000).is_empty());
        // A change sends the last unchanged value too: rate() sees the step at 3000, not 0..3000.
        assert_eq!(
            times(changes.samples("a", 2.0, true, 3000)),
            [(2000, 1.0), (3000, 2.0)]
        );
        // A change right after a sent sample sends only itself.
        assert_eq!(times(changes.samples("a", 3.0, true, 4000)), [(4000, 3.0)]);
        for t in (5000..14000).step_by(1000) {
            assert!(changes.samples("a", 3.0, true, t).is_empty(), "{t}");
        }
        assert_eq!(
            times(changes.samples("a", 3.0, true, 14000)),
            [(14000, 3.0)]
        );
        // NaN equals NaN here (bit for bit): a NaN gauge is not re-sent every scrape.
        assert_eq!(changes.samples("n", f64::NAN, true, 0).len(), 1);
        assert!(changes.samples("n", f64::NAN, true, 1000).is_empty());
        // A counter's unchanged value is never re-sent: its changes are its information.
        assert_eq!(changes.samples("c", 5.0, false, 0).len(), 1);
        assert!(changes.samples("c", 5.0, false, 99_000).is_empty());
        // Series are independent.
        assert_eq!(
            times(changes.samples("b", 3.0, true, 14000)),
            [(14000, 3.0)]
        );
    }

    #[test]
    fn an_unchanged_scrape_is_counted_not_sent() {
        let config = raw("http://h/w").validate("m", &|_| None).unwrap();
        let stats = TelemetryStats::default();
        let mut cap = exposition::SeriesCap::new(10);
        let mut changes = Changes::new(Duration::from_secs(3600));
        let text = "edgellm_a_total 1\nedgellm_b 2\n";
        let first = to_request(
            text,
            0,
            DUE,
            &config.external,
            &mut cap,
            &mut changes,
            &stats,
        );
        assert_eq!(first.timeseries.len(), 2);
        let second = to_request(
            "edgellm_a_total 2\nedgellm_b 2\n",
            60_000,
            DUE,
            &config.external,
            &mut cap,
            &mut changes,
            &stats,
        );
        assert_eq!(second.timeseries.len(), 1);
        assert_eq!(stats.samples_unchanged.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn histograms_travel_at_their_own_cadence_and_compatibility_families_stay_home() {
        let config = raw("http://h/w").validate("m", &|_| None).unwrap();
        assert_eq!(
            config.histogram_every, 30,
            "1800 s histograms over 60 s scrapes"
        );
        let stats = TelemetryStats::default();
        let mut cap = exposition::SeriesCap::new(100);
        let mut changes = Changes::new(Duration::from_secs(3600));
        let scrape = |n: u32| {
            format!(
                "# TYPE edgellm_a_total counter\nedgellm_a_total {n}\n\
                 # TYPE edgellm_h histogram\nedgellm_h_bucket{{le=\"1\"}} {n}\nedgellm_h_sum {n}\nedgellm_h_count {n}\n\
                 # TYPE llamacpp:n_decode_total counter\nllamacpp:n_decode_total {n}\n\
                 # TYPE gen_ai_client_token_usage histogram\ngen_ai_client_token_usage_count {n}\n"
            )
        };
        let names = |request: &WriteRequest| -> Vec<String> {
            request
                .timeseries
                .iter()
                .map(|s| {
                    let name = s.labels.iter().find(|l| l.name == "__name__").unwrap();
                    name.value.clone()
                })
                .collect()
        };
        let due = to_request(
            &scrape(1),
            0,
            DUE,
            &config.external,
            &mut cap,
            &mut changes,
            &stats,
        );
        assert_eq!(
            names(&due),
            [
                "edgellm_a_total",
                "edgellm_h_bucket",
                "edgellm_h_sum",
                "edgellm_h_count"
            ]
        );
        let between = to_request(
            &scrape(2),
            60_000,
            BETWEEN,
            &config.external,
            &mut cap,
            &mut changes,
            &stats,
        );
        assert_eq!(names(&between), ["edgellm_a_total"]);
        // At the next due step the histogram's change travels; no value before it was skipped.
        let next = to_request(
            &scrape(3),
            120_000,
            DUE,
            &config.external,
            &mut cap,
            &mut changes,
            &stats,
        );
        assert_eq!(next.timeseries.len(), 4);
        assert!(next.timeseries.iter().all(|s| s.samples.len() == 1));
        // Asked for, the compatibility families travel too.
        let mut section = raw("http://h/w");
        section.push_compat_families = Some(true);
        let compat = section.validate("m", &|_| None).unwrap();
        assert!(compat.push_compat_families);
        let mut fresh = Changes::new(Duration::from_secs(3600));
        let with = to_request(
            &scrape(4),
            180_000,
            Select {
                histograms: true,
                compat: true,
            },
            &config.external,
            &mut cap,
            &mut fresh,
            &stats,
        );
        let with = names(&with);
        assert!(
            with.contains(&"llamacpp:n_decode_total".to_string()),
            "{with:?}"
        );
        assert!(
            with.contains(&"gen_ai_client_token_usage_count".to_string()),
            "{with:?}"
        );
        for bad in [0, 30, 90] {
            let mut section = raw("http://h/w");
            section.histogram_interval_secs = Some(bad);
            assert!(section.validate("m", &|_| None).is_err(), "{bad}");
        }
    }
}
