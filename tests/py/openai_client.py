"""Drives `edgellm serve` with the official OpenAI Python client (run by tests/it/serve.rs).

Usage: python3 openai_client.py BASE_URL [API_KEY]
Exits non-zero with an assertion message when the server's answers do not fit the SDK.
"""
import json
import sys

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key=sys.argv[2] if len(sys.argv) > 2 else "unused", max_retries=0)

# Models
models = client.models.list()
assert len(models.data) == 1, models
model = models.data[0].id
assert model, models

# Chat
chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name one IoT protocol."}],
    max_tokens=12,
    temperature=0,
    seed=7,
)
assert chat.object == "chat.completion", chat
assert chat.choices[0].message.role == "assistant"
assert isinstance(chat.choices[0].message.content, str) and chat.choices[0].message.content
assert chat.choices[0].finish_reason in ("stop", "length")
assert chat.usage.prompt_tokens > 0 and 0 < chat.usage.completion_tokens <= 12
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

# Chat with logprobs
chat = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
)
content = chat.choices[0].logprobs.content
assert content and all(t.logprob <= 0 for t in content), content
assert all(len(t.top_logprobs) == 3 for t in content)
assert all(t.top_logprobs[0].token == t.token for t in content)

# Streaming chat
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Count: one, two,"}],
    max_tokens=10,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
assert "".join(pieces), "no streamed text"
assert finish in ("stop", "length"), finish
assert usage is not None and usage.completion_tokens > 0, usage

# Completions
completion = client.completions.create(model=model, prompt="The MQTT protocol is", max_tokens=8, temperature=0)
assert completion.object == "text_completion"
assert completion.choices[0].text
assert completion.usage.completion_tokens > 0

# Streaming completions
text = "".join(c.choices[0].text for c in client.completions.create(
    model=model, prompt="Modbus is", max_tokens=6, temperature=0, stream=True) if c.choices)
assert text, "no streamed completion"

# Structured output: json_schema responses always parse and match the schema
schema = {
    "type": "object",
    "properties": {
        "severity": {"type": "string", "enum": ["low", "medium", "high"]},
        "component": {"type": "string", "maxLength": 20},
        "restart": {"type": "boolean"},
    },
    "required": ["severity", "component", "restart"],
    "additionalProperties": False,
}
for i in range(3):
    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"Classify this log line: ERROR pump-{i} pressure sensor timeout"}],
        max_tokens=60,
        temperature=0.7,
        seed=i,
        response_format={"type": "json_schema", "json_schema": {"name": "triage", "schema": schema, "strict": True}},
    )
    assert chat.choices[0].finish_reason == "stop", chat
    data = json.loads(chat.choices[0].message.content)
    assert set(data) == {"severity", "component", "restart"}, data
    assert data["severity"] in ("low", "medium", "high") and isinstance(data["restart"], bool), data

# json_object
chat = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Give a JSON object describing a sensor."}],
    max_tokens=60, temperature=0, response_format={"type": "json_object"},
)
if chat.choices[0].finish_reason == "stop":
    assert isinstance(json.loads(chat.choices[0].message.content), dict)

# Tool calling: a required call parses and names the tool; streamed, the SDK reassembles it
weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}
chat = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Weather in Oslo?"}], max_tokens=60, temperature=0,
    tools=[weather], tool_choice="required", parallel_tool_calls=False,
)
assert chat.choices[0].finish_reason == "tool_calls", chat
call = chat.choices[0].message.tool_calls[0]
assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_"), call
assert isinstance(json.loads(call.function.arguments)["city"], str), call
streamed = {}
for chunk in client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Weather in Oslo?"}], max_tokens=60, temperature=0,
    tools=[weather], tool_choice="required", parallel_tool_calls=False, stream=True,
):
    for choice in chunk.choices:
        for fragment in choice.delta.tool_calls or []:
            entry = streamed.setdefault(fragment.index, {"name": "", "arguments": ""})
            entry["name"] += fragment.function.name or ""
            entry["arguments"] += fragment.function.arguments or ""
assert streamed[0]["name"] == "get_weather" and json.loads(streamed[0]["arguments"]), streamed

# Responses API
response = client.responses.create(model=model, input="Name a fieldbus.", instructions="Be brief.", max_output_tokens=10, temperature=0)
assert response.status in ("completed", "incomplete"), response
assert response.output_text, response
assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0

deltas, completed = [], None
for event in client.responses.create(model=model, input=[{"role": "user", "content": "Name a sensor."}], max_output_tokens=8, stream=True):
    if event.type == "response.output_text.delta":
        deltas.append(event.delta)
    if event.type in ("response.completed", "response.incomplete"):
        completed = event.response
assert deltas and completed is not None and completed.output_text == "".join(deltas), (deltas, completed)

# Errors surface as the SDK's typed exceptions
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], temperature=9)
    raise AssertionError("temperature 9 accepted")
except openai.BadRequestError as error:
    assert error.body["param"] == "temperature", error.body

# Embeddings: float and base64 (asked for explicitly, the SDK hands the string over), one and
# many inputs.
single = client.embeddings.create(model="all-minilm", input="The pump is overheating.")
assert len(single.data) == 1 and len(single.data[0].embedding) == 384, single
assert single.usage.prompt_tokens > 2, single.usage
many = client.embeddings.create(model="all-minilm", input=["The pump is overheating.", "Invoices are due monthly."],
                                encoding_format="base64")
assert [d.index for d in many.data] == [0, 1], many
import base64, struct
decoded = struct.unpack("<384f", base64.b64decode(many.data[0].embedding))
assert abs(sum(a * b for a, b in zip(single.data[0].embedding, decoded)) - 1.0) < 1e-3
try:
    client.embeddings.create(model="all-minilm", input="x", dimensions=64)
    raise AssertionError("dimensions 64 accepted for a model that cannot truncate")
except openai.BadRequestError as error:
    assert error.body["param"] == "dimensions", error.body

print("openai client: ok")
