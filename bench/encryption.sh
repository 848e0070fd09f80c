#!/usr/bin/env bash
# An encrypted model against the plaintext one, in alternation on the same machine: load time
# (against a plaintext load without mmap, and with it), resident memory and decode speed. The
# device key is sealed in a software TPM (swtpm on loopback), so the load includes the unseal.
#
#   bench/encryption.sh [ROUNDS]        (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-10}"
MODEL="${MODEL:-${EDGELLM_HOME:-$HOME/.local/share/edgellm}/models/gemma-3-270m-q4_k_m.gguf}"
command -v swtpm >/dev/null || { echo "install the swtpm Debian package (scripts/setup.sh with EDGELLM_SETUP_TEST_DEPS=1)" >&2; exit 1; }
source scripts/build-env.sh
cargo build --release --quiet --bin edgellm
python3 bench/encryption.py target/release/edgellm "$MODEL" "$ROUNDS"
