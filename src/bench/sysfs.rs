//! Reads CPU frequencies and thermal zones from sysfs under a root directory (`/` on a real
//! machine, a temporary tree in tests). Anything missing or unreadable is left out: a machine
//! without cpufreq or thermal zones gives an empty snapshot, never an error.

use std::path::Path;

use super::series::{CpuFreq, SysfsSnapshot, TripPoint, ZoneReading};

pub fn read(root: &Path) -> SysfsSnapshot {
    SysfsSnapshot {
        cpus: read_cpus(root),
        zones: read_zones(root),
    }
}

fn read_cpus(root: &Path) -> Vec<CpuFreq> {
    let dir = root.join("sys/devices/system/cpu");
    numbered_entries(&dir, "cpu")
        .into_iter()
        .filter_map(|(cpu, path)| {
            let freq = path.join("cpufreq");
            let cur_khz = read_number(&freq.join("scaling_cur_freq"))?;
            let max_khz = read_number(&freq.join("cpuinfo_max_freq"))
                .or_else(|| read_number(&freq.join("scaling_max_freq")))?;
            Some(CpuFreq {
                cpu,
                cur_khz: u64::try_from(cur_khz).ok()?,
                max_khz: u64::try_from(max_khz).ok()?,
            })
        })
        .collect()
}

fn read_zones(root: &Path) -> Vec<ZoneReading> {
    let dir = root.join("sys/class/thermal");
    numbered_entries(&dir, "thermal_zone")
        .into_iter()
        .filter_map(|(n, path)| {
            let millidegrees = read_number(&path.join("temp"))?;
            let mut trips: Vec<(u32, TripPoint)> = Vec::new();
            for entry in std::fs::read_dir(&path).ok()?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(index) = name
                    .strip_prefix("trip_point_")
                    .and_then(|rest| rest.strip_suffix("_temp"))
                    .and_then(|i| i.parse::<u32>().ok())
                else {
                    continue;
                };
                let Some(temp) = read_number(&entry.path()) else {
                    continue;
                };
                let kind = read_text(&path.join(format!("trip_point_{index}_type")))
                    .unwrap_or_else(|| "unknown".into());
                trips.push((
                    index,
                    TripPoint {
                        kind,
                        temp_c: temp as f64 / 1000.0,
                    },
                ));
            }
            trips.sort_by_key(|(index, _)| *index);
            Some(ZoneReading {
                zone: format!("thermal_zone{n}"),
                kind: read_text(&path.join("type")).unwrap_or_else(|| "unknown".into()),
                temp_c: millidegrees as f64 / 1000.0,
                trips: trips.into_iter().map(|(_, trip)| trip).collect(),
            })
        })
        .collect()
}

/// Entries named `<prefix><number>` in `dir`, sorted by number.
fn numbered_entries(dir: &Path, prefix: &str) -> Vec<(u32, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(prefix)?.parse::<u32>().ok()?;
            Some((n, entry.path()))
        })
        .collect();
    found.sort_by_key(|(n, _)| *n);
    found
}

fn read_text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_number(path: &Path) -> Option<i64> {
    read_text(path)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_a_fake_sysfs_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cpu = "sys/devices/system/cpu";
        write(
            root,
            &format!("{cpu}/cpu0/cpufreq/scaling_cur_freq"),
            "1800000\n",
        );
        write(
            root,
            &format!("{cpu}/cpu0/cpufreq/scaling_max_freq"),
            "2400000\n",
        );
        write(
            root,
            &format!("{cpu}/cpu1/cpufreq/scaling_cur_freq"),
            "1000000\n",
        );
        write(
            root,
            &format!("{cpu}/cpu1/cpufreq/scaling_max_freq"),
            "1500000\n",
        );
        write(
            root,
            &format!("{cpu}/cpu1/cpufreq/cpuinfo_max_freq"),
            "2400000\n",
        );
        write(
            root,
            &format!("{cpu}/cpu10/cpufreq/scaling_cur_freq"),
            "garbage\n",
        );
        write(root, &format!("{cpu}/cpufreq/policy0/x"), "");
        let zone = "sys/class/thermal/thermal_zone2";
        write(root, &format!("{zone}/temp"), "61500\n");
        write(root, &format!("{zone}/type"), "cpu-thermal\n");
        write(root, &format!("{zone}/trip_point_1_temp"), "95000\n");
        write(root, &format!("{zone}/trip_point_1_type"), "critical\n");
        write(root, &format!("{zone}/trip_point_0_temp"), "80000\n");
        write(root, &format!("{zone}/trip_point_0_type"), "passive\n");
        write(root, "sys/class/thermal/cooling_device0/type", "fan\n");

        let snapshot = read(root);
        assert_eq!(
            snapshot.cpus,
            vec![
                CpuFreq {
                    cpu: 0,
                    cur_khz: 1_800_000,
                    max_khz: 2_400_000
                },
                CpuFreq {
                    cpu: 1,
                    cur_khz: 1_000_000,
                    max_khz: 2_400_000
                },
            ]
        );
        assert_eq!(
            snapshot.zones,
            vec![ZoneReading {
                zone: "thermal_zone2".into(),
                kind: "cpu-thermal".into(),
                temp_c: 61.5,
                trips: vec![
                    TripPoint {
                        kind: "passive".into(),
                        temp_c: 80.0
                    },
                    TripPoint {
                        kind: "critical".into(),
                        temp_c: 95.0
                    },
                ],
            }]
        );
        assert_eq!(snapshot.frequency_ratio(), Some(0.75));
        assert_eq!(snapshot.max_temperature_c(), Some(61.5));
    }

    #[test]
    fn missing_sysfs_is_an_empty_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), SysfsSnapshot::default());
        assert_eq!(read(&dir.path().join("absent")), SysfsSnapshot::default());
    }
}
