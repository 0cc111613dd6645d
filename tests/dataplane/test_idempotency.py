"""``Idempotency-Key`` on /v1: a retried request is answered once and billed once.

End to end over HTTP with the in-process store and with the Redis one (keys under a
prefix of the test's own, deleted afterwards), plus the store's tenant scoping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
import pytest
from redis.asyncio import Redis

from lockgate.config import resolve
from lockgate.dataplane.context import Principal, RequestContext
from lockgate.dataplane.idempotency import (
    IdempotencyKeyReused,
    IdempotencyStore,
    LocalBackend,
    StoredAnswer,
)
from lockgate.dataplane.idempotency_redis import RedisBackend
from lockgate.dataplane.pipeline.forward import Forwarder
from lockgate.dataplane.pipeline.settle import UsageTotals
from lockgate.http.server import HttpRequest
from lockgate.operations import Operation
from lockgate.routing.spec import IdempotencySpec
from lockgate.serve import Gateway
from lockgate.sim import SimConfig, SimServer
from tests.support import RawResponse, gateway_spec, raw_request, sim_model

REDIS_URL = os.environ.get("LOCKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SPEC = IdempotencySpec(wait_s=5)


@asynccontextmanager
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"lockgate-test:idem:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@asynccontextmanager
async def gateway(sim: SimServer, backend: str) -> AsyncIterator[tuple[Gateway, UsageTotals]]:
    model = sim_model("chat", sim.base_url)
    model["routing"] = {"retries": {"max_attempts": 1}}
    totals = UsageTotals()
    gw = Gateway(resolve(gateway_spec([model])), settler=totals)
    store = None
    async with redis_prefix() as prefix:
        if backend == "redis":
            store = IdempotencyStore(RedisBackend(REDIS_URL, prefix, SPEC), SPEC)
            dp = gw.dataplane
            dp.stages = dataclasses.replace(
                dp.stages, forwarder=Forwarder(dp.upstreams, idempotency=store)
            )
        await gw.start()
        try:
            yield gw, totals
        finally:
            await gw.stop(drain_timeout_s=1.0)
            if store is not None:
                await store.close()


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(ttft_ms=0, tokens_per_s=0), host="127.0.0.1") as server:
        yield server


async def post(port: int, key: str | None, content: str = "hello", **headers: str) -> RawResponse:
    body = {"model": "chat", "messages": [{"role": "user", "content": content}]}
    if key is not None:
        headers["idempotency-key"] = key
    return await raw_request(
        port, "POST", "/v1/chat/completions", json.dumps(body).encode(), headers
    )


BACKENDS = ["local", "redis"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_retry_with_the_same_key_is_replayed_not_re_run(
    sim: SimServer, backend: str
) -> None:
    async with gateway(sim, backend) as (gw, totals):
        first = await post(gw.port, "k-1")
        await asyncio.sleep(0.05)  # the answer is stored as the request settles
        again = await post(gw.port, "k-1")
        other = await post(gw.port, "k-2")
    assert first.status == again.status == 200
    assert again.body == first.body
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["x-lockgate-deployment"] == first.headers["x-lockgate-deployment"]
    assert sim.engine.requests_total == 2, "the replay made no upstream call"
    usage = json.loads(first.body)["usage"]
    # Billed once: the replay's record carries no tokens.
    assert totals.requests == 3
    assert totals.prompt_tokens == 2 * usage["prompt_tokens"]
    assert json.loads(other.body)["id"] != json.loads(first.body)["id"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_same_key_with_another_body_is_a_422(sim: SimServer, backend: str) -> None:
    async with gateway(sim, backend) as (gw, _):
        await post(gw.port, "k-1", "hello")
        await asyncio.sleep(0.05)
        reused = await post(gw.port, "k-1", "something else")
    assert reused.status == 422
    assert reused.headers["x-lockgate-error-code"] == "idempotency_key_reused"
    assert sim.engine.requests_total == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_in_flight_duplicates_wait_for_the_first(backend: str) -> None:
    slow = SimConfig(ttft_ms=300, tokens_per_s=0)
    async with (
        SimServer(slow, host="127.0.0.1") as sim,
        gateway(sim, backend) as (gw, _),
    ):
        answers = await asyncio.gather(*(post(gw.port, "k-1") for _ in range(3)))
    assert [a.status for a in answers] == [200, 200, 200]
    assert len({a.body for a in answers}) == 1
    assert sum(1 for a in answers if "idempotent-replayed" in a.headers) == 2
    assert sim.engine.requests_total == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_failed_request_frees_its_key(sim: SimServer, backend: str) -> None:
    async with gateway(sim, backend) as (gw, _):
        failed = await post(gw.port, "k-1", **{"x-sim-fault": "error-500"})
        await asyncio.sleep(0.05)
        retried = await post(gw.port, "k-1")
    assert failed.status == 500
    assert retried.status == 200
    assert "idempotent-replayed" not in retried.headers
    assert sim.engine.requests_total == 2


async def test_streams_and_bad_keys(sim: SimServer) -> None:
    async with gateway(sim, "local") as (gw, _):
        bad = await post(gw.port, "x" * 300)
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        for _ in range(2):
            streamed = await raw_request(
                gw.port,
                "POST",
                "/v1/chat/completions",
                json.dumps(body).encode(),
                {"idempotency-key": "s-1"},
            )
            assert streamed.sse_data()[-1] == b"[DONE]"
    assert bad.status == 400
    assert bad.headers["x-lockgate-error-code"] == "invalid_idempotency_key"
    assert sim.engine.requests_total == 2, "streams are not replayed (the key is ignored)"


async def test_the_openai_sdk_gets_the_stored_answer(sim: SimServer) -> None:
    async with (
        gateway(sim, "local") as (gw, _),
        openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="x", max_retries=0
        ) as client,
    ):
        calls = [
            await client.chat.completions.with_raw_response.create(
                model="chat",
                messages=[{"role": "user", "content": "hello"}],
                extra_headers={"Idempotency-Key": "sdk-1"},
            )
            for _ in range(2)
        ]
        answers = [c.parse() for c in calls]
    assert answers[0].id == answers[1].id
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content
    assert calls[1].headers["idempotent-replayed"] == "true"
    assert sim.engine.requests_total == 1


# -- the store itself: tenants never share keys --------------------------------------------
def context(project: str, body: bytes = b"{}") -> RequestContext:
    http = HttpRequest(b"POST", b"/v1/chat/completions", {}, body)
    ctx = RequestContext("r", http, Operation.CHAT, 0.0)
    ctx.principal = Principal(id=f"api_key:{project}", is_anonymous=False, project_id=project)
    return ctx


@pytest.mark.parametrize("backend", BACKENDS)
async def test_keys_are_scoped_to_the_tenant(backend: str) -> None:
    async with redis_prefix() as prefix:
        store = IdempotencyStore(
            RedisBackend(REDIS_URL, prefix, SPEC) if backend == "redis" else LocalBackend(SPEC),
            SPEC,
        )
        try:
            a = context("project-a")
            assert await store.begin(a, b"same") is None
            assert a.idempotency is not None
            a.idempotency.keep(StoredAnswer(b"application/json", b'{"a":1}', "chat", "d1"))
            a.idempotency.settle(a)
            await asyncio.sleep(0.05)
            b = context("project-b", b'{"other": 1}')
            assert await store.begin(b, b"same") is None, "another tenant's key is not ours"
            replay = await store.begin(context("project-a"), b"same")
            assert replay is not None
            assert replay.answer.body == b'{"a":1}'
            with pytest.raises(IdempotencyKeyReused):
                await store.begin(context("project-a", b"[]"), b"same")
        finally:
            await store.close()


def test_stored_answers_round_trip() -> None:
    answer = StoredAnswer(b"application/json", b'{"x":"\\n"}\n', "m", "d")
    assert StoredAnswer.decode(answer.encode()) == answer
