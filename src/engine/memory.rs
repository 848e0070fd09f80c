//! Memory facts: llama.cpp's buffer sizes (parsed from its log) and this process's resident memory.
//!
//! llama.cpp reports the model, KV-cache and compute buffer sizes only in its log. The engine
//! installs a log callback (the FFI edge below) that keeps the recent log text, and reads the sizes
//! out of it after creating a context.

use std::ffi::{CStr, c_char, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Buffer sizes llama.cpp allocated for the model and one context, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct BufferSizes {
    pub model_bytes: u64,
    pub kv_cache_bytes: u64,
    pub compute_bytes: u64,
    /// The logits/embeddings output buffer.
    pub output_bytes: u64,
}

impl BufferSizes {
    /// Sums the `... buffer size = N MiB` lines of a llama.cpp log.
    pub fn from_log(log: &str) -> BufferSizes {
        let mut sizes = BufferSizes::default();
        for line in log.lines() {
            let Some(mib) = mebibytes_after(line, "buffer size =") else {
                continue;
            };
            let bytes = (mib * 1024.0 * 1024.0).round() as u64;
            if line.contains(" model buffer size") {
                sizes.model_bytes += bytes;
            } else if line.contains(" KV buffer size") {
                sizes.kv_cache_bytes += bytes;
            } else if line.contains(" compute buffer size") {
                sizes.compute_bytes += bytes;
            } else if line.contains(" output buffer size") {
                sizes.output_bytes += bytes;
            }
        }
        sizes
    }
}

fn mebibytes_after(line: &str, marker: &str) -> Option<f64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let number = rest.split_whitespace().next()?;
    if !rest.contains("MiB") {
        return None;
    }
    number.parse().ok()
}

/// Captured log kept in memory. One model load logs about 150 KiB (a line per tensor and per
/// graph input), so this holds several, and a start reading its own lines back finds them.
const LOG_KEEP_BYTES: usize = 2 * 1024 * 1024;

/// The captured log: its newest text, and how many bytes were dropped before it, so that
/// offsets ([`log_mark`]) stay valid across a trim.
struct Captured {
    dropped: usize,
    text: String,
}

static LOG: Mutex<Captured> = Mutex::new(Captured {
    dropped: 0,
    text: String::new(),
});
static ECHO: AtomicBool = AtomicBool::new(false);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Routes llama.cpp's log into the capture buffer (and to stderr when `echo`).
pub fn capture_llama_logs(echo: bool) {
    ECHO.store(echo, Ordering::Relaxed);
    if !INSTALLED.swap(true, Ordering::SeqCst) {
        // SAFETY: `on_log` is a plain function with the C signature ggml expects and lives for the
        // whole program; it is passed no user data.
        unsafe { llama_cpp_sys_2::llama_log_set(Some(on_log), std::ptr::null_mut()) };
    }
}

/// Routes llama.cpp's log into the capture buffer, leaving the echo setting as it is.
pub fn install_capture() {
    if !INSTALLED.swap(true, Ordering::SeqCst) {
        // SAFETY: as in `capture_llama_logs`.
        unsafe { llama_cpp_sys_2::llama_log_set(Some(on_log), std::ptr::null_mut()) };
    }
}

/// Byte offset of the end of the captured log, to read what a later step logged.
pub fn log_mark() -> usize {
    LOG.lock()
        .map(|log| log.dropped + log.text.len())
        .unwrap_or(0)
}

/// The log text captured since `mark` (from the oldest kept text if the buffer was trimmed
/// past it).
pub fn log_since(mark: usize) -> String {
    LOG.lock()
        .map(|log| {
            let from = mark.saturating_sub(log.dropped);
            log.text.get(from..).unwrap_or("").to_string()
        })
        .unwrap_or_default()
}

/// The last `n` captured log lines: the reason llama.cpp gives when loading fails.
pub fn last_log_lines(n: usize) -> Vec<String> {
    let log = LOG.lock().map(|log| log.text.clone()).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

unsafe extern "C" fn on_log(
    _level: llama_cpp_sys_2::ggml_log_level,
    text: *const c_char,
    _user: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: ggml passes a NUL-terminated string that is valid for the duration of the call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    if ECHO.load(Ordering::Relaxed) {
        eprint!("{text}");
    }
    if let Ok(mut log) = LOG.lock() {
        append(&mut log, &text, LOG_KEEP_BYTES);
    }
}

/// Appends `text`, first dropping the older half of what is kept (at a line start) when it
/// would pass `keep` bytes; offsets stay monotonic through `dropped`. It runs inside ggml's C
/// callback, so nothing here may panic: the midpoint is moved to a character boundary before
/// slicing.
fn append(log: &mut Captured, text: &str, keep: usize) {
    if log.text.len() + text.len() > keep {
        let mut half = log.text.len() / 2;
        while !log.text.is_char_boundary(half) {
            half += 1;
        }
        let cut = log.text[half..]
            .find('\n')
            .map_or(log.text.len(), |i| half + i + 1);
        log.text.drain(..cut);
        log.dropped += cut;
    }
    log.text.push_str(text);
}

/// This process's resident memory, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ProcessMemory {
    pub resident_bytes: u64,
    pub peak_resident_bytes: u64,
    pub swapped_bytes: u64,
}

impl ProcessMemory {
    pub fn read() -> ProcessMemory {
        std::fs::read_to_string("/proc/self/status")
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    pub fn parse(status: &str) -> ProcessMemory {
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .map_or(0, |n| n * 1024)
        };
        ProcessMemory {
            resident_bytes: kib("VmRSS:"),
            peak_resident_bytes: kib("VmHWM:"),
            swapped_bytes: kib("VmSwap:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trimmed_log_keeps_offsets() {
        let mut log = Captured {
            dropped: 0,
            text: String::new(),
        };
        let mut total = 0;
        for i in 0..200 {
            let line = format!("line {i} \u{e9}\u{e9}\u{e9} buffer\n");
            append(&mut log, &line, 1000);
            total += line.len();
            assert!(log.text.len() <= 1000 + line.len());
            assert_eq!(
                log.dropped + log.text.len(),
                total,
                "offsets stay monotonic"
            );
        }
        assert!(log.text.starts_with("line "), "{}", log.text);
        assert!(log.text.ends_with("line 199 \u{e9}\u{e9}\u{e9} buffer\n"));
        // A mark taken before the last line reads exactly that line back.
        let mark = log.dropped + log.text.len();
        append(&mut log, "last\n", 1000);
        assert_eq!(&log.text[mark - log.dropped..], "last\n");
    }

    #[test]
    fn buffer_sizes_from_llama_log() {
        let log = "load_tensors:   CPU_Mapped model buffer size =   241.41 MiB\n\
            llama_kv_cache:        CPU KV buffer size =     6.00 MiB\n\
            llama_kv_cache: size =    6.00 MiB (  2048 cells,   3 layers,  1/1 seqs), K (f16):    3.00 MiB\n\
            llama_kv_cache:        CPU KV buffer size =     9.50 MiB\n\
            llama_context:        CPU  output buffer size =     1.00 MiB\n\
            llama_context:        CPU compute buffer size =   131.00 MiB\n";
        let sizes = BufferSizes::from_log(log);
        assert_eq!(sizes.model_bytes, (241.41f64 * 1048576.0).round() as u64);
        assert_eq!(sizes.kv_cache_bytes, (15.5f64 * 1048576.0) as u64);
        assert_eq!(sizes.compute_bytes, 131 * 1048576);
        assert_eq!(sizes.output_bytes, 1048576);
    }

    #[test]
    fn process_memory_from_status() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nVmSwap:\t     0 kB\n";
        let memory = ProcessMemory::parse(status);
        assert_eq!(
            memory,
            ProcessMemory {
                resident_bytes: 1 << 20,
                peak_resident_bytes: 2 << 20,
                swapped_bytes: 0
            }
        );
    }
}
