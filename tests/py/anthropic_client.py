"""Drives edgellm's Anthropic Messages API with the official `anthropic` Python client (PyPI):
messages whole and streamed, a system prompt, stop sequences, token counting, a forced tool
call and the turn that answers it, and errors as the SDK's exceptions. Run by tests/it/serve.rs.

Usage: python3 anthropic_client.py BASE_URL
Exits non-zero with an assertion message on the first answer that does not fit the SDK.
"""
import json
import sys

import anthropic

client = anthropic.Anthropic(base_url=sys.argv[1], api_key="unused", max_retries=0)
model = "edgellm"

# A whole answer.
message = client.messages.create(
    model=model, max_tokens=12, extra_body={"temperature": 0},
    system="You are terse.",
    messages=[{"role": "user", "content": "Name one IoT protocol."}],
)
assert message.type == "message" and message.role == "assistant", message
assert message.content and message.content[0].type == "text" and message.content[0].text, message
assert message.stop_reason in ("end_turn", "max_tokens"), message
assert 1 <= message.usage.output_tokens <= 12, message.usage
assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > 5, message.usage

# The token count agrees with what the answer reports it read.
counted = client.messages.count_tokens(
    model=model, system="You are terse.",
    messages=[{"role": "user", "content": "Name one IoT protocol."}],
)
read = message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
assert counted.input_tokens == read, (counted, message.usage)

# Streamed: the SDK's event accumulator rebuilds the same kind of message.
with client.messages.stream(
    model=model, max_tokens=16, extra_body={"temperature": 0},
    messages=[{"role": "user", "content": "Count from one to ten."}],
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text and final.content[0].text == text, (text, final)
assert final.stop_reason in ("end_turn", "max_tokens"), final
assert final.usage.output_tokens >= 1, final.usage

# A stop sequence ends the answer and is named.
stopped = client.messages.create(
    model=model, max_tokens=64, extra_body={"temperature": 0}, stop_sequences=[" "],
    messages=[{"role": "user", "content": "Write a long sentence about pumps."}],
)
if stopped.stop_reason == "stop_sequence":
    assert stopped.stop_sequence == " ", stopped
    assert " " not in stopped.content[0].text, stopped
else:
    assert stopped.stop_reason in ("end_turn", "max_tokens"), stopped

# A forced tool call (`tool_choice` any): a tool_use block whose input fits the schema.
tools = [{
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"], "additionalProperties": False},
}]
called = client.messages.create(
    model=model, max_tokens=60, extra_body={"temperature": 0}, tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True},
    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
)
assert called.stop_reason == "tool_use", called
use = next(block for block in called.content if block.type == "tool_use")
assert use.name == "get_weather" and isinstance(use.input.get("city"), str), use

# The same call streamed: a tool_use block built from input_json_delta events.
with client.messages.stream(
    model=model, max_tokens=60, extra_body={"temperature": 0}, tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True},
    messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
) as stream:
    streamed = stream.get_final_message()
streamed_use = next(block for block in streamed.content if block.type == "tool_use")
assert streamed_use.name == "get_weather" and "city" in streamed_use.input, streamed
assert streamed.stop_reason == "tool_use", streamed

# The turn that answers the call.
answered = client.messages.create(
    model=model, max_tokens=12, extra_body={"temperature": 0}, tools=tools,
    messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 25 C"}]},
    ],
)
assert answered.content, answered

# Structured output (`output_config.format`): the text is JSON that fits the schema.
schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
          "additionalProperties": False}
shaped = client.messages.create(
    model=model, max_tokens=40, extra_body={"temperature": 0},
    output_config={"format": {"type": "json_schema", "schema": schema}},
    messages=[{"role": "user", "content": "Is the pump running? Answer in JSON."}],
)
assert shaped.stop_reason == "end_turn", shaped
parsed = json.loads(shaped.content[0].text)
assert set(parsed) == {"ok"} and isinstance(parsed["ok"], bool), parsed

# Errors are the SDK's exceptions, in Anthropic's shape.
try:
    client.messages.create(model=model, max_tokens=8, messages=[{"role": "system", "content": "x"}])
    raise AssertionError("a system-role message was accepted")
except anthropic.BadRequestError as error:
    assert error.status_code == 400, error
    assert error.body["type"] == "error" and error.body["error"]["type"] == "invalid_request_error", error.body
try:
    client.messages.create(model=model, max_tokens=8, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])
    raise AssertionError("an image was accepted")
except anthropic.BadRequestError as error:
    assert "image input is not supported" in error.body["error"]["message"], error.body

print("anthropic client: ok")
