"""/v1/embeddings throughput of two servers, measured in alternation (A/B rounds).

usage: embeddings.py ROUNDS NAME=URL NAME=URL
Each round sends, to each server in turn: (a) 16 requests of 32 passages each, sequentially
(batched inputs), and (b) 128 one-passage requests from 4 concurrent clients. The passages are
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


def batched(url, texts):
    started = time.perf_counter()
    n = 0
    for i in range(16):
        chunk = [texts[(i * 32 + j) % len(texts)] for j in range(32)]
        post(url, chunk)
        n += len(chunk)
    return n / (time.perf_counter() - started)


def single_concurrent(url, texts):
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: post(url, [texts[i % len(texts)]]), range(128)))
    return 128 / (time.perf_counter() - started)


def main():
    rounds = int(sys.argv[1])
    servers = [arg.split("=", 1) for arg in sys.argv[2:]]
    texts = passages()
    for _, url in servers:  # warm up
        post(url, texts[:8])
    results = {name: {"batched": [], "single_concurrent": []} for name, _ in servers}
    for r in range(rounds):
        order = servers if r % 2 == 0 else list(reversed(servers))
        for name, url in order:
            results[name]["batched"].append(batched(url, texts))
            results[name]["single_concurrent"].append(single_concurrent(url, texts))
    for name in results:
        for key in ("batched", "single_concurrent"):
            results[name][key + "_median"] = statistics.median(results[name][key])
    results["passages"] = len(texts)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
