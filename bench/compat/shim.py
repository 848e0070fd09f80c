#!/usr/bin/env python3
"""llama-server's command line, for llama.cpp's own server test suite (tools/server/tests).

The suite starts `$LLAMA_SERVER_BIN_PATH` with llama-server's flags and Hugging Face model names
it would download. This shim runs one of two servers instead, offline, on the models this
project installs:

  shim.py edgellm ARGS...       -> `edgellm serve` with the flags mapped
  shim.py llama-server ARGS...  -> the real llama-server (the baseline), models substituted

Every generation preset gets the default model (Gemma 3 270M Q4_K_M); an embedding preset
(`--embedding`, or a bert / embedding model file) gets the default embedding model
(all-MiniLM-L6-v2 F16). Flags with no counterpart in edgellm are dropped and listed on stderr.

Environment: EDGELLM_BIN, LLAMA_SERVER_REAL, COMPAT_MODEL, COMPAT_EMBED_MODEL.
"""
import os
import sys

HOME = os.environ.get("EDGELLM_HOME") or os.path.join(
    os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "edgellm")
MODEL = os.environ.get("COMPAT_MODEL", os.path.join(HOME, "models/gemma-3-270m-q4_k_m.gguf"))
EMBED = os.environ.get("COMPAT_EMBED_MODEL", os.path.join(HOME, "models/all-minilm-l6-v2-f16.gguf"))

# llama-server flags that take a value (the ones the suite uses).
VALUED = {
    "--host", "--port", "--model", "-m", "--model-url", "--model-draft", "-md", "--hf-repo", "-hfr",
    "--hf-file", "-hff", "--models-dir", "--models-max", "--models-preset", "--cors-origins",
    "--batch-size", "-b", "--ubatch-size", "-ub", "--threads", "-t", "--n-gpu-layers", "-ngl",
    "--pooling", "--alias", "-a", "--tags", "--ctx-size", "-c", "--parallel", "-np", "-ctk", "-ctv",
    "-fa", "--flash-attn", "--n-predict", "-n", "--slot-save-path", "--grp-attn-n", "--grp-attn-w",
    "--lora", "--spec-type", "--api-key", "--spec-draft-n-max", "--spec-draft-n-min",
    "--spec-synth-len", "--spec-synth-rates", "--reasoning-format", "--reasoning-budget",
    "--chat-template", "--chat-template-file", "--seed", "-s", "--temp", "--draft-max",
    "--top-k", "--top-p", "--min-p",
    "--draft-min", "--draft", "--n-probs", "--sleep-idle-seconds", "--media-path", "-ctxcp",
    "--ctx-checkpoints", "--cache-ram", "-cram", "--timeout", "-to", "--threads-http",
    "--mmproj", "--mmproj-url", "--override-tensor", "-ot", "--cache-reuse", "--keep",
    "--defrag-thold", "-dt", "--webui-config", "--webui-config-file", "--reasoning", "--tools",
}


def parse(argv):
    flags, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if "=" in arg and arg.startswith("--"):
            key, value = arg.split("=", 1)
            flags[key] = value
        elif arg in VALUED and i + 1 < len(argv):
            flags[arg] = argv[i + 1]
            i += 1
        else:
            flags[arg] = True
        i += 1
    return flags


def get(flags, *names):
    for name in names:
        if name in flags:
            return flags[name]
    return None


def is_embedding(flags):
    name = " ".join(str(get(flags, k) or "") for k in ("--hf-file", "-hff", "--hf-repo", "-hfr", "--model", "-m"))
    return "--embedding" in flags or "--embeddings" in flags or "--reranking" in flags or \
        "bert" in name.lower() or "embed" in name.lower()


def edgellm(flags):
    args = [os.environ.get("EDGELLM_BIN", "target/release/edgellm"), "serve", "-m", MODEL]
    mapped = {
        ("--host",): "--host", ("--port",): "--port", ("--ctx-size", "-c"): "-c",
        ("--parallel", "-np"): "--slots", ("--batch-size", "-b"): "-b",
        ("--ubatch-size", "-ub"): "--ubatch-size", ("--threads", "-t"): "-t",
        ("--alias", "-a"): "--alias", ("--tags",): "--tags", ("--api-key",): "--api-key", ("--n-predict", "-n"): "--n-predict",
        ("--pooling",): "--pooling", ("--cors-origins",): "--cors-origins",
        ("--temp",): "--temp", ("--seed", "-s"): "--seed", ("--top-k",): "--top-k",
        ("--top-p",): "--top-p", ("--min-p",): "--min-p",
        ("--chat-template",): "--chat-template",
        ("--sleep-idle-seconds",): "--sleep-idle-seconds",
    }
    used = set()
    for names, ours in mapped.items():
        value = get(flags, *names)
        if value is not None and value is not True:
            if ours in ("--n-predict", "--sleep-idle-seconds") and int(value) < 1:
                continue
            args += [ours, str(value)]
            used.update(names)
    if "--kv-unified" in flags or "-kvu" in flags:
        args.append("--kv-unified")
        used.update(("--kv-unified", "-kvu"))
    for name in ("--ui-mcp-proxy", "--webui-mcp-proxy"):
        if name in flags:
            args.append("--ui-mcp-proxy")
            used.add(name)
    if "--slots" in flags:
        args.append("--slots-endpoint")
        used.add("--slots")
    # llama-server serves /metrics only with --metrics; edgellm serves it unless told not to.
    if "--metrics" in flags:
        used.add("--metrics")
    else:
        args.append("--no-metrics")
    # llama-server without --cors-origins answers every origin, unless its tools or MCP proxy
    # are on (then this device's own pages, as edgellm's default); so that default is asked
    # for by name.
    if get(flags, "--cors-origins") is None and "--tools" not in flags and "--ui-mcp-proxy" not in flags:
        args += ["--cors-origins", "*"]
    if is_embedding(flags):
        args += ["--embedding-model", EMBED]
    # Each test server its own ledger directory.
    os.environ.setdefault("EDGELLM_DATA_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), f"edgellm-compat-{os.getpid()}"))
    os.makedirs(os.environ["EDGELLM_DATA_DIR"], exist_ok=True)
    dropped = [k for k in flags if k not in used and k not in ("--model", "-m", "--hf-repo", "-hfr", "--hf-file", "-hff", "--offline", "--embedding", "--embeddings", "--no-webui")]
    if dropped:
        print(f"shim: no edgellm counterpart, dropped: {' '.join(dropped)}", file=sys.stderr)
    return args


def llama_server(argv, flags):
    model = EMBED if is_embedding(flags) else MODEL
    out, i = [os.environ.get("LLAMA_SERVER_REAL", os.path.expanduser("~/.cache/edgellm-peers/bin/llama-server"))], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--hf-repo", "-hfr", "--hf-file", "-hff", "--model", "-m", "--model-url", "--model-draft", "-md"):
            i += 2
            continue
        if arg == "--offline":
            i += 1
            continue
        out.append(arg)
        i += 1
    return out + ["-m", model]


def main():
    which, argv = sys.argv[1], sys.argv[2:]
    flags = parse(argv)
    args = edgellm(flags) if which == "edgellm" else llama_server(argv, flags)
    print("shim: " + " ".join(args), file=sys.stderr)
    os.execv(args[0], args)


if __name__ == "__main__":
    main()
