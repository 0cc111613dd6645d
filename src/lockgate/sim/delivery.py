"""Running a plan through the engine and onto the wire, faults included.

A stream is a sequence of steps: step 0 comes after prefill and carries the
role (or tool-call head) and the first token of each choice; every later step
comes one inter-token gap after the previous and carries one token per
choice. The non-stream path runs the same steps without writing, so it takes
the same time and counts tokens the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from lockgate.http.server import ClientDisconnected, Connection, status_line
from lockgate.sim.config import FaultKind
from lockgate.sim.engine import Sequence
from lockgate.sim.plans import ChoicePlan, Plan
from lockgate.sim.responses import (
    DONE_EVENT,
    JSON_HEADERS,
    MALFORMED_EVENT,
    SSE_HEADERS,
    ChunkHead,
    chat_completion,
    chat_usage,
    text_completion,
    text_usage,
    tool_call,
)


def abort(conn: Connection) -> None:
    """Cut the connection the way a crashed engine or proxy would: no FIN, a reset."""
    if conn.transport is not None:
        conn.transport.abort()


async def wait_forever() -> None:
    """Hold the request open until the client gives up (the task is then cancelled)."""
    await asyncio.get_running_loop().create_future()


def _first_events(plan: Plan, choice: ChoicePlan) -> list[dict[str, Any]]:
    """Step-0 heads: the role delta (chat) or the tool call's id and name."""
    if not plan.is_chat:
        return []
    if choice.tool_name is None:
        delta: dict[str, Any] = {"role": "assistant", "content": ""}
    else:
        delta = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": choice.tool_call_id,
                    "type": "function",
                    "function": {"name": choice.tool_name, "arguments": ""},
                }
            ],
        }
    return [{"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": None}]


def _token_event(plan: Plan, choice: ChoicePlan, step: int) -> dict[str, Any]:
    piece = choice.pieces[step]
    finish = choice.finish_reason if step == len(choice.pieces) - 1 else None
    if not plan.is_chat:
        return {"index": choice.index, "text": piece, "logprobs": None, "finish_reason": finish}
    if choice.tool_name is None:
        delta: dict[str, Any] = {"content": piece}
    else:
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
    return {"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": finish}


def stream_events(plan: Plan) -> list[list[bytes]]:
    """Encoded ``choices`` of every event, per step; rendered once per plan."""
    events = plan.events
    if events is None:
        events = []
        for step in range(plan.steps):
            dicts: list[dict[str, Any]] = []
            if step == 0:
                for choice in plan.choices:
                    dicts += _first_events(plan, choice)
            dicts += [_token_event(plan, c, step) for c in plan.choices if step < len(c.pieces)]
            events.append([orjson.dumps([d]) for d in dicts])
        plan.events = events
    return events


def usage_of(plan: Plan, seq: Sequence) -> dict[str, Any]:
    if plan.is_chat:
        return chat_usage(plan.prompt_tokens, plan.completion_tokens, seq.cached_tokens)
    return text_usage(plan.prompt_tokens, plan.completion_tokens)


class StreamFault:
    """A stream fault armed to go off after ``after`` events."""

    __slots__ = ("after", "kind")

    def __init__(self, kind: FaultKind, after: int) -> None:
        self.kind = kind
        self.after = after


async def _trigger(conn: Connection, fault: StreamFault) -> None:
    """Break the stream; returns only for faults that end the body cleanly."""
    if fault.kind == "cut":
        abort(conn)
    elif fault.kind == "stall":
        await wait_forever()
    elif fault.kind == "malformed":
        await conn.write(MALFORMED_EVENT)
        conn.end()


class _Pending:
    """Events not yet written: one write per decode step, or per stream in instant mode.

    Writing a step's events together is what an engine's output loop does;
    in instant mode the whole answer exists at once, and one write keeps the
    simulator's CPU out of the gateway's benchmark. Bounded, so a huge answer
    still meets the client's backpressure.
    """

    __slots__ = ("conn", "events", "size")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.events: list[bytes] = []
        self.size = 0

    async def add(self, event: bytes) -> None:
        self.events.append(event)
        self.size += len(event)
        if self.size >= _FLUSH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if self.events:
            data = b"".join(self.events)
            self.events.clear()
            self.size = 0
            await self.conn.write(data)


_FLUSH_BYTES = 64 * 1024


async def deliver_stream(
    conn: Connection,
    seq: Sequence,
    plan: Plan,
    head: ChunkHead,
    fault: StreamFault | None,
    instant: bool,
) -> None:
    """Send the SSE stream, broken by ``fault`` if one is armed."""
    ending = ("no-done", "stall-before-done")
    breaking = fault if fault is not None and fault.kind not in ending else None
    # vLLM sends headers on accept; instant mode (benchmarks) lets them ride with the body.
    conn.start(200, SSE_HEADERS, flush=not instant or breaking is not None)
    if breaking is not None and breaking.after == 0:
        await _trigger(conn, breaking)
        return
    out = _Pending(conn)
    sent = 0
    await seq.admitted()
    if not instant:
        await seq.prefill()
    step_tokens = plan.step_tokens
    last_step = plan.steps - 1
    in_final = plan.usage_in_final_choice
    for step, events in enumerate(stream_events(plan)):
        if step and not instant:
            await out.flush()
            await seq.decode()
        seq.produce(step_tokens[step])
        last = len(events) - 1
        for i, event in enumerate(events):
            if in_final and step == last_step and i == last:
                await out.add(head.event_with_usage(event, usage_of(plan, seq)))
            else:
                await out.add(head.event(event))
            sent += 1
            if breaking is not None and sent == breaking.after:
                await out.flush()
                await _trigger(conn, breaking)
                return
    if breaking is not None:
        await out.flush()
        await _trigger(conn, breaking)  # the stream was shorter than the fault's offset
        return
    if plan.include_usage and not in_final:
        await out.add(head.event_with_usage(b"[]", usage_of(plan, seq)))
    if fault is None:
        await out.add(DONE_EVENT)
    await out.flush()
    if fault is not None and fault.kind == "stall-before-done":
        await wait_forever()  # everything but [DONE], and the connection stays open
    conn.end()


async def generate(seq: Sequence, plan: Plan, instant: bool) -> None:
    """The non-stream path: same steps, same timing, same token counting."""
    await seq.admitted()
    if instant:
        seq.produce(plan.completion_tokens)
        return
    await seq.prefill()
    for step, count in enumerate(plan.step_tokens):
        if step:
            await seq.decode()
        seq.produce(count)


def whole_body(plan: Plan, seq: Sequence, completion_id: str, created: int) -> bytes:
    out: list[dict[str, Any]] = []
    for c in plan.choices:
        text = "".join(c.pieces)
        if not plan.is_chat:
            out.append(
                {"index": c.index, "text": text, "logprobs": None, "finish_reason": c.finish_reason}
            )
            continue
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if c.tool_name is not None:
            message["content"] = None
            message["tool_calls"] = [tool_call(c.tool_call_id, c.tool_name, text)]
        out.append(
            {
                "index": c.index,
                "message": message,
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
        )
    usage = usage_of(plan, seq)
    if plan.is_chat:
        return chat_completion(completion_id, created, plan.model, out, usage)
    return text_completion(completion_id, created, plan.model, out, usage)


async def send_whole(
    conn: Connection, status: int, headers: bytes, body: bytes, fault: FaultKind | None
) -> None:
    """Send a whole JSON answer, or break it as ``fault`` says."""
    if fault in ("cut", "stall"):
        # Headers promise the full length; only half of the body follows.
        transport = conn.transport
        if transport is None or conn.is_closed:
            raise ClientDisconnected
        conn.is_response_started = True
        transport.write(
            b"%s%scontent-length: %d\r\n\r\n%s"
            % (status_line(status), headers, len(body), body[: len(body) // 2])
        )
        if fault == "cut":
            transport.abort()
        else:
            await wait_forever()
        return
    if fault == "malformed":
        conn.respond(status, JSON_HEADERS, b"{not json")
        return
    conn.respond(status, headers, body)
