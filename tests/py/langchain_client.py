"""Drives edgellm's OpenAI API through LangChain (PyPI `langchain-openai`): `ChatOpenAI` whole and
streamed, bound tools, structured output by JSON schema, and `OpenAIEmbeddings`. Exits non-zero on
the first failure."""
import json
import sys
import urllib.request

from langchain_openai import ChatOpenAI, OpenAIEmbeddings

base = sys.argv[1]  # http://127.0.0.1:PORT/v1
with urllib.request.urlopen(base + "/models") as listing:
    model = json.load(listing)["data"][0]["id"]

llm = ChatOpenAI(base_url=base, api_key="unused", model=model, temperature=0, max_tokens=8)
answer = llm.invoke("Say hello.")
assert answer.content, answer
assert answer.usage_metadata["output_tokens"] <= 8, answer

streamed = "".join(chunk.content for chunk in llm.stream("Count to five."))
assert streamed, streamed

weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}
tooled = ChatOpenAI(base_url=base, api_key="unused", model=model, temperature=0, max_tokens=60)
called = tooled.bind_tools([weather], tool_choice="get_weather", parallel_tool_calls=False).invoke("Weather in Oslo?")
assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather", called
assert isinstance(called.tool_calls[0]["args"]["city"], str), called

schema = {"title": "triage", "description": "A triage of an alarm", "type": "object",
          "properties": {"severity": {"type": "string", "enum": ["low", "high"]}, "restart": {"type": "boolean"}},
          "required": ["severity", "restart"], "additionalProperties": False}
structured = tooled.with_structured_output(schema, method="json_schema", strict=True)
record = structured.invoke("Pump 3 is overheating. Triage it.")
assert record["severity"] in ("low", "high") and isinstance(record["restart"], bool), record

# check_embedding_ctx_length=False: send text, not tiktoken ids (which are OpenAI's vocabulary,
# not the embedding model's; tiktoken would also download its tables).
embeddings = OpenAIEmbeddings(base_url=base, api_key="unused", model="all-minilm",
                              check_embedding_ctx_length=False)
one = embeddings.embed_query("The pump is overheating.")
two = embeddings.embed_documents(["The pump is overheating.", "Invoices are due."])
assert len(one) == 384 and len(two) == 2, (len(one), len(two))
assert abs(sum(a * b for a, b in zip(one, two[0])) - 1.0) < 1e-3
print("langchain: ok")
