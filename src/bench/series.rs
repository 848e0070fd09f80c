//! The sustained run's time series: one [`Sample`] per interval, with what sysfs said about CPU
//! frequency and temperature at that moment. Plain data; [`super::sysfs`] fills in the readings.

use serde::Serialize;

/// One CPU's frequency (kHz, as sysfs gives it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuFreq {
    pub cpu: u32,
    pub cur_khz: u64,
    /// `cpuinfo_max_freq` (the hardware maximum) where present, else `scaling_max_freq`.
    pub max_khz: u64,
}

/// A thermal zone's trip point (`trip_point_N_type`: passive, active, hot, critical).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TripPoint {
    pub kind: String,
    pub temp_c: f64,
}

/// One thermal zone's temperature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneReading {
    /// The sysfs name, `thermal_zone0`.
    pub zone: String,
    /// The zone's `type` (`x86_pkg_temp`, `cpu-thermal`, `soc_thermal`).
    pub kind: String,
    pub temp_c: f64,
    pub trips: Vec<TripPoint>,
}

/// What sysfs shows at one moment; empty lists where the machine exposes nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SysfsSnapshot {
    pub cpus: Vec<CpuFreq>,
    pub zones: Vec<ZoneReading>,
}

impl SysfsSnapshot {
    /// The highest current/maximum frequency ratio over the CPUs. The busiest core is the one
    /// that tells whether the package is held back: idle cores sit low under any governor.
    pub fn frequency_ratio(&self) -> Option<f64> {
        self.cpus
            .iter()
            .filter(|c| c.max_khz > 0)
            .map(|c| c.cur_khz as f64 / c.max_khz as f64)
            .max_by(f64::total_cmp)
    }

    /// The mean current frequency over the CPUs, MHz.
    pub fn mean_frequency_mhz(&self) -> Option<f64> {
        (!self.cpus.is_empty()).then(|| {
            self.cpus.iter().map(|c| c.cur_khz as f64).sum::<f64>()
                / self.cpus.len() as f64
                / 1000.0
        })
    }

    /// The hottest zone's temperature, °C.
    pub fn max_temperature_c(&self) -> Option<f64> {
        self.zones.iter().map(|z| z.temp_c).max_by(f64::total_cmp)
    }
}

/// One interval of the sustained run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the sustained run began, at the end of this interval.
    pub t_s: f64,
    /// Tokens generated during this interval (all concurrent requests), per second.
    pub tokens_per_second: f64,
    /// Requests that finished during this interval.
    pub completed_requests: u64,
    /// This process's resident memory (embedded engine targets only).
    pub resident_bytes: Option<u64>,
    #[serde(flatten)]
    pub sysfs: SysfsSnapshot,
}
