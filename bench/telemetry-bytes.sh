#!/usr/bin/env bash
# Telemetry bytes on the wire per device per day, measured: `edgellm serve` on the default model
# pushes its real /metrics to a real Prometheus (Debian's `prometheus`, remote-write receiver on
# loopback) with the default [telemetry] settings on a clock scaled 60:1 (one second stands for
# the default one-minute scrape interval; sends every 10 s stand for the default 10 minutes; the keepalive of
# 60 s for one hour; histograms every 30 s for their default 30 minutes). The bytes edgellm counts (`edgellm_telemetry_sent_bytes_total`: bodies plus
# the request overhead it charges to its budget) over the simulated minutes, times 1,440, is a day.
#
#   bench/telemetry-bytes.sh [SECONDS]      (default 360: six simulated hours per load)
#
# Loads, one after the other on the same server: idle (no requests), then light (one completion
# every simulated minute), then busy (completions back to back with 0.15 s pauses).
# Output: a markdown table on stdout; the config, logs and /metrics under $OUT (/tmp/telemetry-bytes).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_LOAD=${1:-360}
OUT=${OUT:-/tmp/telemetry-bytes}
rm -rf "$OUT" && mkdir -p "$OUT"
BIN=${EDGELLM_BIN:-target/release/edgellm}
[ -x "$BIN" ] || { source scripts/build-env.sh; cargo build --release --locked --bin edgellm; }
command -v prometheus >/dev/null || { echo "install the prometheus Debian package" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PROM_PORT=$(free_port); EDGE_PORT=$(free_port)
printf 'global:\n  scrape_interval: 1h\n' > "$OUT/prometheus.yml"
prometheus --config.file="$OUT/prometheus.yml" --storage.tsdb.path="$OUT/prom" \
  --web.listen-address=127.0.0.1:$PROM_PORT --web.enable-remote-write-receiver \
  >"$OUT/prometheus.log" 2>&1 &
PROM=$!
cat > "$OUT/edgellm.toml" <<EOF
[telemetry]
remote_write_url = "http://127.0.0.1:$PROM_PORT/api/v1/write"
device_id = "bench-1"
site = "bench"
interval_secs = 1
send_interval_secs = 10
keepalive_secs = 60
histogram_interval_secs = 30
EOF
"$BIN" serve --config "$OUT/edgellm.toml" --port "$EDGE_PORT" --data-dir "$OUT/data" >"$OUT/edgellm.log" 2>&1 &
EDGE=$!
trap 'kill $EDGE $PROM 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "127.0.0.1:$EDGE_PORT/health" >/dev/null && break; sleep 1; done

metric() { curl -sf "127.0.0.1:$EDGE_PORT/metrics" | awk -v n="$1" '$1==n {print $2}'; }
echo "| load | simulated minutes | requests | bytes sent | samples sent per scrape | active series | bytes per day (x1440/min) |"
echo "|---|---|---|---|---|---|---|"
for load in idle light busy; do
  b0=$(metric edgellm_telemetry_sent_bytes_total); s0=$(metric edgellm_telemetry_scrapes_total)
  n0=$(metric edgellm_telemetry_samples_buffered_total)
  requests=0; start=$(date +%s)
  while [ $(( $(date +%s) - start )) -lt "$SECONDS_PER_LOAD" ]; do
    case $load in
      idle) sleep 1 ;;
      light) curl -sf "127.0.0.1:$EDGE_PORT/v1/completions" -d '{"prompt":"The gateway","max_tokens":8}' >/dev/null; requests=$((requests+1)); sleep 1 ;;
      busy) curl -sf "127.0.0.1:$EDGE_PORT/v1/completions" -d '{"prompt":"The gateway","max_tokens":8}' >/dev/null; requests=$((requests+1)); sleep 0.15 ;;
    esac
  done
  sleep 11   # the last send of this load
  b1=$(metric edgellm_telemetry_sent_bytes_total); s1=$(metric edgellm_telemetry_scrapes_total)
  n1=$(metric edgellm_telemetry_samples_buffered_total); active=$(metric edgellm_telemetry_series_active)
  python3 - "$load" "$b0" "$b1" "$s0" "$s1" "$n0" "$n1" "$requests" "$active" <<'EOF'
import sys
load, b0, b1, s0, s1, n0, n1, requests, active = sys.argv[1:]
minutes = float(s1) - float(s0)
sent = float(b1) - float(b0)
print(f"| {load} | {minutes:.0f} | {requests} | {sent:.0f} | {(float(n1)-float(n0))/minutes:.1f} | {active} | {sent/minutes*1440/1024:.0f} KiB |")
EOF
done
curl -sf "127.0.0.1:$EDGE_PORT/metrics" > "$OUT/metrics.txt"
