"""Per-request steering headers (``x-sim-*``) and fault selection.

Tests steer single requests through headers because a gateway forwards
headers it does not understand; a config-level rate adds faults at random
(seeded, so a failing benchmark run can be replayed).
"""

from __future__ import annotations

import random

from lockgate.sim.config import FAULT_KINDS, FaultKind, SimConfig

# Faults that break a response after it started (streamed or whole).
STREAM_FAULTS: frozenset[str] = frozenset(
    {"cut", "stall", "malformed", "no-done", "stall-before-done"}
)

# Faults answered with an error before the engine: status, message, OpenAI error code.
ERROR_FAULTS: dict[str, tuple[int, str, str | None]] = {
    "error-500": (
        500,
        "The server had an error while processing your request. Sorry about that!",
        None,
    ),
    "error-429": (429, "Rate limit reached for requests (simulated).", "rate_limit_exceeded"),
    "error-503": (503, "The engine is currently overloaded, please try again later.", None),
    "error-content-policy": (
        400,
        "Your request was rejected as a result of our safety system (simulated).",
        "content_policy_violation",
    ),
}


def retry_headers(seconds: float) -> bytes:
    return b"retry-after: %s\r\nretry-after-ms: %d\r\n" % (
        f"{seconds:g}".encode(),
        round(seconds * 1000),
    )


class BadSimHeader(ValueError):
    """An ``x-sim-*`` header has a value the simulator cannot act on."""


class RequestOptions:
    """What the ``x-sim-*`` headers of one request ask for."""

    __slots__ = (
        "delay_ms",
        "fault",
        "fault_after",
        "output_tokens",
        "retry_after",
        "usage_in_final_choice",
    )

    def __init__(
        self,
        *,
        fault: FaultKind | None = None,
        fault_after: int | None = None,
        delay_ms: float | None = None,
        retry_after: float | None = None,
        output_tokens: int | None = None,
        usage_in_final_choice: bool | None = None,
    ) -> None:
        self.fault = fault
        self.fault_after = fault_after
        self.delay_ms = delay_ms
        self.retry_after = retry_after
        self.output_tokens = output_tokens
        self.usage_in_final_choice = usage_in_final_choice


# Shared by every request without steering headers; never mutated.
NO_OPTIONS = RequestOptions()


def _number(headers: dict[bytes, bytes], name: bytes, minimum: float) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadSimHeader(f"{name.decode()} must be a number, got {raw!r}") from None
    if not value >= minimum:  # also rejects NaN
        raise BadSimHeader(f"{name.decode()} must be at least {minimum:g}, got {raw!r}")
    return value


def _integer(headers: dict[bytes, bytes], name: bytes, minimum: int) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    if not raw.strip().isdigit() or int(raw) < minimum:
        raise BadSimHeader(f"{name.decode()} must be an integer >= {minimum}, got {raw!r}")
    return int(raw)


def parse_options(headers: dict[bytes, bytes]) -> RequestOptions:
    """Read the steering headers; most requests have none, so that path allocates nothing."""
    fault_raw = headers.get(b"x-sim-fault")
    options = NO_OPTIONS
    if (
        fault_raw is None
        and b"x-sim-delay-ms" not in headers
        and b"x-sim-output-tokens" not in headers
        and b"x-sim-usage-in-final-choice" not in headers
    ):
        return options
    fault: FaultKind | None = None
    if fault_raw is not None:
        name = fault_raw.strip().decode("latin-1").lower()
        if name not in FAULT_KINDS:
            raise BadSimHeader(f"x-sim-fault must be one of {', '.join(FAULT_KINDS)}, got {name!r}")
        fault = name
    final = headers.get(b"x-sim-usage-in-final-choice")
    return RequestOptions(
        fault=fault,
        fault_after=_integer(headers, b"x-sim-fault-after", 0),
        delay_ms=_number(headers, b"x-sim-delay-ms", 0),
        retry_after=_number(headers, b"x-sim-retry-after", 0),
        output_tokens=_integer(headers, b"x-sim-output-tokens", 1),
        usage_in_final_choice=None
        if final is None
        else final.strip().lower() in (b"1", b"true", b"yes"),
    )


class FaultPolicy:
    """Decides the fault of each request: the header if present, else a seeded draw."""

    __slots__ = ("_rng", "_seed", "_table")

    def __init__(self, config: SimConfig) -> None:
        self._seed = config.seed
        self._rng = random.Random(config.seed)  # noqa: S311 -- replayable, not secret
        table: list[tuple[float, FaultKind]] = []
        edge = 0.0
        for kind, rate in config.fault_rates.items():
            if rate > 0:
                edge += rate
                table.append((edge, kind))
        self._table = tuple(table)

    def reset(self) -> None:
        self._rng.seed(self._seed)

    def pick(self, options: RequestOptions) -> FaultKind | None:
        if options.fault is not None or not self._table:
            return options.fault
        draw = self._rng.random()
        for edge, kind in self._table:
            if draw < edge:
                return kind
        return None
