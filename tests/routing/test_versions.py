"""Model versions: name@version, the default, deprecation headers, retirement (410)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from lockgate.config import GatewaySpec, resolve
from lockgate.routing.versions import http_date
from lockgate.sim import SimServer
from tests.routing.fleet import FAST, chat, replicas, spec, url
from tests.support import running_gateway

DEPRECATED_AT = datetime(2026, 1, 1, tzinfo=UTC)
SUNSET_AT = datetime(2099, 6, 30, tzinfo=UTC)


def versioned(v1: SimServer | int, v2: SimServer | int, **model: Any) -> dict[str, Any]:
    return {
        "name": "chat",
        "aliases": ["assistant"],
        "versions": [
            {
                "version": "v1",
                "status": "deprecated",
                "deprecated_at": DEPRECATED_AT.isoformat(),
                "sunset_at": SUNSET_AT.isoformat(),
                "replacement": "chat@v2",
                "info_url": "https://example.com/chat-v1",
                "deployments": [{"name": "v1-r0", "base_url": url(v1)}],
            },
            {"version": "v2", "deployments": [{"name": "v2-r0", "base_url": url(v2)}]},
            {
                "version": "v0",
                "status": "retired",
                "replacement": "chat@v2",
                "deployments": [{"name": "v0-r0", "base_url": url(v1)}],
            },
        ],
        **model,
    }


async def test_plain_name_gets_the_default_and_a_pin_gets_its_version() -> None:
    async with replicas(FAST, FAST) as (v1, v2):
        config = spec([versioned(v1, v2, default_version="v2")])
        async with running_gateway(config) as gw:
            plain = await chat(gw.port, "chat")
            pinned = await chat(gw.port, "chat@v1")
            alias_pinned = await chat(gw.port, "assistant@v1")
            for response, served in ((plain, "chat@v2"), (pinned, "chat@v1")):
                assert response.status == 200, response.body
                assert response.headers["x-lockgate-model"] == served
                assert json.loads(response.body)["model"] == served
            assert alias_pinned.headers["x-lockgate-model"] == "chat@v1"
            assert v1.engine.requests_total == 2
            assert v2.engine.requests_total == 1


async def test_a_deprecated_version_says_so_and_when_it_goes() -> None:
    async with (
        replicas(FAST, FAST) as (v1, v2),
        running_gateway(spec([versioned(v1, v2)])) as gw,
    ):
        old = await chat(gw.port, "chat")  # v1 is the default (first) version
        current = await chat(gw.port, "chat@v2")
    assert old.headers["deprecation"] == f"@{int(DEPRECATED_AT.timestamp())}"
    assert old.headers["sunset"] == "Tue, 30 Jun 2099 00:00:00 GMT"
    assert old.headers["link"] == '<https://example.com/chat-v1>; rel="deprecation"'
    assert "deprecation" not in current.headers
    assert "sunset" not in current.headers


async def test_a_retired_version_answers_410_naming_its_replacement() -> None:
    async with replicas(FAST, FAST) as (v1, v2):
        async with running_gateway(spec([versioned(v1, v2)])) as gw:
            gone = await chat(gw.port, "chat@v0")
            unknown = await chat(gw.port, "chat@v9")
        assert v1.engine.requests_total == 0  # refused before any upstream call
    assert gone.status == 410
    error = json.loads(gone.body)["error"]
    assert error["code"] == "model_retired"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "model"
    assert "chat@v2" in error["message"]
    assert gone.headers["x-lockgate-error-code"] == "model_retired"
    assert unknown.status == 404


async def test_a_version_past_its_sunset_is_retired() -> None:
    model = versioned(closed := 1, closed)
    model["versions"][1]["sunset_at"] = "2001-01-01T00:00:00Z"
    async with running_gateway(spec([model])) as gw:
        response = await chat(gw.port, "chat@v2")
    assert response.status == 410


def test_models_without_versions_resolve_as_before() -> None:
    runtime = resolve(
        GatewaySpec.model_validate(
            {"models": [{"name": "m", "deployments": [{"name": "d", "base_url": url(1)}]}]}
        )
    )
    (entry,) = runtime.models
    assert entry.versions == ()
    assert entry.response_headers == b""
    assert [d.model_name for d in entry.deployments] == ["m"]


def test_version_entries_are_not_public_names() -> None:
    runtime = resolve(spec([versioned(1, 2)]))
    assert set(runtime.model_index) == {"chat", "assistant"}
    (entry,) = runtime.models
    assert [v.name for v in entry.versions] == ["chat@v1", "chat@v2", "chat@v0"]
    assert entry.default_version == "v1"
    assert entry.versions[1].deployments[0].model_name == "chat@v2"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"deployments": [{"name": "d", "base_url": "http://h/v1"}]}, "not beside 'versions'"),
        ({"default_version": "v0"}, "is retired"),
        ({"default_version": "v7"}, "not one of the versions"),
        ({"rollout": {"candidate": "v7"}}, "not one of the versions"),
        ({"rollout": {"candidate": "v1"}}, "is the default version already"),
        ({"rollout": {"candidate": "v0"}}, "is retired"),
    ],
)
def test_inconsistent_versions_are_refused(change: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        spec([versioned(1, 2, **change)])


def test_a_model_needs_deployments_or_versions_and_may_have_none_yet() -> None:
    with pytest.raises(ValidationError, match="give 'deployments'"):
        GatewaySpec.model_validate({"models": [{"name": "m"}]})
    GatewaySpec.model_validate({"models": [{"name": "m", "deployments": []}]})


def test_a_replacement_must_exist_and_a_deprecation_needs_a_date() -> None:
    broken = versioned(1, 2)
    broken["versions"][0]["replacement"] = "chat@v5"
    with pytest.raises(ValidationError, match="replacement 'chat@v5'"):
        spec([broken])
    undated = versioned(1, 2)
    del undated["versions"][0]["deprecated_at"]
    with pytest.raises(ValidationError, match="deprecated_at"):
        spec([undated])


def test_http_date_is_imf_fixdate() -> None:
    assert http_date(datetime(2026, 3, 1, 12, 5, 9, tzinfo=UTC)) == "Sun, 01 Mar 2026 12:05:09 GMT"
