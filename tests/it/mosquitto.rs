//! Fixtures for the tasks tests (copied from `src/actions/testutil.rs`, which is `cfg(test)` in
//! the library): a real Mosquitto broker on a loopback port, a real webhook receiver, an MQTT
//! subscriber and publisher.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::server::free_port;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto process with its own temporary config; killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Mosquitto {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: install the `mosquitto` Debian package (scripts/setup does)"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let port = free_port();
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
            )
            .unwrap();
            let mut child = Command::new(MOSQUITTO)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn mosquitto");
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
                assert!(Instant::now() < deadline, "mosquitto did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real HTTP server on loopback that records every request body (JSON) and answers 200.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let hits: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let recorded = hits.clone();
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
                let recorded = recorded.clone();
                async move {
                    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    recorded
                        .lock()
                        .unwrap()
                        .push((uri.path().to_string(), body));
                    axum::http::StatusCode::OK
                }
            });
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

    /// `(path, body)` of every request so far.
    pub fn hits(&self) -> Vec<(String, serde_json::Value)> {
        self.hits.lock().unwrap().clone()
    }
}

/// An MQTT client subscribed to `filter`, forwarding `(topic, payload)` to a channel.
pub struct Subscriber {
    _client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start(port: u16, filter: &str) -> Subscriber {
        let id = format!("it-sub-{}", uuid::Uuid::new_v4().simple());
        let (client, mut events) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 64);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let (tx, messages) = mpsc::unbounded_channel();
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
            messages,
            task,
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
        self.task.abort();
    }
}

/// A publisher connection; `publish` waits until the broker acknowledged.
pub struct Publisher {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn start(port: u16) -> Publisher {
        let id = format!("it-pub-{}", uuid::Uuid::new_v4().simple());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
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
        Publisher { client, acks, task }
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
        self.task.abort();
    }
}
