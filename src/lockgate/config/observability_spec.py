"""The ``observability`` section: metrics, the access log, traces, readiness, debugging."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lockgate.config.base import SecretRef


class Strict(BaseModel):
    # Unknown keys are errors; models are frozen. Defined in each spec module, not imported:
    # ruff recognises pydantic models (their list/dict defaults) only by a local base.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TraceBatchSpec(Strict):
    """The span batcher (the SDK's ``BatchSpanProcessor``): export happens off the event loop."""

    max_queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 8192
    max_export_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 512
    schedule_delay_ms: Annotated[float, Field(gt=0, le=600_000)] = 1000.0
    export_timeout_ms: Annotated[float, Field(gt=0, le=600_000)] = 10_000.0

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> TraceBatchSpec:
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError("max_export_batch_size must not exceed max_queue_size")
        return self


class TracingSpec(Strict):
    """OpenTelemetry traces (docs/observability.md#traces). Off: no span is ever built."""

    enabled: bool = False
    # otlp_http (protobuf over HTTP), otlp_grpc, console (stdout, for debugging), none
    # (spans built and dropped: measures the cost of building them).
    exporter: Literal["otlp_http", "otlp_grpc", "console", "none"] = "otlp_http"
    # Default: http://localhost:4318/v1/traces (otlp_http), http://localhost:4317 (otlp_grpc).
    endpoint: str | None = None
    # Sent with every export (collector or vendor credentials: use a secret reference).
    headers: dict[str, str | SecretRef] = {}
    compression: Literal["none", "gzip"] = "none"
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Parent-based: a caller's sampled/not-sampled decision is followed; new traces are
    # kept with this probability (by trace id, so every replica agrees).
    sampling_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    service_name: Annotated[str, Field(min_length=1, max_length=256)] = "lockgate"
    batch: TraceBatchSpec = TraceBatchSpec()

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be an http:// or https:// URL without query or fragment")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str | SecretRef]) -> dict[str, str | SecretRef]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9-]{1,128}", name):
                raise ValueError(f"{name!r} is not a header name")
        return value


class ReadinessSpec(Strict):
    """What ``/readyz`` checks (docs/operations.md#probes)."""

    # Dependencies are checked this often in the background; /readyz answers from the
    # last check, so probes cost nothing.
    interval_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    # A check slower than this counts as failed.
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Models that need a healthy deployment for the process to be ready: null means
    # every configured model, [] none (model health is then reported, not required).
    required_models: list[str] | None = None


class RedactionRule(Strict):
    """Every match of ``pattern`` (a Python regular expression) becomes ``replacement``."""

    pattern: Annotated[str, Field(min_length=1)]
    replacement: str = "[REDACTED]"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return value


# What no log should hold, whatever a prompt quotes: credentials first (whole tokens),
# then personal data. Replace the list in config to change it; [] redacts nothing.
DEFAULT_REDACTIONS = (
    RedactionRule(pattern=r"lg_[a-z2-7]{16}_[a-z2-7]{52}", replacement="[API_KEY]"),
    RedactionRule(pattern=r"\bsk-[A-Za-z0-9_-]{16,}", replacement="[API_KEY]"),
    RedactionRule(pattern=r"\bAKIA[0-9A-Z]{16}\b", replacement="[API_KEY]"),
    RedactionRule(
        pattern=r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", replacement="[JWT]"
    ),
    RedactionRule(pattern=r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}", replacement="[TOKEN]"),
    RedactionRule(
        pattern=r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        replacement="[EMAIL]",
    ),
    RedactionRule(pattern=r"\b(?:\d[ -]?){12,18}\d\b", replacement="[NUMBER]"),
)


class PromptLoggingSpec(Strict):
    """Prompts in the access log, for projects that opt in (``log_prompts``); see
    docs/observability.md#prompt-logging. Nothing is logged for other projects."""

    # Off: no prompt is logged, whatever projects ask.
    enabled: bool = True
    # Each logged prompt is cut to this many characters, after redaction.
    max_chars: Annotated[int, Field(ge=64, le=1_000_000)] = 4096
    redact: tuple[RedactionRule, ...] = DEFAULT_REDACTIONS


class ObservabilitySpec(Strict):
    # One JSON line per request: "-" for stdout, a file path, or null for none.
    access_log: str | None = "-"
    # A project label on request and token counters (bounded: beyond the cap, "other").
    metrics_by_project: bool = False
    max_projects: Annotated[int, Field(ge=1, le=10_000)] = 100
    tracing: TracingSpec = TracingSpec()
    # Per-request metrics (counters, histograms, in-flight) on the hot path; off leaves
    # only what is read at scrape time (admission, upstream health, ledger). For benches.
    metrics: bool = True
    # Debug sessions ("trace this key's next N requests", admin API): off removes the hook.
    request_debugging: bool = True
    # Captured debug records (and ended sessions) are deleted after this many days.
    request_debug_retention_days: Annotated[float, Field(gt=0, le=3650)] = 7.0
    readiness: ReadinessSpec = ReadinessSpec()
    prompt_logging: PromptLoggingSpec = PromptLoggingSpec()
