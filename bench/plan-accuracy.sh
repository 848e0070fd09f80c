#!/usr/bin/env bash
# Measures what llama.cpp really allocates for a GGUF model (model, KV cache, compute and output
# buffers, as llama.cpp logs them) and its decode speed, next to what `edgellm plan` predicts.
# Writes a markdown table to stdout; the rows go into docs/plan-accuracy.md.
#
# It needs no extra tools: it compiles a ~100-line C++ probe against the llama.cpp static
# libraries that `cargo build --release` already built for edgellm (the same llama.cpp version and
# flags the engine uses), creates one context per (context length, slots, KV type) exactly as the
# engine's `create_context` does (src/engine/worker.rs: n_batch 512, n_ubatch 128, n_seq_max and
# n_outputs_max = slots, kv_unified on, swa_full off, flash attention auto), greps llama.cpp's own
# log lines, and times a 256-token prompt and GEN_TOKENS decode steps of one sequence.
# The plan side runs `$EDGELLM plan --json [--slots N]` (default target/release/edgellm) for this
# machine; without it, only llama.cpp's side is shown.
#
# Usage: bench/plan-accuracy.sh [MODEL.gguf]    (default: the installed default model)
# Environment: CTXS (single-sequence contexts), SLOT_CASES (CTX:SLOTS pairs, default 8192:4, the
# server's defaults), KV_TYPES, GEN_TOKENS, EDGELLM, KEEP_LOGS=DIR (keep llama.cpp logs)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-${EDGELLM_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/edgellm}/models/gemma-3-270m-q4_k_m.gguf}"
CTXS="${CTXS:-512 2048 8192 32768}"
SLOT_CASES="${SLOT_CASES-8192:4}"
KV_TYPES="${KV_TYPES:-f16 q8_0}"
GEN_TOKENS="${GEN_TOKENS:-64}"

LLAMA_SRC="$(ls -d "$HOME"/.cargo/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp | head -1)"
LIBLLAMA="$(find target/release/build -name libllama.a -path '*llama-cpp-sys-2*' | head -1)"
[ -n "$LIBLLAMA" ] || { echo "error: build edgellm first (cargo build --release)" >&2; exit 1; }
OUT_DIR="$(dirname "$(dirname "$(dirname "$LIBLLAMA")")")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cat > "$work/probe.cpp" <<'CPP'
// Creates a context as edgellm's engine does (src/engine/worker.rs, create_context), then times
// a prompt and greedy decoding of one sequence.
#include "llama.h"
#include <chrono>
#include <thread>
#include <sys/resource.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static void log_cb(ggml_log_level, const char * text, void *) { fputs(text, stderr); }

int main(int argc, char ** argv) {
    if (argc < 6) { fprintf(stderr, "usage: probe MODEL N_CTX KV_TYPE(f16|q8_0|q4_0) GEN_TOKENS SLOTS\n"); return 2; }
    const char * path = argv[1];
    const int n_ctx = atoi(argv[2]);
    const std::string kv = argv[3];
    const int n_gen = atoi(argv[4]);
    const int n_seq = atoi(argv[5]);
    ggml_type type = kv == "q8_0" ? GGML_TYPE_Q8_0 : kv == "q4_0" ? GGML_TYPE_Q4_0 : GGML_TYPE_F16;
    llama_log_set(log_cb, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(path, mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx; cp.n_batch = 512; cp.n_ubatch = 128;
    cp.n_seq_max = n_seq; cp.n_outputs_max = n_seq;  // one logits row per slot
    cp.kv_unified = true;                             // one KV pool shared by all slots
    cp.type_k = type; cp.type_v = type; cp.swa_full = false;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
    cp.n_threads = cp.n_threads_batch = (int) std::thread::hardware_concurrency();
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "context failed\n"); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    std::string prompt = "Write a short note about the maintenance of industrial gateways.";
    std::vector<llama_token> toks(256);
    int n = llama_tokenize(vocab, prompt.c_str(), prompt.size(), toks.data(), toks.size(), true, false);
    toks.resize(n > 0 ? n : 0);
    // Prefill speed: one 256-token prompt (the prompt repeated), then a clean cache.
    std::vector<llama_token> long_prompt;
    while (long_prompt.size() < 256) long_prompt.insert(long_prompt.end(), toks.begin(), toks.end());
    long_prompt.resize(256);
    double prefill_tps = 0;
    if (n_ctx >= 512) {
        auto p0 = std::chrono::steady_clock::now();
        if (llama_decode(ctx, llama_batch_get_one(long_prompt.data(), long_prompt.size())) != 0) { fprintf(stderr, "prefill failed\n"); return 1; }
        prefill_tps = 256 / std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count();
        llama_memory_clear(llama_get_memory(ctx), true);
    }
    if (llama_decode(ctx, llama_batch_get_one(toks.data(), toks.size())) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
    llama_sampler * smpl = llama_sampler_init_greedy();
    auto t0 = std::chrono::steady_clock::now();
    int done = 0;
    for (; done < n_gen; ++done) {
        llama_token t = llama_sampler_sample(smpl, ctx, -1);
        if (llama_decode(ctx, llama_batch_get_one(&t, 1)) != 0) break;
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("PROBE decode_tokens=%d decode_seconds=%.4f decode_tps=%.2f prefill_tps=%.1f\n", done, s, done / s, prefill_tps);
    struct rusage ru; getrusage(RUSAGE_SELF, &ru);
    printf("PROBE max_rss_kib=%ld\n", ru.ru_maxrss);
    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
CPP

libs="$OUT_DIR/build/src/libllama.a $OUT_DIR/build/ggml/src/libggml.a $OUT_DIR/build/ggml/src/libggml-cpu.a $OUT_DIR/build/ggml/src/libggml-base.a"
g++ -O2 -std=c++17 -I "$LLAMA_SRC/include" -I "$LLAMA_SRC/ggml/include" "$work/probe.cpp" -o "$work/probe" \
  $libs -fopenmp -lpthread -ldl

mib() { grep -oE "$1" "$2" | grep -oE '[0-9]+\.[0-9]+' | awk '{s+=$1} END {printf "%.2f", s+0}'; }

cases=""
for c in $CTXS; do cases="$cases $c:1"; done
cases="$cases $SLOT_CASES"

printf 'ctx\tslots\tkv\tmodel\tkv_mib\tcompute\toutput\ttotal\trss\tdecode\tprefill\n' > "$work/llama.tsv"
for kv in $KV_TYPES; do
  for case in $cases; do
    c="${case%%:*}"; slots="${case##*:}"
    "$work/probe" "$MODEL" "$c" "$kv" "$GEN_TOKENS" "$slots" > "$work/out" 2> "$work/log" || { cat "$work/log" >&2; exit 1; }
    model=$(mib 'model buffer size = +[0-9.]+ MiB' "$work/log")
    kvm=$(mib 'llama_kv_cache: size = +[0-9.]+ MiB' "$work/log")
    comp=$(mib 'compute buffer size = +[0-9.]+ MiB' "$work/log")
    outb=$(mib 'output buffer size = +[0-9.]+ MiB' "$work/log")
    tps=$(grep -oE 'decode_tps=[0-9.]+' "$work/out" | cut -d= -f2)
    pre=$(grep -oE 'prefill_tps=[0-9.]+' "$work/out" | cut -d= -f2)
    rss=$(grep -oE 'max_rss_kib=[0-9]+' "$work/out" | cut -d= -f2 | awk '{printf "%.1f", $1/1024}')
    total=$(awk -v a="$model" -v b="$kvm" -v c="$comp" -v d="$outb" 'BEGIN {printf "%.2f", a+b+c+d}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$slots" "$kv" "$model" "$kvm" "$comp" "$outb" "$total" "$rss" "$tps" "$pre" >> "$work/llama.tsv"
    if [ -n "${KEEP_LOGS:-}" ]; then cp "$work/log" "$KEEP_LOGS/llama-$c-$slots-$kv.log"; fi
  done
done

# The plan's side: `edgellm plan --json` for this machine, per slot count, same contexts and KV
# types.
EDGELLM="${EDGELLM:-target/release/edgellm}"
kv_list=$(echo $KV_TYPES | tr ' ' ',')
: > "$work/plans"
if "$EDGELLM" plan --help > /dev/null 2>&1; then
  for slots in $(for case in $cases; do echo "${case##*:}"; done | sort -un); do
    ctx_list=$(for case in $cases; do if [ "${case##*:}" = "$slots" ]; then echo "${case%%:*}"; fi; done | paste -sd,)
    "$EDGELLM" plan "$MODEL" --json --slots "$slots" --ctx "$ctx_list" --kv-type "$kv_list" > "$work/plan-$slots.json"
    echo "$slots $work/plan-$slots.json" >> "$work/plans"
  done
else
  echo "note: '$EDGELLM plan' is not available; showing llama.cpp's side only" >&2
fi

python3 - "$work/llama.tsv" "$work/plans" <<'PY'
import csv, json, sys
MIB = 1 << 20
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by_key = {}
for line in open(sys.argv[2]):
    slots, path = line.split()
    for r in json.load(open(path)).get("table", []):
        m = r["memory"]
        # llama.cpp prints each cache (full-attention, sliding-window) rounded to 0.01 MiB.
        kv = round(m["kv"]["bytes"] / MIB, 2) + round(m["kv"]["swa_bytes"] / MIB, 2)
        by_key[(str(r["requested_ctx"]), slots, m["kv_type"])] = (kv, r["llama_buffers"] / MIB, r["total"] / MIB, r["decode_tps_bound"], m["compute"] / MIB, m["output"] / MIB)
print("| ctx | slots | KV | llama.cpp KV MiB | plan KV MiB | llama.cpp compute MiB | plan compute MiB | llama.cpp output MiB | plan output MiB | llama.cpp total MiB | plan llama.cpp-buffers MiB | error | within max(5%, 64 MiB) | plan resident total MiB | peak RSS MiB | decode tok/s measured | decode bound tok/s | prefill tok/s measured |")
print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
for r in rows:
    p = by_key.get((r["ctx"], r["slots"], r["kv"]))
    total = float(r["total"])
    if p:
        kv, buffers, resident, bound, compute, output = p
        err = buffers - total
        ok = abs(err) <= max(0.05 * total, 64)
        cells = [r["compute"], f"{compute:.2f}", r["output"], f"{output:.2f}", r["total"], f"{buffers:.2f}", f"{err:+.2f} MiB ({100 * err / total:+.1f}%)", "yes" if ok else "NO", f"{resident:.1f}", r["rss"], r["decode"], f"{bound:.1f}", r["prefill"]]
        kv_cells = [r["kv_mib"], f"{kv:.2f}" + ("" if abs(kv - float(r["kv_mib"])) < 0.005 else " (MISMATCH)")]
    else:
        kv_cells = [r["kv_mib"], "-"]
        cells = [r["compute"], "-", r["output"], "-", r["total"], "-", "-", "-", "-", r["rss"], r["decode"], "-", r["prefill"]]
    print("| " + " | ".join([r["ctx"], r["slots"], r["kv"]] + kv_cells + cells) + " |")
PY
