"""Concurrent streaming load on llama.cpp-style `/completion` endpoints, for bench/serve.sh.

python3 bench/serve_load.py ROUNDS CLIENTS N_PREDICT NAME=URL [NAME=URL ...]

Each round runs CLIENTS concurrent streaming requests against each server in turn (alternating
servers round by round) and records, per server and round: aggregate decode tokens/s (all tokens
generated after each request's first token, over the span from the earliest first token to the
last token) and every request's time to first token. Prints one JSON document.
"""
import asyncio
import json
import statistics
import sys
import time

import httpx

PROMPTS = [
    "Gateway GW-{i} log: PLC timeout on Modbus read; MQTT publish queue backed up; CPU at 95%. Root causes:",
    "Sensor {i} on line 3 reports pressure drift of 4% over two hours. Likely explanations:",
    "Summarize the key differences between MQTT and HTTP for IoT device {i}:",
    "Maintenance note for pump {i}: vibration alarm at 02:14, restart at 02:20. Next steps:",
]


async def one(client, url, prompt, n_predict):
    started = time.perf_counter()
    first = None
    tokens = 0
    body = {"prompt": prompt, "n_predict": n_predict, "temperature": 0, "stream": True, "ignore_eos": True, "cache_prompt": True}
    async with client.stream("POST", url + "/completion", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event.get("stop"):
                break
            if first is None:
                first = time.perf_counter()
            tokens += 1
    return started, first, time.perf_counter(), tokens


async def round_(client, url, clients, n_predict, round_no):
    prompts = [PROMPTS[i % len(PROMPTS)].format(i=round_no * 10 + i) for i in range(clients)]
    results = await asyncio.gather(*(one(client, url, p, n_predict) for p in prompts))
    first_any = min(r[1] for r in results)
    last = max(r[2] for r in results)
    decoded = sum(r[3] - 1 for r in results)
    return {"aggregate_tps": decoded / (last - first_any), "ttft_s": [r[1] - r[0] for r in results]}


async def main():
    rounds, clients, n_predict = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    servers = [arg.split("=", 1) for arg in sys.argv[4:]]
    results = {name: [] for name, _ in servers}
    async with httpx.AsyncClient(timeout=600) as client:
        for name, url in servers:  # warm-up round, not recorded
            await round_(client, url, clients, 8, 99)
        for r in range(rounds):
            order = servers if r % 2 == 0 else list(reversed(servers))
            for name, url in order:
                results[name].append(await round_(client, url, clients, n_predict, r))
    summary = {}
    for name, rs in results.items():
        ttfts = sorted(t for r in rs for t in r["ttft_s"])
        summary[name] = {
            "aggregate_tps_median": statistics.median(r["aggregate_tps"] for r in rs),
            "aggregate_tps": [r["aggregate_tps"] for r in rs],
            "ttft_p50_ms": statistics.median(ttfts) * 1000,
            "ttft_p95_ms": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] * 1000,
        }
    print(json.dumps(summary, indent=2))


asyncio.run(main())
