//! Shared helpers: the default model, a shared engine, running the CLI.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edgellm::engine::{
    Engine, EngineConfig, Event, GenerateRequest, SamplingParams, Summary, TokenEvent,
};

/// The HTTP router of a gateway with the default configuration whose model never loads: requests
/// are checked before any engine or tier is asked.
pub fn app_without_model() -> axum::Router {
    app_without_model_from(edgellm::config::RawConfig::default())
}

/// [`app_without_model`] with the configuration `raw`.
pub fn app_without_model_from(raw: edgellm::config::RawConfig) -> axum::Router {
    use edgellm::config::ServeConfig;
    let config = std::sync::Arc::new(ServeConfig::from_raw(raw).unwrap());
    let gateway = edgellm::gateway::Gateway::new(
        config,
        std::sync::Arc::new(edgellm::engine::EngineSlot::default()),
        None,
        std::sync::Arc::new(edgellm::metrics::Metrics::default()),
    )
    .unwrap();
    edgellm::api::app(std::sync::Arc::new(gateway))
}

/// An HTTP client for the tests' servers: rustls installed, two minutes per request.
pub fn http_client() -> reqwest::Client {
    edgellm::upstream::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
}

/// The JSON body of the answer to `request`.
pub async fn json_answer(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The JSON body of a GET of `url`.
pub async fn get_json(url: reqwest::Url) -> serde_json::Value {
    json_answer(http_client().get(url)).await
}

/// The JSON answer to a POST of `body` to `url`.
pub async fn post_json(url: String, body: &serde_json::Value) -> serde_json::Value {
    json_answer(http_client().post(url).json(body)).await
}

/// The default model, installed by `scripts/install-model.sh` (the README's test command runs it).
pub fn default_model() -> PathBuf {
    let path = edgellm::paths::default_model();
    assert!(
        path.is_file(),
        "default model missing at {}: run scripts/install-model.sh",
        path.display()
    );
    path
}

/// One engine with four slots shared by the tests that do not need their own settings.
pub fn shared_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = EngineConfig::new(default_model());
        config.n_ctx = 4096;
        config.slots = 4;
        Engine::start(config).expect("default model loads")
    })
}

/// A one-slot engine for tests that compare runs token by token: batched with other requests,
/// llama.cpp's floating-point results (and so sampled tokens) may differ slightly.
pub fn solo_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = EngineConfig::new(default_model());
        config.slots = 1;
        Engine::start(config).expect("default model loads")
    })
}

pub fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        ..SamplingParams::default()
    }
}

/// Runs a request to the end and returns its tokens and summary.
pub fn generate(
    engine: &Engine,
    prompt: &str,
    params: SamplingParams,
) -> (Vec<TokenEvent>, Summary) {
    let prompt_tokens = engine.tokenize(prompt);
    let mut events = engine
        .submit(GenerateRequest::new(prompt_tokens, params))
        .expect("request accepted");
    let mut tokens = Vec::new();
    loop {
        match events.blocking_recv().expect("engine answers") {
            Event::Progress(_) => {}
            Event::Token(token) => tokens.push(token),
            Event::Done(summary) => return (tokens, summary),
            Event::Failed(error) => panic!("generation failed: {error}"),
        }
    }
}

pub fn text_of(tokens: &[TokenEvent], summary: &Summary) -> String {
    let mut text: String = tokens.iter().map(|t| t.text.as_str()).collect();
    text.push_str(&summary.tail_text);
    text
}

pub fn edgellm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edgellm"))
}

/// A fake `/proc` + `/sys` pair whose default route is on `iface`, a link of `kind`
/// ("ethernet", "wifi", "cellular") that is `up`; `None` for `iface`: no default route.
pub fn fake_network(dir: &Path, iface: Option<&str>, kind: &str, up: bool) {
    let proc_net = dir.join("proc/net");
    std::fs::create_dir_all(&proc_net).unwrap();
    let mut route = String::from(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
    );
    if let Some(iface) = iface {
        route.push_str(&format!(
            "{iface}\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        ));
        let sys = dir.join("sys/class/net").join(iface);
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("operstate"), if up { "up\n" } else { "down\n" }).unwrap();
        let link_type = if kind == "cellular" { "519" } else { "1" };
        std::fs::write(sys.join("type"), format!("{link_type}\n")).unwrap();
        if kind == "wifi" {
            std::fs::create_dir_all(sys.join("wireless")).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("sys/class/net")).unwrap();
    std::fs::write(proc_net.join("route"), route).unwrap();
}

/// A `[network]` section that lets requests leave (opt-in, a wired default route), read from a
/// fake tree made once per test process: tests do not depend on this machine's network.
pub fn network_opt_in() -> String {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edgellm-it-net-{}", std::process::id()));
        fake_network(&dir, Some("eth0"), "ethernet", true);
        dir
    });
    format!(
        "\n[network]\nopt_in = true\nsys_root = \"{}\"\nproc_root = \"{}\"\n",
        root.join("sys").display(),
        root.join("proc").display()
    )
}
