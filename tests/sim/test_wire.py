"""Exact bytes and shapes on the wire, seen through a raw HTTP client."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
from openai.types import Completion, CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from lockgate.sim import SimServer, count_chat_prompt_tokens

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Say something about prefix caches."}]


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES, **extra}


async def test_stream_include_usage_bytes(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, chat(stream=True, stream_options={"include_usage": True}))
    assert r.status == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.chunked
    assert r.complete
    assert r.body.endswith(b"\n\ndata: [DONE]\n\n")
    events = r.events
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    # role chunk + 16 token chunks + usage chunk
    assert len(chunks) == 18
    assert all("usage" in c for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert list(chunks[0]) == ["id", "object", "created", "model", "choices", "usage"]
    assert chunks[0]["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    final = chunks[-1]
    assert final["choices"] == []
    prompt = count_chat_prompt_tokens(MESSAGES)
    assert final["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 16,
        "total_tokens": prompt + 16,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


async def test_stream_without_include_usage_has_no_usage_key(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, chat(stream=True))
    assert r.events[-1] == b"[DONE]"
    assert all("usage" not in c for c in r.chunks)
    assert len(r.chunks) == 17


async def test_config_usage_in_final_choice(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, tokens_per_s=0, usage_in_final_choice=True)
    r = await raw.post(sim, CHAT, chat(stream=True, stream_options={"include_usage": True}))
    chunks = r.chunks
    assert len(chunks) == 17
    assert all(c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 16
    assert all(c["usage"] is None for c in chunks[:-1])
    # Such engines report usage even when it was not asked for.
    r = await raw.post(sim, CHAT, chat(stream=True))
    assert r.chunks[-1]["usage"]["completion_tokens"] == 16
    assert all("usage" not in c for c in r.chunks[:-1])


async def test_multibyte_text_is_raw_utf8_on_the_wire(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, chat(stream=True), {"x-sim-output-tokens": "300"})
    assert b"\\u" not in r.body
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in r.chunks)
    assert len(text.encode()) > len(text)


async def test_non_stream_shape(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, chat(), {"Authorization": "Bearer whatever"})
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["id", "object", "created", "model", "choices", "usage"]
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert set(choice) == {"index", "message", "logprobs", "finish_reason"}
    assert choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant"


async def test_same_request_same_content_across_servers(make_sim: Any, raw: Any) -> None:
    one = await make_sim(ttft_ms=0, tokens_per_s=0)
    two = await make_sim(ttft_ms=0, tokens_per_s=0)
    other_seed = await make_sim(ttft_ms=0, tokens_per_s=0, seed=7)

    async def content(sim: SimServer, **extra: Any) -> str:
        r = await raw.post(sim, CHAT, chat(**extra))
        return str(r.json()["choices"][0]["message"]["content"])

    first = await content(one)
    assert first == await content(one) == await content(two)
    assert first != await content(other_seed)
    assert first != await content(one, seed=1)
    assert await content(one, seed=1) == await content(two, seed=1)


async def test_error_shapes(sim: SimServer, raw: Any) -> None:
    def check(r: Any, status: int, param: str | None = None) -> dict[str, Any]:
        assert r.status == status, r.data
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == param
        return dict(error)

    r = await raw.request(sim, "POST", CHAT, None)
    check(r, 400)
    check(await raw.post(sim, CHAT, {"model": "m"}), 400, "messages")
    check(await raw.post(sim, CHAT, chat(max_tokens=0)), 400, "max_tokens")
    check(await raw.post(sim, CHAT, chat(), {"x-sim-fault": "explode"}), 400)
    check(await raw.post(sim, "/v1/completions", {"prompt": 5}), 400, "prompt")
    check(await raw.post(sim, "/v1/embeddings", {"input": 5}), 400, "input")
    check(await raw.get(sim, "/v1/nothing"), 404)
    r = await raw.get(sim, CHAT)
    check(r, 405)
    assert r.headers["allow"] == "POST"
    stats = (await raw.get(sim, "/sim/stats")).json()
    assert stats["rejected"] == {"invalid_request": 6}
    assert stats["requests_total"] == 6


async def test_api_key(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, tokens_per_s=0, api_key="sekrit")
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "sekrit"}):
        r = await raw.post(sim, CHAT, chat(), headers)
        assert r.status == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
    assert (await raw.get(sim, "/v1/models")).status == 401
    assert (await raw.get(sim, "/health")).status == 200
    r = await raw.post(sim, CHAT, chat(), {"authorization": "Bearer sekrit"})
    assert r.status == 200
    assert sim.engine.rejected == {"unauthorized": 3}


async def test_restricted_models(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, tokens_per_s=0, models=["a", "b"], restrict_models=True)
    models = (await raw.get(sim, "/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["a", "b"]
    r = await raw.post(sim, CHAT, {"model": "c", "messages": MESSAGES})
    assert r.status == 404
    assert r.json()["error"]["code"] == "model_not_found"
    r = await raw.post(sim, CHAT, {"model": "b", "messages": MESSAGES})
    assert r.json()["model"] == "b"


async def test_max_model_len(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, tokens_per_s=0, max_model_len=20)
    r = await raw.post(sim, CHAT, chat(max_tokens=50))
    assert r.status == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    r = await raw.post(sim, CHAT, chat(), {"x-sim-output-tokens": "100"})
    prompt = count_chat_prompt_tokens(MESSAGES)
    assert r.json()["usage"]["completion_tokens"] == 20 - prompt


async def test_recorded_requests_and_reset(sim: SimServer, raw: Any) -> None:
    await raw.post(sim, CHAT, chat(user="u1"), {"X-Tenant": "Acme"})
    await raw.get(sim, "/health")
    await raw.get(sim, "/sim/stats")  # control endpoints are not recorded
    recorded = (await raw.get(sim, "/sim/requests")).json()["requests"]
    assert [(r["method"], r["path"]) for r in recorded] == [("POST", CHAT), ("GET", "/health")]
    first = recorded[0]
    assert first["headers"]["x-tenant"] == "Acme"
    assert first["body"] == chat(user="u1")
    reset = await raw.request(sim, "POST", "/sim/reset")
    assert reset.json()["requests_total"] == 0
    stats = (await raw.get(sim, "/sim/stats")).json()
    assert stats["completed"] == 0
    assert stats["completion_tokens_total"] == 0
    assert (await raw.get(sim, "/sim/requests")).json()["requests"] == []


async def test_recorded_requests_keep_the_last_n(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, tokens_per_s=0, recent_requests=3)
    for i in range(5):
        await raw.post(sim, "/v1/embeddings", {"input": f"text {i}"})
    recorded = (await raw.get(sim, "/sim/requests")).json()["requests"]
    assert [r["body"]["input"] for r in recorded] == ["text 2", "text 3", "text 4"]


async def test_metrics_use_vllm_names(sim: SimServer, raw: Any) -> None:
    await raw.post(sim, CHAT, chat())
    await raw.post(sim, CHAT, chat(max_tokens=2))
    r = await raw.get(sim, "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.body.decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    label = '{model_name="lockgate-sim"}'
    prompt = count_chat_prompt_tokens(MESSAGES)
    assert samples["vllm:num_requests_running" + label] == 0
    assert samples["vllm:num_requests_waiting" + label] == 0
    assert samples["vllm:kv_cache_usage_perc" + label] == 0
    assert samples["vllm:prompt_tokens_total" + label] == 2 * prompt
    assert samples["vllm:generation_tokens_total" + label] == 18
    assert samples["vllm:prefix_cache_queries_total" + label] == 2 * prompt
    assert samples["vllm:prefix_cache_hits_total" + label] >= 0
    assert (
        samples['vllm:request_success_total{model_name="lockgate-sim",finished_reason="stop"}'] == 1
    )
    assert (
        samples['vllm:request_success_total{model_name="lockgate-sim",finished_reason="length"}']
        == 1
    )
    assert "# TYPE vllm:prompt_tokens counter" in text
    assert "# TYPE vllm:kv_cache_usage_perc gauge" in text


async def test_health(sim: SimServer, raw: Any) -> None:
    r = await raw.get(sim, "/health")
    assert (r.status, r.body) == (200, b"")


async def test_rerank_orders_by_word_overlap(sim: SimServer, raw: Any) -> None:
    body = {
        "model": "rr",
        "query": "fast prefix cache",
        "documents": ["a slow disk", "the prefix cache is fast", {"text": "cache"}],
    }
    r = await raw.post(sim, "/v1/rerank", body)
    out = r.json()
    assert out["model"] == "rr"
    assert [x["index"] for x in out["results"]] == [1, 2, 0]
    assert out["results"][0]["document"] == {"text": "the prefix cache is fast"}
    assert all(0 <= x["relevance_score"] <= 1 for x in out["results"])
    assert out["usage"]["total_tokens"] == 3 * 3 + 3 + 5 + 1
    top = (await raw.post(sim, "/rerank", {**body, "top_n": 1})).json()
    assert top["results"] == out["results"][:1]


async def test_counters_add_up(sim: SimServer, raw: Any) -> None:
    await raw.post(sim, CHAT, chat())
    await raw.post(sim, CHAT, chat(), {"x-sim-fault": "error-500"})
    await raw.post(sim, CHAT, {"model": "m"})
    await raw.post(sim, "/v1/embeddings", {"input": "x"})
    s = (await raw.get(sim, "/sim/stats")).json()
    assert s["requests_total"] == 4
    assert (
        s["completed"] + s["cancelled"] + sum(s["failed"].values()) + sum(s["rejected"].values())
        == 4
    )
    assert s["failed"] == {"error-500": 1}


def assert_openai_shape(model_type: Any, data: Any) -> None:
    """Validate with the SDK's own models and refuse any field they do not know."""
    parsed = model_type.model_validate(data)

    def walk(value: Any, path: str) -> None:
        if isinstance(value, pydantic.BaseModel):
            extra = value.model_extra or {}
            assert not extra, f"unknown fields at {path}: {sorted(extra)}"
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{path}.{name}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")

    walk(parsed, model_type.__name__)


async def test_bodies_match_the_openai_sdk_models(sim: SimServer, raw: Any) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert_openai_shape(ChatCompletion, (await raw.post(sim, CHAT, chat())).json())
    assert_openai_shape(ChatCompletion, (await raw.post(sim, CHAT, chat(tools=tools))).json())
    for payload in (
        chat(stream=True, stream_options={"include_usage": True}),
        chat(stream=True, tools=tools),
        chat(stream=True, n=2),
    ):
        r = await raw.post(sim, CHAT, payload)
        for chunk in r.chunks:
            assert_openai_shape(ChatCompletionChunk, chunk)
    assert_openai_shape(
        Completion, (await raw.post(sim, "/v1/completions", {"prompt": ["a", "b"]})).json()
    )
    r = await raw.post(sim, "/v1/completions", {"prompt": "a", "stream": True})
    # The SDK types the final shape: finish_reason is null in all but the last chunk.
    assert_openai_shape(Completion, r.chunks[-1])
    assert all(c.keys() == r.chunks[-1].keys() for c in r.chunks)
    r = await raw.post(sim, "/v1/embeddings", {"input": ["a", "b"]})
    assert_openai_shape(CreateEmbeddingResponse, r.json())
    for model in (await raw.get(sim, "/v1/models")).json()["data"]:
        assert_openai_shape(Model, model)


async def test_repeated_request_reports_cached_tokens(sim: SimServer, raw: Any) -> None:
    messages = [{"role": "user", "content": " ".join(["token"] * 43)}]  # 49 prompt tokens
    payload = {"model": "m", "messages": messages}
    first = (await raw.post(sim, CHAT, payload)).json()
    second = (await raw.post(sim, CHAT, payload)).json()
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert second["usage"]["prompt_tokens_details"] == {"cached_tokens": 48}
    assert second["usage"]["prompt_tokens"] == 49
    assert second["choices"] == first["choices"]
    assert sim.engine.prefix_cache_hits == 48
