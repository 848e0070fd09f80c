//! The MQTT executor: publishes the validated arguments (JSON) with QoS 1 to the broker fixed in
//! config, on a topic built from the config's template. A placeholder value that could change
//! the topic's structure (`/`, `+`, `#`, NUL, or empty) is refused before anything connects.
//! Each call opens its own short connection and waits for the broker's PUBACK.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use super::Execution;
use super::config::{MqttActionSpec, TopicPart, TopicTemplate};

/// Fills the template; `Err` names the offending argument.
pub fn render_topic(template: &TopicTemplate, arguments: &Value) -> Result<String, String> {
    let mut topic = String::new();
    for part in &template.parts {
        match part {
            TopicPart::Literal(text) => topic.push_str(text),
            TopicPart::Argument(name) => {
                let value = scalar_text(arguments.get(name))
                    .ok_or_else(|| format!("argument {name} is missing or not a scalar"))?;
                if value.is_empty() || value.contains(['/', '+', '#', '\0']) {
                    return Err(format!(
                        "argument {name} may not be empty or contain '/', '+', '#' or NUL in a topic"
                    ));
                }
                topic.push_str(&value);
            }
        }
    }
    Ok(topic)
}

/// The text of a string, number or boolean argument.
pub fn scalar_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Publishes one message and waits for its acknowledgement.
pub async fn publish(
    spec: &MqttActionSpec,
    topic: &str,
    arguments: &Value,
) -> Result<Execution, String> {
    let client_id = format!("edgellm-action-{}", uuid::Uuid::new_v4().simple());
    let mut options = MqttOptions::new(client_id, spec.host.clone(), spec.port);
    options.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = &spec.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    let payload = arguments.to_string().into_bytes();
    options.set_max_packet_size(
        payload.len() + topic.len() + 1024,
        payload.len() + topic.len() + 1024,
    );
    let (client, mut events) = AsyncClient::new(options, 4);
    client
        .try_publish(topic, QoS::AtLeastOnce, false, payload)
        .map_err(|e| format!("mqtt publish: {e}"))?;
    let acked = tokio::time::timeout(spec.timeout, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "mqtt connection to {}:{}: {e}",
                        spec.host, spec.port
                    ));
                }
            }
        }
    })
    .await;
    // Best effort: say goodbye and let the event loop send it.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
    }
    match acked {
        Ok(Ok(())) => Ok(Execution::Mqtt {
            topic: topic.to_string(),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "mqtt publish not acknowledged within {:?}",
            spec.timeout
        )),
    }
}
