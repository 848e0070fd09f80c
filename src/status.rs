//! `edgellm status`: asks a running server (`GET /v1/status`) how it stands and prints it: the
//! model, slots and queue, and every tier with its circuit breaker.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The server's base URL
    #[arg(long, env = "EDGELLM_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key, when the server requires one
    #[arg(long, env = "EDGELLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print the server's JSON as is
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(fetch(args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

async fn fetch(args: &StatusArgs) -> anyhow::Result<Value> {
    let url = format!("{}/v1/status", args.url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut request = client.get(&url);
    if let Some(key) = &args.api_key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let code = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{url} did not answer with JSON"))?;
    if !code.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        bail!("{url}: HTTP {code}: {message}");
    }
    Ok(body)
}

/// The human-readable form: a few header lines, then one line per tier.
pub fn render(status: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let model = &status["model"];
    out.push_str(&format!(
        "model    {} ({})\n",
        text(&model["id"]),
        if model["loaded"] == true {
            "loaded"
        } else {
            "loading"
        }
    ));
    out.push_str(&format!(
        "slots    {} busy of {}, {} queued\n",
        text(&status["slots"]["busy"]),
        text(&status["slots"]["total"]),
        text(&status["queued"])
    ));
    out.push_str(&format!(
        "uptime   {} s, version {}\n",
        text(&status["uptime_secs"]),
        text(&status["version"])
    ));
    let confidence = &status["confidence"];
    if confidence["judged"].as_u64().is_some_and(|n| n > 0) {
        let percent = |v: &Value| {
            v.as_f64()
                .map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
        };
        let p = &confidence["recent_token_probability"];
        out.push_str(&format!(
            "confidence {} judged, {} low; latest {}: {} low, token probability p10/p50/p90 {}/{}/{}\n",
            text(&confidence["judged"]),
            text(&confidence["low"]),
            text(&confidence["recent"]),
            percent(&confidence["recent_low_share"]),
            p[0].as_f64().map_or("-".into(), |x| format!("{x:.2}")),
            p[1].as_f64().map_or("-".into(), |x| format!("{x:.2}")),
            p[2].as_f64().map_or("-".into(), |x| format!("{x:.2}")),
        ));
    }
    out.push_str(&format!(
        "\n{:<14} {:<13} {:<17} {:<10} {}\n",
        "TIER", "KIND", "API", "BREAKER", "ENDPOINT"
    ));
    for tier in status["tiers"].as_array().into_iter().flatten() {
        let endpoint = match tier["url"].as_str() {
            Some(url) => format!("{url} ({})", text(&tier["model"])),
            None => "embedded engine".to_string(),
        };
        out.push_str(&format!(
            "{:<14} {:<13} {:<17} {:<10} {}\n",
            text(&tier["name"]),
            text(&tier["kind"]),
            text(&tier["api"]),
            text(&tier["breaker"]),
            endpoint
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn renders_every_tier_with_its_breaker() {
        let status = json!({
            "model": {"id": "gemma", "loaded": true},
            "slots": {"total": 4, "busy": 1}, "queued": 0,
            "uptime_secs": 12, "version": "0.1.0",
            "confidence": {"judged": 40, "low": 9, "recent": 40, "recent_low_share": 0.225,
                           "recent_token_probability": [0.31, 0.62, 0.9]},
            "tiers": [
                {"name": "local", "kind": "local"},
                {"name": "cloud", "kind": "remote", "api": "openai_chat",
                 "url": "https://api.example/v1", "model": "big", "breaker": "open"}
            ]
        });
        let text = super::render(&status);
        assert!(text.contains("gemma (loaded)"), "{text}");
        assert!(text.contains("1 busy of 4, 0 queued"), "{text}");
        assert!(
            text.contains("40 judged, 9 low; latest 40: 22.5% low, token probability p10/p50/p90 0.31/0.62/0.90"),
            "{text}"
        );
        let cloud = text.lines().find(|l| l.starts_with("cloud")).unwrap();
        assert!(cloud.contains("open") && cloud.contains("https://api.example/v1 (big)"));
        let local = text.lines().find(|l| l.starts_with("local")).unwrap();
        assert!(local.contains("embedded engine"));
    }
}
