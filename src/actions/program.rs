//! The program executor: runs the executable fixed in config, directly (never through a shell),
//! with argv built from the config's template where whole `{name}` elements become validated
//! argument values. The environment is cleared except PATH and LANG, stdin is /dev/null,
//! stdout and stderr are captured up to a bound (the rest is drained and discarded), and the
//! child is killed when the timeout expires.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::Execution;
use super::config::{ArgTemplate, ProgramSpec};
use super::mqtt_publish::scalar_text;

/// argv after the program name; `Err` names the offending argument.
pub fn render_args(spec: &ProgramSpec, arguments: &Value) -> Result<Vec<String>, String> {
    let mut argv = Vec::with_capacity(spec.args.len());
    for arg in &spec.args {
        match arg {
            ArgTemplate::Literal(text) => argv.push(text.clone()),
            ArgTemplate::Argument(name) => {
                let value = arguments.get(name);
                let text = scalar_text(value)
                    .ok_or_else(|| format!("argument {name} is missing or not a scalar"))?;
                if text.contains('\0') {
                    return Err(format!("argument {name} contains NUL"));
                }
                // A string starting with '-' would be read as an option by most programs.
                if matches!(value, Some(Value::String(_))) && text.starts_with('-') {
                    return Err(format!("argument {name} may not start with '-'"));
                }
                argv.push(text);
            }
        }
    }
    Ok(argv)
}

/// Runs the program; `Ok` on exit status 0, otherwise `Err` with the captured output.
pub async fn run(
    spec: &ProgramSpec,
    argv: &[String],
) -> Result<Execution, (String, Option<Execution>)> {
    let mut command = tokio::process::Command::new(&spec.path);
    command
        .args(argv)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for key in ["PATH", "LANG"] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| (format!("cannot start {}: {e}", spec.path.display()), None))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let limit = spec.max_output_bytes;
    let finished = tokio::time::timeout(spec.timeout, async {
        let (out, err, status) = tokio::join!(
            read_bounded(stdout, limit),
            read_bounded(stderr, limit),
            child.wait()
        );
        (out, err, status)
    })
    .await;
    let Ok((stdout, stderr, status)) = finished else {
        // kill_on_drop reaps it; kill now so it does not outlive the timeout.
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err((format!("program timed out after {:?}", spec.timeout), None));
    };
    let status = status.map_err(|e| (format!("waiting for program: {e}"), None))?;
    let (stdout, out_cut) = stdout;
    let (stderr, err_cut) = stderr;
    let execution = Execution::Program {
        exit_code: status.code(),
        stdout,
        stderr,
        truncated: out_cut || err_cut,
    };
    if status.success() {
        Ok(execution)
    } else {
        Err((format!("program exited with {status}"), Some(execution)))
    }
}

/// Reads everything, keeps at most `limit` bytes (lossy UTF-8), says whether it cut.
async fn read_bounded<R: AsyncRead + Unpin>(reader: Option<R>, limit: usize) -> (String, bool) {
    let Some(mut reader) = reader else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), cut)
}
