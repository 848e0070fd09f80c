//! A one-line progress display on stderr (`\r`-rewritten), shown only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

pub struct Progress {
    enabled: bool,
    started: Instant,
    last: Mutex<Option<Instant>>,
}

impl Progress {
    pub fn new(wanted: bool) -> Progress {
        Progress {
            enabled: wanted && std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: Mutex::new(None),
        }
    }

    /// Shows `phase [#####.....] done/total detail`, at most ten times a second.
    pub fn update(&self, phase: &str, done: usize, total: usize, detail: &str) {
        if !self.enabled {
            return;
        }
        if let Ok(mut last) = self.last.lock() {
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t).as_millis() < 100) && done < total {
                return;
            }
            *last = Some(now);
        }
        eprint!(
            "\r{}\x1b[K",
            line(phase, done, total, detail, self.started.elapsed().as_secs())
        );
        let _ = std::io::stderr().flush();
    }

    /// Clears the line (before the summary is printed).
    pub fn finish(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
        }
    }
}

fn line(phase: &str, done: usize, total: usize, detail: &str, elapsed_s: u64) -> String {
    const WIDTH: usize = 24;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(0).min(WIDTH);
    format!(
        "{phase:<10} [{}{}] {done}/{total} {detail} ({}:{:02})",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        elapsed_s / 60,
        elapsed_s % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_line() {
        assert_eq!(
            super::line("latency", 4, 16, "", 75),
            "latency    [######..................] 4/16  (1:15)"
        );
        assert_eq!(
            super::line("warm-up", 0, 0, "x", 0),
            "warm-up    [........................] 0/0 x (0:00)"
        );
    }
}
