"""Pricing: effective-dated versions, deployment overrides, exact decimal arithmetic."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from pydantic import ValidationError

from lockgate.metering.pricing import CatalogueError, PriceCatalogue, PriceEntry, cost_micros

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)


def entry(price_id: str, start: datetime, **fields: object) -> PriceEntry:
    return PriceEntry.model_validate(
        {"id": price_id, "model": "llama", "effective_from": start, **fields}
    )


def quote(
    catalogue: PriceCatalogue,
    when: datetime,
    deployment: str | None = None,
    *,
    model: str = "llama",
) -> tuple[str | None, int]:
    q = catalogue.quote(
        model=model,
        deployment=deployment,
        when=when,
        prompt_tokens=1_000,
        completion_tokens=100,
        cached_tokens=0,
        reached_upstream=True,
    )
    return q.price_id, q.cost_micros


def test_a_record_keeps_the_price_in_force_at_its_own_time() -> None:
    catalogue = PriceCatalogue(
        [
            entry("llama-jan", JAN, input_per_million="1", output_per_million="2"),
            entry("llama-mar", MAR, input_per_million="3", output_per_million="4"),
        ]
    )
    assert quote(catalogue, JAN - timedelta(microseconds=1)) == (None, 0)
    assert quote(catalogue, JAN) == ("llama-jan", 1_000 * 1 + 100 * 2)
    assert quote(catalogue, MAR - timedelta(microseconds=1)) == ("llama-jan", 1_200)
    assert quote(catalogue, MAR) == ("llama-mar", 1_000 * 3 + 100 * 4)


def test_a_deployment_override_applies_from_its_own_start_only() -> None:
    catalogue = PriceCatalogue(
        [
            entry("llama", JAN, input_per_million="1"),
            entry("llama-on-b", FEB, deployment="vllm-b", input_per_million="5"),
        ]
    )
    assert quote(catalogue, MAR, "vllm-a") == ("llama", 1_000)
    assert quote(catalogue, JAN, "vllm-b") == ("llama", 1_000)  # before the override
    assert quote(catalogue, MAR, "vllm-b") == ("llama-on-b", 5_000)
    assert quote(catalogue, MAR, None) == ("llama", 1_000)


def test_a_model_version_has_its_own_price_or_else_the_model_s() -> None:
    catalogue = PriceCatalogue(
        [
            entry("llama", JAN, input_per_million="1"),
            entry("llama-v2", FEB, model="llama@v2", input_per_million="7"),
        ]
    )
    assert quote(catalogue, MAR, model="llama@v1") == ("llama", 1_000)
    assert quote(catalogue, JAN, model="llama@v2") == ("llama", 1_000)  # before its own
    assert quote(catalogue, MAR, model="llama@v2") == ("llama-v2", 7_000)
    assert quote(catalogue, MAR, model="other@v2") == (None, 0)
    assert quote(catalogue, MAR, model="llama@") == (None, 0)


def test_cost_is_exact_decimal_with_cached_tokens_and_fee() -> None:
    price = entry(
        "p",
        JAN,
        input_per_million="0.15",
        cached_input_per_million="0.075",
        output_per_million="0.6",
        request_fee="0.0001",
    )
    # Floats would drift here: 0.1 + 0.2 style errors summed over many tokens.
    exact = cost_micros(
        price,
        prompt_tokens=1_234_567,
        completion_tokens=7_654_321,
        cached_tokens=234_567,
        reached_upstream=True,
    )
    expected = (
        Decimal(1_000_000) * Decimal("0.15")
        + Decimal(234_567) * Decimal("0.075")
        + Decimal(7_654_321) * Decimal("0.6")
        + Decimal("0.0001") * 1_000_000
    )
    assert expected == Decimal("4760285.125")
    assert exact == 4_760_285  # .125 rounds down
    # The fee is for requests that reached an upstream only.
    refused = cost_micros(
        price, prompt_tokens=0, completion_tokens=0, cached_tokens=0, reached_upstream=False
    )
    assert refused == 0


def test_rounding_is_half_to_even_once_per_record() -> None:
    price = entry("p", JAN, input_per_million="0.5")
    costs = [
        cost_micros(
            price, prompt_tokens=n, completion_tokens=0, cached_tokens=0, reached_upstream=True
        )
        for n in (1, 3, 5)
    ]
    assert costs == [0, 2, 2]  # 0.5 → 0, 1.5 → 2, 2.5 → 2


def test_prices_from_yaml_floats_are_read_as_their_decimal_text() -> None:
    price = entry("p", JAN, input_per_million=0.1, output_per_million=0.2)
    assert price.input_per_million == Decimal("0.1")
    assert (
        cost_micros(
            price, prompt_tokens=10, completion_tokens=10, cached_tokens=0, reached_upstream=True
        )
        == 3
    )


def test_the_catalogue_refuses_contradictions() -> None:
    with pytest.raises(CatalogueError, match="unique"):
        PriceCatalogue([entry("p", JAN), entry("p", FEB)])
    with pytest.raises(CatalogueError, match="one instant"):
        PriceCatalogue([entry("a", JAN), entry("b", JAN)])
    with pytest.raises(CatalogueError, match="one currency"):
        PriceCatalogue([entry("a", JAN), entry("b", FEB, currency="EUR")])
    with pytest.raises(ValidationError):
        entry("p", JAN, input_per_million="-1")
    with pytest.raises(ValidationError):
        entry("p", JAN, unknown_key=1)
    with pytest.raises(ValidationError):
        PriceEntry.model_validate(
            {"id": "p", "model": "m", "effective_from": "2026-01-01T00:00:00"}
        )


def test_the_integer_evaluation_equals_decimal_arithmetic() -> None:
    # The catalogue computes in scaled integers; the definition is Decimal, rounded once.
    rng = random.Random(6)
    for _ in range(2_000):
        prices = [
            Decimal(rng.randint(0, 10**7)) / Decimal(10 ** rng.randint(0, 9)) for _ in range(4)
        ]
        price = entry(
            "p",
            JAN,
            input_per_million=prices[0],
            cached_input_per_million=prices[1],
            output_per_million=prices[2],
            request_fee=prices[3],
        )
        prompt = rng.randint(0, 10**7)
        cached = rng.randint(0, prompt)
        completion = rng.randint(0, 10**6)
        exact = (
            (prompt - cached) * prices[0]
            + cached * prices[1]
            + completion * prices[2]
            + prices[3] * 1_000_000
        )
        expected = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        assert (
            cost_micros(
                price,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=cached,
                reached_upstream=True,
            )
            == expected
        ), (prices, prompt, cached, completion)
