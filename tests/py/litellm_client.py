"""Drives edgellm's OpenAI API through LiteLLM's Python SDK (PyPI `litellm`), as a LiteLLM
deployment with edgellm as its backend does: chat whole and streamed, tools, a JSON schema,
embeddings, and a context overflow that LiteLLM must recognise as one (its context-window
fallbacks fire on `ContextWindowExceededError`). Exits non-zero on the first failure."""
import json
import os
import sys
import urllib.request

# Offline: LiteLLM's bundled model table, not a download.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
import litellm  # noqa: E402

base = sys.argv[1]  # http://127.0.0.1:PORT/v1
with urllib.request.urlopen(base + "/models") as listing:
    model = "openai/" + json.load(listing)["data"][0]["id"]
backend = {"api_base": base, "api_key": "unused"}

answer = litellm.completion(model=model, messages=[{"role": "user", "content": "Say hello."}],
                            max_tokens=8, temperature=0, **backend)
assert answer.choices[0].message.content, answer
assert 1 <= answer.usage.completion_tokens <= 8 and answer.usage.prompt_tokens > 3, answer

pieces = [chunk.choices[0].delta.content or "" for chunk in litellm.completion(
    model=model, messages=[{"role": "user", "content": "Count to five."}], max_tokens=8,
    temperature=0, stream=True, **backend) if chunk.choices]
assert "".join(pieces), pieces

weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}
called = litellm.completion(model=model, messages=[{"role": "user", "content": "Weather in Oslo?"}],
                            tools=[weather], tool_choice="required", parallel_tool_calls=False,
                            max_tokens=60, temperature=0, **backend)
call = called.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather", called
assert isinstance(json.loads(call.function.arguments)["city"], str), called

schema = {"type": "object", "properties": {"severity": {"type": "string", "enum": ["low", "high"]},
          "restart": {"type": "boolean"}}, "required": ["severity", "restart"], "additionalProperties": False}
structured = litellm.completion(
    model=model, messages=[{"role": "user", "content": "Pump 3 is overheating. Triage it."}],
    response_format={"type": "json_schema", "json_schema": {"name": "triage", "schema": schema, "strict": True}},
    max_tokens=40, temperature=0, **backend)
record = json.loads(structured.choices[0].message.content)
assert record["severity"] in ("low", "high") and isinstance(record["restart"], bool), record

vectors = litellm.embedding(model="openai/all-minilm", input=["The pump is overheating.", "Invoices are due."],
                            **backend)
assert len(vectors.data) == 2 and len(vectors.data[0]["embedding"]) == 384, vectors

try:
    litellm.completion(model=model, messages=[{"role": "user", "content": "word " * 3000}],
                       max_tokens=8, **backend)
    raise AssertionError("an over-long prompt was answered")
except litellm.ContextWindowExceededError as error:
    assert "context" in str(error).lower(), error
print("litellm: ok")
