//! Every metric edgellm exports, defined in one place, rendered in Prometheus' text format.
//!
//! Counters and histograms are plain atomics and mutex-guarded maps: recording is a few
//! nanoseconds and needs no registry crate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::engine::EngineLoad;

/// A histogram with fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if !value.is_finite() {
            return;
        }
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if value <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((value * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The mean of the observed values, once there is one.
    pub fn mean(&self) -> Option<f64> {
        let count = self.count.load(Ordering::Relaxed);
        (count > 0).then(|| self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6 / count as f64)
    }

    /// The series of this histogram under `labels` (none when empty; no HELP/TYPE lines).
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let with = |le: &str| {
            if labels.is_empty() {
                format!("{{le=\"{le}\"}}")
            } else {
                format!("{{{labels},le=\"{le}\"}}")
            }
        };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                with(&bound.to_string()),
                count.load(Ordering::Relaxed)
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{} {total}", with("+Inf"));
        let own = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{own} {sum}");
        let _ = writeln!(out, "{name}_count{own} {total}");
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }
}

const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Mask computations are tens of microseconds to a few milliseconds.
const MASK_SECONDS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
];
/// Probabilities: confidence signals on the probability scale.
const PROBABILITY: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0];
/// How many of the latest judged answers the live confidence view covers.
pub const CONFIDENCE_WINDOW: usize = 500;
const TOKENS_PER_SECOND: &[f64] = &[1.0, 2.0, 5.0, 10.0, 15.0, 25.0, 50.0, 100.0, 200.0, 400.0];

// The bucket boundaries OpenTelemetry's GenAI semantic conventions recommend for each instrument.
const GEN_AI_TOKENS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const GEN_AI_DURATION: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const GEN_AI_TTFT: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const GEN_AI_TPOT: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// The attributes of one GenAI series: `gen_ai.operation.name`, `gen_ai.provider.name`,
/// `gen_ai.request.model`, and edgellm's tier. All come from the configuration (tier names and
/// models) and the endpoint kind, never from a request, so their number is bounded by the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GenAiKey {
    pub operation: &'static str,
    pub provider: &'static str,
    pub model: String,
    pub tier: String,
}

/// What one answered (or failed) request adds to the GenAI families.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenAiObservation {
    pub input_tokens: usize,
    pub output_tokens: usize,
    pub duration_secs: f64,
    pub ttft_secs: Option<f64>,
    pub tpot_secs: Option<f64>,
    /// `error.type` when the request failed after it was committed to the tier.
    pub error: Option<&'static str>,
}

#[derive(Debug)]
struct GenAiSeries {
    input: Histogram,
    output: Histogram,
    ttft: Histogram,
    tpot: Histogram,
    /// Duration by `error.type` ("" when the operation succeeded).
    duration: BTreeMap<&'static str, Histogram>,
}

/// Confidence routing as `/v1/status` and `edgellm status` show it.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct ConfidenceView {
    pub judged: u64,
    pub low: u64,
    /// How many latest judged answers the two fields below cover.
    pub recent: usize,
    pub recent_low_share: Option<f64>,
    /// p10, p50, p90 of the geometric-mean token probability.
    pub recent_token_probability: Option<[f64; 3]>,
}

/// Who reads the metrics: each keeps its own window for the throughput gauges
/// (`llamacpp:prompt_tokens_seconds`, `llamacpp:predicted_tokens_seconds`), which are the rates
/// since that reader's previous scrape, as llama-server's are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scraper {
    /// `GET /metrics`.
    Http,
    /// The remote-write pusher (`[telemetry]`).
    Push,
}

/// The counters at a reader's previous scrape.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    prompt_tokens: u64,
    prompt_secs: f64,
    predicted_tokens: u64,
    predicted_secs: f64,
}

/// The generation engine as `/metrics` reports it.
#[derive(Clone, Copy, Default)]
pub struct EngineState<'a> {
    /// Its counters (kept while it sleeps).
    pub load: Option<&'a EngineLoad>,
    pub loaded: bool,
    pub asleep: bool,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub rejected_overloaded: AtomicU64,
    pub time_to_first_token: Histogram,
    pub decode_tokens_per_second: Histogram,
    pub request_duration: Histogram,
    /// Compiling a request's schema or grammar.
    pub constraint_compile: Histogram,
    /// Computing one constrained token's mask.
    pub constraint_mask: Histogram,
    /// Tokens appended by a constraint without sampling (jump-forward).
    pub forced_tokens: AtomicU64,
    /// Time spent on prompts and on generating, summed over local generations (µs), and the
    /// longest request in tokens: llama-server's `llamacpp:*` throughput families.
    prompt_micros: AtomicU64,
    predicted_micros: AtomicU64,
    tokens_max: AtomicU64,
    model_load_micros: AtomicU64,
    /// Answered requests by the tier that answered and the reason it did.
    routed: Mutex<BTreeMap<(String, &'static str), u64>>,
    fallbacks: AtomicU64,
    upstream_errors: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Time from routing to the end of the answer, by where it was answered.
    pub local_latency: Histogram,
    pub remote_latency: Histogram,
    /// Local answers judged for confidence (a later tier existed): the geometric-mean token
    /// probability (`exp` of the mean log probability), the combiner's probability when one is
    /// configured, how many were judged and how many were low, and the latest ones.
    pub confidence_token_probability: Histogram,
    pub confidence_combined: Histogram,
    confidence_judged: AtomicU64,
    confidence_low: AtomicU64,
    confidence_recent: Mutex<std::collections::VecDeque<(f32, bool)>>,
    /// Task runs (HTTP and CLI) by task and outcome.
    task_runs: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Action attempts by action (configured name or `unknown`) and outcome.
    actions: Mutex<BTreeMap<(String, String), u64>>,
    /// The MQTT bridge's counters, once it runs.
    mqtt: OnceLock<Arc<MqttCounters>>,
    /// The telemetry pusher's counters, once it runs.
    telemetry: OnceLock<Arc<crate::telemetry::TelemetryStats>>,
    /// OpenTelemetry GenAI semantic-convention families (`gen_ai_*`).
    gen_ai: Mutex<BTreeMap<GenAiKey, GenAiSeries>>,
    /// Each reader's window for the throughput gauges.
    windows: [std::sync::Mutex<Window>; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            windows: Default::default(),
            requests: Mutex::new(BTreeMap::new()),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cached_prompt_tokens: AtomicU64::new(0),
            rejected_overloaded: AtomicU64::new(0),
            time_to_first_token: Histogram::new(SECONDS),
            decode_tokens_per_second: Histogram::new(TOKENS_PER_SECOND),
            request_duration: Histogram::new(SECONDS),
            constraint_compile: Histogram::new(SECONDS),
            constraint_mask: Histogram::new(MASK_SECONDS),
            forced_tokens: AtomicU64::new(0),
            prompt_micros: AtomicU64::new(0),
            predicted_micros: AtomicU64::new(0),
            tokens_max: AtomicU64::new(0),
            model_load_micros: AtomicU64::new(0),
            routed: Mutex::new(BTreeMap::new()),
            fallbacks: AtomicU64::new(0),
            upstream_errors: Mutex::new(BTreeMap::new()),
            local_latency: Histogram::new(SECONDS),
            remote_latency: Histogram::new(SECONDS),
            confidence_token_probability: Histogram::new(PROBABILITY),
            confidence_combined: Histogram::new(PROBABILITY),
            confidence_judged: AtomicU64::new(0),
            confidence_low: AtomicU64::new(0),
            confidence_recent: Mutex::new(std::collections::VecDeque::new()),
            task_runs: Mutex::new(BTreeMap::new()),
            actions: Mutex::new(BTreeMap::new()),
            mqtt: OnceLock::new(),
            telemetry: OnceLock::new(),
            gen_ai: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    pub fn count_request(&self, endpoint: &str, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((endpoint.to_string(), status)).or_default() += 1;
        }
    }

    pub fn record_generation(&self, summary: &crate::engine::Summary) {
        self.prompt_tokens
            .fetch_add(summary.prompt_tokens as u64, Ordering::Relaxed);
        self.cached_prompt_tokens
            .fetch_add(summary.cached_tokens as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(summary.generated_tokens as u64, Ordering::Relaxed);
        self.prompt_micros
            .fetch_add(summary.prefill_time.as_micros() as u64, Ordering::Relaxed);
        self.predicted_micros
            .fetch_add(summary.decode_time.as_micros() as u64, Ordering::Relaxed);
        self.tokens_max.fetch_max(
            (summary.prompt_tokens + summary.generated_tokens) as u64,
            Ordering::Relaxed,
        );
        if summary.generated_tokens > 0 {
            self.time_to_first_token
                .observe(summary.time_to_first_token().as_secs_f64());
        }
        if summary.generated_tokens > 1 {
            self.decode_tokens_per_second
                .observe(summary.decode_tokens_per_second());
        }
    }

    /// A constrained token: its mask time, or that it was forced.
    pub fn record_constrained_token(&self, token: &crate::engine::TokenEvent) {
        if token.forced {
            self.forced_tokens.fetch_add(1, Ordering::Relaxed);
        } else if !token.mask_time.is_zero() {
            self.constraint_mask.observe(token.mask_time.as_secs_f64());
        }
    }

    /// A request answered by `tier`; `fell_back` when an earlier tier was left for it.
    pub fn count_routed(&self, tier: &str, reason: &'static str, fell_back: bool) {
        if let Ok(mut routed) = self.routed.lock() {
            *routed.entry((tier.to_string(), reason)).or_default() += 1;
        }
        if fell_back {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One operation in the GenAI families' terms.
    pub fn record_gen_ai(&self, key: GenAiKey, observation: GenAiObservation) {
        let Ok(mut all) = self.gen_ai.lock() else {
            return;
        };
        // An embedding has input tokens only (OpenTelemetry's `embeddings` operation).
        let has_output = key.operation != "embeddings";
        let series = all.entry(key).or_insert_with(|| GenAiSeries {
            input: Histogram::new(GEN_AI_TOKENS),
            output: Histogram::new(GEN_AI_TOKENS),
            ttft: Histogram::new(GEN_AI_TTFT),
            tpot: Histogram::new(GEN_AI_TPOT),
            duration: BTreeMap::new(),
        });
        series
            .duration
            .entry(observation.error.unwrap_or(""))
            .or_insert_with(|| Histogram::new(GEN_AI_DURATION))
            .observe(observation.duration_secs);
        if observation.error.is_none() {
            series.input.observe(observation.input_tokens as f64);
            if has_output {
                series.output.observe(observation.output_tokens as f64);
            }
        }
        if let Some(ttft) = observation.ttft_secs {
            series.ttft.observe(ttft);
        }
        if let Some(tpot) = observation.tpot_secs {
            series.tpot.observe(tpot);
        }
    }

    /// The GenAI semantic-convention families, named as OpenTelemetry's Prometheus exporter
    /// names them (`gen_ai.client.token.usage` becomes `gen_ai_client_token_usage`).
    fn render_gen_ai(&self, out: &mut String) {
        let Ok(all) = self.gen_ai.lock() else {
            return;
        };
        if all.is_empty() {
            return;
        }
        let attributes = |key: &GenAiKey| {
            format!(
                "gen_ai_operation_name=\"{}\",gen_ai_provider_name=\"{}\",gen_ai_request_model=\"{}\",tier=\"{}\"",
                key.operation,
                key.provider,
                escape(&key.model),
                escape(&key.tier)
            )
        };
        out.push_str("# HELP gen_ai_client_token_usage Tokens per operation (gen_ai.client.token.usage), by gen_ai_token_type.\n# TYPE gen_ai_client_token_usage histogram\n");
        for (key, series) in all.iter() {
            for (kind, histogram) in [("input", &series.input), ("output", &series.output)] {
                histogram.render_series(
                    out,
                    "gen_ai_client_token_usage",
                    &format!("{},gen_ai_token_type=\"{kind}\"", attributes(key)),
                );
            }
        }
        out.push_str("# HELP gen_ai_client_operation_duration_seconds Operation duration (gen_ai.client.operation.duration); error_type set when it failed.\n# TYPE gen_ai_client_operation_duration_seconds histogram\n");
        for (key, series) in all.iter() {
            for (error, histogram) in &series.duration {
                let labels = if error.is_empty() {
                    attributes(key)
                } else {
                    format!("{},error_type=\"{error}\"", attributes(key))
                };
                histogram.render_series(out, "gen_ai_client_operation_duration_seconds", &labels);
            }
        }
        out.push_str("# HELP gen_ai_server_time_to_first_token_seconds Time to the first output token (gen_ai.server.time_to_first_token).\n# TYPE gen_ai_server_time_to_first_token_seconds histogram\n");
        for (key, series) in all.iter() {
            series.ttft.render_series(
                out,
                "gen_ai_server_time_to_first_token_seconds",
                &attributes(key),
            );
        }
        out.push_str("# HELP gen_ai_server_time_per_output_token_seconds Time per output token after the first (gen_ai.server.time_per_output_token).\n# TYPE gen_ai_server_time_per_output_token_seconds histogram\n");
        for (key, series) in all.iter() {
            series.tpot.render_series(
                out,
                "gen_ai_server_time_per_output_token_seconds",
                &attributes(key),
            );
        }
    }

    pub fn count_upstream_error(&self, tier: &str, kind: &'static str) {
        if let Ok(mut errors) = self.upstream_errors.lock() {
            *errors.entry((tier.to_string(), kind)).or_default() += 1;
        }
    }

    /// Each remote tier's breaker: 0 closed, 1 open, 2 half-open.
    pub fn render_breakers(&self, breakers: &[(String, &'static str, u8)]) -> String {
        let mut out = String::from(
            "# HELP edgellm_breaker_state Circuit breaker of each remote tier (0 closed, 1 open, 2 half-open).\n# TYPE edgellm_breaker_state gauge\n",
        );
        for (tier, state, value) in breakers {
            let _ = writeln!(
                out,
                "edgellm_breaker_state{{tier=\"{}\",state=\"{state}\"}} {value}",
                escape(tier)
            );
        }
        out
    }

    fn render_routing(&self, out: &mut String) {
        out.push_str("# HELP edgellm_routed_requests_total Requests answered, by tier and the reason it answered.\n# TYPE edgellm_routed_requests_total counter\n");
        let mut total = 0;
        if let Ok(routed) = self.routed.lock() {
            for ((tier, reason), count) in routed.iter() {
                total += count;
                let _ = writeln!(
                    out,
                    "edgellm_routed_requests_total{{tier=\"{}\",reason=\"{reason}\"}} {count}",
                    escape(tier)
                );
            }
        }
        let fallbacks = self.fallbacks.load(Ordering::Relaxed);
        let rate = if total == 0 {
            0.0
        } else {
            fallbacks as f64 / total as f64
        };
        let _ = writeln!(
            out,
            "# HELP edgellm_fallbacks_total Requests answered by a later tier than the first they could use.\n# TYPE edgellm_fallbacks_total counter\nedgellm_fallbacks_total {fallbacks}\n# HELP edgellm_fallback_ratio Fallbacks over answered requests.\n# TYPE edgellm_fallback_ratio gauge\nedgellm_fallback_ratio {rate}"
        );
        out.push_str("# HELP edgellm_upstream_errors_total Failed remote calls, by tier and kind.\n# TYPE edgellm_upstream_errors_total counter\n");
        if let Ok(errors) = self.upstream_errors.lock() {
            for ((tier, kind), count) in errors.iter() {
                let _ = writeln!(
                    out,
                    "edgellm_upstream_errors_total{{tier=\"{}\",kind=\"{kind}\"}} {count}",
                    escape(tier)
                );
            }
        }
        self.local_latency.render(
            out,
            "edgellm_local_latency_seconds",
            "Time to answer a request on the device (routing included).",
        );
        self.remote_latency.render(
            out,
            "edgellm_remote_latency_seconds",
            "Time to answer a request on a remote tier (routing included).",
        );
        self.render_confidence(out);
    }

    fn render_confidence(&self, out: &mut String) {
        self.confidence_token_probability.render(
            out,
            "edgellm_route_confidence_token_probability",
            "Local answers judged for confidence: exp of the mean token log probability.",
        );
        if self.confidence_combined.count.load(Ordering::Relaxed) > 0 {
            self.confidence_combined.render(
                out,
                "edgellm_route_confidence_combined_probability",
                "Local answers judged for confidence: the combiner's P(correct).",
            );
        }
        let view = self.confidence_view();
        let _ = writeln!(
            out,
            "# HELP edgellm_route_confidence_judged_total Local answers judged for confidence.\n# TYPE edgellm_route_confidence_judged_total counter\nedgellm_route_confidence_judged_total {}\n# HELP edgellm_route_confidence_low_total Judged local answers found low confidence.\n# TYPE edgellm_route_confidence_low_total counter\nedgellm_route_confidence_low_total {}",
            view.judged, view.low
        );
        if let Some(share) = view.recent_low_share {
            let _ = writeln!(
                out,
                "# HELP edgellm_route_confidence_low_share Share found low over the latest {CONFIDENCE_WINDOW} judged answers.\n# TYPE edgellm_route_confidence_low_share gauge\nedgellm_route_confidence_low_share {share}"
            );
        }
    }

    /// A local answer judged for confidence (`combined`: the combiner's probability, when one is
    /// configured) and whether it was low.
    pub fn record_confidence(&self, token_probability: f32, combined: Option<f32>, low: bool) {
        self.confidence_token_probability
            .observe(f64::from(token_probability));
        if let Some(p) = combined {
            self.confidence_combined.observe(f64::from(p));
        }
        self.confidence_judged.fetch_add(1, Ordering::Relaxed);
        if low {
            self.confidence_low.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut recent) = self.confidence_recent.lock() {
            if recent.len() == CONFIDENCE_WINDOW {
                recent.pop_front();
            }
            recent.push_back((token_probability, low));
        }
    }

    /// The live view of confidence routing: totals, and over the latest
    /// [`CONFIDENCE_WINDOW`] judged answers the share found low and the token probability's
    /// 10th, 50th and 90th percentiles.
    pub fn confidence_view(&self) -> ConfidenceView {
        let mut view = ConfidenceView {
            judged: self.confidence_judged.load(Ordering::Relaxed),
            low: self.confidence_low.load(Ordering::Relaxed),
            ..ConfidenceView::default()
        };
        if let Ok(recent) = self.confidence_recent.lock()
            && !recent.is_empty()
        {
            view.recent = recent.len();
            let low = recent.iter().filter(|(_, low)| *low).count();
            view.recent_low_share = Some(low as f64 / recent.len() as f64);
            let mut p: Vec<f32> = recent.iter().map(|(p, _)| *p).collect();
            p.sort_by(f32::total_cmp);
            let at = |q: f32| f64::from(crate::route::confidence::quantile(&p, q));
            view.recent_token_probability = Some([at(0.1), at(0.5), at(0.9)]);
        }
        view
    }

    /// One task run; `outcome` is `ok`, `input_too_large`, `model_error`, `invalid_output`, ...
    pub fn count_task_run(&self, task: &str, outcome: &'static str) {
        if let Ok(mut runs) = self.task_runs.lock() {
            *runs.entry((task.to_string(), outcome)).or_default() += 1;
        }
    }

    /// One action attempt; `outcome` is `executed`, `failed` or the refusal reason. `action` must
    /// be a configured name (or `unknown`), never text the model made up.
    pub fn count_action(&self, action: &str, outcome: &str) {
        if let Ok(mut actions) = self.actions.lock() {
            *actions
                .entry((action.to_string(), outcome.to_string()))
                .or_default() += 1;
        }
    }

    /// Renders the MQTT bridge's counters as `edgellm_mqtt_<name>_total` from now on.
    pub fn set_mqtt_counters(&self, counters: Arc<MqttCounters>) {
        let _ = self.mqtt.set(counters);
    }

    fn render_tasks(&self, out: &mut String) {
        out.push_str("# HELP edgellm_task_runs_total Task runs over HTTP and the CLI, by task and outcome.\n# TYPE edgellm_task_runs_total counter\n");
        if let Ok(runs) = self.task_runs.lock() {
            for ((task, outcome), count) in runs.iter() {
                let _ = writeln!(
                    out,
                    "edgellm_task_runs_total{{task=\"{}\",outcome=\"{outcome}\"}} {count}",
                    escape(task)
                );
            }
        }
        out.push_str("# HELP edgellm_actions_total Action attempts, by action and outcome (executed, failed or the refusal reason).\n# TYPE edgellm_actions_total counter\n");
        if let Ok(actions) = self.actions.lock() {
            for ((action, outcome), count) in actions.iter() {
                let _ = writeln!(
                    out,
                    "edgellm_actions_total{{action=\"{}\",outcome=\"{}\"}} {count}",
                    escape(action),
                    escape(outcome)
                );
            }
        }
        if let Some(mqtt) = self.mqtt.get() {
            for (name, value) in mqtt.snapshot().pairs() {
                let _ = writeln!(
                    out,
                    "# HELP edgellm_mqtt_{name}_total MQTT bridge: {name} (see docs/actions.md).\n# TYPE edgellm_mqtt_{name}_total counter\nedgellm_mqtt_{name}_total {value}"
                );
            }
        }
    }

    /// Renders the telemetry pusher's counters as `edgellm_telemetry_*` from now on.
    pub fn set_telemetry_stats(&self, stats: Arc<crate::telemetry::TelemetryStats>) {
        let _ = self.telemetry.set(stats);
    }

    pub fn set_model_load_time(&self, time: std::time::Duration) {
        self.model_load_micros
            .store(time.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    /// `embed` is the embedding engine's load, counted in llama-server's prompt and decode
    /// families as llama-server counts its embedding work.
    pub fn render(
        &self,
        engine: EngineState<'_>,
        embed: Option<&crate::engine::embed::EmbedLoad>,
        slots: u32,
        scraper: Scraper,
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP edgellm_requests_total HTTP requests by endpoint and status code.\n# TYPE edgellm_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((endpoint, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "edgellm_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {count}",
                    escape(endpoint)
                );
            }
        }
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "edgellm_prompt_tokens_total",
            "Prompt tokens processed (including reused ones).",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "edgellm_prompt_tokens_cached_total",
            "Prompt tokens reused from a slot's KV cache.",
            self.cached_prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "edgellm_generated_tokens_total",
            "Tokens generated.",
            self.generated_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "edgellm_requests_rejected_overloaded_total",
            "Requests refused with 503 because slots and queue were full.",
            self.rejected_overloaded.load(Ordering::Relaxed),
        );
        self.time_to_first_token.render(
            &mut out,
            "edgellm_time_to_first_token_seconds",
            "Time from request to first generated token.",
        );
        self.decode_tokens_per_second.render(
            &mut out,
            "edgellm_decode_tokens_per_second",
            "Decode rate of each request.",
        );
        self.request_duration.render(
            &mut out,
            "edgellm_request_duration_seconds",
            "Time to answer a generation request.",
        );
        self.constraint_compile.render(
            &mut out,
            "edgellm_constraint_compile_seconds",
            "Time to check and compile a request's JSON schema, JSON mode, tools or grammar.",
        );
        self.constraint_mask.render(
            &mut out,
            "edgellm_constraint_mask_seconds",
            "Time to compute the allowed-token mask of one constrained token.",
        );
        let _ = writeln!(
            out,
            "# HELP edgellm_constraint_forced_tokens_total Tokens a constraint forced (appended without sampling).\n# TYPE edgellm_constraint_forced_tokens_total counter\nedgellm_constraint_forced_tokens_total {}",
            self.forced_tokens.load(Ordering::Relaxed)
        );
        let load = engine.load;
        let busy = load.map_or(0, |l| l.busy_slots.load(Ordering::Relaxed));
        let queued = load.map_or(0, |l| l.queued.load(Ordering::Relaxed));
        gauge(
            &mut out,
            "edgellm_slots_busy",
            "Slots decoding a request now.",
            busy as f64,
        );
        gauge(
            &mut out,
            "edgellm_slots",
            "Configured parallel slots.",
            f64::from(slots),
        );
        gauge(
            &mut out,
            "edgellm_queue_depth",
            "Requests waiting for a slot.",
            queued as f64,
        );
        gauge(
            &mut out,
            "edgellm_model_loaded",
            "1 while the model is loaded (0 while it loads, and while it sleeps).",
            if engine.loaded { 1.0 } else { 0.0 },
        );
        gauge(
            &mut out,
            "edgellm_model_asleep",
            "1 while the model is unloaded for being idle ([model] sleep_idle_secs).",
            if engine.asleep { 1.0 } else { 0.0 },
        );
        gauge(
            &mut out,
            "edgellm_model_load_seconds",
            "Time the model took to load.",
            self.model_load_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        self.render_routing(&mut out);
        self.render_tasks(&mut out);
        self.render_llamacpp(&mut out, load, embed, scraper);
        self.render_gen_ai(&mut out);
        if let Some(telemetry) = self.telemetry.get() {
            telemetry.render(&mut out);
        }
        out
    }

    /// llama-server's own families (`llamacpp:*`, as its `/metrics` writes them), so its
    /// dashboards and clients read edgellm unchanged. Local generations only; cached prompt
    /// tokens are counted apart from processed ones, as llama-server counts them. edgellm does
    /// no speculative decoding: those counters stay 0.
    fn render_llamacpp(
        &self,
        out: &mut String,
        load: Option<&EngineLoad>,
        embed: Option<&crate::engine::embed::EmbedLoad>,
        scraper: Scraper,
    ) {
        let prompt = self.prompt_tokens.load(Ordering::Relaxed);
        let cached = self.cached_prompt_tokens.load(Ordering::Relaxed);
        let embedded = embed.map_or(0, |e| e.tokens.load(Ordering::Relaxed));
        let encodes = embed.map_or(0, |e| e.batches.load(Ordering::Relaxed));
        let generation_prompt = prompt.saturating_sub(cached);
        let processed = generation_prompt + embedded;
        let predicted = self.generated_tokens.load(Ordering::Relaxed);
        let prompt_secs = self.prompt_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let predicted_secs = self.predicted_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let rate = |tokens: u64, secs: f64| {
            if secs > 0.0 {
                tokens as f64 / secs
            } else {
                0.0
            }
        };
        // The throughput since this reader's previous scrape.
        let now = Window {
            prompt_tokens: generation_prompt,
            prompt_secs,
            predicted_tokens: predicted,
            predicted_secs,
        };
        let before = {
            let mut window = self.windows[scraper as usize]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *window, now)
        };
        let prompt_rate = rate(
            now.prompt_tokens.saturating_sub(before.prompt_tokens),
            now.prompt_secs - before.prompt_secs,
        );
        let predicted_rate = rate(
            now.predicted_tokens.saturating_sub(before.predicted_tokens),
            now.predicted_secs - before.predicted_secs,
        );
        let relaxed = |a: Option<&AtomicU64>| a.map_or(0, |a| a.load(Ordering::Relaxed));
        let decodes = relaxed(load.map(|l| &l.decodes)) + encodes;
        let sequences = relaxed(load.map(|l| &l.decoded_sequences));
        let busy = load.map_or(0, |l| l.busy_slots.load(Ordering::Relaxed));
        let queued = load.map_or(0, |l| l.queued.load(Ordering::Relaxed));
        let per_decode = if decodes > 0 {
            sequences as f64 / decodes as f64
        } else {
            0.0
        };
        let families: [(&str, &str, &str, f64); 15] = [
            (
                "prompt_tokens_total",
                "counter",
                "Number of prompt tokens processed.",
                processed as f64,
            ),
            (
                "prompt_tokens_cached_total",
                "counter",
                "Number of prompt tokens reused from the cache.",
                cached as f64,
            ),
            (
                "prompt_seconds_total",
                "counter",
                "Prompt process time",
                prompt_secs,
            ),
            (
                "tokens_predicted_total",
                "counter",
                "Number of generation tokens processed.",
                predicted as f64,
            ),
            (
                "tokens_predicted_seconds_total",
                "counter",
                "Predict process time",
                predicted_secs,
            ),
            (
                "n_decode_total",
                "counter",
                "Total number of llama_decode() calls",
                decodes as f64,
            ),
            (
                "n_tokens_max",
                "counter",
                "Largest observed n_tokens.",
                self.tokens_max.load(Ordering::Relaxed) as f64,
            ),
            (
                "spec_decode_num_draft_tokens_total",
                "counter",
                "Speculative decoding draft tokens (none: edgellm does not draft).",
                0.0,
            ),
            (
                "spec_decode_num_accepted_tokens_total",
                "counter",
                "Speculative decoding accepted tokens (none).",
                0.0,
            ),
            (
                "spec_decode_num_drafts_total",
                "counter",
                "Speculative decoding drafts (none).",
                0.0,
            ),
            (
                "prompt_tokens_seconds",
                "gauge",
                "Prompt throughput in tokens/s since the previous scrape.",
                prompt_rate,
            ),
            (
                "predicted_tokens_seconds",
                "gauge",
                "Generation throughput in tokens/s since the previous scrape.",
                predicted_rate,
            ),
            (
                "requests_processing",
                "gauge",
                "Number of requests processing.",
                busy as f64,
            ),
            (
                "requests_deferred",
                "gauge",
                "Number of requests deferred.",
                queued as f64,
            ),
            (
                "n_busy_slots_per_decode",
                "gauge",
                "Average number of busy slots per llama_decode() call",
                per_decode,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(
                out,
                "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {value}"
            );
        }
    }
}

/// A label value as the text format writes it: backslash, double quote and newline escaped.
/// Every value that comes from configuration (tier, task, action names) or a request passes it.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The device's thermal state as routing reads it (`crate::thermal`): what a fleet alerts on when
/// devices throttle. Absent where sysfs has no such files.
pub fn render_thermal(reading: &crate::route::policy::ThermalReading) -> String {
    let mut out = String::new();
    if let Some(celsius) = reading.max_celsius {
        let _ = writeln!(
            out,
            "# HELP edgellm_thermal_max_celsius The hottest thermal zone.\n# TYPE edgellm_thermal_max_celsius gauge\nedgellm_thermal_max_celsius {celsius}"
        );
    }
    if let Some(ratio) = reading.min_freq_ratio {
        let _ = writeln!(
            out,
            "# HELP edgellm_cpu_freq_min_ratio The slowest CPU's current over maximum frequency.\n# TYPE edgellm_cpu_freq_min_ratio gauge\nedgellm_cpu_freq_min_ratio {ratio}"
        );
    }
    out
}

/// The egress guard's metrics: redactions by category, refusals by what refused, and today's
/// spend against each cap (from the ledger).
pub fn render_egress(
    egress: &crate::egress::EgressMetrics,
    usage: Option<&crate::ledger::DayUsage>,
    caps: &crate::guard::budget::Caps,
) -> String {
    let mut out = String::new();
    out.push_str("# HELP edgellm_egress_requests_total Requests the egress guard let leave the device.\n# TYPE edgellm_egress_requests_total counter\n");
    let _ = writeln!(
        out,
        "edgellm_egress_requests_total {}",
        egress.admitted.load(Ordering::Relaxed)
    );
    out.push_str("# HELP edgellm_redactions_total Values redacted before leaving the device, by category.\n# TYPE edgellm_redactions_total counter\n");
    if let Ok(counts) = egress.redactions.lock() {
        for (category, count) in counts.iter() {
            let _ = writeln!(
                out,
                "edgellm_redactions_total{{category=\"{category}\"}} {count}"
            );
        }
    }
    out.push_str("# HELP edgellm_egress_blocked_total Requests kept on the device by the egress guard, by what refused them.\n# TYPE edgellm_egress_blocked_total counter\n");
    if let Ok(refused) = egress.refused.lock() {
        for (reason, count) in refused.iter() {
            let _ = writeln!(
                out,
                "edgellm_egress_blocked_total{{reason=\"{reason}\"}} {count}"
            );
        }
    }
    let Some(usage) = usage else {
        return out;
    };
    out.push_str("# HELP edgellm_budget_used Today's remote use as the caps count it (settled, pending and in doubt).\n# TYPE edgellm_budget_used gauge\n");
    let used = &usage.counted;
    let rows = [
        (
            "requests",
            used.requests,
            caps.max_requests,
            usage.remaining.requests,
        ),
        (
            "input_tokens",
            used.input_tokens,
            caps.max_input_tokens,
            usage.remaining.input_tokens,
        ),
        (
            "output_tokens",
            used.output_tokens,
            caps.max_output_tokens,
            usage.remaining.output_tokens,
        ),
        (
            "cost_usd",
            used.cost_micros,
            caps.max_cost_micros,
            usage.remaining.cost_micros,
        ),
    ];
    let scale = |kind: &str, v: u64| {
        if kind == "cost_usd" {
            v as f64 / 1e6
        } else {
            v as f64
        }
    };
    for (kind, value, _, _) in rows {
        let _ = writeln!(
            out,
            "edgellm_budget_used{{kind=\"{kind}\"}} {}",
            scale(kind, value)
        );
    }
    out.push_str("# HELP edgellm_budget_remaining What today's caps leave (only capped kinds).\n# TYPE edgellm_budget_remaining gauge\n");
    for (kind, _, cap, remaining) in rows {
        if cap.is_some()
            && let Some(remaining) = remaining
        {
            let _ = writeln!(
                out,
                "edgellm_budget_remaining{{kind=\"{kind}\"}} {}",
                scale(kind, remaining)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP edgellm_budget_in_doubt_requests Reservations left unsettled by a crash, counted at their reserved amount.\n# TYPE edgellm_budget_in_doubt_requests gauge\nedgellm_budget_in_doubt_requests {}",
        usage.in_doubt.requests
    );
    out
}

/// The MQTT bridge's counters (`crate::mqtt` counts, `/metrics` renders): defined here so the
/// metrics module depends on no feature module.
#[derive(Debug, Default)]
pub struct MqttCounters {
    /// Every PUBLISH received on a subscription, before any check.
    pub received: AtomicU64,
    pub dropped_oversize: AtomicU64,
    /// Messages in batches dropped because the backlog was full.
    pub dropped_backlog: AtomicU64,
    /// Not UTF-8, or empty.
    pub malformed: AtomicU64,
    pub tasks_run: AtomicU64,
    pub task_errors: AtomicU64,
    /// Replies acknowledged by the broker.
    pub published: AtomicU64,
    /// Successful reconnections after the first connection.
    pub reconnects: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MqttCountersSnapshot {
    pub received: u64,
    pub dropped_oversize: u64,
    pub dropped_backlog: u64,
    pub malformed: u64,
    pub tasks_run: u64,
    pub task_errors: u64,
    pub published: u64,
    pub reconnects: u64,
}

impl MqttCounters {
    pub fn snapshot(&self) -> MqttCountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MqttCountersSnapshot {
            received: get(&self.received),
            dropped_oversize: get(&self.dropped_oversize),
            dropped_backlog: get(&self.dropped_backlog),
            malformed: get(&self.malformed),
            tasks_run: get(&self.tasks_run),
            task_errors: get(&self.task_errors),
            published: get(&self.published),
            reconnects: get(&self.reconnects),
        }
    }
}

impl MqttCountersSnapshot {
    /// `(name, value)` pairs, e.g. for `edgellm_mqtt_<name>_total`.
    pub fn pairs(&self) -> [(&'static str, u64); 8] {
        [
            ("received", self.received),
            ("dropped_oversize", self.dropped_oversize),
            ("dropped_backlog", self.dropped_backlog),
            ("malformed", self.malformed),
            ("tasks_run", self.tasks_run),
            ("task_errors", self.task_errors),
            ("published", self.published),
            ("reconnects", self.reconnects),
        ]
    }
}

/// The embedding service's metrics: requests by outcome and, once its model is loaded, the
/// engine's inputs, tokens, batches and busy time.
pub fn render_embeddings(
    service: &crate::embeddings::EmbedMetrics,
    load: Option<&crate::engine::embed::EmbedLoad>,
) -> String {
    let mut out = String::new();
    out.push_str("# HELP edgellm_embedding_requests_total Embedding requests, by outcome.\n# TYPE edgellm_embedding_requests_total counter\n");
    for (status, counter) in [
        ("ok", &service.requests_ok),
        ("error", &service.requests_failed),
    ] {
        let _ = writeln!(
            out,
            "edgellm_embedding_requests_total{{status=\"{status}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    if let Some(load) = load {
        for (name, help, value) in [
            (
                "edgellm_embedding_inputs_total",
                "Inputs embedded.",
                load.inputs.load(Ordering::Relaxed),
            ),
            (
                "edgellm_embedding_tokens_total",
                "Tokens of the inputs embedded.",
                load.tokens.load(Ordering::Relaxed),
            ),
            (
                "edgellm_embedding_batches_total",
                "llama.cpp encode calls.",
                load.batches.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let busy = load.busy_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP edgellm_embedding_busy_seconds_total Time the embedding engine spent encoding.\n# TYPE edgellm_embedding_busy_seconds_total counter\nedgellm_embedding_busy_seconds_total {busy}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thermal_gauges_only_where_sysfs_has_them() {
        use crate::route::policy::ThermalReading;
        assert_eq!(render_thermal(&ThermalReading::default()), "");
        let text = render_thermal(&ThermalReading {
            max_celsius: Some(71.5),
            min_freq_ratio: Some(0.5),
        });
        assert!(
            text.contains("\nedgellm_thermal_max_celsius 71.5\n"),
            "{text}"
        );
        assert!(
            text.contains("\nedgellm_cpu_freq_min_ratio 0.5\n"),
            "{text}"
        );
        let (lines, bad) = crate::telemetry::exposition::parse(&text);
        assert_eq!((lines.len(), bad), (2, 0));
        assert!(lines.iter().all(|l| l.level), "gauges");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        for v in [0.003, 0.2, 7.0, 100.0] {
            metrics.time_to_first_token.observe(v);
        }
        let text = metrics.render(EngineState::default(), None, 4, Scraper::Http);
        assert!(text.contains("edgellm_time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("edgellm_time_to_first_token_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("edgellm_time_to_first_token_seconds_bucket{le=\"10\"} 3\n"));
        assert!(text.contains("edgellm_time_to_first_token_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("edgellm_time_to_first_token_seconds_count 4\n"));
    }

    #[test]
    fn hostile_label_values_are_escaped_and_read_back() {
        let metrics = Metrics::default();
        let name = "a\"b\\c\nd";
        metrics.count_routed(name, "default", false);
        metrics.count_task_run(name, "ok");
        let text = metrics.render(EngineState::default(), None, 1, Scraper::Http);
        let (lines, bad) = crate::telemetry::exposition::parse(&text);
        assert_eq!(bad, 0, "{text}");
        let routed = lines
            .iter()
            .find(|l| l.name == "edgellm_routed_requests_total")
            .unwrap();
        assert_eq!(routed.labels[0].1, name);
        assert!(
            lines
                .iter()
                .any(|l| l.name == "edgellm_task_runs_total" && l.labels[0].1 == name)
        );
    }

    #[test]
    fn requests_by_endpoint_and_status() {
        let metrics = Metrics::default();
        metrics.count_request("/v1/chat/completions", 200);
        metrics.count_request("/v1/chat/completions", 200);
        metrics.count_request("/v1/completions", 400);
        let text = metrics.render(EngineState::default(), None, 1, Scraper::Http);
        assert!(text.contains(
            "edgellm_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 2\n"
        ));
        assert!(
            text.contains(
                "edgellm_requests_total{endpoint=\"/v1/completions\",status=\"400\"} 1\n"
            )
        );
    }

    #[test]
    fn task_action_and_mqtt_counters() {
        let metrics = Metrics::default();
        metrics.count_task_run("triage", "ok");
        metrics.count_action("notify", "executed");
        metrics.count_action("notify", "dry_run");
        let mqtt = Arc::new(MqttCounters::default());
        mqtt.malformed.fetch_add(2, Ordering::Relaxed);
        metrics.set_mqtt_counters(mqtt);
        let text = metrics.render(EngineState::default(), None, 1, Scraper::Http);
        for line in [
            "edgellm_task_runs_total{task=\"triage\",outcome=\"ok\"} 1\n",
            "edgellm_actions_total{action=\"notify\",outcome=\"executed\"} 1\n",
            "edgellm_actions_total{action=\"notify\",outcome=\"dry_run\"} 1\n",
            "edgellm_mqtt_malformed_total 2\n",
            "edgellm_mqtt_received_total 0\n",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }
}
