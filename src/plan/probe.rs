//! Probing this machine: RAM and swap from /proc/meminfo, cores and CPU features from
//! /proc/cpuinfo, and memory bandwidth from a short multi-threaded copy test (about 0.3 s).

use std::time::{Duration, Instant};

use super::device::DeviceProfile;

const KIB: u64 = 1024;

/// The profile of the machine this runs on.
pub fn this_machine() -> DeviceProfile {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mem = parse_meminfo(&meminfo);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let cpu_features = parse_cpu_features(&cpuinfo);
    let mhz = parse_cpu_mhz(&cpuinfo).unwrap_or(2000.0);
    // Buffers well past the last-level cache, but at most 1/16 of the free memory each.
    let buffer = (mem.available / 16).clamp(8 << 20, 128 << 20) as usize;
    let bandwidth = measure_copy_bandwidth(buffer, cores as usize, Duration::from_millis(300));
    DeviceProfile {
        name: "this machine".to_string(),
        source: "probed".to_string(),
        ram_total: mem.total,
        ram_available: mem.available,
        swap_total: mem.swap_total,
        cores,
        arch: std::env::consts::ARCH.to_string(),
        flops: estimate_flops(cores, mhz, &cpu_features),
        cpu_features,
        bandwidth,
        bandwidth_efficiency: 1.0,
        accelerator: None,
        microcontroller: false,
    }
}

/// The figures of /proc/meminfo the plan uses, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
}

pub fn parse_meminfo(text: &str) -> MemInfo {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
        let kib: u64 = line
            .split(':')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib * KIB)
    };
    let total = field("MemTotal").unwrap_or(0);
    MemInfo {
        total,
        // Kernels before 3.14 have no MemAvailable: fall back to free + cached.
        available: field("MemAvailable")
            .or_else(|| Some(field("MemFree")? + field("Cached").unwrap_or(0)))
            .unwrap_or(total),
        swap_total: field("SwapTotal").unwrap_or(0),
    }
}

/// CPU feature flags of the first processor (`flags` on x86, `Features` on Arm), restricted to
/// the ones ggml's kernels care about.
pub fn parse_cpu_features(text: &str) -> Vec<String> {
    const INTERESTING: &[&str] = &[
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vnni",
        "avx_vnni",
        "amx_tile",
        "neon",
        "asimd",
        "asimddp",
        "i8mm",
        "sve",
        "sve2",
        "fphp",
    ];
    let line = text
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("");
    let mut features: Vec<String> = line
        .split_whitespace()
        .filter(|f| INTERESTING.contains(f))
        .map(str::to_string)
        .collect();
    if features.iter().any(|f| f == "asimd") {
        features.push("neon".to_string());
    }
    features.sort();
    features.dedup();
    features
}

fn parse_cpu_mhz(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("cpu MHz"))?;
    line.split(':').nth(1)?.trim().parse().ok()
}

/// Sustained FP32 throughput guess: cores x clock x SIMD FMA width, halved for what llama.cpp's
/// quantized kernels sustain.
pub fn estimate_flops(cores: u32, mhz: f64, features: &[String]) -> f64 {
    let has = |f: &str| features.iter().any(|x| x == f);
    let per_cycle = if has("avx512f") {
        64.0
    } else if has("avx2") && has("fma") {
        32.0
    } else if has("neon") || has("asimd") {
        16.0
    } else {
        4.0
    };
    cores as f64 * mhz * 1e6 * per_cycle * 0.5
}

/// Copy bandwidth in bytes per second (bytes read + bytes written), the best of repeated copies
/// of a `bytes`-long buffer within `budget`, split over `threads` threads (one thread alone
/// cannot saturate the memory of most multi-core machines; llama.cpp uses them all).
pub fn measure_copy_bandwidth(bytes: usize, threads: usize, budget: Duration) -> f64 {
    let threads = threads.clamp(1, 64);
    let chunk = bytes.div_ceil(threads).max(1);
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let copy = |dst: &mut [u8]| {
        std::thread::scope(|scope| {
            for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                scope.spawn(move || d.copy_from_slice(s));
            }
        });
    };
    copy(&mut dst); // fault the pages in before timing
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut rounds = 0;
    while rounds < 3 || (start.elapsed() < budget && rounds < 50) {
        let t = Instant::now();
        copy(&mut dst);
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed().as_secs_f64());
        rounds += 1;
    }
    if best > 0.0 {
        2.0 * bytes as f64 / best
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields() {
        let text = "MemTotal:       16318420 kB\nMemFree:  100 kB\nMemAvailable:    8159210 kB\nSwapTotal:  0 kB\n";
        let m = parse_meminfo(text);
        assert_eq!(m.total, 16318420 * 1024);
        assert_eq!(m.available, 8159210 * 1024);
        assert_eq!(m.swap_total, 0);
        let old_kernel = parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nCached: 200 kB\n");
        assert_eq!(old_kernel.available, 300 * 1024);
    }

    #[test]
    fn cpu_features_x86_and_arm() {
        let x86 = "processor: 0\nflags\t\t: fpu sse avx avx2 fma avx512f\n";
        assert_eq!(
            parse_cpu_features(x86),
            vec!["avx", "avx2", "avx512f", "fma"]
        );
        let arm = "processor: 0\nFeatures\t: fp asimd asimddp\n";
        assert_eq!(parse_cpu_features(arm), vec!["asimd", "asimddp", "neon"]);
    }
}
