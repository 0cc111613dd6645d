"""Relaying an OpenAI-style SSE stream event by event, reading usage on the way.

The upstream's bytes arrive in arbitrary pieces; only whole events are
forwarded, so multi-byte characters split across reads reach the client
intact. Every event is parsed (cheaply, with orjson) because a malformed
event or an in-band error must not be relayed as if the stream were fine.
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.errors import UpstreamProtocolError
from lockgate.usage import Usage

_DONE = b"[DONE]"
# Returned by _translate for "relay this event unchanged" (compared by identity).
_KEEP = b"keep"


class StreamTranslator:
    """Turns upstream SSE bytes into client SSE events; one instance per stream.

    ``strip_usage_chunk``: the gateway added ``include_usage`` on the client's
    behalf, so the extra usage-only chunk (``choices == []``) is consumed here.
    A final chunk that carries choices *and* usage is still relayed.
    """

    __slots__ = (
        "_buffer",
        "_public_model",
        "_strip_usage_chunk",
        "error",
        "has_finish_reason",
        "is_done",
        "usage",
    )

    def __init__(self, public_model: str, *, strip_usage_chunk: bool) -> None:
        self._public_model = public_model
        self._strip_usage_chunk = strip_usage_chunk
        self._buffer = b""
        self.usage: Usage | None = None
        self.is_done = False
        self.has_finish_reason = False
        # An upstream in-band error event (relayed to the client as is).
        self.error: dict[str, Any] | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Consume upstream bytes; return the bytes to send, in order.

        All complete events of one read are parsed in a single orjson call
        (as one JSON array); when none needs changing — the common case — the
        result is the upstream's own bytes in one piece.
        """
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return []
        consumed = buffer[: end + 2]
        self._buffer = buffer[end + 2 :]
        events = [e for e in consumed.split(b"\n\n") if e]
        payloads: list[bytes] = []
        kinds: list[int] = []  # per event: 0 JSON payload, 1 [DONE], 2 no data (comment)
        for event in events:
            if event[:6] == b"data: " and b"\n" not in event:
                payload: bytes | None = event[6:]
            else:
                payload = _event_data(event)
            if payload is None:
                kinds.append(2)
            elif payload == _DONE:
                kinds.append(1)
            else:
                kinds.append(0)
                payloads.append(payload)
        objects = _parse_all(payloads)
        bad_payload = -1
        if objects is None:
            objects, bad_payload = _parse_each(payloads)
        out: list[bytes] | None = None
        parsed = iter(objects)
        seen_payloads = 0
        for index, kind in enumerate(kinds):
            if kind == 0:
                if seen_payloads == bad_payload:
                    kept = (
                        b"".join(out)
                        if out is not None
                        else b"".join(e + b"\n\n" for e in events[:index])
                    )
                    raise MalformedEvent(kept)
                seen_payloads += 1
                replacement = self._inspect(next(parsed))
            else:
                if kind == 1:
                    self.is_done = True
                replacement = _KEEP
            if replacement is _KEEP:
                if out is not None:
                    out.append(events[index] + b"\n\n")
                continue
            if out is None:
                out = [e + b"\n\n" for e in events[:index]]
            if replacement is not None:
                out.append(replacement)
        return [consumed] if out is None else out

    @property
    def has_partial_event(self) -> bool:
        return bool(self._buffer.strip())

    def _inspect(self, obj: Any) -> bytes | None:
        """``_KEEP`` to relay the event as is, None to drop it, or replacement bytes."""
        if type(obj) is not dict:
            raise UpstreamProtocolError("upstream sent a stream event that is not an object")
        choices = obj.get("choices")
        if choices is None and "error" in obj:
            error = obj["error"]
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            return _KEEP
        if choices and not self.has_finish_reason:
            for choice in choices:
                if type(choice) is dict and choice.get("finish_reason"):
                    self.has_finish_reason = True
        raw_usage = obj.get("usage")
        if raw_usage is not None and type(raw_usage) is dict:
            self.usage = Usage.from_openai(raw_usage)
            if self._strip_usage_chunk and not choices:
                return None
        model = obj.get("model")
        if model is not None and model != self._public_model:
            obj["model"] = self._public_model
            return b"data: " + orjson.dumps(obj) + b"\n\n"
        return _KEEP


class MalformedEvent(UpstreamProtocolError):
    """A stream event is not JSON. ``valid_before`` holds the events before it, translated."""

    def __init__(self, valid_before: bytes) -> None:
        super().__init__("upstream sent a malformed stream event")
        self.valid_before = valid_before


def _parse_all(payloads: list[bytes]) -> list[Any] | None:
    """Parse every payload in one orjson call; None if any of them is not JSON."""
    if not payloads:
        return []
    joined = payloads[0] if len(payloads) == 1 else b"[" + b",".join(payloads) + b"]"
    try:
        parsed = orjson.loads(joined)
    except orjson.JSONDecodeError:
        return None
    if len(payloads) == 1:
        return [parsed]
    # A payload like `1,2` would parse as two array items: the count must match.
    return list(parsed) if len(parsed) == len(payloads) else None


def _parse_each(payloads: list[bytes]) -> tuple[list[Any], int]:
    """Slow path after a failed batch: the parsed prefix and the index of the bad payload."""
    parsed = []
    for payload in payloads:
        try:
            parsed.append(orjson.loads(payload))
        except orjson.JSONDecodeError:
            break
    return parsed, len(parsed)


def _event_data(event: bytes) -> bytes | None:
    """The ``data`` of an SSE event (joined over lines), or None if it has none."""
    if event.startswith(b"data: ") and b"\n" not in event:  # the common case
        return event[6:]
    lines = [
        line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    if not lines:
        return None
    return b"\n".join(lines)
