//! Reads the device's thermal state from sysfs: the hottest `class/thermal/thermal_zone*/temp`
//! (millidegrees Celsius) and the slowest `devices/system/cpu/cpu*/cpufreq` relative to its
//! maximum. The root is configurable so tests can supply their own files; whatever is missing or
//! unreadable is simply absent from the reading. `route::policy::throttling` judges the reading.

use std::path::Path;

use crate::route::policy::ThermalReading;

pub fn read(root: &Path) -> ThermalReading {
    let mut reading = ThermalReading::default();
    for zone in entries(&root.join("class/thermal"), "thermal_zone") {
        if let Some(milli) = read_number(&zone.join("temp")) {
            let celsius = (milli / 1000.0) as f32;
            reading.max_celsius = Some(reading.max_celsius.map_or(celsius, |m| m.max(celsius)));
        }
    }
    for cpu in entries(&root.join("devices/system/cpu"), "cpu") {
        let freq = cpu.join("cpufreq");
        let (Some(cur), Some(max)) = (
            read_number(&freq.join("scaling_cur_freq")),
            read_number(&freq.join("scaling_max_freq")),
        ) else {
            continue;
        };
        if max > 0.0 {
            let ratio = (cur / max) as f32;
            reading.min_freq_ratio = Some(reading.min_freq_ratio.map_or(ratio, |m| m.min(ratio)));
        }
    }
    reading
}

/// `dir/{prefix}N` for every number N.
fn entries(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect()
}

fn read_number(path: &Path) -> Option<f64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hottest_zone_and_slowest_cpu() {
        let root = tempfile_root();
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("class/thermal/thermal_zone0/temp", "45000\n");
        write("class/thermal/thermal_zone1/temp", "91500\n");
        write("class/thermal/cooling_device0/cur_state", "1\n");
        write(
            "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
            "1200000\n",
        );
        write(
            "devices/system/cpu/cpu0/cpufreq/scaling_max_freq",
            "2400000\n",
        );
        write(
            "devices/system/cpu/cpu1/cpufreq/scaling_cur_freq",
            "2400000\n",
        );
        write(
            "devices/system/cpu/cpu1/cpufreq/scaling_max_freq",
            "2400000\n",
        );
        write("devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "1\n");
        let reading = read(&root);
        assert_eq!(reading.max_celsius, Some(91.5));
        assert_eq!(reading.min_freq_ratio, Some(0.5));
        assert_eq!(read(&root.join("missing")), ThermalReading::default());
        let _ = std::fs::remove_dir_all(&root);
    }

    fn tempfile_root() -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("edgellm-thermal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        root
    }
}
