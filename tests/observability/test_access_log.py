"""The access log: one JSON line per request with the agreed fields, and never a secret.

Driven through a real gateway (HTTP over loopback, API keys checked, the
simulator behind it); the no-secrets test looks at every output the process
produces: the access log (file and stdout), the application log, stderr and
the metrics page.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from lockgate.dataplane.pipeline.authenticate import CredentialAuthenticator
from lockgate.dataplane.pipeline.authorize import PolicyAuthorizer
from lockgate.observability.access_log import AccessLog
from lockgate.observability.app_log import JsonLogFormatter, redact
from lockgate.observability.metrics import GatewayMetrics
from lockgate.observability.node import render
from lockgate.sim import SimServer
from lockgate.tenancy.key_cache import KeyCache, KeyGrant
from lockgate.tenancy.keys import generate_key, hash_secret
from lockgate.tenancy.model import ApiKeyRecord, KeyStatus, Scope
from tests.observability.support import context, observed_gateway, settled
from tests.support import gateway_spec, raw_request, sim_model
from tests.tenancy.grants import grant_for

PEPPER = secrets.token_bytes(32)


def chat(content: str = "hi", model: str = "sim-chat", **extra: Any) -> bytes:
    return orjson.dumps(
        {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    )


async def post(port: int, body: bytes, **headers: str) -> int:
    response = await raw_request(port, "POST", "/v1/chat/completions", body, headers)
    return response.status


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_one_line_per_request_with_tenant_model_status_error_tokens_and_timings(
    sim: SimServer, tmp_path: Path
) -> None:
    path = tmp_path / "access.log"
    access = AccessLog(path, flush_interval_s=0.01)
    access.start()
    spec = gateway_spec([sim_model("sim-chat", sim.base_url)])
    try:
        async with observed_gateway(spec, access) as (gw, totals):
            ok = await raw_request(gw.port, "POST", "/v1/chat/completions", chat())
            await post(gw.port, chat(stream=True))
            await post(gw.port, chat(), **{"x-sim-fault": "error-500"})
            await post(gw.port, chat(model="no-such-model"))
            await post(gw.port, chat(model="not a model name, maybe a prompt"))
            await settled(totals, 5)
    finally:
        access.close()
    success, stream, failed, unknown, free_text = lines(path)
    assert success["request_id"] == ok.headers["x-request-id"]
    assert success["trace_id"] is None, "tracing is off"
    assert success["principal"] == "anonymous"
    assert (success["organization_id"], success["project_id"]) == (None, None)
    assert success["operation"] == "chat.completions"
    assert (success["model"], success["deployment"]) == ("sim-chat", "sim-chat-d1")
    assert (success["status"], success["error_source"], success["error_code"]) == (200, None, None)
    assert success["input_tokens"] > 0
    assert success["output_tokens"] == 16
    assert success["stream"] is False
    assert success["ttft_ms"] is None
    assert success["time"].endswith("Z")
    assert success["client_ip"] == "127.0.0.1"
    for line in (success, stream):
        assert line["upstream_ms"] > 0
        assert line["total_ms"] == pytest.approx(
            line["gateway_ms"] + line["upstream_ms"], abs=0.002
        )
    assert stream["stream"] is True
    assert 0 < stream["ttft_ms"] <= stream["upstream_ms"]
    assert 0 < stream["client_ttfb_ms"] <= stream["total_ms"]
    assert stream["output_tokens"] == 16
    assert failed["status"] >= 500
    assert failed["error_source"] == "upstream"
    assert failed["error_code"]
    assert failed["input_tokens"] is None
    assert (unknown["status"], unknown["error_source"], unknown["error_code"]) == (
        404, "client", "model_not_found"
    )  # fmt: skip
    assert (unknown["model"], unknown["requested_model"]) == (None, "no-such-model")
    assert unknown["deployment"] is None
    assert unknown["upstream_ms"] is None
    assert free_text["requested_model"] is None, "free text from the client is not logged"


class MemoryKeys:
    def __init__(self) -> None:
        self.grants: dict[str, KeyGrant] = {}

    async def load_key(self, key_id: str) -> KeyGrant | None:
        return self.grants.get(key_id)

    def add(self) -> tuple[str, str]:
        key_id, full, secret = generate_key()
        record = ApiKeyRecord(
            id=key_id,
            organization_id="org_a",
            project_id="proj_a",
            name="test",
            secret_hash=hash_secret(PEPPER, key_id, secret),
            status=KeyStatus.ACTIVE,
            scopes=(Scope.INFERENCE,),
            allowed_models=(),
            created_at=datetime.now(UTC),
        )
        self.grants[key_id] = grant_for(record)
        return key_id, full


async def test_no_secret_or_prompt_reaches_any_log(
    sim: SimServer,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = MemoryKeys()
    key_id, key = keys.add()
    wrong_secret = key[:-10] + "a" * 9 + key[-1]  # the right key id, a wrong secret
    provider_key = "sk-" + secrets.token_urlsafe(24)  # the deployment's upstream credential
    monkeypatch.setenv("OBS_TEST_UPSTREAM_KEY", provider_key)
    prompt = "my card number is " + secrets.token_hex(8)
    secrets_and_prompt = [key, key[len("lg_") + 17 :], wrong_secret, provider_key, prompt]
    app_log = io.StringIO()
    handler = logging.StreamHandler(app_log)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    file_log = AccessLog(tmp_path / "access.log", flush_interval_s=0.01)
    stdout_log = AccessLog(flush_interval_s=0.01)  # "-": stdout
    metrics = GatewayMetrics(by_project=True)
    model = sim_model("sim-chat", sim.base_url, api_key={"env": "OBS_TEST_UPSTREAM_KEY"})
    file_log.start()
    stdout_log.start()
    try:
        async with observed_gateway(
            gateway_spec([model]),
            file_log,
            stdout_log,
            metrics,
            authenticator=CredentialAuthenticator(KeyCache(keys), PEPPER),
            authorizer=PolicyAuthorizer(),
        ) as (gw, totals):
            bearer = {"authorization": f"Bearer {key}"}
            statuses = [
                await post(gw.port, chat(prompt), **bearer),
                await post(gw.port, chat(prompt, stream=True), **bearer),
                await post(gw.port, chat(prompt), **bearer, **{"x-sim-fault": "error-500"}),
                await post(gw.port, chat(prompt), **bearer, **{"x-sim-fault": "cut"}),
                await post(gw.port, chat(prompt), authorization=f"Bearer {wrong_secret}"),
                await post(gw.port, chat(prompt), authorization=f"Bearer {provider_key}"),
                await post(gw.port, chat(prompt, model=prompt), **bearer),
            ]
            await settled(totals, 7)
    finally:
        file_log.close()
        stdout_log.close()
        root.removeHandler(handler)
    assert statuses[:2] == [200, 200]
    assert min(statuses[2:4]) >= 500, "upstream failures (whatever retries made of them)"
    assert statuses[4:] == [401, 401, 404]
    outputs = {
        "access log file": (tmp_path / "access.log").read_text(),
        "application log (JSON)": app_log.getvalue(),
        "captured log records": caplog.text,
        "metrics": render(metrics)[1].decode(),
    }
    captured = capfd.readouterr()
    outputs["stdout"], outputs["stderr"] = captured.out, captured.err
    assert len(outputs["access log file"].splitlines()) == 7
    assert outputs["stdout"].count('"request_id"') == 7
    assert key_id in outputs["access log file"], "the public key id is how on-call finds a key"
    for where, text in outputs.items():
        for secret in secrets_and_prompt:
            assert secret not in text, f"{secret[:12]}... leaked into the {where}"
    assert "proj_a" in outputs["metrics"]


def test_lines_beyond_the_buffer_are_dropped_and_counted(tmp_path: Path) -> None:
    access = AccessLog(tmp_path / "access.log", max_pending=3)
    for _ in range(5):
        access.settle(context(status=200))
    assert access.dropped == 2
    access.start()
    access.close()
    assert len((tmp_path / "access.log").read_bytes().splitlines()) == 3
    (dropped, errors) = access.collect()
    assert dropped.samples[0].value == 2
    assert errors.samples[0].value == 0


def test_writes_to_a_pipe_keep_lines_whole(tmp_path: Path) -> None:
    """Workers share stdout; a pipe keeps a write atomic only up to PIPE_BUF bytes."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    access = AccessLog(fifo, flush_interval_s=3600)
    try:
        access.start()
        assert access._piece_bytes > 0
        for i in range(40):
            access.settle(context(status=200, request_id=f"req-{i:04d}-" + "x" * 100))
        pieces = list(access._pieces(list(access._pending)))
        access.close()
        received = b""
        while chunk := os.read(reader, 65536):
            received += chunk
    finally:
        os.close(reader)
    assert all(len(piece) <= 4096 and piece.endswith(b"\n") for piece in pieces)
    assert len(pieces) > 1
    ids = [orjson.loads(line)["request_id"][:8] for line in received.splitlines()]
    assert ids == [f"req-{i:04d}" for i in range(40)]


def test_application_logs_are_json_with_credentials_masked() -> None:
    record = logging.makeLogRecord(
        {
            "name": "lockgate.test",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "upstream said %s",
            "args": ("authorization: Bearer abcdefgh12345678, key lg_abcdefghijklmnop_secret123",),
            "deployment": "vllm-a",
        }
    )
    line = orjson.loads(JsonLogFormatter().format(record))
    assert line["level"] == "warning"
    assert line["logger"] == "lockgate.test"
    assert line["deployment"] == "vllm-a"
    assert "abcdefgh12345678" not in line["message"]
    assert "secret123" not in line["message"]
    assert (
        redact("postgresql://user:hunter22@db/lockgate")
        == "postgresql://user:[redacted]@db/lockgate"
    )
    assert redact('{"api_key": "sk-live-abcdefghijklmnopqrstu"}') == '{"api_key": "[redacted]"}'


def test_an_upstream_error_code_that_is_not_a_plain_word_is_not_written() -> None:
    from lockgate.errors import UpstreamHttpError

    def code_written(code: str) -> object:
        error = UpstreamHttpError("x", status=400, error_type="t", code=code, param=None,
                                  headers=())  # fmt: skip
        return AccessLog().fields(context(status=400, error=error))["error_code"]

    assert code_written("context_length_exceeded") == "context_length_exceeded"
    assert code_written("your prompt 'tell me a secret' is too long") == "other"
