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

    ``skip_malformed``: an event that is not JSON is dropped (and counted in
    ``skipped``) instead of raising ``MalformedEvent``. ``track_text``: keep the
    assistant text relayed so far (``text``), so a broken stream can be continued
    elsewhere; after ``begin_continuation`` the next upstream's events are spliced
    in — the first stream's id and created time, no second role delta, usage with
    the first part's completion tokens added.
    """

    __slots__ = (
        "_buffer",
        "_created",
        "_parts",
        "_public_model",
        "_resumed_tokens",
        "_skip_malformed",
        "_stream_id",
        "_strip_usage_chunk",
        "_track_text",
        "content_deltas",
        "error",
        "has_finish_reason",
        "is_complete",
        "is_continuable",
        "is_done",
        "output_events",
        "skipped",
        "usage",
    )

    def __init__(
        self,
        public_model: str,
        *,
        strip_usage_chunk: bool,
        skip_malformed: bool = False,
        track_text: bool = False,
    ) -> None:
        self._public_model = public_model
        self._strip_usage_chunk = strip_usage_chunk
        self._skip_malformed = skip_malformed
        self._track_text = track_text
        self._buffer = b""
        self.usage: Usage | None = None
        self.is_done = False
        # Every choice finished and the usage-only chunk arrived: only [DONE] is missing.
        self.is_complete = False
        self.has_finish_reason = False
        # An upstream in-band error event (relayed to the client as is).
        self.error: dict[str, Any] | None = None
        self.skipped = 0
        self._parts: list[str] = []
        self.content_deltas = 0
        # Events that carried output (text, reasoning or a tool call) to the client: about
        # one token each from the engines we front, so the estimate of what a stream that
        # ended without usage produced.
        self.output_events = 0
        self.is_continuable = track_text  # False once a tool call or a second choice shows
        self._stream_id: Any = None
        self._created: Any = None
        self._resumed_tokens: int | None = None  # completion tokens before a continuation

    @property
    def text(self) -> str:
        """The assistant text relayed so far (with ``track_text``)."""
        return "".join(self._parts)

    def begin_continuation(self) -> None:
        """The stream goes on from another upstream: drop the broken one's partial event."""
        self._buffer = b""
        self.is_done = False
        self.error = None
        self._resumed_tokens = self.content_deltas

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
        # Per event: 0 JSON payload, 1 [DONE], 2 no data (comment), 3 malformed, skipped.
        kinds: list[int] = []
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
        if objects is None and self._skip_malformed:
            objects = self._parse_skipping(payloads, kinds)
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
            elif kind == 3:
                replacement = None  # malformed, and skipping is configured
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

    def _parse_skipping(self, payloads: list[bytes], kinds: list[int]) -> list[Any]:
        """Parse one by one; a payload that is not JSON becomes a dropped event (kind 3)."""
        parsed: list[Any] = []
        payload_kinds = [i for i, kind in enumerate(kinds) if kind == 0]
        for index, payload in zip(payload_kinds, payloads, strict=True):
            try:
                parsed.append(orjson.loads(payload))
            except orjson.JSONDecodeError:
                kinds[index] = 3
                self.skipped += 1
        return parsed

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
                if type(choice) is not dict:
                    continue
                if choice.get("finish_reason"):
                    self.has_finish_reason = True
                delta = choice.get("delta")
                if type(delta) is dict and (
                    delta.get("content")
                    or delta.get("reasoning_content")
                    or delta.get("tool_calls")
                ):
                    self.output_events += 1
        if self._track_text:
            if self._stream_id is None:
                self._stream_id = obj.get("id")
                self._created = obj.get("created")
            if choices:
                self._track(choices)
        if self._resumed_tokens is not None:
            return self._splice(obj, choices)
        raw_usage = obj.get("usage")
        if raw_usage is not None and type(raw_usage) is dict:
            self.usage = Usage.from_openai(raw_usage)
            if not choices:
                self.is_complete = self.has_finish_reason
                if self._strip_usage_chunk:
                    return None
        model = obj.get("model")
        if model is not None and model != self._public_model:
            obj["model"] = self._public_model
            return b"data: " + orjson.dumps(obj) + b"\n\n"
        return _KEEP

    def _track(self, choices: Any) -> None:
        """Keep the text of choice 0; a tool call, reasoning or another choice rules out
        continuing (a prefill can only carry plain assistant text)."""
        if type(choices) is not list:
            return
        for choice in choices:
            if type(choice) is not dict:
                continue
            if choice.get("index", 0) != 0:
                self.is_continuable = False
            delta = choice.get("delta")
            if type(delta) is not dict:
                continue
            content = delta.get("content")
            if type(content) is str and content:
                self._parts.append(content)
                self.content_deltas += 1
            if (
                delta.get("tool_calls")
                or delta.get("function_call")
                or delta.get("reasoning_content")
            ):
                self.is_continuable = False

    def _splice(self, obj: dict[str, Any], choices: Any) -> bytes | None:
        """An event of a continuation, made to look like the first stream's."""
        if self._stream_id is not None:
            obj["id"] = self._stream_id
        if self._created is not None:
            obj["created"] = self._created
        obj["model"] = self._public_model
        raw_usage = obj.get("usage")
        has_usage = raw_usage is not None and type(raw_usage) is dict
        if type(choices) is list and choices:
            is_empty = not has_usage
            for choice in choices:
                delta = choice.get("delta") if type(choice) is dict else None
                if type(delta) is dict:
                    delta.pop("role", None)
                    if delta.get("content") == "" and len(delta) == 1:
                        del delta["content"]
                    if delta or choice.get("finish_reason"):
                        is_empty = False
                else:
                    is_empty = False
            if is_empty:
                return None  # the continuation's role chunk: the client had one already
        if has_usage:
            assert isinstance(raw_usage, dict)
            earlier = self._resumed_tokens or 0
            for name in ("completion_tokens", "total_tokens"):
                value = raw_usage.get(name)
                if type(value) is int:
                    raw_usage[name] = value + earlier
            self.usage = Usage.from_openai(raw_usage)
            if not choices:
                self.is_complete = self.has_finish_reason
                if self._strip_usage_chunk:
                    return None
        return b"data: " + orjson.dumps(obj) + b"\n\n"


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
