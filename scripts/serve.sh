#!/usr/bin/env bash
# Sets up everything and runs the main job: `edgellm serve` on the default model (127.0.0.1:8080).
# Extra arguments go to `edgellm serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/build-env.sh
cargo build --release --locked
# The default embedding model is converted by edgellm itself (`edgellm model import`).
scripts/install-embedding-model.sh target/release/edgellm
exec target/release/edgellm serve "$@"
