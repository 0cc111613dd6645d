"""Knobs of the engine simulator.

One frozen model so a config can be shared by the engine, the HTTP layer and
the CLI without anyone mutating it under the others; unknown keys are errors
because a typo in a benchmark config silently measuring the defaults is worse
than a failed start.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

FaultKind = Literal[
    "error-500",
    "error-429",
    "error-503",
    "error-content-policy",
    "hang",
    "slow-first-token",
    "cut",
    "stall",
    "malformed",
    "no-done",
    "stall-before-done",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)


class SimConfig(BaseModel):
    """Everything that shapes how the simulated engine behaves.

    ``ttft_ms == 0`` together with ``tokens_per_s == 0`` is *instant mode*: no
    sleep anywhere (prefill time included), so a benchmark measures the gateway
    and not the simulator.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[str, ...] = Field(
        default=("lockgate-sim",),
        min_length=1,
        description="Served model names, listed by GET /v1/models.",
    )
    restrict_models: bool = Field(
        default=False,
        description="Answer 404 for models not in `models` (default: accept and echo any name).",
    )
    ttft_ms: float = Field(default=50.0, ge=0, description="Fixed part of time to first token.")
    prefill_ms_per_token: float = Field(
        default=0.1, ge=0, description="Extra time to first token per uncached prompt token."
    )
    tokens_per_s: float = Field(
        default=50.0, ge=0, description="Decode speed of one sequence in an empty batch."
    )
    batch_slowdown: float = Field(
        default=1.0,
        ge=0,
        description="Inter-token latency is multiplied by 1 + batch_slowdown * running/capacity.",
    )
    capacity: int = Field(default=64, ge=1, description="Requests generating at once.")
    max_waiting: int | None = Field(
        default=None, ge=0, description="Queue length beyond which requests get 429."
    )
    output_tokens: int = Field(default=16, ge=1, description="Natural length of an answer.")
    block_size: int = Field(default=16, ge=1, description="Prefix-cache block size in tokens.")
    kv_cache_tokens: int = Field(default=262_144, ge=1, description="KV cache size in tokens.")
    max_model_len: int | None = Field(
        default=None, ge=1, description="Context window; prompt + max_tokens beyond it is a 400."
    )
    embedding_dimensions: int = Field(default=256, ge=1, le=16_384)
    seed: int = Field(
        default=0,
        ge=0,
        lt=2**62,
        description="Seeds content, tool arguments and random faults.",
    )
    api_key: str | None = Field(
        default=None, description="If set, /v1/* requires `Authorization: Bearer <api_key>`."
    )
    usage_in_final_choice: bool = Field(
        default=False,
        description="Streams put usage on the last chunk that has choices (no extra chunk).",
    )
    fault_rates: dict[FaultKind, float] = Field(
        default_factory=dict, description="Probability per request of each fault (seeded RNG)."
    )
    fault_after_chunks: int = Field(default=3, ge=0, description="Default for x-sim-fault-after.")
    slow_first_token_ms: float = Field(default=2000.0, ge=0)
    retry_after_s: float = Field(default=2.0, ge=0, description="Retry-After of 429 answers.")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    recent_requests: int = Field(default=100, ge=0, description="How many requests to remember.")

    @model_validator(mode="after")
    def _check_fault_rates(self) -> SimConfig:
        total = 0.0
        for kind, rate in self.fault_rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault_rates[{kind}] must be within 0..1, got {rate}")
            total += rate
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault_rates add up to {total:g}, more than 1")
        return self

    @property
    def is_instant(self) -> bool:
        return self.ttft_ms == 0 and self.tokens_per_s == 0
