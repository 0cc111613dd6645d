"""The ledger against the engine's own count, request by request, through a real gateway.

Traffic of every kind goes through a gateway in front of the simulator: plain
and streamed completions (with and without the client asking for the usage
chunk), clients that hang up mid-stream, upstream errors before and during a
stream. The simulator counts, per ``x-request-id``, the tokens its engine spent
(``Engine.usage_by_request``). After the ledger has flushed:

* every request has exactly one record;
* where the upstream reported usage, the record equals the engine's count
  exactly, and the ledger's total over those records equals the engine's total
  over the same requests, to the token;
* where it reported none (the stream was cut, the client left, the upstream
  failed), the record says so (``is_estimated``): completion tokens are the
  events with output the client was sent (one token each from the simulator),
  never more than the engine produced, and 0 for an answer that never started.
  The engine's count for those requests is the exact gap, and ledger-reported
  plus gap is the engine's global total — so nothing was counted twice or lost
  between the two.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from lockgate.config import resolve
from lockgate.metering.ledger import UsageLedger
from lockgate.serve import Gateway
from lockgate.sim import SimServer
from lockgate.store import Store
from tests.support import gateway_spec, raw_request, sim_model

MODEL = "sim-chat"


def _chat(words: int, *, stream: bool, include_usage: bool = False, max_tokens: int = 40) -> bytes:
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": " ".join(["token"] * words)}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


async def _hang_up_mid_stream(port: int, request_id: str) -> None:
    """Send a long streamed request, read the first bytes of the answer, and leave."""
    body = _chat(12, stream=True, max_tokens=2000)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"x-request-id: %s\r\nx-sim-output-tokens: 2000\r\ncontent-length: %d\r\n\r\n%s"
        % (request_id.encode(), len(body), body)
    )
    await writer.drain()
    await reader.readuntil(b"data: ")  # the stream has started
    await reader.readuntil(b"\n\n")
    writer.close()  # the client leaves; the gateway must cancel the upstream


async def test_the_ledger_equals_the_engine_to_the_token(
    sim: SimServer, store: Store, tmp_path: Path
) -> None:
    ledger = UsageLedger(tmp_path / "journal.db", store.usage)
    await ledger.start()
    spec = gateway_spec([sim_model(MODEL, sim.base_url)])
    since = datetime.now(UTC) - timedelta(minutes=1)
    sent: list[str] = []
    try:
        gw = Gateway(resolve(spec), settler=ledger)
        await gw.start()
        try:

            async def call(i: int, body: bytes, **headers: str) -> None:
                request_id = f"req-{i:03d}"
                sent.append(request_id)
                await raw_request(
                    gw.port,
                    "POST",
                    "/v1/chat/completions",
                    body,
                    {"x-request-id": request_id, **headers},
                )

            calls = []
            for i in range(60):
                kind = i % 6
                if kind == 0:
                    calls.append(call(i, _chat(5 + i, stream=False, max_tokens=1 + i)))
                elif kind == 1:
                    calls.append(call(i, _chat(3 + i, stream=True)))  # the gateway asks for usage
                elif kind == 2:
                    calls.append(call(i, _chat(i, stream=True, include_usage=True, max_tokens=7)))
                elif kind == 3:
                    calls.append(call(i, _chat(9, stream=False), **{"x-sim-fault": "error-500"}))
                elif kind == 4:
                    headers = {"x-sim-fault": "cut", "x-sim-fault-after": "4"}
                    calls.append(call(i, _chat(i, stream=True), **headers))
                else:
                    sent.append(f"req-{i:03d}")
                    calls.append(_hang_up_mid_stream(gw.port, f"req-{i:03d}"))
            await asyncio.gather(*calls)
            # The upstream learns of a departed client when its next write fails.
            async with asyncio.timeout(5):
                while len(sim.engine.usage_by_request) < 50 or sim.engine.running:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        finally:
            await gw.stop(drain_timeout_s=1.0)
        async with asyncio.timeout(10):
            await ledger.flush()
    finally:
        await ledger.close()

    records = await store.usage.list(
        organization_id=None, start=since, end=datetime.now(UTC) + timedelta(minutes=1), limit=1000
    )
    by_request = {r.request_id: r for r in records}
    assert len(records) == len(by_request) == len(sent) == 60  # one record per request
    engine = sim.engine.usage_by_request
    reported = [r for r in records if not r.is_estimated]
    unreported = [r for r in records if r.is_estimated]
    assert len(reported) == 30
    assert len(unreported) == 30
    for r in reported:  # the upstream's usage, to the token
        prompt, completion, cached = engine[r.request_id]
        assert (r.prompt_tokens, r.completion_tokens, r.cached_tokens) == (
            prompt,
            completion,
            cached,
        )
    assert sum(r.prompt_tokens for r in reported) == sum(engine[r.request_id][0] for r in reported)
    assert sum(r.completion_tokens for r in reported) == sum(
        engine[r.request_id][1] for r in reported
    )
    for r in unreported:
        kind = int(r.request_id.removeprefix("req-")) % 6
        if kind == 3:  # a 500 before any answer: nothing produced, nothing estimated
            assert r.completion_tokens == 0, r
        elif kind == 4:  # cut after 4 events, the role event among them: 3 tokens sent
            assert r.completion_tokens == 3, r
        else:  # the client hung up: what it was sent, never more than the engine made
            assert r.completion_tokens <= engine[r.request_id][1], r
        assert r.error_code is not None or r.is_client_disconnected
    # What the engine spent on unreported requests is the ledger's exact gap, and the two
    # parts make up the engine's totals: nothing counted twice, nothing unaccounted for.
    gap_prompt = sum(engine.get(r.request_id, (0, 0, 0))[0] for r in unreported)
    gap_completion = sum(engine.get(r.request_id, (0, 0, 0))[1] for r in unreported)
    assert sum(r.prompt_tokens for r in reported) + gap_prompt == sim.engine.prompt_tokens_total
    assert (
        sum(r.completion_tokens for r in reported) + gap_completion
        == sim.engine.completion_tokens_total
    )
    disconnected = [r for r in unreported if r.is_client_disconnected]
    assert len(disconnected) == 10
    assert gap_completion > 0  # the broken streams did produce tokens
