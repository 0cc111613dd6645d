"""The Grafana dashboard and the Prometheus rules in deploy/: well-formed, and about metrics
that exist.

Every metric name a panel or a rule uses must be exported by a running gateway:
``lockgate serve`` is started with the simulator behind it, given some traffic,
and its admin port scraped. ``promtool`` (Debian's prometheus package) checks
and unit-tests the rules when it is installed.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from lockgate.sim import SimServer
from tests.integration.test_replicas import free_port, wait_healthy
from tests.support import raw_request

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "lockgate.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
# Metric names (recording rules' names have colons, and are not exported: excluded).
METRIC = re.compile(r"\b(?:lockgate|gen_ai)_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def rule_exprs() -> list[str]:
    return [rule["expr"] for group in rules()["groups"] for rule in group["rules"]]


# Where label names appear: selectors and grouping clauses.
LABEL_CONTEXT = re.compile(
    r"\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)


def referenced(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC.findall(LABEL_CONTEXT.sub(" ", expr))}


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "lockgate-overview"
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "instance", "model"}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    # What the on-call engineer needs at 3 a.m. is on it.
    exprs = " ".join(dashboard_exprs())
    for needed in (
        "lockgate_requests_total",  # rate by status class and error source
        "lockgate_request_duration_seconds_bucket",
        "lockgate_gateway_overhead_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_client_token_usage_sum",
        "lockgate_requests_in_flight",
        "lockgate_queue_queued",
        "lockgate_admission_decisions_total",
        "lockgate_upstream_healthy",
        "lockgate_upstream_circuit_state",
        "lockgate_ledger_pending_entries",
    ):
        assert needed in exprs, needed


def test_the_rules_cover_each_failure_the_issue_names() -> None:
    alerts = {
        rule["alert"]: rule
        for group in rules()["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    for name in (
        "LockgateHighErrorRate",
        "LockgateErrorBudgetBurn",
        "LockgateLatencyBudgetBurn",
        "LockgateUpstreamDown",
        "LockgateModelUnavailable",
        "LockgateLimiterBackendFailing",
        "LockgateAdmissionSaturated",
        "LockgateLedgerBacklog",
        "LockgateLedgerStoreUnavailable",
    ):
        assert name in alerts, name
        assert alerts[name]["labels"]["severity"] in ("page", "ticket", "info")
        assert alerts[name]["annotations"]["summary"]


async def scrape_after_traffic(tmp_path: Path, sim: SimServer) -> str:
    """The admin port's /metrics of a real gateway that served some traffic."""
    port, admin_port = free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    config.write_bytes(
        orjson.dumps(
            {
                "server": {
                    "host": "127.0.0.1",
                    "port": port,
                    "admin_port": admin_port,
                    "data_dir": str(tmp_path / "data"),
                },
                "auth": {"allow_anonymous": True},
                "observability": {"access_log": str(tmp_path / "access.jsonl")},
                "models": [
                    {
                        "name": "sim-chat",
                        "limits": {"requests_per_minute": 100_000},
                        # A declared capacity: the model gets a saturation queue.
                        "deployments": [{"name": "sim", "base_url": sim.base_url, "capacity": 8}],
                    }
                ],
            }
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lockgate", "serve", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_healthy(port, process)
        chat = {"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}]}
        for body in (chat, {**chat, "stream": True}, {**chat, "model": "nope"}):
            for _ in range(3):
                await raw_request(port, "POST", "/v1/chat/completions", orjson.dumps(body))
        deadline = time.monotonic() + 10
        while True:
            try:
                page = (await raw_request(admin_port, "GET", "/metrics")).body.decode()
            except OSError:
                page = ""
            # The lockgate-ledger process's figures arrive through its node snapshot.
            flushed = re.search(r"^lockgate_ledger_records_flushed_total (\S+)$", page, re.M)
            if "gen_ai_server_time_to_first_token_seconds_bucket" in page and (
                flushed is not None and float(flushed.group(1)) > 0
            ):
                return page
            assert time.monotonic() < deadline, page
            await asyncio.sleep(0.1)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)


def exported(page: str) -> tuple[set[str], set[str]]:
    """(every family name from the TYPE lines, every sample name with a value)."""
    families = {line.split()[2] for line in page.splitlines() if line.startswith("# TYPE ")}
    kinds = {
        line.split()[2]: line.split()[3] for line in page.splitlines() if line.startswith("# TYPE ")
    }
    names = set(families)
    for family, kind in kinds.items():
        if kind == "histogram":
            names.update(family + suffix for suffix in HISTOGRAM_SUFFIXES)
    samples = {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in page.splitlines()
        if line and line[0] != "#"
    }
    return names, samples


async def test_every_metric_in_the_dashboard_and_rules_is_exported(
    tmp_path: Path, sim: SimServer
) -> None:
    page = await scrape_after_traffic(tmp_path, sim)
    names, samples = exported(page)
    used = referenced(dashboard_exprs()) | referenced(rule_exprs())
    assert len(used) > 30
    missing = sorted(used - names)
    assert missing == [], f"not exported by the gateway: {missing}"
    # The traffic above gave the core families real samples, not just declarations.
    for name in (
        "lockgate_requests_total",
        "lockgate_gateway_overhead_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_client_token_usage_sum",
        "lockgate_upstream_healthy",
        "lockgate_upstream_circuit_state",
        "lockgate_ledger_pending_entries",
        "lockgate_queue_capacity",
    ):
        assert name in samples, name


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus); rules only parsed")
    return found


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    # Error rate, upstream down, model unavailable and the availability burn rate.
    done = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULE_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tested = yaml.safe_load(RULE_TESTS.read_text())
    alerts = {t["alertname"] for test in tested["tests"] for t in test["alert_rule_test"]}
    assert {"LockgateHighErrorRate", "LockgateUpstreamDown"} <= alerts
