#!/usr/bin/env bash
# Installs everything edgellm needs to build, run and test on a fresh Debian/Ubuntu machine:
# the build tools for llama.cpp (cmake, a C/C++ compiler, libclang for bindgen), the Python
# packages the tests drive the server with (the official OpenAI and Ollama clients), the TPM2
# software stack (libtss2) for the TPM key backend, and the default model.
# Idempotent: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(build-essential)
command -v clang >/dev/null || need_apt+=(clang)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v mosquitto >/dev/null || need_apt+=(mosquitto)
# The TPM 2.0 backend of encrypted models links the TPM2 software stack (tss-esapi).
pkg-config --exists tss2-esys tss2-tctildr 2>/dev/null || need_apt+=(libtss2-dev pkg-config)
# The telemetry tests push to a real Prometheus (remote-write receiver) and run promtool.
if [ "${EDGELLM_SETUP_TEST_DEPS:-0}" = "1" ]; then
  command -v prometheus >/dev/null && command -v promtool >/dev/null || need_apt+=(prometheus)
  # The delivery tests push to and pull from a real OCI registry (distribution).
  command -v docker-registry >/dev/null || need_apt+=(docker-registry)
  # The pull gate's policy-routing test builds links and rules in a network namespace.
  command -v ip >/dev/null || need_apt+=(iproute2)
  command -v unshare >/dev/null || need_apt+=(util-linux)
  # The encryption tests seal the device key in a software TPM (swtpm, on loopback) and
  # change its PCRs with tpm2-tools; systemd-creds is the other key backend.
  command -v swtpm >/dev/null || need_apt+=(swtpm swtpm-tools)
  command -v tpm2_pcrextend >/dev/null || need_apt+=(tpm2-tools)
  ls /usr/lib/x86_64-linux-gnu/libtss2-tcti-swtpm.so* >/dev/null 2>&1 || need_apt+=(libtss2-tcti-swtpm0)
  command -v systemd-creds >/dev/null || need_apt+=(systemd)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

if [ "${EDGELLM_SETUP_TEST_DEPS:-0}" = "1" ]; then
  # The official OpenAI, Ollama and Anthropic clients, LiteLLM (SDK and proxy) and LangChain
  # drive the server in the tests. Debian's own python3 refuses pip installs into the system
  # (PEP 668); fall back to its override there.
  py_deps=(openai ollama anthropic numpy tokenizers 'litellm[proxy]' langchain-openai)
  LITELLM_LOCAL_MODEL_COST_MAP=True python3 -c "import openai, ollama, anthropic, numpy, tokenizers, litellm.proxy.proxy_server, langchain_openai" 2>/dev/null \
    || python3 -m pip install --quiet "${py_deps[@]}" \
    || python3 -m pip install --quiet --break-system-packages "${py_deps[@]}"
fi

scripts/install-model.sh
