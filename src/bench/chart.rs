//! The SVG chart (`chart.svg`), hand-written: tokens/s and temperature over the sustained run
//! (two y axes), and the end-to-end latency distribution of each target (a histogram with its
//! p50/p95/p99 marked). Pure: data in, SVG text out.

use std::fmt::Write;

use super::series::Sample;
use super::stats::{Percentiles, percentile};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 680.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 890.0;
const COLORS: [&str; 2] = ["#1f77b4", "#ff7f0e"];
const BINS: usize = 24;

/// One target's end-to-end latencies (ms) for the distribution panel.
pub struct LatencySeries<'a> {
    pub label: &'a str,
    pub e2e_ms: Vec<f64>,
}

pub fn render(samples: &[Sample], latencies: &[LatencySeries]) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    time_panel(&mut svg, samples, 40.0, 320.0);
    latency_panel(&mut svg, latencies, 400.0, 640.0);
    svg.push_str("</svg>\n");
    svg
}

/// Escapes text for SVG content and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn scale(value: f64, from: (f64, f64), to: (f64, f64)) -> f64 {
    let span = from.1 - from.0;
    if span.abs() < f64::EPSILON {
        return (to.0 + to.1) / 2.0;
    }
    to.0 + (value - from.0) / span * (to.1 - to.0)
}

/// A "nice" upper bound for an axis (1, 2 or 5 times a power of ten).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|v| *v >= value)
        .unwrap_or(10.0 * power)
}

fn polyline(svg: &mut String, id: &str, color: &str, points: &[(f64, f64)], dashed: bool) {
    let coords: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        svg,
        r#"<polyline id="{id}" class="series" data-points="{}" fill="none" stroke="{color}" stroke-width="1.5"{} points="{}"/>"#,
        points.len(),
        if dashed {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        },
        coords.join(" ")
    );
}

fn text(svg: &mut String, x: f64, y: f64, anchor: &str, content: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}">{}</text>"#,
        escape(content)
    );
}

fn frame(svg: &mut String, top: f64, bottom: f64, title: &str) {
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        RIGHT - LEFT,
        bottom - top
    );
    text(svg, LEFT, top - 10.0, "start", title);
}

fn time_panel(svg: &mut String, samples: &[Sample], top: f64, bottom: f64) {
    frame(
        svg,
        top,
        bottom,
        "Sustained run: tokens/s (left) and hottest thermal zone °C (right)",
    );
    if samples.is_empty() {
        text(
            svg,
            (LEFT + RIGHT) / 2.0,
            (top + bottom) / 2.0,
            "middle",
            "no sustained run",
        );
        return;
    }
    let t_max = samples.iter().map(|s| s.t_s).fold(0.0, f64::max);
    let tps_max = nice_ceiling(
        samples
            .iter()
            .map(|s| s.tokens_per_second)
            .fold(0.0, f64::max),
    );
    let x = |t: f64| scale(t, (0.0, t_max), (LEFT, RIGHT));
    let tokens: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                x(s.t_s),
                scale(s.tokens_per_second, (0.0, tps_max), (bottom, top)),
            )
        })
        .collect();
    polyline(svg, "tokens-per-second", COLORS[0], &tokens, false);
    for i in 0..=4 {
        let value = tps_max * f64::from(i) / 4.0;
        let y = scale(value, (0.0, tps_max), (bottom, top));
        text(svg, LEFT - 6.0, y + 4.0, "end", &format!("{value:.0}"));
    }
    for i in 0..=5 {
        let t = t_max * f64::from(i) / 5.0;
        text(svg, x(t), bottom + 16.0, "middle", &format!("{t:.0} s"));
    }
    let temps: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.sysfs.max_temperature_c().map(|c| (s.t_s, c)))
        .collect();
    if temps.is_empty() {
        text(svg, RIGHT, top - 10.0, "end", "temperature: not available");
        return;
    }
    let low = temps
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .floor()
        - 5.0;
    let high = temps
        .iter()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max)
        .ceil()
        + 5.0;
    let points: Vec<(f64, f64)> = temps
        .iter()
        .map(|(t, c)| (x(*t), scale(*c, (low, high), (bottom, top))))
        .collect();
    polyline(svg, "temperature", "#d62728", &points, true);
    for i in 0..=4 {
        let value = low + (high - low) * f64::from(i) / 4.0;
        let y = scale(value, (low, high), (bottom, top));
        text(
            svg,
            RIGHT + 6.0,
            y + 4.0,
            "start",
            &format!("{value:.0} °C"),
        );
    }
}

fn latency_panel(svg: &mut String, latencies: &[LatencySeries], top: f64, bottom: f64) {
    frame(
        svg,
        top,
        bottom,
        "End-to-end latency distribution (requests per bin; p50/p95/p99 marked)",
    );
    let all_max = latencies
        .iter()
        .flat_map(|l| l.e2e_ms.iter().copied())
        .fold(0.0, f64::max);
    if all_max <= 0.0 {
        text(
            svg,
            (LEFT + RIGHT) / 2.0,
            (top + bottom) / 2.0,
            "middle",
            "no latency run",
        );
        return;
    }
    let ms_max = nice_ceiling(all_max);
    let bin_ms = ms_max / BINS as f64;
    let counts: Vec<Vec<usize>> = latencies
        .iter()
        .map(|l| {
            let mut bins = vec![0usize; BINS];
            for v in &l.e2e_ms {
                bins[((v / bin_ms) as usize).min(BINS - 1)] += 1;
            }
            bins
        })
        .collect();
    let count_max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let x = |ms: f64| scale(ms, (0.0, ms_max), (LEFT, RIGHT));
    let bar_width = (RIGHT - LEFT) / BINS as f64 / latencies.len().max(1) as f64;
    for (i, (series, bins)) in latencies.iter().zip(&counts).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            svg,
            r#"<g id="latency-{i}" class="latency" fill="{color}" fill-opacity="0.8">"#
        );
        for (b, count) in bins.iter().enumerate().filter(|(_, c)| **c > 0) {
            let height = scale(*count as f64, (0.0, count_max), (0.0, bottom - top - 10.0));
            let _ = writeln!(
                svg,
                r#"<rect class="latency-bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" data-count="{count}"/>"#,
                x(b as f64 * bin_ms) + bar_width * i as f64,
                bottom - height,
                bar_width.max(1.0) - 0.5,
            );
        }
        svg.push_str("</g>\n");
        let mut sorted = series.e2e_ms.clone();
        sorted.sort_by(f64::total_cmp);
        for (name, p) in [("p50", 50.0), ("p95", 95.0), ("p99", 99.0)] {
            if let Some(value) = percentile(&sorted, p) {
                let _ = writeln!(
                    svg,
                    r#"<line class="marker" x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{bottom}" stroke="{color}" stroke-dasharray="2 2"/>"#,
                    x(value)
                );
                text(
                    svg,
                    x(value) + 2.0,
                    top + 12.0 + 14.0 * i as f64,
                    "start",
                    name,
                );
            }
        }
        let summary = Percentiles::of(&series.e2e_ms).map_or(String::new(), |p| {
            format!(
                ": p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
                p.p50, p.p95, p.p99
            )
        });
        let _ = writeln!(
            svg,
            r#"<rect x="{LEFT}" y="{:.1}" width="10" height="10" fill="{color}"/>"#,
            bottom + 24.0 + 14.0 * i as f64
        );
        text(
            svg,
            LEFT + 16.0,
            bottom + 33.0 + 14.0 * i as f64,
            "start",
            &format!("{}{summary}", series.label),
        );
    }
    for i in 0..=4 {
        let ms = ms_max * f64::from(i) / 4.0;
        text(svg, x(ms), bottom + 16.0, "middle", &format!("{ms:.0} ms"));
    }
}

#[cfg(test)]
mod tests {
    use super::super::series::{SysfsSnapshot, TripPoint, ZoneReading};
    use super::*;

    fn sample(t: f64, tps: f64, temp: Option<f64>) -> Sample {
        Sample {
            t_s: t,
            tokens_per_second: tps,
            completed_requests: 0,
            resident_bytes: None,
            sysfs: SysfsSnapshot {
                cpus: vec![],
                zones: temp
                    .map(|c| ZoneReading {
                        zone: "thermal_zone0".into(),
                        kind: "a&b<c>".into(),
                        temp_c: c,
                        trips: vec![TripPoint {
                            kind: "passive".into(),
                            temp_c: 90.0,
                        }],
                    })
                    .into_iter()
                    .collect(),
            },
        }
    }

    /// The `points` of the polyline with this id, as numbers.
    fn points(svg: &str, id: &str) -> Option<Vec<(f64, f64)>> {
        let start = svg.find(&format!(r#"id="{id}""#))?;
        let line = &svg[start..svg[start..].find("/>")? + start];
        let points = line.split(r#" points=""#).nth(1)?.trim_end_matches('"');
        Some(
            points
                .split(' ')
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect(),
        )
    }

    #[test]
    fn series_are_drawn_inside_the_plot() {
        let samples: Vec<Sample> = (1..=10)
            .map(|i| sample(f64::from(i), 40.0 + f64::from(i), Some(50.0 + f64::from(i))))
            .collect();
        let svg = render(
            &samples,
            &[LatencySeries {
                label: "x & y",
                e2e_ms: vec![100.0, 120.0, 130.0, 400.0],
            }],
        );
        let tokens = points(&svg, "tokens-per-second").unwrap();
        let temps = points(&svg, "temperature").unwrap();
        assert_eq!(tokens.len(), 10);
        assert_eq!(temps.len(), 10);
        for (x, y) in tokens.iter().chain(&temps) {
            assert!(
                (LEFT..=RIGHT).contains(x) && (40.0..=320.0).contains(y),
                "{x},{y}"
            );
        }
        // Rising tokens/s is drawn rising (smaller y).
        assert!(tokens[9].1 < tokens[0].1);
        assert_eq!(svg.matches(r#"class="latency-bar""#).count(), 4);
        assert!(svg.contains("x &amp; y: p50 120 ms, p95 400 ms, p99 400 ms"));
        assert!(!svg.contains("a&b"));
    }

    #[test]
    fn empty_inputs_still_make_a_chart() {
        let svg = render(&[], &[]);
        assert!(svg.contains("no sustained run") && svg.contains("no latency run"));
        let svg = render(&[sample(1.0, 0.0, None)], &[]);
        assert!(svg.contains("temperature: not available"));
        assert_eq!(points(&svg, "tokens-per-second").unwrap().len(), 1);
    }

    #[test]
    fn nice_axis_bounds() {
        for (value, expected) in [
            (0.0, 1.0),
            (3.0, 5.0),
            (44.2, 50.0),
            (120.0, 200.0),
            (1000.0, 1000.0),
        ] {
            assert_eq!(nice_ceiling(value), expected, "{value}");
        }
    }
}
