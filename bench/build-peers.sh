#!/usr/bin/env bash
# Builds llama.cpp's own llama-bench, llama-server and llama-cli -- the peers edgellm's benchmarks
# compare against -- from the llama.cpp sources that the llama-cpp-sys-2 crate vendors (the library
# code edgellm embeds), for this CPU, with the same C/C++ flags as edgellm's build
# (scripts/build-env.sh: -march=native via GGML_NATIVE=ON, Intel AMX masked out where the CPU
# advertises it, because AMX instructions fault on the machines this project runs on).
#
# The crate ships llama.cpp's library sources (ggml/, src/, common/, include/, vendor/, tools/mtmd)
# but not the tools. Those come from the llama-cpp-python source distribution on PyPI, whose
# vendor/llama.cpp holds llama.cpp's full tree: the script copies the crate's tree into a build dir
# and overlays only the files that the crate lacks (under tools/ and scripts/; the build needs
# tools/{llama-bench,server,cli,ui}/* and scripts/ui-assets.cmake), so ggml,
# libllama and libcommon are compiled from exactly the crate's sources.
#
# Output:  $EDGELLM_PEERS_DIR/bin/{llama-bench,llama-server,llama-cli}
#          $EDGELLM_PEERS_DIR/VERSION.txt   (what was built and how the version was matched)
# Default EDGELLM_PEERS_DIR: /root/.cache/edgellm-peers ($HOME/.cache/edgellm-peers for other users).
#
# Idempotent: when the binaries exist and were built from the same crate sources, tools sdist and
# flags, it does nothing. Set EDGELLM_PEERS_REBUILD=1 to force a rebuild.
#
# Environment:
#   EDGELLM_PEERS_DIR        output/cache root (see above)
#   EDGELLM_LLAMA_SYS_VERSION  llama-cpp-sys-2 version (default: from Cargo.lock next to this
#                              script's repo, else 0.1.161)
#   EDGELLM_PEERS_PYPI_VERSION llama-cpp-python sdist to take the tools from (default 0.3.36: the
#                              newest release; its llama.cpp is the closest to the crate's, see below)
#   EDGELLM_PEERS_JOBS       parallel build jobs (default 2)
#   EDGELLM_PORTABLE=1       baseline-ISA build (GGML_NATIVE=OFF), as in scripts/build-env.sh
#   EDGELLM_PEERS_REBUILD=1  rebuild even if up to date
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

if [ -n "${EDGELLM_PEERS_DIR:-}" ]; then
  PEERS_DIR="$EDGELLM_PEERS_DIR"
elif [ "$(id -u)" = "0" ]; then
  PEERS_DIR=/root/.cache/edgellm-peers
else
  PEERS_DIR="$HOME/.cache/edgellm-peers"
fi
BIN_DIR="$PEERS_DIR/bin"
JOBS="${EDGELLM_PEERS_JOBS:-2}"
PYPI_VERSION="${EDGELLM_PEERS_PYPI_VERSION:-0.3.36}"
TARGETS=(llama-bench llama-server llama-cli)
TARGETS_CSV="llama-bench,llama-server,llama-cli"

log() { echo "[build-peers] $*"; }
die() { echo "[build-peers] error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------
need_apt=()
command -v cmake   >/dev/null 2>&1 || need_apt+=(cmake)
command -v gcc     >/dev/null 2>&1 || need_apt+=(gcc)
command -v g++     >/dev/null 2>&1 || need_apt+=(g++)
command -v make    >/dev/null 2>&1 || need_apt+=(make)
command -v objdump >/dev/null 2>&1 || need_apt+=(binutils)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
  need_apt+=(python3-pip)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing missing packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# ---------------------------------------------------------------------------------------------
# the crate's llama.cpp
# ---------------------------------------------------------------------------------------------
SYS_VERSION="${EDGELLM_LLAMA_SYS_VERSION:-}"
if [ -z "$SYS_VERSION" ] && [ -f "$REPO_ROOT/Cargo.lock" ]; then
  SYS_VERSION="$(awk '/^name = "llama-cpp-sys-2"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' "$REPO_ROOT/Cargo.lock")"
fi
SYS_VERSION="${SYS_VERSION:-0.1.161}"

CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
find_crate() {
  local d
  for d in "$CARGO_HOME_DIR"/registry/src/*/llama-cpp-sys-2-"$SYS_VERSION"; do
    [ -f "$d/llama.cpp/CMakeLists.txt" ] && { echo "$d"; return 0; }
  done
  return 1
}
CRATE_DIR="$(find_crate || true)"
if [ -z "$CRATE_DIR" ]; then
  command -v cargo >/dev/null 2>&1 || die "llama-cpp-sys-2-$SYS_VERSION sources not in $CARGO_HOME_DIR/registry and cargo not installed"
  if [ -f "$REPO_ROOT/Cargo.toml" ]; then
    log "fetching crate sources (cargo fetch)"
    cargo fetch --manifest-path "$REPO_ROOT/Cargo.toml" >/dev/null
  fi
  CRATE_DIR="$(find_crate || true)"
  if [ -z "$CRATE_DIR" ]; then
    # outside the repo: fetch the crate alone through a throw-away manifest
    tmp="$(mktemp -d)"; mkdir -p "$tmp/src"; : > "$tmp/src/lib.rs"
    printf '[package]\nname = "fetch-llama-sys"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nllama-cpp-sys-2 = "=%s"\n' "$SYS_VERSION" > "$tmp/Cargo.toml"
    cargo fetch --manifest-path "$tmp/Cargo.toml" >/dev/null
    rm -rf "$tmp"
    CRATE_DIR="$(find_crate || true)"
  fi
  [ -n "$CRATE_DIR" ] || die "could not obtain llama-cpp-sys-2-$SYS_VERSION sources"
fi
CRATE_LLAMA="$CRATE_DIR/llama.cpp"

cmake_var() { sed -n "s/^set(\s*$1\s\+\([0-9]\+\))/\1/p" "$2" | head -1; }
CRATE_LLAMA_VERSION="$(cmake_var LLAMA_VERSION_MAJOR "$CRATE_LLAMA/CMakeLists.txt").$(cmake_var LLAMA_VERSION_MINOR "$CRATE_LLAMA/CMakeLists.txt").$(cmake_var LLAMA_VERSION_PATCH "$CRATE_LLAMA/CMakeLists.txt")"
CRATE_GGML_VERSION="$(cmake_var GGML_VERSION_MAJOR "$CRATE_LLAMA/ggml/CMakeLists.txt").$(cmake_var GGML_VERSION_MINOR "$CRATE_LLAMA/ggml/CMakeLists.txt").$(cmake_var GGML_VERSION_PATCH "$CRATE_LLAMA/ggml/CMakeLists.txt")"
CRATE_VCS_SHA="$(sed -n 's/.*"sha1": *"\([0-9a-f]*\)".*/\1/p' "$CRATE_DIR/.cargo_vcs_info.json" 2>/dev/null | head -1)"
# content hash of the vendored tree: identifies "the same llama.cpp" when no commit id is shipped
CRATE_TREE_HASH="$(cd "$CRATE_LLAMA" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"

# ---------------------------------------------------------------------------------------------
# compiler flags: the same as scripts/build-env.sh
# ---------------------------------------------------------------------------------------------
PEER_CFLAGS="${CFLAGS:-}"
PEER_CXXFLAGS="${CXXFLAGS:-}"
if [ "${EDGELLM_PORTABLE:-0}" = "1" ]; then
  GGML_NATIVE=OFF
else
  GGML_NATIVE=ON
  if [ -f "$REPO_ROOT/scripts/build-env.sh" ]; then
    # take CFLAGS/CXXFLAGS from edgellm's own build environment so both builds match
    flags="$(env -i PATH="$PATH" HOME="$HOME" CFLAGS="$PEER_CFLAGS" CXXFLAGS="$PEER_CXXFLAGS" \
      bash -c '. "$1" >/dev/null 2>&1; printf "%s\n%s\n" "${CFLAGS:-}" "${CXXFLAGS:-}"' _ "$REPO_ROOT/scripts/build-env.sh")"
    PEER_CFLAGS="$(sed -n 1p <<<"$flags")"
    PEER_CXXFLAGS="$(sed -n 2p <<<"$flags")"
  elif [ "$(uname -m)" = "x86_64" ] && grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
    no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    PEER_CFLAGS="$PEER_CFLAGS $no_amx"
    PEER_CXXFLAGS="$PEER_CXXFLAGS $no_amx"
  fi
fi
PEER_CFLAGS="$(echo $PEER_CFLAGS)"     # normalise whitespace
PEER_CXXFLAGS="$(echo $PEER_CXXFLAGS)"
CMAKE_ARGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE="$GGML_NATIVE"
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  "-DCMAKE_C_FLAGS=$PEER_CFLAGS"
  "-DCMAKE_CXX_FLAGS=$PEER_CXXFLAGS"
)

STAMP="sys=$SYS_VERSION tree=$CRATE_TREE_HASH tools=llama-cpp-python-$PYPI_VERSION cpu=$(uname -m) args=${CMAKE_ARGS[*]}"
STAMP_FILE="$BIN_DIR/.build-stamp"

all_bins_present() {
  local t
  for t in "${TARGETS[@]}"; do [ -x "$BIN_DIR/$t" ] || return 1; done
}
if [ "${EDGELLM_PEERS_REBUILD:-0}" != "1" ] && all_bins_present && [ -f "$STAMP_FILE" ] \
   && [ "$(cat "$STAMP_FILE")" = "$STAMP" ]; then
  log "up to date: $BIN_DIR/{$TARGETS_CSV}"
  [ -f "$PEERS_DIR/VERSION.txt" ] && sed 's/^/[build-peers]   /' "$PEERS_DIR/VERSION.txt" | head -20
  exit 0
fi

log "crate:  llama-cpp-sys-2 $SYS_VERSION ($CRATE_DIR)"
log "        llama.cpp $CRATE_LLAMA_VERSION-dev, ggml $CRATE_GGML_VERSION, tree sha256 $CRATE_TREE_HASH, llama-cpp-rs commit ${CRATE_VCS_SHA:-?}"

# ---------------------------------------------------------------------------------------------
# the tools' sources: llama-cpp-python sdist
# ---------------------------------------------------------------------------------------------
SDIST_DIR="$PEERS_DIR/sdist"
SDIST="$SDIST_DIR/llama_cpp_python-$PYPI_VERSION.tar.gz"
mkdir -p "$SDIST_DIR"
if [ ! -s "$SDIST" ]; then
  log "downloading llama-cpp-python $PYPI_VERSION sdist from PyPI"
  python3 -m pip download --quiet --no-deps --no-binary :all: \
    "llama-cpp-python==$PYPI_VERSION" -d "$SDIST_DIR"
  [ -s "$SDIST" ] || die "pip did not produce $SDIST"
fi
SDIST_X="$SDIST_DIR/x-$PYPI_VERSION"
SDIST_LLAMA="$SDIST_X/llama_cpp_python-$PYPI_VERSION/vendor/llama.cpp"
if [ ! -f "$SDIST_X/.ok" ]; then
  rm -rf "$SDIST_X"; mkdir -p "$SDIST_X"
  tar xzf "$SDIST" -C "$SDIST_X" \
    "llama_cpp_python-$PYPI_VERSION/CHANGELOG.md" \
    "llama_cpp_python-$PYPI_VERSION/vendor/llama.cpp/CMakeLists.txt" \
    "llama_cpp_python-$PYPI_VERSION/vendor/llama.cpp/ggml/CMakeLists.txt" \
    "llama_cpp_python-$PYPI_VERSION/vendor/llama.cpp/include" \
    "llama_cpp_python-$PYPI_VERSION/vendor/llama.cpp/src" \
    "llama_cpp_python-$PYPI_VERSION/vendor/llama.cpp/common" \
    "llama_cpp_python-$PYPI_VERSION/vendor/llama.cpp/tools" \
    "llama_cpp_python-$PYPI_VERSION/vendor/llama.cpp/scripts"
  touch "$SDIST_X/.ok"
fi
# the upstream commit llama-cpp-python vendored in this release (first entry of its changelog section)
SDIST_COMMIT="$(awk -v v="## [$PYPI_VERSION]" '$0==v {f=1; next} f && /^## \[/ {exit} f && match($0, /llama\.cpp@[0-9a-f]+/) {print substr($0, RSTART+10, RLENGTH-10); exit}' "$SDIST_X/llama_cpp_python-$PYPI_VERSION/CHANGELOG.md")"
SDIST_LLAMA_VERSION="$(cmake_var LLAMA_VERSION_MAJOR "$SDIST_LLAMA/CMakeLists.txt").$(cmake_var LLAMA_VERSION_MINOR "$SDIST_LLAMA/CMakeLists.txt").$(cmake_var LLAMA_VERSION_PATCH "$SDIST_LLAMA/CMakeLists.txt")"
SDIST_GGML_VERSION="$(cmake_var GGML_VERSION_MAJOR "$SDIST_LLAMA/ggml/CMakeLists.txt").$(cmake_var GGML_VERSION_MINOR "$SDIST_LLAMA/ggml/CMakeLists.txt").$(cmake_var GGML_VERSION_PATCH "$SDIST_LLAMA/ggml/CMakeLists.txt")"
ndiff() { (diff -rq "$CRATE_LLAMA/$1" "$SDIST_LLAMA/$1" 2>/dev/null || true) | wc -l; }
DIFF_SUMMARY="include/: $(ndiff include), src/: $(ndiff src), common/: $(ndiff common) differing files"
log "tools:  llama-cpp-python $PYPI_VERSION sdist: llama.cpp@${SDIST_COMMIT:-?} ($SDIST_LLAMA_VERSION-dev, ggml $SDIST_GGML_VERSION)"
log "        vs crate: $DIFF_SUMMARY"

# ---------------------------------------------------------------------------------------------
# assemble: crate tree + missing tools files from the sdist
# ---------------------------------------------------------------------------------------------
SRC="$PEERS_DIR/src"
BUILD="$PEERS_DIR/build"
STAGE="$SRC.new"
rm -rf "$STAGE"
cp -a "$CRATE_LLAMA" "$STAGE"
# only files the crate does not have (its tools/mtmd, READMEs, CMakeLists stay the crate's)
(cd "$SDIST_LLAMA" && find tools scripts -type f) | while IFS= read -r f; do
  [ -e "$STAGE/$f" ] && continue
  mkdir -p "$STAGE/$(dirname "$f")"
  cp -p "$SDIST_LLAMA/$f" "$STAGE/$f"
done
# API drift between the tools' llama.cpp and the crate's, patched in the tools only:
PATCHES=()
if ! grep -q 'fs_open_ifstream' "$STAGE/common/common.h" && grep -q 'fs_open_ifstream' "$STAGE/tools/server/server-mcp.cpp"; then
  # the crate's common/ dropped fs_open_ifstream (a UTF-8-path std::ifstream wrapper, identical to std::ifstream on Linux)
  sed -i 's/fs_open_ifstream(/std::ifstream(/g' "$STAGE/tools/server/server-mcp.cpp"
  PATCHES+=("tools/server/server-mcp.cpp: fs_open_ifstream(...) -> std::ifstream(...) (removed from the crate's common/)")
fi
if grep -q 'backend_mem_usage' "$STAGE/tools/mtmd/mtmd.h" \
   && grep -q 'auto mmproj_mem = mtmd_get_memory_usage(mmproj_path.c_str(), mparams);' "$STAGE/tools/server/server-context.cpp"; then
  # the crate's mtmd_get_memory_usage() returns a struct holding the per-device map the tools expect
  sed -i 's/auto mmproj_mem = mtmd_get_memory_usage(mmproj_path.c_str(), mparams);/auto mmproj_mem = mtmd_get_memory_usage(mmproj_path.c_str(), mparams).backend_mem_usage;/' \
    "$STAGE/tools/server/server-context.cpp"
  PATCHES+=("tools/server/server-context.cpp: mtmd_get_memory_usage(...) -> mtmd_get_memory_usage(...).backend_mem_usage (the crate's mtmd returns a struct; only used with --mmproj and fit)")
fi
if [ -d "$SRC" ] && diff -rq "$SRC" "$STAGE" >/dev/null 2>&1; then
  rm -rf "$STAGE"            # unchanged: keep mtimes so the build is incremental
else
  rm -rf "$SRC"; mv "$STAGE" "$SRC"
fi

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
log "configure: ${CMAKE_ARGS[*]}"
cmake -S "$SRC" -B "$BUILD" "${CMAKE_ARGS[@]}" > "$PEERS_DIR/cmake-configure.log" 2>&1 \
  || { tail -40 "$PEERS_DIR/cmake-configure.log"; die "cmake configure failed (log: $PEERS_DIR/cmake-configure.log)"; }
grep -E "GGML_NATIVE|CMAKE_BUILD_TYPE|ggml version|ggml commit|x86 detected|Adding CPU backend" "$PEERS_DIR/cmake-configure.log" | sed 's/^/[build-peers]   /' || true
log "building ${TARGETS[*]} with -j$JOBS (log: $PEERS_DIR/build.log)"
cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TARGETS[@]}" > "$PEERS_DIR/build.log" 2>&1 \
  || { grep -E "error|Error" "$PEERS_DIR/build.log" | head -40; die "build failed (log: $PEERS_DIR/build.log)"; }

mkdir -p "$BIN_DIR"
for t in "${TARGETS[@]}"; do
  f="$(find "$BUILD" -type f -name "$t" -perm -u+x | head -1)"
  [ -n "$f" ] || die "built binary $t not found under $BUILD"
  install -m 0755 "$f" "$BIN_DIR/$t"
done

# ---------------------------------------------------------------------------------------------
# verify: no AMX tile instructions when AMX is masked out
# ---------------------------------------------------------------------------------------------
AMX_CHECK="not applicable"
if [[ " $PEER_CXXFLAGS " == *" -mno-amx-tile "* ]]; then
  for t in "${TARGETS[@]}"; do
    n="$(objdump -d --no-show-raw-insn "$BIN_DIR/$t" | grep -cE '\b(tileloadd|tileloaddt1|tdpbssd|tdpbf16ps|ldtilecfg)\b' || true)"
    [ "$n" = "0" ] || { rm -f "$STAMP_FILE"; die "$t contains $n AMX instructions despite -mno-amx-*"; }
  done
  AMX_CHECK="objdump: 0 AMX instructions (tileloadd/tdpbssd/ldtilecfg...) in all binaries"
fi
log "$AMX_CHECK"

BIN_VERSION="$("$BIN_DIR/llama-bench" --version 2>&1 | grep -m1 -i "version" || true)"
{
  echo "edgellm peers: ${TARGETS[*]}"
  echo "built:        $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')"
  echo "library code: llama-cpp-sys-2 $SYS_VERSION's vendored llama.cpp, unmodified (llama.cpp $CRATE_LLAMA_VERSION-dev, ggml $CRATE_GGML_VERSION)"
  echo "              crate from llama-cpp-rs commit ${CRATE_VCS_SHA:-?}; the crate records no llama.cpp commit/build number;"
  echo "              sha256 of its llama.cpp tree (file list + contents): $CRATE_TREE_HASH"
  echo "tools code:   tools/ (llama-bench, server, cli, ui, ...) and scripts/ui-assets.cmake from the llama-cpp-python"
  echo "              $PYPI_VERSION sdist (PyPI), which vendors llama.cpp@${SDIST_COMMIT:-?} ($SDIST_LLAMA_VERSION-dev, ggml $SDIST_GGML_VERSION);"
  echo "              the newest llama-cpp-python release and the closest match: the crate's llama.cpp is newer than it"
  echo "              (vs crate: $DIFF_SUMMARY); only files missing from the crate were taken"
  if [ ${#PATCHES[@]} -gt 0 ]; then
    for p in "${PATCHES[@]}"; do echo "tools patch:  $p"; done
  else
    echo "tools patch:  none"
  fi
  echo "binary says:  ${BIN_VERSION:-?} (build number/commit unknown: no git metadata in either source)"
  echo "cmake:        ${CMAKE_ARGS[*]}"
  echo "AMX:          $AMX_CHECK"
  echo "binaries:     $BIN_DIR"
} > "$PEERS_DIR/VERSION.txt"
echo "$STAMP" > "$STAMP_FILE"
sed 's/^/[build-peers]   /' "$PEERS_DIR/VERSION.txt"
log "done: $BIN_DIR/{$TARGETS_CSV}"
