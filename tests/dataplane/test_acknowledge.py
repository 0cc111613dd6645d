"""metering.acknowledge = durable: a response's end waits for the usage record.

The gateway here is given an ``acknowledge`` that the test releases by hand, so it can
see exactly what the client has before and after: everything but the end, then the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from lockgate.config import resolve
from lockgate.dataplane.pipeline.settle import UsageTotals
from lockgate.serve import Gateway
from lockgate.sim import SimServer
from tests.support import gateway_spec, raw_request, sim_model

WHOLE = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'
STREAM = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true}'


class Barrier:
    """An ``acknowledge`` that returns only when released; counts who waited."""

    def __init__(self) -> None:
        self.waiting = 0
        self.settled_when_waited: list[int] = []
        self.totals = UsageTotals()
        self.entered = asyncio.Event()
        self._open = asyncio.Event()

    async def __call__(self) -> None:
        self.waiting += 1
        self.settled_when_waited.append(self.totals.requests)
        self.entered.set()
        await self._open.wait()

    def release(self) -> None:
        self._open.set()


@asynccontextmanager
async def held_gateway(sim: SimServer) -> AsyncIterator[tuple[int, Barrier]]:
    barrier = Barrier()
    gateway = Gateway(
        resolve(gateway_spec([sim_model("m", sim.base_url)])),
        settler=barrier.totals,
        acknowledge=barrier,
    )
    await gateway.start()
    try:
        yield gateway.port, barrier
    finally:
        barrier.release()
        await gateway.stop(drain_timeout_s=1.0)


async def _post(port: int, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A chat request on a raw connection the test reads (or drops) itself."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    return reader, writer


async def test_a_whole_answer_is_sent_only_after_its_record_is_acknowledged(
    sim: SimServer,
) -> None:
    async with held_gateway(sim) as (port, barrier):
        answer = asyncio.create_task(raw_request(port, "POST", "/v1/chat/completions", WHOLE))
        await asyncio.wait_for(barrier.entered.wait(), 5)
        await asyncio.sleep(0.05)
        assert barrier.waiting == 1
        assert not answer.done()  # settled, waiting on the record: the client has nothing
        assert barrier.settled_when_waited == [1]  # the record was handed over first
        barrier.release()
        response = await answer
    assert response.status == 200
    assert b'"usage"' in response.body


async def test_a_stream_is_relayed_but_its_end_waits_for_the_record(sim: SimServer) -> None:
    async with held_gateway(sim) as (port, barrier):
        reader, writer = await _post(port, STREAM)
        await asyncio.wait_for(barrier.entered.wait(), 5)
        await asyncio.sleep(0.05)
        before = await reader.read(65536)
        assert b'"chat.completion.chunk"' in before  # the tokens flowed as they came
        assert b"[DONE]" not in before
        assert not before.endswith(b"0\r\n\r\n")
        barrier.release()
        rest = b""
        async with asyncio.timeout(5):
            while not rest.endswith(b"0\r\n\r\n"):
                rest += await reader.read(65536)
        writer.close()
    assert b"data: [DONE]" in rest


async def test_errors_are_not_held(sim: SimServer) -> None:
    async with held_gateway(sim) as (port, barrier):
        unknown = WHOLE.replace(b'"model":"m"', b'"model":"nope"')
        bad = await raw_request(port, "POST", "/v1/chat/completions", unknown)
        assert bad.status == 404
        assert barrier.waiting == 0
        assert barrier.totals.errors == 1


async def test_a_client_gone_while_held_costs_nothing_but_its_connection(sim: SimServer) -> None:
    async with held_gateway(sim) as (port, barrier):
        _, writer = await _post(port, WHOLE)
        await asyncio.wait_for(barrier.entered.wait(), 5)
        writer.close()
        await asyncio.sleep(0.05)
        barrier.release()
        await asyncio.sleep(0.05)
        # The gateway still serves: the abandoned response was dropped, not crashed on.
        assert (await raw_request(port, "POST", "/v1/chat/completions", WHOLE)).status == 200
    assert barrier.totals.requests == 2
