"""Runs LiteLLM's proxy (PyPI `litellm[proxy]`) with edgellm as its only backend, and drives the
proxy with the official OpenAI client: chat whole and streamed, tools, a JSON schema,
embeddings; a prompt too long for edgellm's context fires the proxy's context-window fallback
(LiteLLM must read edgellm's error as a context overflow); a refused request does not put
edgellm into cooldown. Exits non-zero on the first failure."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from openai import OpenAI, BadRequestError

edge = sys.argv[1]  # http://127.0.0.1:PORT
with urllib.request.urlopen(edge + "/v1/models") as listing:
    model_id = json.load(listing)["data"][0]["id"]

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]

FALLBACK = "answered by the fallback deployment"
MASTER_KEY = "sk-" + os.urandom(32).hex()
config = f"""
model_list:
  - model_name: edge
    litellm_params: {{model: openai/{model_id}, api_base: {edge}/v1, api_key: unused}}
  - model_name: edge-embed
    litellm_params: {{model: openai/all-minilm, api_base: {edge}/v1, api_key: unused}}
    model_info: {{mode: embedding}}
  - model_name: edge-fallback
    litellm_params: {{model: openai/fallback, mock_response: "{FALLBACK}"}}
litellm_settings:
  num_retries: 0
general_settings:
  master_key: {MASTER_KEY}
router_settings:
  context_window_fallbacks: [{{"edge": ["edge-fallback"]}}]
  allowed_fails: 1
  cooldown_time: 60
"""
work = tempfile.mkdtemp()
with open(os.path.join(work, "config.yaml"), "w") as f:
    f.write(config)
env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False")
log = open(os.path.join(work, "proxy.log"), "w")
proxy = subprocess.Popen([sys.executable, "-m", "litellm.proxy.proxy_cli", "--config", os.path.join(work, "config.yaml"),
                          "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
try:
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2):
                break
        except OSError:
            if proxy.poll() is not None or time.time() > deadline:
                log.flush()
                raise SystemExit("the LiteLLM proxy did not start:\n" + open(log.name).read()[-4000:])
            time.sleep(1)

    client = OpenAI(base_url=f"http://127.0.0.1:{port}", api_key=MASTER_KEY)
    answer = client.chat.completions.create(model="edge", messages=[{"role": "user", "content": "Say hello."}],
                                            max_tokens=8, temperature=0)
    assert answer.choices[0].message.content, answer

    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="edge", messages=[{"role": "user", "content": "Count to five."}], max_tokens=8, stream=True) if c.choices]
    assert "".join(pieces), pieces

    weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                       "required": ["city"], "additionalProperties": False}}}
    called = client.chat.completions.create(model="edge", messages=[{"role": "user", "content": "Weather in Oslo?"}],
                                            tools=[weather], tool_choice="required", parallel_tool_calls=False,
                                            max_tokens=60, temperature=0)
    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"], called

    schema = {"type": "object", "properties": {"severity": {"type": "string", "enum": ["low", "high"]}},
              "required": ["severity"], "additionalProperties": False}
    structured = client.chat.completions.create(
        model="edge", messages=[{"role": "user", "content": "Pump 3 is overheating. Triage it."}], max_tokens=30,
        temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}})
    assert json.loads(structured.choices[0].message.content)["severity"] in ("low", "high"), structured

    vectors = client.embeddings.create(model="edge-embed", input=["The pump is overheating.", "Invoices are due."])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384, vectors

    # Too long for edgellm's context: LiteLLM recognises the overflow and falls back.
    fallen = client.chat.completions.create(model="edge", messages=[{"role": "user", "content": "word " * 3000}],
                                            max_tokens=8)
    assert fallen.choices[0].message.content == FALLBACK, fallen

    # A refused request (bad parameter) is the client's fault: edgellm stays in rotation.
    for _ in range(2):
        try:
            client.chat.completions.create(model="edge", messages=[{"role": "user", "content": "x"}], max_tokens=8,
                                           extra_body={"top_p": 7})
            raise AssertionError("top_p 7 was accepted")
        except BadRequestError:
            pass
    after = client.chat.completions.create(model="edge", messages=[{"role": "user", "content": "Say hello."}],
                                           max_tokens=8, temperature=0)
    assert after.choices[0].message.content, after
finally:
    proxy.terminate()
    try:
        proxy.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proxy.kill()
print("litellm proxy: ok")
