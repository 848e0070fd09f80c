//! A real `edgellm serve` process on a loopback port, for the HTTP tests.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{default_model, edgellm_bin};

pub struct Server {
    pub child: Child,
    pub base: String,
    _config: Option<tempfile::NamedTempFile>,
    /// The server's data directory (its ledger).
    pub data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `edgellm serve` with extra flags and waits until `/health` is 200.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_config(None, args)
    }

    pub fn start_with_config(toml: Option<&str>, args: &[&str]) -> Server {
        Self::start_with(toml, args, None)
    }

    /// Starts a server whose log (stderr) goes to `log`.
    pub fn start_with(toml: Option<&str>, args: &[&str], log: Option<&std::path::Path>) -> Server {
        let port = free_port();
        let config = toml.map(|text| {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            file.write_all(text.as_bytes()).unwrap();
            file
        });
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(edgellm_bin());
        command.args([
            "serve",
            "--port",
            &port.to_string(),
            "-m",
            default_model().to_str().unwrap(),
        ]);
        // Two threads unless the caller chose (the flag may be given once).
        if !args.iter().any(|a| *a == "-t" || *a == "--threads") {
            command.args(["-t", "2"]);
        }
        command
            .args(args)
            .env_remove("EDGELLM_API_KEY")
            // Each server its own ledger (one owner per ledger file).
            .env("EDGELLM_DATA_DIR", data_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(match log {
                    Some(path) => path.to_path_buf(),
                    None => data_dir.path().join("server.log"),
                })
                .unwrap(),
            ));
        if let Some(file) = &config {
            command.args(["--config", file.path().to_str().unwrap()]);
        }
        let child = command.spawn().expect("edgellm serve starts");
        let log = log.map_or_else(|| data_dir.path().join("server.log"), |p| p.to_path_buf());
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _config: config,
            data_dir,
        };
        server.wait_healthy(&log);
        server
    }

    fn wait_healthy(&mut self, log: &std::path::Path) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("edgellm serve exited ({status}):\n{log}");
            }
            if let Ok(mut stream) =
                std::net::TcpStream::connect(self.base.trim_start_matches("http://"))
            {
                let _ = stream
                    .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut response = String::new();
                let _ = std::io::Read::read_to_string(&mut stream, &mut response);
                if response.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server at {} did not become healthy", self.base);
    }

    /// POSTs a JSON body; the status and the JSON answer (`Null` when it is not JSON).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = crate::support::http_client()
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        edgellm::upstream::install_crypto_provider();
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
