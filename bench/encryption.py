"""Encrypted vs plaintext model loads, in alternation (see bench/encryption.sh)."""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN, MODEL, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])
PROMPT = "Maintenance log, pump 3: the seal"
TOKENS = 128


def free_pair():
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        try:
            t = socket.socket()
            t.bind(("127.0.0.1", port + 1))
            t.close()
            return port
        except OSError:
            pass


def main():
    work = tempfile.mkdtemp(prefix="edgellm-bench-enc-")
    port = free_pair()
    tpm = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--flags", "not-need-init,startup-clear",
         "--tpmstate", f"dir={work}", "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    tcti = f"swtpm:host=127.0.0.1,port={port}"
    env = dict(os.environ, EDGELLM_HOME=f"{work}/home", EDGELLM_TPM_TCTI=tcti)
    try:
        recipient = subprocess.run(
            [BIN, "key", "init", "--backend", "tpm", "--pcrs", "16"],
            env=env, check=True, capture_output=True, text=True).stdout.strip()
        enc = f"{work}/model.gguf.enc"
        encrypted = json.loads(subprocess.run(
            [BIN, "model", "encrypt", MODEL, "-o", enc, "--recipient", recipient,
             "--data-key", f"{work}/data.key", "--json"],
            env=env, check=True, capture_output=True, text=True).stdout)
        variants = {
            "plaintext, no mmap": [MODEL, "--no-mmap"],
            "plaintext, mmap": [MODEL],
            "encrypted": [enc],
        }
        runs = {name: [] for name in variants}
        names = list(variants)
        for round_ in range(ROUNDS):
            order = names[round_ % 3:] + names[:round_ % 3]
            for name in order:
                args = variants[name]
                out = subprocess.run(
                    [BIN, "run", "-m", *args, "-p", PROMPT, "-n", str(TOKENS), "--temp", "0",
                     "--ignore-eos", "-t", "2", "--json"],
                    env=env, check=True, capture_output=True, text=True).stdout
                runs[name].append(json.loads(out))
        med = lambda name, f: statistics.median(f(r) for r in runs[name])
        load = lambda r: r["load_ms"]
        rss = lambda r: r["memory"]["peak_resident_bytes"] / 2**20
        decode = lambda r: r["decode_tokens_per_second"]
        texts = {name: {r["text"] for r in runs[name]} for name in runs}
        print(f"model: {MODEL} ({encrypted['size']} bytes, {encrypted['segments']} segments, "
              f"{encrypted['cipher']}); {ROUNDS} rounds in alternation, {TOKENS} tokens, -t 2")
        print(f"{'variant':22} {'load ms':>9} {'peak RSS MiB':>13} {'decode tok/s':>13}")
        for name in names:
            print(f"{name:22} {med(name, load):9.1f} {med(name, rss):13.1f} {med(name, decode):13.2f}")
        e, p, m = "encrypted", "plaintext, no mmap", "plaintext, mmap"
        print(f"load: encrypted / plaintext without mmap = {med(e, load) / med(p, load):.3f} "
              f"(target <= 1.10); / with mmap = {med(e, load) / med(m, load):.3f}")
        print(f"peak RSS: encrypted - plaintext (mmap) = {med(e, rss) - med(m, rss):+.1f} MiB, "
              f"- plaintext (no mmap) = {med(e, rss) - med(p, rss):+.1f} MiB (target <= +16)")
        print(f"decode: encrypted / plaintext (mmap) = {med(e, decode) / med(m, decode):.3f} "
              f"(target >= 0.98)")
        print(f"same greedy text in every run: {len(set.union(*texts.values())) == 1}")
    finally:
        tpm.kill()
        subprocess.run(["rm", "-rf", work])


main()
