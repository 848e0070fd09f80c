# Sourced by the setup, test and benchmark scripts: compiler flags for the fast build.
#
# By default edgellm (and the llama.cpp it embeds) is compiled for the CPU it is built on
# (`-C target-cpu=native`, which makes llama-cpp-sys-2 build ggml with GGML_NATIVE=ON). On x86 CPUs
# that advertise Intel AMX the AMX instructions are masked out (-mno-amx-*): on the machines this
# project is developed on they fault (SIGILL in tileloadd during prompt processing).
#
# Set EDGELLM_PORTABLE=1 for a build that runs on any CPU of the target architecture (the baseline
# x86-64 / aarch64 target; about 0.7x prefill speed on a modern x86).
if [ "${EDGELLM_PORTABLE:-0}" = "1" ]; then
  export RUSTFLAGS="${EDGELLM_EXTRA_RUSTFLAGS:-}"
else
  export RUSTFLAGS="-C target-cpu=native ${EDGELLM_EXTRA_RUSTFLAGS:-}"
  if [ "$(uname -m)" = "x86_64" ] && grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
    no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    export CFLAGS="${CFLAGS:-} $no_amx"
    export CXXFLAGS="${CXXFLAGS:-} $no_amx"
  fi
fi
