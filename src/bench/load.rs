//! Background load run beside the measurement, so the report shows the gateway with its real
//! neighbours: CPU-bound worker threads, and/or a command the user gives (an MQTT broker
//! benchmark, a log shipper), started in its own process group and stopped with it.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use super::BenchError;

/// What ran beside the measurement, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct BackgroundSummary {
    pub threads: usize,
    pub command: Option<String>,
    /// Set when the command ended before the measurement did (its exit status).
    pub command_exited_early: Option<String>,
}

pub struct BackgroundLoad {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    child: Option<Child>,
    command: Option<String>,
}

impl BackgroundLoad {
    pub fn start(threads: usize, command: Option<&str>) -> Result<BackgroundLoad, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || spin(&stop))
            })
            .collect();
        let child = match command {
            Some(command) => Some(spawn_command(command)?),
            None => None,
        };
        Ok(BackgroundLoad {
            stop,
            workers,
            child,
            command: command.map(str::to_string),
        })
    }

    pub fn stop(mut self) -> BackgroundSummary {
        self.stop.store(true, Ordering::Relaxed);
        let threads = self.workers.len();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let command_exited_early = self.child.take().and_then(stop_child);
        BackgroundSummary {
            threads,
            command: self.command.take(),
            command_exited_early,
        }
    }
}

impl Drop for BackgroundLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}

/// Busy arithmetic until told to stop (what a CPU-bound neighbour does to the caches and cores).
fn spin(stop: &AtomicBool) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

fn spawn_command(command: &str) -> Result<Child, BenchError> {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Args(format!("cannot start background command {command:?}: {e}")))
}

/// Ends the command's process group (SIGTERM, then SIGKILL after 2 s). Returns the exit status
/// when the command had already ended on its own.
fn stop_child(mut child: Child) -> Option<String> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status.to_string());
    }
    let group = child.id() as i32;
    // SAFETY: kill(2) with a negative pid signals the process group the child leads (it was
    // spawned with process_group(0)); it has no memory-safety preconditions.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    for _ in 0..20 {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_threads_and_command_start_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let command = format!("touch {} && sleep 30", marker.display());
        let load = BackgroundLoad::start(2, Some(&command)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let summary = load.stop();
        assert!(marker.exists(), "the command ran");
        assert_eq!(summary.threads, 2);
        assert_eq!(summary.command.as_deref(), Some(command.as_str()));
        assert_eq!(
            summary.command_exited_early, None,
            "it was stopped, not ended"
        );

        let short = BackgroundLoad::start(0, Some("exit 3")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let summary = short.stop();
        assert!(
            summary
                .command_exited_early
                .as_ref()
                .is_some_and(|s| s.contains('3')),
            "{summary:?}"
        );
    }
}
