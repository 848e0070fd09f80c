"""Constrained decoding, edgellm vs llama-server, in alternation (run by bench/constrained.sh).

Measures, each round on both servers in turn (which goes first alternates):
  1. decode tokens/s of the same prompt, 64 tokens, without a schema and with a JSON schema that
     keeps the output going past 64 tokens (both cut by n_predict), from each answer's timings;
  2. the triage task end to end: a new log batch in, the task's JSON out, as a client sees it:
     edgellm's POST /v1/tasks/triage and /completion with the run schema, llama-server's
     /completion with the same prompt text and json_schema;
then edgellm's mask time per constrained token (p50, p99) from its /metrics histogram.

usage: constrained.py ROUNDS EDGE_URL PEER_URL   (prints one JSON object)
"""

import json
import statistics
import sys
import time
import urllib.request

ROUNDS = int(sys.argv[1])
EDGE, PEER = sys.argv[2], sys.argv[3]

PROMPT = "Gateway report for site 7, written by the night shift. Summary of the events:"
LONG_SCHEMA = {
    "type": "object",
    "properties": {"events": {"type": "array", "minItems": 12, "maxItems": 12,
                              "items": {"type": "string", "minLength": 24, "maxLength": 60}}},
    "required": ["events"], "additionalProperties": False,
}
TRIAGE_OUTPUT = {
    "type": "object",
    "properties": {"severity": {"type": "string", "enum": ["info", "warning", "critical"]},
                   "summary": {"type": "string", "maxLength": 300}},
    "required": ["severity", "summary"], "additionalProperties": False,
}
# The run schema edgellm's task runtime gives the model when no action is allowed.
RUN_SCHEMA = {
    "type": "object",
    "properties": {"result": TRIAGE_OUTPUT, "actions": {"type": "array", "maxItems": 0}},
    "required": ["result", "actions"], "additionalProperties": False,
}
LOGS = "\n".join([
    "Jan 10 12:00:02 gw1 kernel: EXT4-fs warning (device mmcblk0p2): ext4_dx_add_entry: directory index full",
    "Jan 10 12:00:05 gw1 modbusd[812]: pump-3 pressure sensor timeout (unit 4, register 30001)",
    "Jan 10 12:00:09 gw1 modbusd[812]: pump-3 pressure sensor timeout (unit 4, register 30001)",
    "Jan 10 12:00:31 gw1 systemd[1]: mosquitto.service: Main process exited, code=killed, status=9/KILL",
    "Jan 10 12:00:32 gw1 systemd[1]: mosquitto.service: Scheduled restart job, restart counter is at 3.",
])
INSTRUCTIONS = ("You triage gateway logs. Rate the overall severity and summarise in one sentence. "
                "Answer with JSON only.")
# Gemma's chat template, as edgellm applies it from the GGUF (triage_prompt below).


def post(url, body):
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    return answer, time.perf_counter() - started


def decode_rate(base, schema):
    body = {"prompt": PROMPT, "n_predict": 64, "temperature": 0, "cache_prompt": False}
    if schema is not None:
        body["json_schema"] = schema
    answer, _ = post(base + "/completion", body)
    timings = answer["timings"]
    return timings["predicted_per_second"], timings["predicted_n"]


BATCH = [0]


def next_logs():
    """A new log batch each request, as a gateway sends them: both servers reuse the cached
    instructions and prefill the new logs (cache_prompt left at its default, true)."""
    BATCH[0] += 1
    return LOGS + f"\nJan 10 12:0{BATCH[0] % 10}:44 gw1 watchdog[77]: heartbeat {BATCH[0]} late by {BATCH[0] * 37 % 900} ms"


def triage_prompt(logs):
    return (f"<start_of_turn>user\n{INSTRUCTIONS}\n\n<<<DATA 5f0c>>>\n{logs}\n<<<END DATA 5f0c>>>"
            "<end_of_turn>\n<start_of_turn>model\n")


def triage_completion(base):
    body = {"prompt": triage_prompt(next_logs()), "n_predict": 512, "temperature": 0,
            "json_schema": RUN_SCHEMA}
    answer, seconds = post(base + "/completion", body)
    json.loads(answer["content"])  # the output parses, on both
    return seconds, answer["timings"]["predicted_n"]


def triage_task(base):
    answer, seconds = post(base + "/v1/tasks/triage", {"input": next_logs(), "actions": [], "dry_run": True})
    assert answer["result"]["severity"] in ("info", "warning", "critical"), answer
    return seconds


def metrics_histogram(base, name):
    with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
        text = response.read().decode()
    buckets, total = [], 0.0
    for line in text.splitlines():
        if line.startswith(name + "_bucket{le=\""):
            bound = line.split('"')[1]
            count = float(line.rsplit(" ", 1)[1])
            if bound != "+Inf":
                buckets.append((float(bound), count))
        elif line.startswith(name + "_count "):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_sum "):
            seconds = float(line.rsplit(" ", 1)[1])
    return buckets, total, seconds


def quantile(buckets, total, q):
    """Prometheus' histogram_quantile: linear within the bucket that holds the rank."""
    rank, low, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            return low + (bound - low) * (rank - below) / max(count - below, 1e-9)
        low, below = bound, count
    return buckets[-1][0]


results = {name: {"free": [], "schema": [], "triage_s": [], "triage_tokens": []} for name in ("edgellm", "llama-server")}
results["edgellm"]["task_s"] = []
servers = [("edgellm", EDGE), ("llama-server", PEER)]
for name, base in servers:  # warm-up: compile caches, first-request effects
    decode_rate(base, None)
    decode_rate(base, LONG_SCHEMA)
    triage_completion(base)
triage_task(EDGE)
for round_index in range(ROUNDS):
    order = servers if round_index % 2 == 0 else servers[::-1]
    for name, base in order:
        r = results[name]
        r["free"].append(decode_rate(base, None)[0])
        r["schema"].append(decode_rate(base, LONG_SCHEMA)[0])
        seconds, tokens = triage_completion(base)
        r["triage_s"].append(seconds)
        r["triage_tokens"].append(tokens)
        if name == "edgellm":
            r["task_s"].append(triage_task(base))

summary = {}
for name, r in results.items():
    ratios = sorted(s / f for s, f in zip(r["schema"], r["free"]))
    summary[name] = {
        "free_tps": statistics.median(r["free"]),
        "schema_tps": statistics.median(r["schema"]),
        "schema_over_free": statistics.median(ratios),
        "schema_over_free_range": [ratios[0], ratios[-1]],
        "triage_ms": 1000 * statistics.median(r["triage_s"]),
        "triage_tokens": statistics.median(r["triage_tokens"]),
    }
    if "task_s" in r:
        summary[name]["task_ms"] = 1000 * statistics.median(r["task_s"])
per_round = sorted(p / e for e, p in zip(results["edgellm"]["triage_s"], results["llama-server"]["triage_s"]))
task_round = sorted(p / e for e, p in zip(results["edgellm"]["task_s"], results["llama-server"]["triage_s"]))
per_token = sorted((p / pt) / (e / et) for e, et, p, pt in zip(
    results["edgellm"]["triage_s"], results["edgellm"]["triage_tokens"],
    results["llama-server"]["triage_s"], results["llama-server"]["triage_tokens"]))
summary["triage_per_token_speedup"] = statistics.median(per_token)
summary["triage_per_token_speedup_range"] = [per_token[0], per_token[-1]]
summary["triage_speedup"] = statistics.median(per_round)
summary["triage_speedup_range"] = [per_round[0], per_round[-1]]
summary["task_speedup"] = statistics.median(task_round)
summary["task_speedup_range"] = [task_round[0], task_round[-1]]
buckets, total, seconds = metrics_histogram(EDGE, "edgellm_constraint_mask_seconds")
summary["mask"] = {"count": total, "mean_us": 1e6 * seconds / max(total, 1),
                   "p50_us": 1e6 * quantile(buckets, total, 0.5), "p99_us": 1e6 * quantile(buckets, total, 0.99)}
with urllib.request.urlopen(EDGE + "/metrics", timeout=30) as response:
    for line in response.read().decode().splitlines():
        if line.startswith("edgellm_constraint_forced_tokens_total "):
            summary["forced_tokens"] = float(line.split()[1])
print(json.dumps(summary))
