"""The ``metering`` section: prices, the CloudEvents push, budgets and webhooks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from lockgate.config.base import SecretRef
from lockgate.metering.pricing import PriceEntry
from lockgate.webhooks.spec import BudgetsSpec, WebhooksSpec


class Strict(BaseModel):
    # Unknown keys are errors; models are frozen. Defined in each spec module, not imported:
    # ruff recognises pydantic models (their list/dict defaults) only by a local base.
    model_config = ConfigDict(extra="forbid", frozen=True)


class CloudEventsPushSpec(Strict):
    """Push usage events to a metering endpoint (OpenMeter's ingest API, say); see
    docs/metering.md. One process of the deployment pushes (a lease in the store)."""

    url: Annotated[str, Field(pattern=r"^https?://")]
    # Sent with every request; a value may be a secret reference ({env: ...} / {file: ...}),
    # e.g. authorization: {env: OPENMETER_AUTHORIZATION} holding "Bearer om_...".
    headers: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")], str | SecretRef] = {}
    # The CloudEvents ``source``: names this deployment; (source, id) is unique per event.
    source: Annotated[str, Field(min_length=1)] = "//lockgate"
    # Which tenant is the event's ``subject`` (OpenMeter's customer).
    subject: Literal["organization", "project", "key"] = "organization"
    # batch: up to batch_size events per request (application/cloudevents-batch+json);
    # structured: one event per request (application/cloudevents+json).
    content_mode: Literal["batch", "structured"] = "batch"
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    # How long to wait when the queue is empty.
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    lease_ttl_s: Annotated[float, Field(ge=1, le=3600)] = 30.0


class MeteringSpec(Strict):
    # The usage ledger: one record per request, journalled locally, flushed to the store.
    enabled: bool = True
    # When a client may see its answer end. durable: a response's last bytes wait until
    # its usage record is fsynced to the local journal, so a crash (even SIGKILL, even
    # power loss) cannot lose the record of an answer a client received; this adds about
    # one group commit to each response's end. async: the end goes out at once, and a
    # crash loses the records of the last few milliseconds' answers.
    acknowledge: Literal["durable", "async"] = "durable"
    # A journal whose commits fail or hang must not hold every response: past this, a
    # response ends without its record durable (counted and logged; the record stays
    # queued and is written once the disk recovers).
    acknowledge_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    # The journal's group commit while the worker is busy: at most one fsync per interval,
    # however many records (idle, it commits at once). Shorter: less added latency in
    # durable mode under load; longer: fewer fsyncs.
    journal_commit_interval_ms: Annotated[float, Field(ge=0, le=1000)] = 2.0
    # full: every group commit is fsynced, so an acknowledged record survives power loss
    # and OS crashes too. normal: no fsync per commit (SQLite synchronous=NORMAL): records
    # survive the gateway's death, SIGKILL included, but power loss may take the last
    # commits; about 10% more throughput on the reference VM.
    journal_sync: Literal["full", "normal"] = "full"
    # Price versions (effective-dated); see docs/metering.md.
    prices: list[PriceEntry] = []
    # Push usage events as CloudEvents (None: no push; exports and the API still work).
    cloudevents: CloudEventsPushSpec | None = None
    # Spend budgets' evaluation, and billing webhooks' delivery (docs/webhooks.md).
    budgets: BudgetsSpec = BudgetsSpec()
    webhooks: WebhooksSpec = WebhooksSpec()
