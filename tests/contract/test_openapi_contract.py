"""Contract: what the gateway sends validates against OpenAI's published OpenAPI schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support import RunningGateway, raw_request

SPEC = Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "openai-openapi.yaml"
CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"contract test"}],"max_tokens":6}'


@pytest.fixture(scope="session")
def registry() -> Registry:
    if not SPEC.exists():
        pytest.fail(f"OpenAI spec not found at {SPEC} (shared/ must sit beside the repo)")
    with SPEC.open("rb") as handle:
        spec = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    resource = Resource.from_contents(
        _nullable_to_json_schema(spec), default_specification=DRAFT202012
    )
    return Registry().with_resource("urn:openai", resource)


def _nullable_to_json_schema(node: Any) -> Any:
    """The spec marks nulls OpenAPI-3.0 style (``nullable: true``); JSON Schema needs a type."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False) is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def validate(registry: Registry, schema: str, instance: Any) -> None:
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"urn:openai#/components/schemas/{schema}"}, registry=registry
    )
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{schema}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


async def test_chat_completion_response(gateway: RunningGateway, registry: Registry) -> None:
    response = await raw_request(gateway.port, "POST", "/v1/chat/completions", CHAT)
    assert response.status == 200
    validate(registry, "CreateChatCompletionResponse", orjson.loads(response.body))


@pytest.mark.parametrize("include_usage", [False, True])
async def test_chat_stream_chunks(
    gateway: RunningGateway, registry: Registry, include_usage: bool
) -> None:
    body = orjson.loads(CHAT) | {"stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response = await raw_request(gateway.port, "POST", "/v1/chat/completions", orjson.dumps(body))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.sse_data()
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    for chunk in chunks:
        validate(registry, "CreateChatCompletionStreamResponse", chunk)
    usage_chunks = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert len(usage_chunks) == 1
        assert usage_chunks[0]["choices"] == []
    else:
        assert usage_chunks == []


async def test_completion_response(gateway: RunningGateway, registry: Registry) -> None:
    body = b'{"model":"sim-chat","prompt":"contract","max_tokens":4}'
    response = await raw_request(gateway.port, "POST", "/v1/completions", body)
    validate(registry, "CreateCompletionResponse", orjson.loads(response.body))


async def test_embedding_response(gateway: RunningGateway, registry: Registry) -> None:
    body = b'{"model":"sim-chat","input":["a","b"]}'
    response = await raw_request(gateway.port, "POST", "/v1/embeddings", body)
    validate(registry, "CreateEmbeddingResponse", orjson.loads(response.body))


async def test_models_list(gateway: RunningGateway, registry: Registry) -> None:
    response = await raw_request(gateway.port, "GET", "/v1/models")
    validate(registry, "ListModelsResponse", orjson.loads(response.body))


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/chat/completions", b"{oops", 400),
        ("/v1/chat/completions", b'{"model":"missing","messages":[{"role":"user"}]}', 404),
        ("/v1/chat/completions", b'{"model":"sim-chat"}', 400),
        ("/v1/nothing-here", b"{}", 404),
    ],
)
async def test_errors_use_the_error_response_shape(
    gateway: RunningGateway, registry: Registry, path: str, body: bytes, status: int
) -> None:
    response = await raw_request(gateway.port, "POST", path, body)
    assert response.status == status
    payload = orjson.loads(response.body)
    validate(registry, "ErrorResponse", payload)
    assert set(payload["error"]) == {"message", "type", "code", "param"}
    assert response.headers["x-lockgate-error-source"] == "client"
    assert response.headers["x-lockgate-error-code"] == payload["error"]["code"]
