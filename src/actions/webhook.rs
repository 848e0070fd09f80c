//! The webhook executor: one HTTP request to the URL and method fixed in config, fixed headers,
//! the validated arguments as the JSON body. Redirects are not followed (the URL stays the one
//! in config); a non-2xx status is a failure that still reports the status.

use serde_json::Value;

use super::Execution;
use super::config::WebhookSpec;

/// Sends the call; `Ok` carries the status of a 2xx answer, `Err` a failure (with the status
/// when the server answered).
pub async fn call(
    client: &reqwest::Client,
    spec: &WebhookSpec,
    arguments: &Value,
) -> Result<Execution, (String, Option<Execution>)> {
    let mut request = client
        .request(spec.method.clone(), spec.url.clone())
        .timeout(spec.timeout)
        .json(arguments);
    for (name, value) in &spec.headers {
        request = request.header(name.clone(), value.clone());
    }
    let response = request.send().await.map_err(|e| {
        (
            format!("webhook request failed: {}", crate::upstream::chain(&e)),
            None,
        )
    })?;
    let status = response.status();
    let execution = Execution::Webhook {
        http_status: status.as_u16(),
    };
    if status.is_success() {
        Ok(execution)
    } else {
        Err((format!("webhook answered {status}"), Some(execution)))
    }
}

/// The client the registry shares between webhook calls.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    crate::upstream::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}
