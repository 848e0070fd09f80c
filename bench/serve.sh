#!/usr/bin/env bash
# edgellm serve against llama.cpp's llama-server (built from the same llama.cpp sources by
# bench/build-peers.sh): 4 concurrent streaming clients, same model, threads, context and 4
# parallel slots, measured in alternation in one run; plus each server's resident memory.
#
#   bench/serve.sh [ROUNDS]        (default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-6}"
THREADS="${THREADS:-2}"
CTX=8192
SLOTS=4
N_PREDICT="${N_PREDICT:-128}"
MODEL="${MODEL:-${EDGELLM_HOME:-$HOME/.local/share/edgellm}/models/gemma-3-270m-q4_k_m.gguf}"
PEERS="${EDGELLM_PEERS_DIR:-$HOME/.cache/edgellm-peers}"

bench/build-peers.sh >/dev/null
source scripts/build-env.sh
cargo build --release --quiet
python3 -c "import httpx" 2>/dev/null || python3 -m pip install --quiet httpx

target/release/edgellm serve -m "$MODEL" -t "$THREADS" -c "$CTX" --slots "$SLOTS" --port 18081 2>/dev/null &
EDGE=$!
"$PEERS/bin/llama-server" -m "$MODEL" -t "$THREADS" -c "$CTX" -np "$SLOTS" --port 18082 >/dev/null 2>&1 &
PEER=$!
trap 'kill $EDGE $PEER 2>/dev/null || true' EXIT
wait_ready() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0; sleep 0.1; done; echo "server on $1 not ready" >&2; exit 1; }
wait_ready 18081
wait_ready 18082
sleep 1
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }
idle_edge=$(rss $EDGE); idle_peer=$(rss $PEER)

load=$(python3 bench/serve_load.py "$ROUNDS" "$SLOTS" "$N_PREDICT" edgellm=http://127.0.0.1:18081 llama-server=http://127.0.0.1:18082)
sleep 1
after_edge=$(rss $EDGE); after_peer=$(rss $PEER)
buffers=$(curl -s http://127.0.0.1:18081/v1/models)

python3 - "$load" "$buffers" "$idle_edge" "$idle_peer" "$after_edge" "$after_peer" "$ROUNDS" "$THREADS" <<'PY'
import json, sys
load, models = json.loads(sys.argv[1]), json.loads(sys.argv[2])
idle_edge, idle_peer, after_edge, after_peer = (int(x) for x in sys.argv[3:7])
rounds, threads = sys.argv[7], sys.argv[8]
e, p = load["edgellm"], load["llama-server"]
ratios = [a / b for a, b in zip(e["aggregate_tps"], p["aggregate_tps"])]
ratios.sort()
print(f"4 concurrent streaming clients x 128 tokens, threads {threads}, ctx 8192, 4 slots, {rounds} alternating rounds\n")
print("| metric | llama-server | edgellm | edgellm / llama-server |")
print("|---|---:|---:|---:|")
print(f"| aggregate decode tokens/s (median) | {p['aggregate_tps_median']:.1f} | {e['aggregate_tps_median']:.1f} | {ratios[len(ratios)//2]:.3f} (per-round {ratios[0]:.3f} .. {ratios[-1]:.3f}) |")
print(f"| time to first token p50 (ms) | {p['ttft_p50_ms']:.1f} | {e['ttft_p50_ms']:.1f} | {e['ttft_p50_ms']/p['ttft_p50_ms']:.3f} |")
print(f"| time to first token p95 (ms) | {p['ttft_p95_ms']:.1f} | {e['ttft_p95_ms']:.1f} | {e['ttft_p95_ms']/p['ttft_p95_ms']:.3f} |")
mib = lambda b: b / 2**20
meta = models["data"][0]["meta"]
print("\n| resident memory (MiB) | llama-server | edgellm |")
print("|---|---:|---:|")
print(f"| idle after start | {mib(idle_peer):.1f} | {mib(idle_edge):.1f} |")
print(f"| after the load | {mib(after_peer):.1f} | {mib(after_edge):.1f} |")
print(f"\nedgellm model file {mib(meta['size']):.1f} MiB; idle RSS beyond the model: {mib(idle_edge - meta['size']):.1f} MiB")
PY
