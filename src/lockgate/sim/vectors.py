"""Embeddings and rerank scores: deterministic, cheap, and good enough to assert on.

An embedding is a unit vector drawn from a hash of the input, so equal inputs
give equal vectors and different inputs are nearly orthogonal. A rerank score
is mostly word overlap with the query (so a test can predict the order) plus
a small hash-derived jitter that breaks ties deterministically.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

import orjson

from lockgate.sim.responses import ApiError
from lockgate.sim.tokens import text_tokens


def embedding(data: bytes, dimensions: int, seed: int) -> list[float]:
    raw = hashlib.shake_256(seed.to_bytes(8, "little", signed=True) + data).digest(2 * dimensions)
    values = struct.unpack(f"<{dimensions}h", raw)
    norm = math.hypot(*values) or 1.0
    return [v / norm for v in values]


def embedding_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embedding_inputs(body: dict[str, Any]) -> list[tuple[int, bytes]]:
    """(token count, bytes to hash) for each accepted ``input`` form."""
    value = body.get("input")
    if isinstance(value, str):
        return [(len(text_tokens(value)), value.encode())]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return [(len(text_tokens(v)), v.encode()) for v in value]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [(len(value), orjson.dumps(value))]
        if all(isinstance(v, list) and v for v in value):
            return [(len(v), orjson.dumps(v)) for v in value]
    raise ApiError(400, "'input' must be a string or an array of strings or tokens", param="input")


def embeddings_body(
    body: dict[str, Any], model: str, default_dimensions: int, seed: int
) -> tuple[bytes, int]:
    """The response body and its prompt token count."""
    inputs = embedding_inputs(body)
    dims = body.get("dimensions")
    if dims is None:
        dims = default_dimensions
    elif not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 16_384:
        raise ApiError(400, "'dimensions' must be an integer within 1..16384", param="dimensions")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64", None):
        raise ApiError(
            400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
        )
    data = []
    tokens = 0
    for i, (count, raw) in enumerate(inputs):
        vector = embedding(raw, dims, seed)
        tokens += count
        data.append(
            {
                "object": "embedding",
                "index": i,
                "embedding": embedding_base64(vector) if fmt == "base64" else vector,
            }
        )
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    out = orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})
    return out, tokens


def relevance(query_words: set[str], document: str, query: str) -> float:
    words = {w.lower() for w in text_tokens(document)}
    overlap = len(query_words & words) / len(query_words) if query_words else 0.0
    jitter = hashlib.blake2b((query + "\x00" + document).encode(), digest_size=2).digest()
    return round(0.9 * overlap + 0.1 * int.from_bytes(jitter, "little") / 65536, 6)


def rerank_body(body: dict[str, Any], model: str, rerank_id: str) -> tuple[bytes, int]:
    query = body.get("query")
    documents = body.get("documents")
    if not isinstance(query, str):
        raise ApiError(400, "'query' must be a string", param="query")
    if not isinstance(documents, list) or not documents:
        raise ApiError(400, "'documents' must be a non-empty array", param="documents")
    texts: list[str] = []
    for doc in documents:
        text = doc.get("text") if isinstance(doc, dict) else doc
        if not isinstance(text, str):
            raise ApiError(400, "each document must be a string or {text}", param="documents")
        texts.append(text)
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise ApiError(400, "'top_n' must be a positive integer", param="top_n")
    query_tokens = text_tokens(query)
    query_words = {w.lower() for w in query_tokens}
    ranked = sorted(
        ((relevance(query_words, t, query), i) for i, t in enumerate(texts)),
        key=lambda pair: (-pair[0], pair[1]),
    )
    results = [
        {"index": i, "document": {"text": texts[i]}, "relevance_score": score}
        for score, i in ranked[:top_n]
    ]
    tokens = sum(len(query_tokens) + len(text_tokens(t)) for t in texts)
    out = orjson.dumps(
        {"id": rerank_id, "model": model, "usage": {"total_tokens": tokens}, "results": results}
    )
    return out, tokens
