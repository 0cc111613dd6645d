"""Happy paths through the official OpenAI SDK: if it parses, real clients will too."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import AsyncIterator

import openai
import pytest
import pytest_asyncio

from lockgate.sim import SimServer, count_chat_prompt_tokens, count_text_tokens

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about naïve caches, please!"},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "hourly": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}


@pytest_asyncio.fixture
async def client(sim: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        yield c


async def test_chat_non_stream(client: openai.AsyncOpenAI, sim: SimServer) -> None:
    r = await client.chat.completions.create(model="any-name", messages=MESSAGES)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == "any-name"
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.logprobs is None
    assert choice.message.role == "assistant"
    content = choice.message.content
    assert content is not None
    assert r.usage is not None
    assert r.usage.prompt_tokens == count_chat_prompt_tokens(MESSAGES)
    assert r.usage.completion_tokens == 16 == count_text_tokens(content)
    assert r.usage.total_tokens == r.usage.prompt_tokens + 16
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert sim.engine.completed == 1


async def test_chat_stream_matches_non_stream(client: openai.AsyncOpenAI) -> None:
    whole = await client.chat.completions.create(model="m", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)


async def test_chat_stream_include_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=5,
    )
    chunks = [c async for c in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 5
    assert last.usage.prompt_tokens == count_chat_prompt_tokens(MESSAGES)
    assert chunks[-2].choices[0].finish_reason == "length"


async def test_chat_stream_usage_in_final_choice(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-sim-usage-in-final-choice": "1"},
    )
    chunks = [c async for c in stream]
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.completion_tokens == 16
    assert all(c.usage is None for c in chunks[:-1])


async def test_chat_max_tokens_and_max_completion_tokens(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert r.usage.completion_tokens == 3
    r = await client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        max_completion_tokens=100,
        extra_headers={"x-sim-output-tokens": "7"},
    )
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.completion_tokens == 7


async def test_chat_n_choices(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(model="m", messages=MESSAGES, n=3, max_tokens=4)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3
    assert r.usage is not None
    assert r.usage.completion_tokens == 12


async def test_tool_call_non_stream(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None
    assert len(calls) == 1
    call = calls[0]
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "unit", "days", "hourly"}
    assert isinstance(args["city"], str)
    assert args["unit"] in ("celsius", "fahrenheit")
    assert isinstance(args["days"], int)
    assert isinstance(args["hourly"], bool)
    assert r.usage is not None
    assert r.usage.completion_tokens == count_text_tokens(call.function.arguments)


async def test_tool_call_stream_splits_arguments(client: openai.AsyncOpenAI) -> None:
    kwargs = {"model": "m", "messages": [{"role": "user", "content": "Weather?"}]}
    whole = await client.chat.completions.create(**kwargs, tools=[WEATHER_TOOL])
    stream = await client.chat.completions.create(**kwargs, tools=[WEATHER_TOOL], stream=True)
    chunks = [c async for c in stream]
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.tool_calls is not None
    assert first.tool_calls[0].id == whole.choices[0].message.tool_calls[0].id
    assert first.tool_calls[0].function.name == "get_weather"
    pieces = [c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:]]
    assert len(pieces) > 3
    assert all(c.choices[0].delta.tool_calls[0].id is None for c in chunks[1:])
    assert "".join(pieces) == whole.choices[0].message.tool_calls[0].function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_tool_choice_none_answers_with_text(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.tool_calls is None


async def test_completions_string_and_list(client: openai.AsyncOpenAI) -> None:
    r = await client.completions.create(model="m", prompt="Once upon a time,", max_tokens=4)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    assert r.choices[0].finish_reason == "length"
    assert count_text_tokens(r.choices[0].text) == 4
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, 4)
    r = await client.completions.create(model="m", prompt=["a b", "c d e"])
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, 32)


async def test_completions_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.completions.create(
        model="m", prompt="hello", stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert count_text_tokens(text) == 16
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16


async def test_embeddings_float_and_base64(client: openai.AsyncOpenAI) -> None:
    r = await client.embeddings.create(model="emb", input=["hello world", "other", "hello world"])
    assert r.model == "emb"
    vectors = [d.embedding for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2]
    assert len(vectors[0]) == 256
    # The SDK asks for base64 (float32) behind the scenes.
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0, rel_tol=1e-6)
    assert vectors[0] == vectors[2]
    assert abs(sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))) < 0.3
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (5, 5)
    r64 = await client.embeddings.create(
        model="emb", input="hello world", encoding_format="base64", dimensions=8
    )
    raw = r64.data[0].embedding
    assert isinstance(raw, str)
    decoded = struct.unpack("<8f", base64.b64decode(raw))
    r8 = await client.embeddings.create(model="emb", input="hello world", dimensions=8)
    assert decoded == pytest.approx(r8.data[0].embedding, rel=1e-6)


async def test_models_list(client: openai.AsyncOpenAI) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data] == ["lockgate-sim"]
    assert page.data[0].object == "model"
