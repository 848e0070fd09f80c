#!/usr/bin/env bash
# Sets up everything and runs the full test suite (unit and integration tests against the real
# llama.cpp engine and the real default model). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGELLM_SETUP_TEST_DEPS=1 scripts/setup.sh
source scripts/build-env.sh
# The default embedding model is converted by edgellm itself (`edgellm model import`).
cargo build --release --locked --bin edgellm
scripts/install-embedding-model.sh target/release/edgellm
cargo test --release --locked "$@"
