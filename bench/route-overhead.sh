#!/usr/bin/env bash
# The gateway's own cost when it forwards to a remote tier: edgellm against the LiteLLM proxy,
# both routing to the same loopback upstream (bench/loadgen's stand-in OpenAI Chat Completions
# server, which answers at once), measured in alternation in one run.
#
#   bench/route-overhead.sh [ROUNDS]        (default 3)
#
# 1. max throughput: closed loop at each of $CONCURRENCY (default "16 64") for direct (the upstream
#    alone), edgellm and LiteLLM -> requests/s and the edgellm / LiteLLM ratio per round.
# 2. added latency: open loop at $RATE requests/s (default 500) for $DURATION s (default 20),
#    latency from each request's scheduled send time (no coordinated omission): direct vs edgellm
#    -> p99 added = p99(edgellm) - p99(direct), per round; LiteLLM at $LITELLM_RATE (default: half
#    the requests/s it reached in step 1 at the lowest concurrency, at most $RATE).
# Each round alternates which side goes first. Every answer is checked (status 200, the upstream's
# text in the body, `x-edgellm-tier: upstream` resp. LiteLLM's `x-litellm-model-api-base`), and
# the upstream's per-model request counter must match the ok answers of every run, so every
# number is a request that really went through the gateway to the upstream.
#
# Processes: the upstream is one thread; the load generator is one thread; edgellm is one process
# (its async runtime has 2 worker threads; the local model loads but stays idle: the only tier is
# the remote one); LiteLLM runs $LITELLM_WORKERS uvicorn worker processes (default 2, one per
# core, as LiteLLM's docs advise for production; LITELLM_WORKERS=1 is its CLI default).
# Both gateways require an API key (edgellm: [server] api_keys; LiteLLM: master_key, no database)
# and log as they do by default (edgellm: one line per request, written to a file under $OUT;
# LiteLLM: LITELLM_LOG=ERROR, nothing per request).
#
# Output: a markdown table on stdout; raw JSON of every run, the configs and the logs under $OUT
# (default /tmp/route-overhead); summary.json and table.md there too.
#
# Environment:
#   OUT                  output directory (default /tmp/route-overhead; emptied first)
#   RATE, DURATION       open-loop rate and seconds per run (500, 20)
#   TP_DURATION          closed-loop seconds per run (10)
#   WARMUP               seconds each run sends before it counts (2)
#   PRIME                seconds of closed loop that warm each gateway up before the rounds (10)
#   CONCURRENCY          closed-loop concurrencies (default "16 64")
#   LITELLM_RATE         open-loop rate for LiteLLM (default: auto, see above)
#   LITELLM_WORKERS      LiteLLM worker processes (default 2)
#   LITELLM_VERSION      pin the LiteLLM version installed into the venv (default: the newest, once)
#   EDGELLM_BIN          the edgellm binary (default: cargo build --release, target/release/edgellm)
#   EDGE_LOG             edgellm's EDGELLM_LOG filter (default info: one line per request)
#   EDGELLM_PEERS_DIR    cache root (default $HOME/.cache/edgellm-peers): the LiteLLM venv
#                        (litellm-venv/) and loadgen's build output (loadgen-target/)
#   PORT_BASE            ports PORT_BASE+1..3 (default 18600)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
RATE="${RATE:-500}"
DURATION="${DURATION:-20}"
TP_DURATION="${TP_DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-16 64}"
LITELLM_RATE="${LITELLM_RATE:-auto}"
LITELLM_WORKERS="${LITELLM_WORKERS:-2}"
EDGE_LOG="${EDGE_LOG:-info}"
OUT="${OUT:-/tmp/route-overhead}"
PEERS="${EDGELLM_PEERS_DIR:-$HOME/.cache/edgellm-peers}"
PORT_BASE="${PORT_BASE:-18600}"
UP_PORT=$((PORT_BASE + 1)); EDGE_PORT=$((PORT_BASE + 2)); LL_PORT=$((PORT_BASE + 3))
MODEL="${MODEL:-${EDGELLM_HOME:-$HOME/.local/share/edgellm}/models/gemma-3-270m-q4_k_m.gguf}"
EDGE_KEY="sk-bench-edgellm-0123456789abcdef"
LL_KEY="sk-bench-litellm-0123456789abcdef"
UPSTREAM_TEXT="Hello! How can I help you today?"
log() { echo "[route-overhead] $*" >&2; }
die() { echo "[route-overhead] error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# build and install
# ---------------------------------------------------------------------------------------------
log "building bench/loadgen"
export CARGO_TARGET_DIR_LOADGEN="$PEERS/loadgen-target"
CARGO_TARGET_DIR="$CARGO_TARGET_DIR_LOADGEN" cargo build --release --quiet --locked \
  --manifest-path bench/loadgen/Cargo.toml \
  || CARGO_TARGET_DIR="$CARGO_TARGET_DIR_LOADGEN" cargo build --release --quiet --locked --offline \
       --manifest-path bench/loadgen/Cargo.toml
LOADGEN="$CARGO_TARGET_DIR_LOADGEN/release/loadgen"

if [ -z "${EDGELLM_BIN:-}" ]; then
  log "building edgellm"
  source scripts/build-env.sh
  cargo build --release --quiet
  EDGELLM_BIN=target/release/edgellm
fi
[ -x "$EDGELLM_BIN" ] || die "no edgellm binary at $EDGELLM_BIN"
[ -f "$MODEL" ] || die "model $MODEL not found (edgellm serve loads it even when only a remote tier answers)"

VENV="$PEERS/litellm-venv"
want_spec="litellm[proxy]${LITELLM_VERSION:+==$LITELLM_VERSION}"
if [ ! -x "$VENV/bin/litellm" ] || { [ -n "${LITELLM_VERSION:-}" ] && [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')" != "$LITELLM_VERSION" ]; }; then
  log "installing $want_spec into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "$want_spec"
fi
LL_VERSION="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"

# ---------------------------------------------------------------------------------------------
# start the upstream and both gateways
# ---------------------------------------------------------------------------------------------
rm -rf "$OUT"; mkdir -p "$OUT/runs"
PIDS=()
tree_pids() { local p=$1 c; echo "$p"; for c in $(pgrep -P "$p" || true); do tree_pids "$c"; done; }
cleanup() { # each started process and its children (LiteLLM's workers), by pid
  local all=() p
  for p in "${PIDS[@]}"; do all+=($(tree_pids "$p")); done
  kill "${all[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
for port in $UP_PORT $EDGE_PORT $LL_PORT; do
  ! curl -s -o /dev/null "http://127.0.0.1:$port/" || die "port $port is in use (set PORT_BASE)"
done

"$LOADGEN" upstream --port "$UP_PORT" 2>"$OUT/upstream.log" &
UP_PID=$!; PIDS+=($UP_PID)

cat > "$OUT/edgellm.toml" <<EOF
# The only tier is the remote one: every request is forwarded to the stand-in upstream.
[server]
api_keys = ["$EDGE_KEY"]
data_dir = "$OUT/edgellm-data"

# The egress guard stays on (as in the field): opt-in, the machine's own default route,
# redaction of every request, a reservation and a settlement in the ledger, an audit row.
[network]
opt_in = true

[[tiers]]
name = "upstream"
type = "openai_chat"
url = "http://127.0.0.1:$UP_PORT/v1"
model = "upstream-via-edgellm"
timeout_secs = 30
EOF
EDGELLM_LOG="$EDGE_LOG" "$EDGELLM_BIN" serve --config "$OUT/edgellm.toml" --port "$EDGE_PORT" \
  -m "$MODEL" -c 2048 --slots 1 2>"$OUT/edgellm.log" >&2 &
EDGE_PID=$!; PIDS+=($EDGE_PID)

cat > "$OUT/litellm.yaml" <<EOF
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/upstream-via-litellm
      api_base: http://127.0.0.1:$UP_PORT/v1
      api_key: sk-dummy
litellm_settings:
  set_verbose: false
  turn_off_message_logging: true
general_settings:
  master_key: $LL_KEY
  disable_spend_logs: true
EOF
LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
  "$VENV/bin/litellm" --config "$OUT/litellm.yaml" --port "$LL_PORT" --num_workers "$LITELLM_WORKERS" \
  >"$OUT/litellm.log" 2>&1 &
LL_PID=$!; PIDS+=($LL_PID)

wait_ready() { # url seconds
  for _ in $(seq $(($2 * 5))); do curl -sf -o /dev/null "$1" && return 0; sleep 0.2; done
  die "$1 not ready after $2 s"
}
wait_ready "http://127.0.0.1:$UP_PORT/health" 10
wait_ready "http://127.0.0.1:$EDGE_PORT/health" 120     # 200 once the local model has loaded
wait_ready "http://127.0.0.1:$LL_PORT/health/liveliness" 180

# One request each, by hand: the right path, the upstream's answer.
smoke() { # name url key header_check
  local headers body
  headers="$(mktemp)"
  body="$(curl -sf -D "$headers" "$2" -H "authorization: Bearer $3" -H 'content-type: application/json' \
    -d '{"model":"bench-model","messages":[{"role":"user","content":"hi"}],"max_tokens":16}')" \
    || die "$1: request failed"
  grep -qi "^$4" "$headers" || die "$1: no '$4' header: $(cat "$headers")"
  grep -q "$UPSTREAM_TEXT" <<<"$body" || die "$1: not the upstream's answer: $body"
  rm -f "$headers"
}
smoke edgellm "http://127.0.0.1:$EDGE_PORT/v1/chat/completions" "$EDGE_KEY" "x-edgellm-tier: upstream"
smoke litellm "http://127.0.0.1:$LL_PORT/v1/chat/completions" "$LL_KEY" "x-litellm-model-api-base: http://127.0.0.1:$UP_PORT/v1"

# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------
# target -> url, the model name the upstream sees, the process whose CPU time is counted
declare -A URL=(
  [direct]="http://127.0.0.1:$UP_PORT/v1/chat/completions"
  [edgellm]="http://127.0.0.1:$EDGE_PORT/v1/chat/completions"
  [litellm]="http://127.0.0.1:$LL_PORT/v1/chat/completions"
)
declare -A UPMODEL=([direct]="bench-model" [edgellm]="upstream-via-edgellm" [litellm]="upstream-via-litellm")
extra_args() { # target -> ARGS: its key and how to tell that the gateway really forwarded
  case $1 in
    direct)  ARGS=() ;;
    edgellm) ARGS=(--header "authorization: Bearer $EDGE_KEY" --expect-header "x-edgellm-tier: upstream") ;;
    litellm) ARGS=(--header "authorization: Bearer $LL_KEY"
                   --expect-header "x-litellm-model-api-base: http://127.0.0.1:$UP_PORT/v1") ;;
  esac
}
declare -A ROOTPID=([direct]=$UP_PID [edgellm]=$EDGE_PID [litellm]=$LL_PID)

cpu_ticks() { # utime+stime of a process and its descendants, in clock ticks
  local t=0 p f
  for p in $(tree_pids "$1"); do
    f="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
    f="${f##*) }"; set -- $f; t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
upstream_count() { # requests the upstream answered for one model name
  curl -sf "http://127.0.0.1:$UP_PORT/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['by_model'].get(sys.argv[1], 0))" "$1"
}
run() { # name target mode(open|closed) rate concurrency duration
  local name=$1 target=$2 mode=$3 rate=$4 conc=$5 dur=$6 before after cpu0 cpu1 file
  file="$OUT/runs/$name.json"
  before=$(upstream_count "${UPMODEL[$target]}"); cpu0=$(cpu_ticks "${ROOTPID[$target]}")
  extra_args "$target"
  "$LOADGEN" load --url "${URL[$target]}" --rate "$rate" --concurrency "$conc" --duration "$dur" \
    --warmup "$WARMUP" --model bench-model --expect-body "$UPSTREAM_TEXT" "${ARGS[@]}" > "$file.tmp"
  cpu1=$(cpu_ticks "${ROOTPID[$target]}"); after=$(upstream_count "${UPMODEL[$target]}")
  python3 - "$file.tmp" "$file" "$target" "$((after - before))" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
src, dst, target, upstream, ticks, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
r = json.load(open(src))
r["target"] = target
r["upstream_requests"] = upstream
r["upstream_matches"] = upstream == r["ok_total"]
r["cpu_s"] = ticks / hz          # the target's processes (for direct: the upstream) over the whole run
r["cpu_ms_per_request"] = 1000 * r["cpu_s"] / max(r["ok_total"], 1)
json.dump(r, open(dst, "w"))
lat = r["latency_ms"] or {}
print(f"[route-overhead] {dst.rsplit('/',1)[1][:-5]:<28} {r['achieved_rps']:>9.1f} rps  p50 {lat.get('p50','-')} p99 {lat.get('p99','-')} ms"
      f"  errors {r['errors']}  upstream {upstream}/{r['ok_total']}  cpu {r['cpu_ms_per_request']:.3f} ms/req", file=sys.stderr)
PY
  rm -f "$file.tmp"
  sleep 1
}

# Which side goes first alternates per round.
order() { if (( $1 % 2 )); then echo "$2 $3"; else echo "$3 $2"; fi; }

# Warm both gateways up (LiteLLM's first requests per worker import and build lazily; its second
# worker may still be starting when the first answers): PRIME seconds of closed loop each, not
# counted.
for t in edgellm litellm; do
  extra_args "$t"
  "$LOADGEN" load --url "${URL[$t]}" --rate 0 --concurrency 16 --duration "${PRIME:-10}" --warmup 0 \
    --model bench-model --expect-body "$UPSTREAM_TEXT" "${ARGS[@]}" > "$OUT/prime-$t.json"
done

log "throughput: closed loop, concurrency $CONCURRENCY, ${TP_DURATION}s per run, $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
  for c in $CONCURRENCY; do
    run "closed-direct-c$c-r$r" direct closed 0 "$c" "$TP_DURATION"
    for t in $(order "$r" edgellm litellm); do run "closed-$t-c$c-r$r" "$t" closed 0 "$c" "$TP_DURATION"; done
  done
done

if [ "$LITELLM_RATE" = "auto" ]; then
  c0=$(tr ' ' '\n' <<<"$CONCURRENCY" | sort -n | head -1)
  LITELLM_RATE=$(python3 - "$OUT/runs" "$c0" "$RATE" <<'PY'
import json, glob, statistics, sys
runs, c0, cap = sys.argv[1], sys.argv[2], float(sys.argv[3])
rps = [json.load(open(f))["achieved_rps"] for f in glob.glob(f"{runs}/closed-litellm-c{c0}-r*.json")]
print(int(max(10, min(cap, statistics.median(rps) * 0.5 // 10 * 10))))
PY
)
fi
log "added latency: open loop at $RATE rps (LiteLLM at $LITELLM_RATE rps), ${DURATION}s per run, $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
  for t in $(order "$r" direct edgellm); do run "open-$t-r$r" "$t" open "$RATE" 256 "$DURATION"; done
  run "open-litellm-r$r" litellm open "$LITELLM_RATE" 256 "$DURATION"
done

# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
cat > "$OUT/meta.json" <<EOF
{"rounds": $ROUNDS, "rate": $RATE, "duration": $DURATION, "tp_duration": $TP_DURATION, "warmup": $WARMUP,
 "concurrency": "$CONCURRENCY", "litellm_rate": $LITELLM_RATE, "litellm_workers": $LITELLM_WORKERS,
 "litellm_version": "$LL_VERSION", "edgellm_log": "$EDGE_LOG", "edgellm_bin": "$EDGELLM_BIN",
 "edgellm_version": "$("$EDGELLM_BIN" --version 2>/dev/null | head -1)",
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')", "cores": $(nproc),
 "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)", "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"}
EOF
python3 - "$OUT" <<'PY' | tee "$OUT/table.md"
import json, glob, os, statistics, sys
out = sys.argv[1]
meta = json.load(open(f"{out}/meta.json"))
runs = {os.path.basename(f)[:-5]: json.load(open(f)) for f in glob.glob(f"{out}/runs/*.json")}
R = meta["rounds"]
med = statistics.median
def get(name):
    return runs[name]
bad = [n for n, r in runs.items() if not r["upstream_matches"] or r["errors"]]
def rng(xs, fmt):
    xs = sorted(xs)
    return f"{fmt.format(xs[0])} .. {fmt.format(xs[-1])}"

print(f"edgellm vs LiteLLM {meta['litellm_version']} ({meta['litellm_workers']} workers), both forwarding to a loopback "
      f"upstream that answers at once; {meta['cores']} cores ({meta['cpu']}); {R} alternating rounds, medians over rounds\n")

print(f"**Added latency**: open loop at {meta['rate']} requests/s for {meta['duration']:g} s per run "
      f"(LiteLLM at {meta['litellm_rate']} requests/s), latency from the scheduled send time, ms\n")
print("| path | achieved req/s | p50 | p90 | p99 | p99.9 | max | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
summary = {"meta": meta, "open": {}, "closed": {}}
for target, label in [("direct", "client → upstream (direct)"), ("edgellm", "client → edgellm → upstream"),
                      ("litellm", f"client → LiteLLM → upstream (at {meta['litellm_rate']} req/s)")]:
    rs = [get(f"open-{target}-r{r}") for r in range(1, R + 1)]
    m = {k: med(r["latency_ms"][k] for r in rs) for k in ["p50", "p90", "p99", "p99.9", "max"]}
    m["achieved_rps"] = med(r["achieved_rps"] for r in rs)
    m["errors"] = sum(r["errors"] for r in rs)
    summary["open"][target] = m
    print(f"| {label} | {m['achieved_rps']:.1f} | {m['p50']:.3f} | {m['p90']:.3f} | {m['p99']:.3f} | {m['p99.9']:.3f} | {m['max']:.2f} | {m['errors']} |")
added = {}
for k in ["p50", "p90", "p99"]:
    xs = [get(f"open-edgellm-r{r}")["latency_ms"][k] - get(f"open-direct-r{r}")["latency_ms"][k] for r in range(1, R + 1)]
    added[k] = (med(xs), min(xs), max(xs))
summary["open"]["edgellm_added"] = {k: v[0] for k, v in added.items()}
print(f"| **added by edgellm** (edgellm − direct, per round; median, range) | | "
      + " | ".join(f"**{added[k][0]:+.3f}** ({added[k][1]:+.3f} .. {added[k][2]:+.3f})" for k in ["p50", "p90", "p99"])
      + " | | | |")
lag = med(get(f"open-direct-r{r}")["send_lag_ms"]["p99"] for r in range(1, R + 1))
print(f"\nload generator's own send lag (scheduled → sent), p99 of the direct runs: {lag:.3f} ms\n")

print("**Max throughput**: closed loop, each of C connections sends its next request when the last answer arrived, "
      f"{meta['tp_duration']:g} s per run\n")
print("| C | direct req/s | edgellm req/s | LiteLLM req/s | edgellm / LiteLLM (per-round median, range) | edgellm p50 / p99 ms | LiteLLM p50 / p99 ms | CPU ms per request: edgellm / LiteLLM |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
ratios_all = []
for c in meta["concurrency"].split():
    d = [get(f"closed-direct-c{c}-r{r}") for r in range(1, R + 1)]
    e = [get(f"closed-edgellm-c{c}-r{r}") for r in range(1, R + 1)]
    l = [get(f"closed-litellm-c{c}-r{r}") for r in range(1, R + 1)]
    ratios = [a["achieved_rps"] / max(b["achieved_rps"], 1e-9) for a, b in zip(e, l)]
    ratios_all += ratios
    row = {"direct_rps": med(x["achieved_rps"] for x in d), "edgellm_rps": med(x["achieved_rps"] for x in e),
           "litellm_rps": med(x["achieved_rps"] for x in l), "ratio": med(ratios), "ratio_min": min(ratios),
           "edgellm_cpu_ms": med(x["cpu_ms_per_request"] for x in e), "litellm_cpu_ms": med(x["cpu_ms_per_request"] for x in l)}
    summary["closed"][c] = row
    lat = lambda xs: f"{med(x['latency_ms']['p50'] for x in xs):.2f} / {med(x['latency_ms']['p99'] for x in xs):.2f}"
    print(f"| {c} | {row['direct_rps']:.0f} | {row['edgellm_rps']:.0f} | {row['litellm_rps']:.1f} | "
          f"**{row['ratio']:.1f}×** ({rng(ratios, '{:.1f}')}) | {lat(e)} | {lat(l)} | "
          f"{row['edgellm_cpu_ms']:.3f} / {row['litellm_cpu_ms']:.2f} |")

p99_added = added["p99"][0]
summary["verdict"] = {"p99_added_ms": p99_added, "p99_target_met": p99_added <= 1.0,
                      "min_ratio": min(ratios_all), "ratio_target_met": min(ratios_all) >= 10,
                      "runs_with_errors_or_count_mismatch": bad}
print(f"\n- p99 added at {meta['rate']} req/s: {p99_added:+.3f} ms (target ≤ 1 ms): "
      f"{'met' if p99_added <= 1.0 else 'NOT met'}")
print(f"- requests/s vs LiteLLM: lowest per-round ratio {min(ratios_all):.1f}× (target ≥ 10×): "
      f"{'met' if min(ratios_all) >= 10 else 'NOT met'}")
print(f"- every run: answers checked (status, upstream text, route header) and the upstream's count "
      f"equal to the ok answers: {'yes' if not bad else 'NO: ' + ', '.join(sorted(bad))}")
warm = {n: r.get("uncounted_error_kinds") for n, r in runs.items() if r.get("uncounted_error_kinds")}
summary["verdict"]["uncounted_errors"] = warm
print(f"- failed requests outside the counted windows (warm-up, stragglers): {warm or 'none'}")
print(f"- load average at the end: {meta['loadavg_end']}")
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
PY
log "raw JSON, configs and logs: $OUT"
