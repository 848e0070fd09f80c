"""/v1/embeddings throughput of two servers, measured in alternation (A/B rounds).

usage: embeddings.py ROUNDS NAME=URL NAME=URL
Each round sends each server (a) 16 requests of 32 passages each, sequentially (batched
inputs), the servers taking turns request by request, and (b) 128 one-passage requests from 4
concurrent clients, in turns of 32. Taking turns this often keeps a shared machine's slow spells
from falling on one server only. The passages are
the paragraphs of the repository's docs/*.md (deterministic, 20-200 words). Prints JSON:
per server, inputs/s per round for both workloads, and their medians.
"""
import concurrent.futures
import glob
import json
import statistics
import sys
import time
import urllib.request


def passages():
    out = []
    for path in sorted(glob.glob("docs/*.md")):
        for para in open(path).read().split("\n\n"):
            words = para.split()
            if 20 <= len(words) <= 200:
                out.append(" ".join(words))
    return out


def post(url, inputs):
    body = json.dumps({"input": inputs, "model": "m"}).encode()
    request = urllib.request.Request(url + "/v1/embeddings", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.load(response)
    assert len(answer["data"]) == len(inputs), answer
    return answer


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def batched(servers, texts):
    """16 requests of 32 passages each, sequential, the servers taking turns request by request
    (so a slow spell of a shared machine falls on both): inputs/s per server."""
    spent = {name: 0.0 for name, _ in servers}
    for i in range(16):
        chunk = [texts[(i * 32 + j) % len(texts)] for j in range(32)]
        for name, url in servers if i % 2 == 0 else list(reversed(servers)):
            spent[name] += timed(lambda: post(url, chunk))
    return {name: 16 * 32 / t for name, t in spent.items()}


def single_concurrent(servers, texts):
    """128 one-passage requests from 4 concurrent clients, in 4 turns of 32 per server."""
    spent = {name: 0.0 for name, _ in servers}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for turn in range(4):
            for name, url in servers if turn % 2 == 0 else list(reversed(servers)):
                ids = range(turn * 32, turn * 32 + 32)
                spent[name] += timed(lambda: list(pool.map(lambda i: post(url, [texts[i % len(texts)]]), ids)))
    return {name: 128 / t for name, t in spent.items()}


def main():
    rounds = int(sys.argv[1])
    servers = [arg.split("=", 1) for arg in sys.argv[2:]]
    texts = passages()
    for _, url in servers:  # warm up
        post(url, texts[:8])
    results = {name: {"batched": [], "single_concurrent": []} for name, _ in servers}
    for r in range(rounds):
        order = servers if r % 2 == 0 else list(reversed(servers))
        for key, workload in (("batched", batched), ("single_concurrent", single_concurrent)):
            for name, rate in workload(order, texts).items():
                results[name][key].append(rate)
    for name in results:
        for key in ("batched", "single_concurrent"):
            results[name][key + "_median"] = statistics.median(results[name][key])
    results["passages"] = len(texts)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
