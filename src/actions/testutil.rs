//! Test fixtures shared by the actions, tasks and MQTT tests: a real Mosquitto broker on a
//! loopback port, a real webhook receiver (axum) and an MQTT subscriber that collects messages.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto process with its own temporary config; killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port())
    }

    /// Starts a broker on `port` and waits until it accepts connections.
    pub fn start_on(port: u16) -> Mosquitto {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: install the `mosquitto` Debian package (scripts/setup does); \
             the MQTT tests need a real broker"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\nmax_inflight_messages 100\n"
            ),
        )
        .expect("write mosquitto.conf");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(MOSQUITTO)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn mosquitto");
            // Wait for the port; if the process died (port still in TIME_WAIT), retry.
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Mosquitto {
                        port,
                        child,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "mosquitto did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto failed to start on {port}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker and waits for it to exit.
    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the webhook receiver saw.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

/// A real HTTP server on loopback that records every request and answers `status`.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start(status: u16) -> WebhookReceiver {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let recorded = hits.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let recorded = recorded.clone();
                async move {
                    let hit = Hit {
                        method: method.to_string(),
                        path: uri.path().to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect(),
                        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    };
                    recorded.lock().unwrap().push(hit);
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        WebhookReceiver {
            addr,
            hits,
            _server: server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

/// An MQTT client subscribed to `filter`, forwarding `(topic, payload)` to a channel.
pub struct Subscriber {
    _client: AsyncClient,
    pub messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    _task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start(port: u16, filter: &str) -> Subscriber {
        let mut options = MqttOptions::new(
            format!("test-sub-{}", uuid::Uuid::new_v4().simple()),
            "127.0.0.1",
            port,
        );
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 64);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("SUBACK in time")
            .unwrap();
        Subscriber {
            _client: client,
            messages: rx,
            _task: task,
        }
    }

    pub async fn next(&mut self, within: Duration) -> Option<(String, Vec<u8>)> {
        tokio::time::timeout(within, self.messages.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// A publisher connection; `publish` waits until the broker acknowledged.
pub struct Publisher {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
    _task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn start(port: u16) -> Publisher {
        let mut options = MqttOptions::new(
            format!("test-pub-{}", uuid::Uuid::new_v4().simple()),
            "127.0.0.1",
            port,
        );
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 64);
        let (tx, acks) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Publisher {
            client,
            acks,
            _task: task,
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
            .await
            .expect("PUBACK in time")
            .unwrap();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
