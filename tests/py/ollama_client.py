"""Drives edgellm's Ollama API with the official `ollama` Python client (PyPI): chat and
generate, whole and streamed, `format` as "json" and as a JSON schema, options, and the model
listing calls. Exits non-zero with a message on the first failure."""
import json
import sys

import ollama

client = ollama.Client(host=sys.argv[1])
options = {"temperature": 0, "num_predict": 12}

version = client._client.get("/api/version").json()["version"]
assert version.count(".") == 2, version

listed = client.list()
assert len(listed.models) == 1, listed
name = listed.models[0].model
assert listed.models[0].details.format == "gguf", listed
assert listed.models[0].size > 100_000_000, listed

shown = client.show(name)
assert shown.modelinfo["general.architecture"] == "gemma3", shown
assert "completion" in shown.capabilities, shown

running = client.ps()
assert [m.model for m in running.models] == [name], running

answer = client.chat(model=name, messages=[{"role": "user", "content": "Say hello."}], options=options)
assert answer.message.role == "assistant" and answer.message.content, answer
assert answer.done and answer.done_reason in ("stop", "length"), answer
assert 1 <= answer.eval_count <= 12 and answer.prompt_eval_count > 3, answer

parts = list(client.chat(model=name, messages=[{"role": "user", "content": "Count to five."}],
                         options=options, stream=True))
assert parts[-1].done and all(not p.done for p in parts[:-1]), parts
assert "".join(p.message.content for p in parts), parts
assert parts[-1].eval_count == 12 or parts[-1].done_reason == "stop", parts[-1]

generated = client.generate(model=name, prompt="The capital of France is", options=options, raw=True)
assert generated.response and generated.done, generated
streamed = list(client.generate(model=name, prompt="Once upon a time", options=options, stream=True))
assert streamed[-1].done and "".join(s.response for s in streamed), streamed

as_json = client.chat(model=name, messages=[{"role": "user", "content": "A JSON object, please."}],
                      format="json", options={"temperature": 0, "num_predict": 120})
# Any JSON object: whole when the model closed it, a cut prefix of one when num_predict did.
if as_json.done_reason == "stop":
    assert isinstance(json.loads(as_json.message.content), dict), as_json
else:
    assert as_json.done_reason == "length" and as_json.message.content.startswith("{"), as_json

schema = {"type": "object", "properties": {"pump": {"type": "string", "enum": ["on", "off"]},
          "bar": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["pump", "bar"], "additionalProperties": False}
structured = client.chat(model=name, messages=[{"role": "user", "content": "Pump state?"}],
                         format=schema, options={"temperature": 0, "num_predict": 40})
record = json.loads(structured.message.content)
assert record["pump"] in ("on", "off") and 0 <= record["bar"] <= 99, record
assert structured.done_reason == "stop", structured
assert set(record) == {"pump", "bar"}, record

try:
    client.chat(model=name, messages=[], options=options)
    raise AssertionError("an empty message list was accepted")
except ollama.ResponseError as error:
    assert error.status_code == 400 and "messages" in error.error, error

# The client refuses a bad format itself; sent anyway, the server's answer is Ollama's shape.
refused = client._client.post("/api/generate", json={"model": name, "prompt": "x", "format": "yaml"})
assert refused.status_code == 400 and "format" in refused.json()["error"], refused.text

# Embeddings (the embedding model served beside the generation model).
embedded = client.embed(model="all-minilm", input=["The pump is overheating.", "The pump runs too hot.",
                                                   "Invoices are due monthly."])
vectors = embedded.embeddings
assert len(vectors) == 3 and len(vectors[0]) == 384, embedded
dot = lambda a, b: sum(x * y for x, y in zip(a, b))
assert abs(dot(vectors[0], vectors[0]) - 1.0) < 1e-3, "normalised"
assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]) + 0.2, "similar above unrelated"
assert embedded.prompt_eval_count > 10, embedded
# Ollama truncates over-long input by default; with truncate=False it is an error.
long_text = "word " * 700
assert len(client.embed(model="all-minilm", input=long_text).embeddings) == 1
try:
    client.embed(model="all-minilm", input=long_text, truncate=False)
    raise AssertionError("an over-long input was accepted with truncate=False")
except ollama.ResponseError as error:
    assert error.status_code == 400, error
legacy = client.embeddings(model="all-minilm", prompt="The pump is overheating.")
assert len(legacy.embedding) == 384, legacy

print("ollama client: ok")
