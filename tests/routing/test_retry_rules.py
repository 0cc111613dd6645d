"""Retry rules without a network: failure classes, back-off, Retry-After, the budget."""

from __future__ import annotations

import email.utils
import time

import pytest

from lockgate.errors import (
    InvalidParameter,
    UpstreamFailure,
    UpstreamHttpError,
    UpstreamTimedOut,
)
from lockgate.providers.openai_compat import upstream_error
from lockgate.routing.member import Outcome
from lockgate.routing.retry import (
    Failure,
    RetryBudget,
    backoff_s,
    classify,
    health_outcome,
    retry_after_s,
)
from lockgate.routing.spec import RetryBudgetSpec, RetrySpec

RETRIES = RetrySpec()


def http_error(status: int, code: str | None = None, **headers: str) -> UpstreamHttpError:
    body = b'{"error": {"message": "m", "code": "%s"}}' % (code or "").encode()
    pairs = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return upstream_error(status, pairs, body)


@pytest.mark.parametrize(
    ("error", "failure", "outcome"),
    [
        (http_error(500), Failure.AGAIN, Outcome.FAILURE),
        (http_error(503), Failure.AGAIN, Outcome.FAILURE),
        (http_error(429), Failure.AGAIN, Outcome.NEUTRAL),
        (http_error(400), Failure.FINAL, Outcome.SUCCESS),
        (http_error(404), Failure.FINAL, Outcome.SUCCESS),
        (http_error(400, "context_length_exceeded"), Failure.CONTEXT_OVERFLOW, Outcome.SUCCESS),
        (http_error(401), Failure.ELSEWHERE, Outcome.FAILURE),  # becomes upstream_auth_failed
        (http_error(501), Failure.FINAL, Outcome.FAILURE),  # not in on_status
        (http_error(503, x_should_retry="false"), Failure.FINAL, Outcome.FAILURE),
        (UpstreamFailure("refused"), Failure.ELSEWHERE, Outcome.FAILURE),
        (UpstreamTimedOut("slow", phase="first_byte"), Failure.ELSEWHERE, Outcome.FAILURE),
        (InvalidParameter("bad"), Failure.FINAL, Outcome.NEUTRAL),
    ],
)
def test_failure_classes(error: Exception, failure: Failure, outcome: Outcome) -> None:
    assert isinstance(error, InvalidParameter | UpstreamFailure)
    assert classify(error, RETRIES) is failure
    assert health_outcome(error) is outcome


def test_on_status_is_configurable_and_refuses_client_errors() -> None:
    assert classify(http_error(429), RetrySpec(on_status=(503,))) is Failure.FINAL
    with pytest.raises(ValueError, match="only 429 and 5xx"):
        RetrySpec(on_status=(400,))
    with pytest.raises(ValueError, match="only 429 and 5xx"):
        RetrySpec(on_status=(431,))


def test_retry_after_forms() -> None:
    assert retry_after_s(http_error(429, retry_after="7")) == 7.0
    assert retry_after_s(http_error(429, retry_after="0.25")) == 0.25
    # retry-after-ms is the more precise one, as the OpenAI SDKs read it.
    assert retry_after_s(http_error(429, retry_after="1", retry_after_ms="1500")) == 1.5
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after_s(http_error(503, retry_after=date)) or 0) <= 30
    assert retry_after_s(http_error(429)) is None
    assert retry_after_s(http_error(429, retry_after="soon")) is None
    assert retry_after_s(http_error(429, retry_after="-5")) == 0.0


def test_back_off_grows_is_capped_and_jittered() -> None:
    spec = RetrySpec(backoff_base_ms=100, backoff_max_ms=350)
    for retry, ceiling in ((1, 0.1), (2, 0.2), (3, 0.35), (8, 0.35)):
        waits = [backoff_s(retry, spec) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100, "jittered, not synchronised"


def test_budget_allows_the_floor_then_the_ratio() -> None:
    budget = RetryBudget(RetryBudgetSpec(ratio=0.1, min_per_s=0.5, window_s=10))
    now = 1000.0
    # Floor: 0.5/s * 10 s = 5 retries even with no traffic.
    assert [budget.try_spend(now) for _ in range(6)] == [True] * 5 + [False]
    for _ in range(100):
        budget.record_request(now)
    # 100 requests * 10 % = 10 more.
    assert sum(budget.try_spend(now) for _ in range(20)) == 10


def test_budget_window_slides() -> None:
    budget = RetryBudget(RetryBudgetSpec(ratio=0, min_per_s=0.2, window_s=10))
    assert budget.try_spend(0.5)
    assert budget.try_spend(0.5)
    assert not budget.try_spend(5.0)  # two per ten seconds
    assert not budget.try_spend(9.9)  # the first two are still in the window
    # One-second buckets: the window slides a bucket at a time.
    assert budget.try_spend(10.0)  # the bucket of 0.5 s has slid out
    assert budget.try_spend(10.0)
    assert not budget.try_spend(10.0)


def test_budget_with_zero_floor_and_ratio_never_retries() -> None:
    budget = RetryBudget(RetryBudgetSpec(ratio=0, min_per_s=0))
    budget.record_request(1.0)
    assert not budget.try_spend(1.0)
