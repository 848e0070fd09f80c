#!/usr/bin/env bash
# Engine speed and memory against llama.cpp's own llama-bench, same llama.cpp sources, same flags,
# same machine, same run (issue: "edgellm foundation").
#
#   bench/engine.sh [ROUNDS]      (default 5 rounds)
#
# Each round measures, in alternation so a noisy machine affects both sides alike:
#   prefill: llama-bench pp512 (its defaults: n_batch 2048, n_ubatch 512)
#            vs `edgellm run --synthetic-prompt 512 -n 1` (edgellm's defaults: n_batch 512, n_ubatch 128)
#   decode:  llama-bench tg128 vs `edgellm run -p Hello -n 128 --ignore-eos --temp 0`
#            (both from an empty context; edgellm's figure includes its sampling and log-probability
#            work for every token, llama-bench's includes no sampling at all)
# and reports the medians and the ratios, plus the compute-buffer sizes llama.cpp reports for
# llama.cpp's default context settings and for edgellm's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
THREADS="${THREADS:-2}"
MODEL="${MODEL:-${EDGELLM_HOME:-$HOME/.local/share/edgellm}/models/gemma-3-270m-q4_k_m.gguf}"
PEERS="${EDGELLM_PEERS_DIR:-$HOME/.cache/edgellm-peers}"

bench/build-peers.sh >/dev/null
source scripts/build-env.sh
cargo build --release --quiet
EDGELLM=target/release/edgellm
LLAMA_BENCH="$PEERS/bin/llama-bench"

out="$(mktemp -d)"
for round in $(seq "$ROUNDS"); do
  "$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" -p 512 -n 0 -r 1 -o json 2>/dev/null >"$out/lb-pp-$round.json"
  "$EDGELLM" run -m "$MODEL" -t "$THREADS" --synthetic-prompt 512 -n 1 --temp 0 --json >"$out/el-pp-$round.json"
  "$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" -p 0 -n 128 -r 1 -o json 2>/dev/null >"$out/lb-tg-$round.json"
  "$EDGELLM" run -m "$MODEL" -t "$THREADS" -p Hello -n 128 --ignore-eos --temp 0 --json >"$out/el-tg-$round.json"
  echo "round $round/$ROUNDS done" >&2
done
# Compute buffers: edgellm's context, and llama.cpp's defaults (n_ubatch 512, n_outputs_max = n_batch)
"$EDGELLM" run -m "$MODEL" -t "$THREADS" -c 2048 -p Hello -n 1 --json >"$out/el-mem.json"
"$EDGELLM" run -m "$MODEL" -t "$THREADS" -c 2048 -p Hello -n 1 --ubatch-size 512 --json >"$out/el-mem512.json"
"$PEERS/bin/llama-cli" -m "$MODEL" -t "$THREADS" -c 2048 -n 1 -p Hello -st -v </dev/null >"$out/cli.log" 2>&1 || true

python3 - "$out" "$ROUNDS" "$THREADS" <<'PY'
import json, re, statistics, sys
out, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def lb(kind, r):
    return json.load(open(f"{out}/lb-{kind}-{r}.json"))[0]["avg_ts"]
def el(kind, r, key):
    return json.load(open(f"{out}/el-{kind}-{r}.json"))[key]
rows = []
for name, kind, key in [("prefill pp512", "pp", "prefill_tokens_per_second"), ("decode tg128", "tg", "decode_tokens_per_second")]:
    ours = [el(kind, r, key) for r in range(1, rounds + 1)]
    peer = [lb(kind, r) for r in range(1, rounds + 1)]
    ratios = [o / p for o, p in zip(ours, peer)]
    rows.append((name, statistics.median(peer), statistics.median(ours), statistics.median(ratios), min(ratios), max(ratios)))
print(f"threads {threads}, {rounds} alternating rounds, medians (tokens/s)\n")
print("| test | llama-bench | edgellm | ratio (median of per-round ratios) | ratio range |")
print("|---|---:|---:|---:|---|")
for name, peer, ours, ratio, lo, hi in rows:
    print(f"| {name} | {peer:.1f} | {ours:.1f} | {ratio:.3f} | {lo:.3f} .. {hi:.3f} |")
mib = lambda b: b / 2**20
mem = json.load(open(f"{out}/el-mem.json"))["buffers"]
mem512 = json.load(open(f"{out}/el-mem512.json"))["buffers"]
cli = open(f"{out}/cli.log", errors="replace").read()
sizes = [float(x) for x in re.findall(r"compute buffer size =\s+([\d.]+) MiB", cli)]
cli_compute = sizes[-1] if sizes else float("nan")
print("\n| context (ctx 2048) | model MiB | KV MiB | compute MiB |")
print("|---|---:|---:|---:|")
print(f"| llama-cli, its defaults (n_ubatch 512) | | | {cli_compute:.1f} |")
print(f"| edgellm default (n_ubatch 128, one output per slot) | {mib(mem['model_bytes']):.1f} | {mib(mem['kv_cache_bytes']):.1f} | {mib(mem['compute_bytes']):.1f} |")
print(f"| edgellm --ubatch-size 512 | {mib(mem512['model_bytes']):.1f} | {mib(mem512['kv_cache_bytes']):.1f} | {mib(mem512['compute_bytes']):.1f} |")
PY
rm -rf "$out"
