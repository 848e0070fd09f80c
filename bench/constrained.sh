#!/usr/bin/env bash
# Constrained decoding: edgellm against llama.cpp's llama-server (built from the same llama.cpp
# sources by bench/build-peers.sh), same model, threads, one slot each, in alternation in one
# run (bench/constrained.py says what is measured). Prints the Markdown table of
# docs/performance.md ("Constrained decoding").
#
#   bench/constrained.sh [ROUNDS]        (default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-6}"
THREADS="${THREADS:-2}"
MODEL="${MODEL:-${EDGELLM_HOME:-$HOME/.local/share/edgellm}/models/gemma-3-270m-q4_k_m.gguf}"
PEERS="${EDGELLM_PEERS_DIR:-$HOME/.cache/edgellm-peers}"
JUMP="${JUMP_FORWARD:-exact}"

bench/build-peers.sh >/dev/null
source scripts/build-env.sh
cargo build --release --quiet

config=$(mktemp --suffix=.toml)
data=$(mktemp -d)
cat >"$config" <<'TOML'
[[actions]]
name = "notify"
description = "Tell the operator."
parameters = {type = "object", properties = {text = {type = "string", maxLength = 200}}, required = ["text"], additionalProperties = false}
webhook = {url = "http://127.0.0.1:9/notify"}

[[tasks]]
name = "triage"
instructions = """You triage gateway logs. Rate the overall severity and summarise in one sentence."""
output = '''{"type": "object",
  "properties": {"severity": {"type": "string", "enum": ["info", "warning", "critical"]},
                 "summary": {"type": "string", "maxLength": 300}},
  "required": ["severity", "summary"], "additionalProperties": false}'''
actions = ["notify"]
TOML

EDGELLM_DATA_DIR="$data" target/release/edgellm serve -m "$MODEL" -t "$THREADS" --slots 1 -c 4096 \
  --jump-forward "$JUMP" --config "$config" --port 18091 2>/dev/null &
EDGE=$!
"$PEERS/bin/llama-server" -m "$MODEL" -t "$THREADS" -c 4096 -np 1 --port 18092 >/dev/null 2>&1 &
PEER=$!
trap 'kill $EDGE $PEER 2>/dev/null || true; rm -rf "$config" "$data"' EXIT
wait_ready() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0; sleep 0.1; done; echo "server on $1 not ready" >&2; exit 1; }
wait_ready 18091
wait_ready 18092
sleep 1

out=$(python3 bench/constrained.py "$ROUNDS" http://127.0.0.1:18091 http://127.0.0.1:18092)
python3 - "$out" "$ROUNDS" "$THREADS" "$JUMP" <<'PY'
import json, sys
s, rounds, threads, jump = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
e, p = s["edgellm"], s["llama-server"]
print(f"threads {threads}, 1 slot each, {rounds} alternating rounds, medians; edgellm --jump-forward {jump}\n")
print("| measure | llama-server | edgellm | target |")
print("|---|---:|---:|---|")
print(f"| decode tokens/s, no schema (64 tokens) | {p['free_tps']:.1f} | {e['free_tps']:.1f} | |")
print(f"| decode tokens/s, JSON schema (64 tokens) | {p['schema_tps']:.1f} | {e['schema_tps']:.1f} | |")
lo, hi = e["schema_over_free_range"]; plo, phi = p["schema_over_free_range"]
print(f"| schema / no schema, per round | {p['schema_over_free']:.2f} ({plo:.2f} .. {phi:.2f}) | {e['schema_over_free']:.2f} ({lo:.2f} .. {hi:.2f}) | edgellm >= 0.9 |")
print(f"| triage, /completion + run schema, end to end (ms) | {p['triage_ms']:.0f} ({p['triage_tokens']:.0f} tokens) | {e['triage_ms']:.0f} ({e['triage_tokens']:.0f} tokens) | |")
print(f"| triage, edgellm POST /v1/tasks/triage (ms) | | {e['task_ms']:.0f} | |")
lo, hi = s["triage_speedup_range"]; tlo, thi = s["task_speedup_range"]
print(f"| llama-server time / edgellm time, /completion | | {s['triage_speedup']:.2f} ({lo:.2f} .. {hi:.2f}) | >= 2 |")
print(f"| llama-server /completion time / edgellm task time | | {s['task_speedup']:.2f} ({tlo:.2f} .. {thi:.2f}) | >= 2 |")
plo, phi = s["triage_per_token_speedup_range"]
print(f"| the same per output token (end-to-end time / tokens; the outputs differ in length) | | {s['triage_per_token_speedup']:.2f} ({plo:.2f} .. {phi:.2f}) | |")
m = s["mask"]
print(f"\nedgellm mask per constrained token ({m['count']:.0f} tokens): p50 {m['p50_us']:.0f} us, p99 {m['p99_us']:.0f} us, mean {m['mean_us']:.0f} us (from the edgellm_constraint_mask_seconds histogram); forced tokens: {s.get('forced_tokens', 0):.0f}")
PY
