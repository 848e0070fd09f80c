"""An independent check of `edgellm model import` and the embedding engine.

Computes all-MiniLM-L6-v2 sentence embeddings from the original Hugging Face files with a
plain NumPy BERT forward pass (float32; Hugging Face's own `tokenizers` for the WordPiece
tokens, mean pooling, L2 normalisation: what sentence-transformers does for this model) and
compares them with what a running edgellm answers on /v1/embeddings through the official
OpenAI client, for the same texts.

Usage: embedding_reference.py BASE_URL MODEL_DIR
Prints one JSON line: {"texts": n, "min_cosine": c, "token_mismatches": k, "edgellm_tokens": t}
and exits 1 when the embeddings disagree (cosine < 0.999) or the token counts differ.
"""

import json
import struct
import sys

import numpy as np
import openai
from tokenizers import Tokenizer

TEXTS = [
    "The compressor on line 3 tripped twice this morning.",
    "How do I reset the gateway to factory settings?",
    "Ein kurzer deutscher Satz über Temperatursensoren.",
    "naïve café résumé — accents and dashes",
    "MQTT QoS 1 guarantees at-least-once delivery.",
    "",
    "Numbers: 3.14159, 42, -7 and 1e-12; symbols: #$%&*!",
    "a " * 300,
]


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F32":
            continue
        start, end = meta["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtype=np.float32).reshape(meta["shape"])
    return out


def layer_norm(x, w, b, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    from math import sqrt

    erf = np.vectorize(__import__("math").erf)
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)))


def embed(weights, config, ids):
    t = lambda n: weights[n]
    h = t("embeddings.word_embeddings.weight")[ids]
    h = h + t("embeddings.position_embeddings.weight")[: len(ids)]
    h = h + t("embeddings.token_type_embeddings.weight")[0]
    h = layer_norm(h, t("embeddings.LayerNorm.weight"), t("embeddings.LayerNorm.bias"))
    heads = config["num_attention_heads"]
    d = config["hidden_size"] // heads
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda x, n: x @ t(p + n + ".weight").T + t(p + n + ".bias")
        q = lin(h, "attention.self.query").reshape(len(ids), heads, d).transpose(1, 0, 2)
        k = lin(h, "attention.self.key").reshape(len(ids), heads, d).transpose(1, 0, 2)
        v = lin(h, "attention.self.value").reshape(len(ids), heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(len(ids), heads * d)
        h = layer_norm(
            lin(a, "attention.output.dense") + h,
            t(p + "attention.output.LayerNorm.weight"),
            t(p + "attention.output.LayerNorm.bias"),
        )
        f = lin(gelu(lin(h, "intermediate.dense")), "output.dense")
        h = layer_norm(f + h, t(p + "output.LayerNorm.weight"), t(p + "output.LayerNorm.bias"))
    pooled = h.mean(0)
    return pooled / np.linalg.norm(pooled)


def main():
    base_url, model_dir = sys.argv[1], sys.argv[2]
    config = json.load(open(f"{model_dir}/config.json"))
    weights = load_safetensors(f"{model_dir}/model.safetensors")
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    answer = client.embeddings.create(model="all-minilm-l6-v2", input=TEXTS)
    got = [np.array(d.embedding, dtype=np.float64) for d in answer.data]
    cosines, mismatches, ref_tokens = [], 0, 0
    for text, vector in zip(TEXTS, got):
        ids = tokenizer.encode(text).ids
        ref_tokens += len(ids)
        ref = embed(weights, config, np.array(ids))
        cosines.append(float(ref @ vector / np.linalg.norm(vector)))
    if ref_tokens != answer.usage.prompt_tokens:
        mismatches = abs(ref_tokens - answer.usage.prompt_tokens)
    result = {
        "texts": len(TEXTS),
        "min_cosine": min(cosines),
        "cosines": cosines,
        "token_mismatches": mismatches,
        "reference_tokens": ref_tokens,
        "edgellm_tokens": answer.usage.prompt_tokens,
    }
    print(json.dumps(result))
    sys.exit(0 if min(cosines) >= 0.999 and mismatches == 0 else 1)


if __name__ == "__main__":
    main()
