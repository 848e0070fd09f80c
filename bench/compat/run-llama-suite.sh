#!/usr/bin/env bash
# llama.cpp's own server test suite (tools/server/tests, pytest) against llama-server and
# against edgellm, offline, on this project's models: the suite's Hugging Face presets are
# mapped to the default model (generation) and the default embedding model (embedding
# presets) by bench/compat/shim.py, which also maps llama-server's flags to `edgellm serve`.
# Writes each server's JUnit XML and a per-file table (Markdown) to OUT_DIR.
#
#   bench/compat/run-llama-suite.sh [OUT_DIR] [TEST_FILE...]   (default: every unit/test_*.py)
#   COMPAT_TIMEOUT=SECONDS bounds each server's run (default 7200)
#   COMPAT_SERVERS="edgellm" runs edgellm alone, comparing with the llama-server.xml already in
#   OUT_DIR (default "llama-server edgellm")
#
# The suite comes from the llama-cpp-python sdist's vendor/llama.cpp (bench/build-peers.sh
# fetches it and builds llama-server from the same llama.cpp sources edgellm embeds).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
OUT="${1:-$(mktemp -d)}"
shift || true
mkdir -p "$OUT"
PEERS="${EDGELLM_PEERS_DIR:-$HOME/.cache/edgellm-peers}"

bench/build-peers.sh >/dev/null
source scripts/build-env.sh
cargo build --release --locked --bin edgellm
scripts/install-embedding-model.sh target/release/edgellm >/dev/null

VENV="$HOME/.cache/edgellm-compat/venv"
if [ ! -x "$VENV/bin/pytest" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -r "$PEERS/src/tools/server/tests/requirements.txt"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -r "$PEERS/src/tools/server/tests" "$WORK/tests"
cd "$WORK/tests"
FILES=("$@")
if [ ${#FILES[@]} -eq 0 ]; then
  mapfile -t FILES < <(ls unit/test_*.py)
fi
for server in ${COMPAT_SERVERS:-llama-server edgellm}; do
  case "$server" in
    llama-server) shim="$ROOT/bench/compat/llama-server-offline" ;;
    edgellm) shim="$ROOT/bench/compat/edgellm-as-llama-server" ;;
  esac
  echo "== $server: ${#FILES[@]} files" >&2
  LLAMA_SERVER_BIN_PATH="$shim" EDGELLM_BIN="$ROOT/target/release/edgellm" \
    timeout "${COMPAT_TIMEOUT:-7200}" "$VENV/bin/pytest" -q -p no:cacheprovider --junitxml="$OUT/$server.xml" "${FILES[@]}" \
    > "$OUT/$server.log" 2>&1 || true
  tail -3 "$OUT/$server.log" >&2
done
python3 "$ROOT/bench/compat/summarize.py" "$OUT/llama-server.xml" "$OUT/edgellm.xml" | tee "$OUT/table.md"
