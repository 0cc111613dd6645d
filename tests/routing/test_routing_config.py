"""The routing config: defaults, merging over routing.defaults, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lockgate.config import GatewaySpec, resolve
from lockgate.config.loader import parse_config


def gateway(models: list[dict[str, Any]], **top: Any) -> GatewaySpec:
    return GatewaySpec.model_validate({"models": models, **top})


def dep(name: str = "d") -> dict[str, Any]:
    return {"name": name, "base_url": "http://10.0.0.1:8000/v1"}


def test_defaults() -> None:
    config = resolve(gateway([{"name": "m", "deployments": [dep()]}]))
    model = config.models[0]
    assert model.routing.strategy == "least_outstanding"
    assert model.routing.retries.max_attempts == 3
    assert model.routing.outlier.consecutive_failures == 5
    assert model.routing.breaker.enabled
    assert model.routing.health_check is None
    assert model.fallbacks == ()
    assert model.deployments[0].weight == 1.0
    assert config.routing.retry_budget.ratio == 0.2
    hash(model)  # the resolved model stays hashable


def test_model_settings_merge_over_defaults_field_by_field() -> None:
    spec = gateway(
        [
            {"name": "a", "deployments": [dep()]},
            {
                "name": "b",
                "routing": {"strategy": "latency", "retries": {"max_attempts": 5}},
                "deployments": [dep()],
            },
        ],
        routing={"defaults": {"strategy": "power_of_two", "retries": {"backoff_base_ms": 7}}},
    )
    a, b = resolve(spec).models
    assert a.routing.strategy == "power_of_two"
    assert b.routing.strategy == "latency"
    assert (b.routing.retries.max_attempts, b.routing.retries.backoff_base_ms) == (5, 7)
    assert a.routing.retries.max_attempts == 3


def test_fallbacks_resolve_aliases_to_model_names() -> None:
    spec = gateway(
        [
            {"name": "a", "fallbacks": ["b-alias"], "deployments": [dep()]},
            {"name": "b", "aliases": ["b-alias"], "deployments": [dep()]},
        ]
    )
    (fallback,) = resolve(spec).models[0].fallbacks
    assert (fallback.model, fallback.on_failure, fallback.on_context_overflow) == (
        "b",
        True,
        False,
    )


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"fallbacks": ["nope"]}, "not a model name or alias"),
        ({"fallbacks": ["m"]}, "cannot fall back to itself"),
        ({"routing": {"strategy": "round_robin"}}, "strategy"),
        ({"routing": {"breaker": {"window": 5, "min_calls": 6}}}, "min_calls"),
        ({"routing": {"retries": {"max_attempts": 0}}}, "max_attempts"),
        ({"routing": {"retries": {"on_status": [400]}}}, "only 429 and 5xx"),
        ({"routing": {"health_check": {"path": "health"}}}, "path"),
        ({"routing": {"stratgy": "latency"}}, "stratgy"),
        ({"fallbacks": [{"model": "m2", "on_overflow": True}]}, "on_overflow"),
    ],
)
def test_refused(model: dict[str, Any], message: str) -> None:
    models = [
        {"name": "m", "deployments": [dep()], **model},
        {"name": "m2", "deployments": [dep()]},
    ]
    with pytest.raises(ValidationError, match=message):
        gateway(models)


def test_weight_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="weight"):
        gateway([{"name": "m", "deployments": [{**dep(), "weight": 0}]}])


def test_yaml_example_from_the_docs() -> None:
    text = """
routing:
  retry_budget: {ratio: 0.1, min_per_s: 5, window_s: 10}
  defaults:
    strategy: least_outstanding
    outlier: {consecutive_failures: 5, base_ejection_s: 5, max_ejection_s: 300}
models:
  - name: llama-70b
    routing:
      strategy: cache_affinity
      affinity: {sources: [header, prefix], header: X-Session-Id, prefix_bytes: 1024}
      retries: {max_attempts: 2}
      health_check: {path: /health, interval_s: 5}
    fallbacks:
      - llama-8b
      - {model: llama-70b-128k, on_context_overflow: true, on_failure: false}
    deployments:
      - {name: a, base_url: "http://10.0.0.11:8000/v1", weight: 2, capacity: 64}
      - {name: b, base_url: "http://10.0.0.12:8000/v1"}
  - name: llama-8b
    deployments: [{name: a, base_url: "http://10.0.0.21:8000/v1"}]
  - name: llama-70b-128k
    deployments: [{name: a, base_url: "http://10.0.0.31:8000/v1"}]
"""
    model = resolve(parse_config(text, source="example.yaml")).models[0]
    assert model.routing.affinity.header == "x-session-id"
    assert model.routing.affinity.sources == ("header", "prefix")
    assert [f.model for f in model.fallbacks] == ["llama-8b", "llama-70b-128k"]
    assert model.deployments[0].weight == 2
