"""The SSE translator: whole events only, usage found wherever it is, bad events refused."""

from __future__ import annotations

import orjson
import pytest

from lockgate.errors import UpstreamProtocolError
from lockgate.providers.openai_stream import MalformedEvent, StreamTranslator


def chunk(content: str | None, *, model: str = "m", finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    obj = {"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [choice]}
    return b"data: " + orjson.dumps(obj) + b"\n\n"


USAGE = {
    "prompt_tokens": 7,
    "completion_tokens": 2,
    "total_tokens": 9,
    "prompt_tokens_details": {"cached_tokens": 4},
}
USAGE_ONLY = (
    b"data: " + orjson.dumps({"id": "c1", "model": "m", "choices": [], "usage": USAGE}) + b"\n\n"
)


def feed_all(translator: StreamTranslator, data: bytes, step: int) -> bytes:
    out = b""
    for i in range(0, len(data), step):
        out += b"".join(translator.feed(data[i : i + step]))
    return out


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_events_split_anywhere_are_relayed_byte_exact(step: int) -> None:
    stream = chunk("naïve 日本語 🚀") + chunk(" Ωmega", finish="stop") + b"data: [DONE]\n\n"
    translator = StreamTranslator("m", strip_usage_chunk=True)
    assert feed_all(translator, stream, step) == stream
    assert translator.is_done
    assert translator.has_finish_reason


def test_unasked_usage_chunk_is_stripped_but_counted() -> None:
    translator = StreamTranslator("m", strip_usage_chunk=True)
    out = b"".join(translator.feed(chunk("hi", finish="stop") + USAGE_ONLY + b"data: [DONE]\n\n"))
    assert b'"usage"' not in out
    assert out.endswith(b"data: [DONE]\n\n")
    assert translator.usage is not None
    assert (translator.usage.prompt_tokens, translator.usage.completion_tokens) == (7, 2)
    assert translator.usage.cached_tokens == 4


def test_asked_usage_chunk_is_relayed_untouched() -> None:
    translator = StreamTranslator("m", strip_usage_chunk=False)
    assert translator.feed(USAGE_ONLY) == [USAGE_ONLY]
    assert translator.usage is not None
    assert translator.usage.total_tokens == 9


def test_usage_on_a_chunk_that_also_carries_choices_is_read_and_relayed() -> None:
    obj = orjson.loads(chunk("end", finish="stop")[6:])
    obj["usage"] = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    event = b"data: " + orjson.dumps(obj) + b"\n\n"
    translator = StreamTranslator("m", strip_usage_chunk=True)
    assert translator.feed(event) == [event]
    assert translator.usage is not None
    assert translator.usage.completion_tokens == 5


def test_upstream_model_name_is_replaced_by_the_public_one() -> None:
    translator = StreamTranslator("public", strip_usage_chunk=True)
    (out,) = translator.feed(chunk("x", model="engine-internal"))
    assert orjson.loads(out[6:])["model"] == "public"


def test_crlf_framing_is_understood() -> None:
    translator = StreamTranslator("m", strip_usage_chunk=True)
    out = translator.feed(chunk("a").replace(b"\n", b"\r\n") + b"data: [DONE]\r\n\r\n")
    assert b"".join(out) == chunk("a") + b"data: [DONE]\n\n"
    assert translator.is_done


def test_comments_are_relayed_as_keepalives() -> None:
    translator = StreamTranslator("m", strip_usage_chunk=True)
    assert translator.feed(b": ping\n\n") == [b": ping\n\n"]


def test_malformed_event_raises() -> None:
    translator = StreamTranslator("m", strip_usage_chunk=True)
    with pytest.raises(UpstreamProtocolError):
        translator.feed(b"data: {not json\n\n")


def test_events_before_a_malformed_one_in_the_same_read_are_kept() -> None:
    translator = StreamTranslator("m", strip_usage_chunk=True)
    good = chunk("one") + chunk("two")
    with pytest.raises(MalformedEvent) as caught:
        translator.feed(good + b"data: {not json\n\n" + chunk("three"))
    assert caught.value.valid_before == good


@pytest.mark.parametrize("payload", [b"1,2", b'{"a":1}],[{"b":2}', b"", b"{}, {}"])
def test_payloads_that_could_break_batch_parsing_are_refused(payload: bytes) -> None:
    translator = StreamTranslator("m", strip_usage_chunk=True)
    with pytest.raises(UpstreamProtocolError):
        translator.feed(chunk("a") + b"data: " + payload + b"\n\n" + chunk("b"))


def test_in_band_error_is_relayed_and_remembered() -> None:
    translator = StreamTranslator("m", strip_usage_chunk=True)
    event = b'data: {"error":{"message":"engine overloaded","type":"server_error"}}\n\n'
    assert translator.feed(event) == [event]
    assert translator.error == {"message": "engine overloaded", "type": "server_error"}


def test_partial_event_is_held_back() -> None:
    translator = StreamTranslator("m", strip_usage_chunk=True)
    whole = chunk("hello")
    assert translator.feed(whole[:-1]) == []
    assert translator.has_partial_event
    assert translator.feed(whole[-1:]) == [whole]
    assert not translator.has_partial_event
