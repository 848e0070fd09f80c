//! Device profiles: the named presets device teams plan against, and TOML device files.
//! No IO except reading a device file; probing this machine lives in `probe.rs`.
//!
//! Preset figures come from the vendors' public specifications. `bandwidth_gbs` is the
//! theoretical peak of the memory interface (bus width x transfer rate); a single inference
//! stream reaches only part of it, so the speed model multiplies by `bandwidth_efficiency`
//! (0.6 for the presets, a typical STREAM-copy share on these SoCs; 1.0 for a measured figure).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::PlanError;
use super::estimate::{RepackRules, Throughput};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A device the plan is made for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceProfile {
    pub name: String,
    /// Where the figures come from: "probed", "preset", or the device file's path.
    pub source: String,
    pub ram_total: u64,
    /// Memory a model may use (free RAM on this machine; RAM less the OS reserve for presets).
    pub ram_available: u64,
    pub swap_total: u64,
    pub cores: u32,
    pub arch: String,
    pub cpu_features: Vec<String>,
    /// Memory bandwidth, bytes per second (peak for presets, measured when probed).
    pub bandwidth: f64,
    /// Share of `bandwidth` one decode stream reaches.
    pub bandwidth_efficiency: f64,
    /// Sustained arithmetic for quantized matrix products, floating-point operations per second.
    pub flops: f64,
    /// An accelerator the figures assume (GPU, NPU), if any.
    pub accelerator: Option<String>,
    /// The device cannot run a general-purpose LLM runtime at all (no MMU, no OS).
    pub microcontroller: bool,
}

impl DeviceProfile {
    pub fn throughput(&self) -> Throughput {
        Throughput {
            bandwidth: self.bandwidth * self.bandwidth_efficiency,
            flops: self.flops,
        }
    }

    /// Which matrices ggml's CPU backend repacks on this device.
    pub fn repack_rules(&self) -> RepackRules {
        let has = |f: &str| self.cpu_features.iter().any(|x| x == f);
        match self.arch.as_str() {
            "x86_64" if has("avx2") => RepackRules::X86Avx2 {
                avx512: has("avx512f"),
            },
            "aarch64" if has("asimddp") || has("dotprod") => {
                RepackRules::ArmDotprod { i8mm: has("i8mm") }
            }
            _ => RepackRules::None,
        }
    }
}

struct Preset {
    id: &'static str,
    name: &'static str,
    ram_gib: f64,
    os_reserve_mib: u64,
    cores: u32,
    arch: &'static str,
    features: &'static [&'static str],
    bandwidth_gbs: f64,
    gflops: f64,
    accelerator: Option<&'static str>,
    microcontroller: bool,
}

const ARM_A72: &[&str] = &["neon"];
const ARM_A76: &[&str] = &["neon", "asimddp"];
const X86_GATEWAY: &[&str] = &["avx2", "fma"];

/// The tiers of the field guide, with figures from public specs.
const PRESETS: &[Preset] = &[
    Preset {
        id: "mcu",
        name: "MCU (ESP32-S3 / STM32H7 class, 8 MiB PSRAM)",
        ram_gib: 8.0 / 1024.0,
        os_reserve_mib: 1,
        cores: 2,
        arch: "xtensa",
        features: &[],
        // ESP32-S3 octal PSRAM at 80 MHz DDR: 8 bit x 160 MT/s.
        bandwidth_gbs: 0.16,
        gflops: 0.5,
        accelerator: None,
        microcontroller: true,
    },
    Preset {
        id: "rpi4",
        name: "Raspberry Pi 4 Model B, 4 GB (4x Cortex-A72 1.8 GHz, LPDDR4-3200 32-bit)",
        ram_gib: 4.0,
        os_reserve_mib: 512,
        cores: 4,
        arch: "aarch64",
        features: ARM_A72,
        bandwidth_gbs: 12.8,
        // 4 cores x 1.8 GHz x 8 FP32 FLOP/cycle (NEON FMA 4-wide), about half sustained.
        gflops: 29.0,
        accelerator: None,
        microcontroller: false,
    },
    Preset {
        id: "rpi5",
        name: "Raspberry Pi 5, 8 GB (4x Cortex-A76 2.4 GHz, LPDDR4X-4267 32-bit)",
        ram_gib: 8.0,
        os_reserve_mib: 512,
        cores: 4,
        arch: "aarch64",
        features: ARM_A76,
        bandwidth_gbs: 17.1,
        // 4 cores x 2.4 GHz x 16 FP32 FLOP/cycle (2x 4-wide FMA), about half sustained.
        gflops: 77.0,
        accelerator: None,
        microcontroller: false,
    },
    Preset {
        id: "gateway-8gb",
        name: "x86 fanless gateway, 8 GB (Intel N100 class, 4 cores, DDR5-4800 single channel)",
        ram_gib: 8.0,
        os_reserve_mib: 1024,
        cores: 4,
        arch: "x86_64",
        features: X86_GATEWAY,
        bandwidth_gbs: 38.4,
        // 4 cores x 3.0 GHz x 32 FP32 FLOP/cycle (AVX2 FMA), about half sustained.
        gflops: 190.0,
        accelerator: None,
        microcontroller: false,
    },
    Preset {
        id: "gateway-16gb",
        name: "x86 fanless gateway, 16 GB (Intel N305 class, 8 cores, DDR5-4800 single channel)",
        ram_gib: 16.0,
        os_reserve_mib: 1536,
        cores: 8,
        arch: "x86_64",
        features: X86_GATEWAY,
        bandwidth_gbs: 38.4,
        gflops: 380.0,
        accelerator: None,
        microcontroller: false,
    },
    Preset {
        id: "gateway-32gb",
        name: "x86 fanless gateway, 32 GB (Core i5 class, 6 cores, DDR4-3200 dual channel)",
        ram_gib: 32.0,
        os_reserve_mib: 2048,
        cores: 6,
        arch: "x86_64",
        features: X86_GATEWAY,
        bandwidth_gbs: 51.2,
        gflops: 400.0,
        accelerator: None,
        microcontroller: false,
    },
    Preset {
        id: "jetson-orin-nano",
        name: "NVIDIA Jetson Orin Nano 8 GB (6x Cortex-A78AE, LPDDR5 128-bit, 1024-core Ampere GPU)",
        ram_gib: 8.0,
        os_reserve_mib: 1536,
        cores: 6,
        arch: "aarch64",
        features: ARM_A76,
        bandwidth_gbs: 68.0,
        // GPU: about 1.3 TFLOPS FP16 dense; half sustained.
        gflops: 640.0,
        accelerator: Some("Ampere GPU, 1024 CUDA cores (unified memory)"),
        microcontroller: false,
    },
    Preset {
        id: "jetson-agx-orin",
        name: "NVIDIA Jetson AGX Orin 64 GB (12x Cortex-A78AE, LPDDR5 256-bit, 2048-core Ampere GPU)",
        ram_gib: 64.0,
        os_reserve_mib: 2048,
        cores: 12,
        arch: "aarch64",
        features: ARM_A76,
        bandwidth_gbs: 204.8,
        // GPU: about 10.6 TFLOPS FP16 dense (tensor cores); half sustained.
        gflops: 5300.0,
        accelerator: Some("Ampere GPU, 2048 CUDA cores (unified memory)"),
        microcontroller: false,
    },
    Preset {
        id: "phone-npu",
        name: "Flagship phone with NPU, 12 GB (8 cores, LPDDR5X-8533 64-bit)",
        ram_gib: 12.0,
        os_reserve_mib: 4096,
        cores: 8,
        arch: "aarch64",
        features: &["neon", "asimddp", "i8mm"],
        bandwidth_gbs: 68.3,
        // NPU INT8 peak in the tens of TOPS; about 2 TOPS sustained on LLM matrix products.
        gflops: 2000.0,
        accelerator: Some("NPU (figures assume the model runs on it)"),
        microcontroller: false,
    },
];

/// The ids `--device` accepts.
pub fn preset_ids() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.id).collect()
}

/// The named preset, or `None`.
pub fn preset(id: &str) -> Option<DeviceProfile> {
    let p = PRESETS.iter().find(|p| p.id.eq_ignore_ascii_case(id))?;
    let ram_total = (p.ram_gib * GIB as f64) as u64;
    Some(DeviceProfile {
        name: p.name.to_string(),
        source: "preset".to_string(),
        ram_total,
        ram_available: ram_total.saturating_sub(p.os_reserve_mib * MIB),
        swap_total: 0,
        cores: p.cores,
        arch: p.arch.to_string(),
        cpu_features: p.features.iter().map(|f| f.to_string()).collect(),
        bandwidth: p.bandwidth_gbs * 1e9,
        bandwidth_efficiency: 0.6,
        flops: p.gflops * 1e9,
        accelerator: p.accelerator.map(str::to_string),
        microcontroller: p.microcontroller,
    })
}

/// A device file, as written: sizes in MiB, bandwidth in GB/s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: String,
    ram_mib: u64,
    available_mib: Option<u64>,
    #[serde(default)]
    swap_mib: u64,
    cores: u32,
    #[serde(default = "default_arch")]
    arch: String,
    #[serde(default)]
    cpu_features: Vec<String>,
    bandwidth_gbs: f64,
    bandwidth_efficiency: Option<f64>,
    gflops: Option<f64>,
    accelerator: Option<String>,
    #[serde(default)]
    microcontroller: bool,
}

fn default_arch() -> String {
    "x86_64".into()
}

/// Parses a TOML device description (see docs/plan-accuracy.md for an example).
pub fn from_toml(text: &str, source: &str) -> Result<DeviceProfile, PlanError> {
    let raw: RawDevice = toml::from_str(text)
        .map_err(|e| PlanError::Device(format!("{source}: {}", e.message())))?;
    let bad = |what: &str| PlanError::Device(format!("{source}: {what}"));
    if raw.ram_mib == 0 || raw.cores == 0 {
        return Err(bad("ram_mib and cores must be positive"));
    }
    if !(raw.bandwidth_gbs.is_finite() && raw.bandwidth_gbs > 0.0) {
        return Err(bad("bandwidth_gbs must be a positive number"));
    }
    let efficiency = raw.bandwidth_efficiency.unwrap_or(0.6);
    if !(efficiency > 0.0 && efficiency <= 1.0) {
        return Err(bad("bandwidth_efficiency must be in (0, 1]"));
    }
    let available = raw.available_mib.unwrap_or(raw.ram_mib * 7 / 8);
    if available > raw.ram_mib {
        return Err(bad("available_mib exceeds ram_mib"));
    }
    let gflops = raw.gflops.unwrap_or(raw.cores as f64 * 10.0);
    if !(gflops.is_finite() && gflops > 0.0) {
        return Err(bad("gflops must be a positive number"));
    }
    Ok(DeviceProfile {
        name: raw.name,
        source: source.to_string(),
        ram_total: raw.ram_mib * MIB,
        ram_available: available * MIB,
        swap_total: raw.swap_mib * MIB,
        cores: raw.cores,
        arch: raw.arch,
        cpu_features: raw.cpu_features,
        bandwidth: raw.bandwidth_gbs * 1e9,
        bandwidth_efficiency: efficiency,
        flops: gflops * 1e9,
        accelerator: raw.accelerator,
        microcontroller: raw.microcontroller,
    })
}

/// `--device` resolved: a preset id, or a path to a `.toml` device file.
pub fn resolve(spec: &str) -> Result<DeviceProfile, PlanError> {
    if let Some(profile) = preset(spec) {
        return Ok(profile);
    }
    let path = Path::new(spec);
    if spec.ends_with(".toml") || path.exists() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PlanError::Device(format!("cannot read {spec}: {e}")))?;
        return from_toml(&text, spec);
    }
    Err(PlanError::Device(format!(
        "unknown device '{spec}': use one of {} or a .toml device file",
        preset_ids().join(", ")
    )))
}
