#!/usr/bin/env bash
# edgellm's /v1/embeddings against llama.cpp's llama-server (built from the same llama.cpp
# sources by bench/build-peers.sh) on the same embedding GGUF (the default all-MiniLM-L6-v2
# F16), the same threads and batch size, measured in alternation in one run: batched inputs
# (32 a request) and single inputs from 4 concurrent clients.
#
#   bench/embeddings.sh [ROUNDS]        (default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-6}"
THREADS="${THREADS:-2}"
HOME_DIR="${EDGELLM_HOME:-$HOME/.local/share/edgellm}"
MODEL="${EMBED_MODEL:-$HOME_DIR/models/all-minilm-l6-v2-f16.gguf}"
PEERS="${EDGELLM_PEERS_DIR:-$HOME/.cache/edgellm-peers}"

bench/build-peers.sh >/dev/null
source scripts/build-env.sh
cargo build --release --quiet
scripts/install-embedding-model.sh target/release/edgellm >/dev/null

# The same shape on both: 2 threads, one 512-token batch (MiniLM's context), mean pooling,
# L2-normalised vectors. edgellm also holds its generation model (idle here).
target/release/edgellm serve --embedding-model "$MODEL" -t "$THREADS" --port 18091 2>/dev/null &
EDGE=$!
"$PEERS/bin/llama-server" -m "$MODEL" --embedding --pooling mean -t "$THREADS" -tb "$THREADS" \
  -c 2048 -b 512 -ub 512 -np 4 --port 18092 >/dev/null 2>&1 &
PEER=$!
trap 'kill $EDGE $PEER 2>/dev/null || true' EXIT
wait_ready() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0; sleep 0.1; done; echo "server on $1 not ready" >&2; exit 1; }
wait_ready 18091
wait_ready 18092

load=$(python3 bench/embeddings.py "$ROUNDS" edgellm=http://127.0.0.1:18091 llama-server=http://127.0.0.1:18092)
python3 - "$load" "$ROUNDS" "$THREADS" <<'PY'
import json, sys
load, rounds, threads = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
e, p = load["edgellm"], load["llama-server"]
print(f"/v1/embeddings, all-MiniLM-L6-v2 F16, threads {threads}, {load['passages']} passages (docs/*.md paragraphs), {rounds} alternating rounds\n")
print("| workload | llama-server inputs/s | edgellm inputs/s | edgellm / llama-server (median; per-round range) |")
print("|---|---:|---:|---:|")
for key, label in [("batched", "32 inputs a request, sequential"), ("single_concurrent", "1 input a request, 4 concurrent clients")]:
    ratios = sorted(a / b for a, b in zip(e[key], p[key]))
    print(f"| {label} | {p[key + '_median']:.1f} | {e[key + '_median']:.1f} | {ratios[len(ratios)//2]:.3f} ({ratios[0]:.3f} .. {ratios[-1]:.3f}) |")
PY
