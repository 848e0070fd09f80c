#!/usr/bin/env bash
# Model delivery through a real OCI registry on loopback (Debian's docker-registry): pull
# throughput against a plain download of the same bytes, pulls killed at random moments, and
# what a metadata-only and a small tensor change transfer.
#
#   bench/delivery.sh [KILLS]        (default 50)
#   LINK_MBIT=100,400 bench/delivery.sh 0   also on links of these speeds (tc HTB on lo, root)
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS="${1:-50}"
MODEL="${MODEL:-${EDGELLM_HOME:-$HOME/.local/share/edgellm}/models/gemma-3-270m-q4_k_m.gguf}"
command -v docker-registry >/dev/null || { echo "install the docker-registry Debian package" >&2; exit 1; }
source scripts/build-env.sh
cargo build --release --quiet --bin edgellm
python3 bench/delivery.py target/release/edgellm "$MODEL" "$KILLS"
