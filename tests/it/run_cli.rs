//! `edgellm run` as a device engineer uses it: real binary, real model, bad input refused cleanly.

use std::io::Write;
use std::process::{Command, Output};

use crate::support::{default_model, edgellm_bin};

fn edgellm(args: &[&str]) -> Output {
    Command::new(edgellm_bin())
        .args(args)
        .output()
        .expect("edgellm runs")
}

/// A refused input: non-zero exit, one `error:` line on stderr, no panic, no core dump.
fn assert_clean_refusal(output: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit status {:?}, stderr: {stderr}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].contains(expect),
        "expected {expect:?} in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn run_streams_text_and_reports_speed_and_memory() {
    let model = default_model();
    let output = edgellm(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-t",
        "2",
        "-c",
        "512",
        "-n",
        "16",
        "--temp",
        "0",
        "-p",
        "Summarize the key differences between MQTT and HTTP:",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).trim().is_empty());
    for field in [
        "prompt tokens:",
        "prefill:",
        "time to first token:",
        "generated tokens:",
        "decode:",
        "peak resident:",
        "swapped:",
        "compute",
    ] {
        assert!(stderr.contains(field), "missing {field:?} in:\n{stderr}");
    }
}

#[test]
fn run_json_summary() {
    let output = edgellm(&[
        "run",
        "-n",
        "8",
        "--temp",
        "0",
        "--ignore-eos",
        "--json",
        "-c",
        "512",
        "-p",
        "Hello",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["generated_tokens"], 8);
    assert!(report["prompt_tokens"].as_u64().unwrap() >= 2);
    assert!(report["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(report["buffers"]["compute_bytes"].as_u64().unwrap() <= 150 << 20);
    assert!(report["memory"]["peak_resident_bytes"].as_u64().unwrap() > 0);
    assert!(report["swapped"].is_boolean());
    assert!(!report["text"].as_str().unwrap().is_empty());
}

#[test]
fn missing_model_file() {
    assert_clean_refusal(
        &edgellm(&["run", "-m", "/nonexistent/x.gguf", "-p", "hi"]),
        "model file not found",
    );
}

#[test]
fn a_directory_or_a_symlink_loop_as_model_path_gets_its_own_message() {
    let dir = tempfile::tempdir().unwrap();
    assert_clean_refusal(
        &edgellm(&["run", "-m", dir.path().to_str().unwrap(), "-p", "hi"]),
        "it is a directory",
    );
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    assert_clean_refusal(
        &edgellm(&["run", "-m", a.to_str().unwrap(), "-p", "hi"]),
        "symlink loop",
    );
    let dangling = dir.path().join("dangling.gguf");
    std::os::unix::fs::symlink(dir.path().join("gone.gguf"), &dangling).unwrap();
    assert_clean_refusal(
        &edgellm(&["run", "-m", dangling.to_str().unwrap(), "-p", "hi"]),
        "symbolic link to a file that does not exist",
    );
}

#[test]
fn not_a_gguf_file() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"this is a text file, not a model\n")
        .unwrap();
    let output = edgellm(&["run", "-m", file.path().to_str().unwrap(), "-p", "hi"]);
    assert_clean_refusal(&output, "GGUF");
}

#[test]
fn truncated_gguf_file() {
    // The real model cut to its first 4 MiB: the header is intact, the tensor data is not.
    let bytes = std::fs::read(default_model()).unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&bytes[..4 << 20]).unwrap();
    let output = edgellm(&["run", "-m", file.path().to_str().unwrap(), "-p", "hi"]);
    assert_clean_refusal(&output, "truncated");
}

#[test]
fn corrupt_header_is_refused() {
    // Valid magic and version, then an absurd tensor count.
    let mut bytes = std::fs::read(default_model()).unwrap()[..1 << 20].to_vec();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&bytes).unwrap();
    let output = edgellm(&["run", "-m", file.path().to_str().unwrap(), "-p", "hi"]);
    assert_clean_refusal(&output, "cannot use model file");
}

#[test]
fn context_too_small_for_the_request() {
    let output = edgellm(&["run", "-c", "64", "-n", "100", "-p", "Hello there"]);
    assert_clean_refusal(&output, "context size 64");
}

#[test]
fn context_smaller_than_a_slot_minimum() {
    assert_clean_refusal(&edgellm(&["run", "-c", "8", "-p", "Hello"]), "too small");
}

#[test]
fn model_setup_refuses_a_checksum_mismatch_and_is_idempotent() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-model.sh");
    // A file at the model's path with the wrong content is refused, not used or overwritten.
    let home = tempfile::tempdir().unwrap();
    let models = home.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let bogus = models.join(edgellm::paths::DEFAULT_MODEL_FILE);
    std::fs::write(&bogus, b"not the model").unwrap();
    let output = Command::new("bash")
        .arg(script)
        .env("EDGELLM_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("sha256 does not match"));
    assert_eq!(std::fs::read(&bogus).unwrap(), b"not the model");
    // With the real model installed, a second run does nothing.
    default_model();
    let output = Command::new("bash").arg(script).output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("default model present"));
}

fn redact(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(edgellm_bin())
        .arg("redact")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn redact_shows_what_would_leave_and_refuses_bad_input_cleanly() {
    // Plain: the text as it would leave.
    let plain = redact(
        &[],
        b"S/N: FTX1234A5BC, call 415 555 2671 or mail ann@example.com\n",
    );
    assert!(plain.status.success(), "{plain:?}");
    assert_eq!(
        String::from_utf8(plain.stdout).unwrap(),
        "S/N: <SERIAL_1>, call <PHONE_1> or mail <EMAIL_1>\n"
    );
    // JSON lines: one answer per line, a bad line answered and the run going on.
    let lines = redact(
        &["--jsonl"],
        b"\"IMEI 490154203237518\"\nnot json\n{\"text\": 5}\n{\"text\": \"password: hunter\"}\n\xff\xfe\n\"last\"\n",
    );
    assert!(lines.status.success(), "{lines:?}");
    let answers: Vec<serde_json::Value> = String::from_utf8(lines.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 6);
    assert_eq!(answers[0]["found"][0]["category"], "serial");
    assert_eq!(answers[0]["found"][0]["value"], "490154203237518");
    assert_eq!(answers[0]["redacted"], "IMEI <SERIAL_1>");
    assert!(answers[1]["error"].as_str().unwrap().contains("not JSON"));
    assert!(answers[2]["error"].as_str().unwrap().contains("`text`"));
    assert_eq!(answers[3]["redacted"], "password: <SECRET_1>");
    assert!(answers[4]["error"].as_str().unwrap().contains("not UTF-8"));
    assert_eq!(answers[5]["redacted"], "last");
    // Not UTF-8, and a configuration that names no region: one error line each.
    assert_clean_refusal(&redact(&[], b"\xff\xfe bad"), "not UTF-8");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edgellm.toml");
    std::fs::write(&config, "[redaction]\nphone_regions = [\"XX\"]\n").unwrap();
    assert_clean_refusal(
        &redact(&["--config", config.to_str().unwrap()], b"hi"),
        "phone_regions[0]: `XX` is not a region code",
    );
}
