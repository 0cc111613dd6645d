"""The gateway through the eyes of the official openai SDK, in front of the simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import openai
import pytest

from lockgate.sim import SimServer, count_chat_prompt_tokens
from tests.support import RunningGateway, raw_request

MESSAGES = [{"role": "user", "content": "Say something naïve in 日本語 🚀"}]


ClientFactory = Callable[[str], openai.AsyncOpenAI]


@pytest.fixture
async def client() -> AsyncIterator[ClientFactory]:
    """SDK clients by base URL, closed at the end of the test."""
    clients: dict[str, openai.AsyncOpenAI] = {}

    def get(base_url: str) -> openai.AsyncOpenAI:
        if base_url not in clients:
            clients[base_url] = openai.AsyncOpenAI(
                base_url=base_url, api_key="unused", max_retries=0
            )
        return clients[base_url]

    yield get
    for c in clients.values():
        await c.close()


async def test_chat_non_stream_matches_the_engine_and_names_the_public_model(
    client: ClientFactory, gateway: RunningGateway, sim: SimServer
) -> None:
    via_gateway = await client(gateway.base_url).chat.completions.with_raw_response.create(
        model="sim-chat", messages=MESSAGES, max_tokens=12
    )
    direct = await client(sim.base_url).chat.completions.create(
        model="engine-model", messages=MESSAGES, max_tokens=12
    )
    answer = via_gateway.parse()
    assert answer.model == "sim-chat"
    assert answer.choices[0].message.content == direct.choices[0].message.content
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == count_chat_prompt_tokens(MESSAGES)
    assert answer.usage.completion_tokens == 12
    assert via_gateway.headers["x-lockgate-deployment"] == "sim-chat-d1"
    assert via_gateway.headers["x-lockgate-model"] == "sim-chat"
    assert "upstream;dur=" in via_gateway.headers["server-timing"]
    assert len(via_gateway.headers["x-request-id"]) >= 16
    assert gateway.totals.completion_tokens == 12


async def test_alias_reaches_the_same_model(client: ClientFactory, gateway: RunningGateway) -> None:
    answer = await client(gateway.base_url).chat.completions.create(
        model="chat-alias", messages=MESSAGES
    )
    assert answer.model == "sim-chat"


async def test_stream_without_include_usage_hides_the_usage_chunk_but_meters_it(
    client: ClientFactory, gateway: RunningGateway, sim: SimServer
) -> None:
    stream = await client(gateway.base_url).chat.completions.create(
        model="sim-chat", messages=MESSAGES, stream=True, max_tokens=10
    )
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks), "the usage-only chunk must not reach the client"
    assert all(c.usage is None for c in chunks)
    assert all(c.model == "sim-chat" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert gateway.totals.completion_tokens == 10
    assert gateway.totals.prompt_tokens == count_chat_prompt_tokens(MESSAGES)
    # The gateway asked the engine for usage on the client's behalf.
    forwarded = (await raw_request(sim.port, "GET", "/sim/requests")).body
    assert json.loads(forwarded)["requests"][-1]["body"]["stream_options"] == {
        "include_usage": True
    }


async def test_stream_with_include_usage_relays_the_usage_chunk(
    client: ClientFactory, gateway: RunningGateway
) -> None:
    stream = await client(gateway.base_url).chat.completions.create(
        model="sim-chat",
        messages=MESSAGES,
        stream=True,
        max_tokens=5,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert gateway.totals.completion_tokens == 5


async def test_usage_on_the_final_choice_chunk_is_metered(
    client: ClientFactory, gateway: RunningGateway
) -> None:
    stream = await client(gateway.base_url).chat.completions.create(
        model="sim-chat",
        messages=MESSAGES,
        stream=True,
        max_tokens=7,
        extra_headers={"x-sim-usage-in-final-choice": "1"},
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert gateway.totals.completion_tokens == 7


async def test_stream_content_is_byte_exact_with_multibyte_characters(
    client: ClientFactory, gateway: RunningGateway, sim: SimServer
) -> None:
    async def collect(base_url: str, model: str) -> str:
        stream = await client(base_url).chat.completions.create(
            model=model, messages=MESSAGES, stream=True, max_tokens=40
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    via_gateway = await collect(gateway.base_url, "sim-chat")
    direct = await collect(sim.base_url, "engine-model")
    assert via_gateway == direct
    assert any(ord(ch) > 127 for ch in via_gateway), "the test needs multi-byte content"


async def test_tool_call_deltas_arrive_intact(
    client: ClientFactory, gateway: RunningGateway, sim: SimServer
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]

    async def deltas(base_url: str, model: str) -> list[str]:
        stream = await client(base_url).chat.completions.create(
            model=model,
            messages=MESSAGES,
            tools=tools,
            stream=True,  # type: ignore[arg-type]
        )
        return [
            c.choices[0].delta.model_dump_json(exclude_none=True) async for c in stream if c.choices
        ]

    via_gateway = await deltas(gateway.base_url, "sim-chat")
    assert via_gateway == await deltas(sim.base_url, "engine-model")
    assert any("tool_calls" in d for d in via_gateway)


async def test_completions_both_ways(client: ClientFactory, gateway: RunningGateway) -> None:
    c = client(gateway.base_url)
    answer = await c.completions.create(model="sim-chat", prompt="Once upon a time", max_tokens=6)
    assert answer.model == "sim-chat"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 6
    stream = await c.completions.create(
        model="sim-chat", prompt="Once upon a time", max_tokens=6, stream=True
    )
    text = "".join([ch.choices[0].text async for ch in stream if ch.choices])
    assert text == answer.choices[0].text
    assert gateway.totals.completion_tokens == 12


async def test_embeddings(client: ClientFactory, gateway: RunningGateway) -> None:
    result = await client(gateway.base_url).embeddings.create(
        model="sim-chat", input=["alpha", "beta"]
    )
    assert [d.index for d in result.data] == [0, 1]
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0
    assert result.model == "sim-chat"


async def test_models_lists_names_and_aliases(
    client: ClientFactory, gateway: RunningGateway
) -> None:
    page = await client(gateway.base_url).models.list()
    assert sorted(m.id for m in page.data) == ["chat-alias", "sim-chat"]


async def test_client_request_id_is_echoed_and_forwarded(
    client: ClientFactory, gateway: RunningGateway, sim: SimServer
) -> None:
    response = await client(gateway.base_url).chat.completions.with_raw_response.create(
        model="sim-chat", messages=MESSAGES, extra_headers={"x-request-id": "req-abc.123"}
    )
    assert response.headers["x-request-id"] == "req-abc.123"
    forwarded = json.loads((await raw_request(sim.port, "GET", "/sim/requests")).body)["requests"]
    assert forwarded[-1]["headers"]["x-request-id"] == "req-abc.123"


@pytest.mark.parametrize("bad_id", ["has space", "x" * 200, "ü"])
async def test_unsafe_client_request_id_is_replaced(
    client: ClientFactory, gateway: RunningGateway, bad_id: str
) -> None:
    body = b'{"model":"nope","messages":[{"role":"user","content":"x"}]}'
    headers = {"x-request-id": bad_id.encode("utf-8").decode("latin-1")}
    response = await raw_request(gateway.port, "POST", "/v1/chat/completions", body, headers)
    assert response.headers["x-request-id"] != bad_id
    assert len(response.headers["x-request-id"]) == 24


async def test_200_concurrent_streams_do_not_cross_talk(
    client: ClientFactory, gateway: RunningGateway, sim: SimServer
) -> None:
    async def one(i: int) -> tuple[str, str]:
        messages = [{"role": "user", "content": f"stream number {i}"}]
        stream = await client(gateway.base_url).chat.completions.create(
            model="sim-chat", messages=messages, stream=True, max_tokens=24
        )
        got = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        expected = await client(sim.base_url).chat.completions.create(
            model="engine-model", messages=messages, max_tokens=24
        )
        return got, expected.choices[0].message.content or ""

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert all(got == expected for got, expected in results)
    assert len({got for got, _ in results}) > 150, "prompts should give distinct answers"
    assert gateway.totals.requests == 200
