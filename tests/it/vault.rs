//! Models encrypted at rest, with the device key in a real software TPM (Debian's `swtpm`, on
//! loopback, its state in a temporary directory) and in systemd-creds: seal, serve, restart
//! (a TPM reset, as at a reboot), a changed PCR that refuses to unseal, and a scan of every file
//! the server could have written for plaintext model bytes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::delivery::{Registry, Serve, json_lines, model_audit, pull_trusting, pulled, steps};
use crate::server::free_port;
use crate::support::{default_model, edgellm_bin};

/// The PCR the test key is bound to: 16 is the debug PCR, extendable and resettable at locality 0.
const PCR: &str = "16";

/// A software TPM 2.0 on loopback; its state directory outlives restarts (a reboot).
struct Swtpm {
    child: Child,
    port: u16,
    state: PathBuf,
}

impl Swtpm {
    fn start(state: &Path) -> Swtpm {
        std::fs::create_dir_all(state).unwrap();
        // The swtpm TCTI sends control commands to the port after the command port.
        let (port, ctrl) = loop {
            let port = free_port();
            if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break (port, port + 1);
            }
        };
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (Debian package swtpm; scripts/setup.sh installs it)");
        let tpm = Swtpm {
            child,
            port,
            state: state.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "swtpm did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        tpm
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Stops and starts it on its state: PCRs start from zero again, the keys stay.
    fn restart(mut self) -> Swtpm {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Swtpm::start(&self.state.clone())
    }

    fn extend(&self, pcr: &str) {
        let out = Command::new("tpm2_pcrextend")
            .arg(format!("{pcr}:sha256={}", "ab".repeat(32)))
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .expect("tpm2_pcrextend (Debian package tpm2-tools)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn edgellm(home: &Path, args: &[&str], tcti: Option<&str>) -> std::process::Output {
    let mut command = Command::new(edgellm_bin());
    command
        .args(args)
        .env("EDGELLM_HOME", home)
        .env_remove("EDGELLM_TPM_TCTI")
        .env_remove("EDGELLM_KEY_STORE")
        .env_remove("EDGELLM_CONFIG");
    if let Some(tcti) = tcti {
        command.env("EDGELLM_TPM_TCTI", tcti);
    }
    command.output().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A copy of the default model whose `general.name` is a random string of the same length: its
/// header bytes are this test's own, so a plaintext copy anywhere in /tmp is this test's leak,
/// not another test's model file.
fn unique_model(dir: &Path) -> (PathBuf, String) {
    let source = default_model();
    let header = edgellm::plan::read_header(&source).unwrap();
    let name = header.get_str("general.name").unwrap().to_string();
    let mut bytes = std::fs::read(&source).unwrap();
    let at = bytes[..header.data_offset as usize]
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap();
    let unique: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .cycle()
        .take(name.len())
        .collect();
    bytes[at..at + name.len()].copy_from_slice(unique.as_bytes());
    let path = dir.join("plain.gguf");
    std::fs::write(&path, bytes).unwrap();
    (path, unique)
}

/// Regular files under `root` (not following links), skipping `except`.
fn files_under(root: &Path, except: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files_under(&path, except, out);
        } else if kind.is_file() && path != except {
            out.push(path);
        }
    }
}

/// The regular files a process holds open for writing (not its memfd: no filesystem holds that).
fn written_by(pid: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .unwrap_or(0);
        let writable = flags & 0o3 != 0;
        if writable && target.is_file() {
            out.push(target);
        }
    }
    out
}

/// Files (of `files`) holding any of `needles`.
fn holding(files: &[PathBuf], needles: &[Vec<u8>]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
        })
        .cloned()
        .collect()
}

/// `edgellm model encrypt PLAIN -o OUT --recipient R --data-key KEY --json` (run on `home`):
/// its JSON result.
fn encrypt(home: &Path, plain: &Path, out: &Path, recipient: &str, data_key: &Path) -> Value {
    let out = edgellm(
        home,
        &[
            "model",
            "encrypt",
            plain.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--recipient",
            recipient,
            "--data-key",
            data_key.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    serde_json::from_str(&ok(&out)).unwrap()
}

/// A POST of `body` to `path` on the server at `port`: its JSON answer.
fn post(port: u16, path: &str, body: Value) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(crate::support::post_json(
        format!("http://127.0.0.1:{port}{path}"),
        &body,
    ))
}

fn complete(port: u16, prompt: &str) -> String {
    let body = serde_json::json!({"prompt": prompt, "max_tokens": 12, "temperature": 0});
    let answer = post(port, "/v1/completions", body);
    answer["choices"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn embedding(port: u16, input: &str) -> Vec<f64> {
    let answer = post(port, "/v1/embeddings", serde_json::json!({"input": input}));
    answer["data"][0]["embedding"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// `edgellm serve` whose model must not load: it stays up and says why. Its `/health` answer
/// (once it names a failure), a completion's answer meanwhile, and its log.
fn serve_unavailable(home: &Path, data: &Path, config: &Path) -> (Value, Value, String) {
    let port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(edgellm_bin())
        .args(["serve", "--port", &port.to_string(), "-t", "2", "--config"])
        .arg(config)
        .env("EDGELLM_HOME", home)
        .env("EDGELLM_DATA_DIR", data)
        .env_remove("EDGELLM_TPM_TCTI")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let health = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "serve exited: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "/health never named a failure");
        let answer = runtime.block_on(async {
            let response = crate::support::http_client()
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                .ok()?;
            let status = response.status().as_u16();
            Some((status, response.json::<Value>().await.ok()?))
        });
        match answer {
            Some((503, body)) if body["status"] == "error" => break body,
            Some((200, body)) => panic!("the model loaded: {body}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let completion = post(
        port,
        "/v1/completions",
        serde_json::json!({"prompt": "x", "max_tokens": 1}),
    );
    // The error line comes after the audit row.
    while !std::fs::read_to_string(log.path())
        .unwrap_or_default()
        .contains("did not load")
    {
        assert!(Instant::now() < deadline, "no error line");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    (
        health,
        completion,
        std::fs::read_to_string(log.path()).unwrap_or_default(),
    )
}

fn config(dir: &Path, model: &Path, tcti: &str) -> PathBuf {
    let path = dir.join("edgellm.toml");
    std::fs::write(
        &path,
        format!(
            "[model]\npath = {:?}\n\n[keys]\ntpm_tcti = {tcti:?}\n",
            model.display().to_string()
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_encrypted_model_is_served_with_a_tpm_sealed_key_and_refused_once_a_pcr_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (home, data) = (dir.path().join("home"), dir.path().join("data"));
    std::fs::create_dir_all(home.join("models")).unwrap();
    let mut tpm = Swtpm::start(&dir.path().join("tpm"));

    // The device seals its key to PCR 16; the publisher encrypts for its recipient.
    let recipient = ok(&edgellm(
        &home,
        &[
            "key",
            "init",
            "--backend",
            "tpm",
            "--pcrs",
            PCR,
            "--tpm-tcti",
            &tpm.tcti(),
        ],
        None,
    ));
    assert!(recipient.starts_with("edgellm-x25519:"), "{recipient}");
    assert_eq!(ok(&edgellm(&home, &["key", "show"], None)), recipient);
    let store = std::fs::read_to_string(home.join("keys/device.json")).unwrap();
    assert!(!store.contains("secret"), "{store}");
    let (plain, unique) = unique_model(dir.path());
    let enc = home.join("models/unique.gguf.enc");
    let data_key = dir.path().join("publisher/data.key");
    std::fs::create_dir_all(data_key.parent().unwrap()).unwrap();
    let encrypted = encrypt(&home, &plain, &enc, &recipient, &data_key);
    assert_eq!(
        encrypted["sha256"],
        edgellm::model::import::sha256_file(&plain).unwrap()
    );

    // The same greedy answer as the plaintext model, through `run`.
    let run = |model: &Path| -> String {
        let out = edgellm(
            &home,
            &[
                "run",
                "-m",
                model.to_str().unwrap(),
                "-p",
                "The capital of France is",
                "-n",
                "12",
                "--temp",
                "0",
                "-t",
                "2",
                "--json",
            ],
            Some(&tpm.tcti()),
        );
        serde_json::from_str::<Value>(&ok(&out)).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let expected = run(&plain);
    assert_eq!(run(&enc), expected);

    // Served; nothing on any filesystem holds plaintext while it runs or after.
    let sample: Vec<Vec<u8>> = {
        let bytes = std::fs::read(&plain).unwrap();
        let n = bytes.len();
        [n / 3, n / 2, 2 * n / 3]
            .iter()
            .map(|&at| bytes[at..at + 64].to_vec())
            .collect()
    };
    // The embedding model encrypted too: one process serves both from memfds.
    let embed = home.join("models/minilm.gguf.enc");
    let embed_key = dir.path().join("publisher/embed.key");
    encrypt(
        &home,
        &edgellm::paths::default_embedding_model(),
        &embed,
        &recipient,
        &embed_key,
    );
    let config_file = config(dir.path(), &enc, &tpm.tcti());
    let serve = Serve::start(
        &home,
        &data,
        &[
            "--config",
            config_file.to_str().unwrap(),
            "--embedding-model",
            embed.to_str().unwrap(),
        ],
    );
    assert_eq!(serve.model_path(), enc.display().to_string());
    assert!(!complete(serve.port, "The capital of France is").is_empty());
    let vector = embedding(serve.port, "pump seal");
    assert_eq!(vector.len(), 384);
    let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    let pid = serve_pid(serve.port);
    let mut private = written_by(pid);
    for root in [home.as_path(), data.as_path(), Path::new("/dev/shm")] {
        files_under(root, &plain, &mut private);
    }
    let mut needles = sample.clone();
    needles.push(unique.as_bytes().to_vec());
    // The scan finds them where they are (the plaintext source, excluded below).
    assert_eq!(
        holding(std::slice::from_ref(&plain), &needles),
        vec![plain.clone()]
    );
    assert_eq!(holding(&private, &needles), Vec::<PathBuf>::new());
    let mut shared = Vec::new();
    files_under(&std::env::temp_dir(), &plain, &mut shared);
    assert_eq!(
        holding(&shared, &[unique.as_bytes().to_vec()]),
        Vec::<PathBuf>::new()
    );
    serve.stop();
    let mut after = Vec::new();
    for root in [home.as_path(), data.as_path(), Path::new("/dev/shm")] {
        files_under(root, &plain, &mut after);
    }
    assert_eq!(holding(&after, &needles), Vec::<PathBuf>::new());

    // A reboot: the TPM restarts, PCRs are measured the same, the key unseals again.
    tpm = tpm.restart();
    let config_file = config(dir.path(), &enc, &tpm.tcti());
    let serve = Serve::start(&home, &data, &["--config", config_file.to_str().unwrap()]);
    assert_eq!(complete(serve.port, "The capital of France is"), expected);
    serve.stop();

    // Another boot chain: PCR 16 extended. The TPM refuses; serve stays up to say so, on
    // /health, to requests, in one log line and an audit row.
    tpm.extend(PCR);
    let (health, completion, log) = serve_unavailable(&home, &data, &config_file);
    let message = health["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("PCR 16 changed") && message.contains("unique.gguf.enc"),
        "{health}"
    );
    assert_eq!(
        completion["error"]["code"], "model_unavailable",
        "{completion}"
    );
    assert!(
        completion["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("PCR 16 changed"),
        "{completion}"
    );
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("PCR 16 changed"), "{log}");
    let rows = model_audit(&home, &data);
    assert!(
        steps(&rows).contains(&"load:error:pcr_mismatch".to_string()),
        "{rows:?}"
    );
    let out = edgellm(
        &home,
        &["key", "check", enc.to_str().unwrap()],
        Some(&tpm.tcti()),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// The pid of the server listening on `port` (from /proc/net/tcp's inode).
fn serve_pid(port: u16) -> u32 {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inode = tcp
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            (u16::from_str_radix(local_port, 16).ok()? == port && fields.get(3)? == &"0A")
                .then(|| fields.get(9).map(|s| s.to_string()))?
        })
        .expect("a listening socket");
    let wanted = format!("socket:[{inode}]");
    for proc_dir in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = proc_dir.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == wanted))
        {
            return pid;
        }
    }
    panic!("no process holds the socket of port {port}");
}

/// A small GGUF for the backends that do not need the real model to be opened.
fn small_model(dir: &Path) -> PathBuf {
    let path = dir.join("small.gguf");
    let mut w = edgellm::plan::gguf::GgufWriter::new();
    w.kv_str("general.architecture", "llama").tensor(
        "a.weight",
        &[4096],
        edgellm::plan::GgmlType::F32,
    );
    let data: Vec<u8> = (0..16384u32).map(|i| (i * 7 % 251) as u8).collect();
    w.write_with_data(&path, &[&data]).unwrap();
    path
}

#[test]
fn systemd_creds_and_the_development_key_file_hold_device_keys_too() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let data_key = dir.path().join("data.key");

    // systemd-creds with the host key (a machine without a TPM device).
    let creds = dir.path().join("creds");
    let recipient = ok(&edgellm(
        &creds,
        &[
            "key",
            "init",
            "--backend",
            "systemd-creds",
            "--with-key",
            "host",
        ],
        None,
    ));
    let cred = std::fs::read(creds.join("keys/device.cred")).unwrap();
    let secret_hex_len = cred
        .split(|b| !b.is_ascii_hexdigit())
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    assert!(secret_hex_len < 64, "the credential holds a plain key");
    let enc = dir.path().join("small.enc");
    encrypt(&creds, &model, &enc, &recipient, &data_key);
    let checked = ok(&edgellm(
        &creds,
        &["key", "check", enc.to_str().unwrap()],
        None,
    ));
    assert!(checked.contains("opens on this device"), "{checked}");

    // The key file: refused unless allowed; then it opens only what was wrapped for it.
    let dev = dir.path().join("dev");
    let dev_recipient = ok(&edgellm(&dev, &["key", "init", "--backend", "file"], None));
    let out = edgellm(
        &dev,
        &["key", "check", enc.to_str().unwrap(), "--allow-key-file"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a recipient"));
    ok(&edgellm(
        &dev,
        &[
            "model",
            "rewrap",
            enc.to_str().unwrap(),
            "--recipient",
            &recipient,
            "--recipient",
            &dev_recipient,
            "--data-key",
            data_key.to_str().unwrap(),
        ],
        None,
    ));
    let out = edgellm(&dev, &["key", "check", enc.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_key_file"));
    ok(&edgellm(
        &dev,
        &["key", "check", enc.to_str().unwrap(), "--allow-key-file"],
        None,
    ));
    // The systemd-creds device still opens it after the rewrap.
    ok(&edgellm(
        &creds,
        &["key", "check", enc.to_str().unwrap()],
        None,
    ));
}

#[test]
fn an_encrypted_model_travels_through_a_registry_and_a_new_release_moves_only_what_changed() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (publisher, device) = (dir.path().join("publisher"), dir.path().join("device"));
    std::fs::create_dir_all(&publisher).unwrap();
    let sign = publisher.join("release.key");
    ok(&crate::delivery::edgellm(
        &publisher,
        &["model", "keygen", sign.to_str().unwrap()],
    ));
    let recipient = ok(&edgellm(
        &device,
        &["key", "init", "--backend", "file"],
        None,
    ));

    // Two releases: the second changes 1 MiB in the middle of one tensor.
    let (v1_plain, _) = unique_model(&publisher);
    let v2_plain = publisher.join("v2.gguf");
    let mut bytes = std::fs::read(&v1_plain).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + (1 << 20)] {
        *b ^= 0x55;
    }
    std::fs::write(&v2_plain, bytes).unwrap();
    let data_key = publisher.join("data.key");
    let mut pushed_chunks = Vec::new();
    for (plain, tag, base) in [(&v1_plain, "v1", None), (&v2_plain, "v2", Some("v1"))] {
        let enc = publisher.join(format!("pump-{tag}.gguf.enc"));
        encrypt(&publisher, plain, &enc, &recipient, &data_key);
        let reference = registry.reference(&format!("fleet/pump:{tag}"));
        let mut args = vec![
            "model",
            "push",
            enc.to_str().unwrap(),
            &reference,
            "--key",
            sign.to_str().unwrap(),
            "--json",
        ];
        if let Some(base) = base {
            args.extend(["--base", base]);
        }
        let out = crate::delivery::edgellm(&publisher, &args);
        ok(&out);
        pushed_chunks.push(json_lines(&out)[0].clone());
    }
    // The second push uploads the changed segments and the container's header, not the model.
    let size = std::fs::metadata(&v2_plain).unwrap().len();
    let uploaded = pushed_chunks[1]["uploaded_bytes"].as_u64().unwrap();
    assert!(uploaded < size / 20, "{}", pushed_chunks[1]);

    let trusted = sign.with_extension("pub");
    let first = pulled(&pull_trusting(
        &device,
        &registry.reference("fleet/pump:v1"),
        &trusted,
    ));
    let path = PathBuf::from(first["path"].as_str().unwrap());
    assert!(path.to_string_lossy().ends_with(".gguf.enc"), "{first}");
    let second = pulled(&pull_trusting(
        &device,
        &registry.reference("fleet/pump:v2"),
        &trusted,
    ));
    let fetched = second["progress"]["fetched_bytes"].as_u64().unwrap();
    assert!(fetched < size / 20, "{second}");
    eprintln!(
        "encrypted release with 1 MiB changed: pushed {uploaded} bytes, pulled {fetched} of {size}"
    );
    // Both open on the device (every segment authenticated), and nowhere else.
    let stranger = dir.path().join("stranger");
    ok(&edgellm(
        &stranger,
        &["key", "init", "--backend", "file"],
        None,
    ));
    for result in [&first, &second] {
        let file = result["path"].as_str().unwrap();
        let out = edgellm(&device, &["key", "check", file, "--allow-key-file"], None);
        assert!(ok(&out).contains("opens on this device"));
        let out = edgellm(&stranger, &["key", "check", file, "--allow-key-file"], None);
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a recipient"));
    }
}
