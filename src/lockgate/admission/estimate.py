"""Token and spend estimates for a request before it runs, and its real figures after.

Tokens are not known up front, so admission reserves an estimate and
settlement reconciles it with the usage the upstream reported. The prompt
estimate is the request body's size over four (about four bytes of English
text per token for common BPE tokenizers). JSON syntax makes that an
overestimate, which is the safe side for a limit, and it costs nothing: no
tokenizer to ship (air-gapped sites could not download one) and no walk
over the messages. The output estimate is what the request may produce:
``max_completion_tokens``/``max_tokens`` (times ``n``) or a configured default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lockgate.config.spec import Pricing
from lockgate.usage import Usage

BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt_tokens: int
    output_tokens: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


def estimate(body: dict[str, Any] | None, body_bytes: int, default_output: int) -> Estimate:
    prompt = -(-body_bytes // BYTES_PER_TOKEN)
    if body is None or ("input" in body and "messages" not in body and "prompt" not in body):
        return Estimate(prompt, 0)  # embeddings (and bodiless calls) produce no output tokens
    output = max_output_tokens(body)
    if output is None:
        output = default_output
    choices = body.get("n")
    if isinstance(choices, int) and choices > 1:
        output *= choices
    return Estimate(prompt, output)


def max_output_tokens(body: dict[str, Any]) -> int | None:
    """The request's own output bound, if it set a usable one."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def micro_cost(pricing: Pricing | None, prompt_tokens: int, output_tokens: int) -> float:
    """Spend in millionths of the currency unit: a price per million tokens is exactly
    the cost of one token in micro-units."""
    if pricing is None:
        return 0.0
    return float(
        pricing.input_per_million * prompt_tokens + pricing.output_per_million * output_tokens
    )


def actual_tokens(usage: Usage | None, reached_upstream: bool, reserved: Estimate) -> Estimate:
    """What to charge at settlement.

    With usage: exactly that. Without, if the upstream never saw the request, nothing;
    if it did (a cut stream, a disconnect), the reservation stands: the engine
    may have done all that work, and under-charging is the unsafe side.
    """
    if usage is not None:
        return Estimate(usage.prompt_tokens, usage.completion_tokens)
    if not reached_upstream:
        return Estimate(0, 0)
    return reserved
