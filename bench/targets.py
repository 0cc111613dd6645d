"""The three things under load: the simulator alone, nginx in front of it, Lockgate in front of it.

Each is started on loopback on a free port from a config generated into the
run's temp dir, and is ready only once its health URL answers 200.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.proc import BenchError, Child, Pinning, free_port, running, spawn, wait_http_ok
from bench.provision import provision_key

HOST = "127.0.0.1"
TARGETS = (
    "direct",
    "nginx",
    "lockgate",
    "lockgate-auth",
    "lockgate-limits",
    "lockgate-redis",
    "lockgate-tracing",
    "lockgate-nometrics",
    "lockgate-async-ledger",
    "lockgate-nometering",
)
# Targets that serve anonymously, so they compare with the plain ``lockgate`` figure.
_ANONYMOUS = (
    "lockgate",
    "lockgate-tracing",
    "lockgate-nometrics",
    "lockgate-async-ledger",
    "lockgate-nometering",
)
# Redis for the lockgate-redis target (a throwaway key prefix per run).
BENCH_REDIS_URL = os.environ.get("LOCKGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
MODEL = "bench-model"
# How the simulator is started; a module constant so a stand-in can be swapped in.
SIM_COMMAND: tuple[str, ...] = (sys.executable, "-m", "lockgate", "sim")


@dataclass(frozen=True)
class SimSettings:
    """Simulator knobs: instant mode for throughput, slow tokens for idle streams."""

    ttft_ms: float = 0
    tokens_per_s: float = 0
    output_tokens: int = 32
    capacity: int = 256


@dataclass
class Sim:
    child: Child
    port: int


@dataclass
class Target:
    """A started target: where to send requests, and whose CPU/memory to count."""

    name: str
    port: int
    measured: Child
    # Sent with every request (lockgate-auth: its API key).
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def header_bytes(self) -> bytes:
        return b"".join(f"{k}: {v}\r\n".encode() for k, v in self.headers)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@contextlib.contextmanager
def simulator(tmp: Path, pin: Pinning, settings: SimSettings, label: str) -> Iterator[Sim]:
    """Run one simulator for the duration of the block, on the load CPUs."""
    port = free_port()
    argv = [
        *SIM_COMMAND,
        *("--host", HOST, "--port", str(port)),
        *("--ttft-ms", f"{settings.ttft_ms:g}", "--tokens-per-s", f"{settings.tokens_per_s:g}"),
        *("--output-tokens", str(settings.output_tokens), "--capacity", str(settings.capacity)),
        *("--model", MODEL),
    ]
    with running(spawn(label, argv, tmp, pin.sim)) as child:
        wait_http_ok(child, f"http://{HOST}:{port}/health")
        yield Sim(child, port)


@contextlib.contextmanager
def target(name: str, tmp: Path, pin: Pinning, sim: Sim, workers: int) -> Iterator[Target]:
    """Start ``name`` in front of ``sim`` (``direct`` starts nothing) and stop it afterwards."""
    if name == "direct":
        yield Target(name, sim.port, sim.child)
        return
    port = free_port()
    if name == "lockgate-tracing":  # plus the collector it exports to
        with trace_sink(tmp, pin) as sink_port:
            child, headers = _start_lockgate(
                tmp, port, sim.port, pin, workers, variant=name, trace_sink_port=sink_port
            )
            with running(child):
                wait_http_ok(child, f"http://{HOST}:{port}/healthz")
                yield Target(name, port, child, headers)
        return
    if name == "nginx":
        child = _start_nginx(tmp, port, sim.port, pin)
        health = f"http://{HOST}:{port}/health"  # proxied to the simulator: proves the hop
    elif name.startswith("lockgate"):
        child, headers = _start_lockgate(tmp, port, sim.port, pin, workers, variant=name)
        health = f"http://{HOST}:{port}/healthz"
    else:
        raise BenchError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    with running(child):
        wait_http_ok(child, health)
        yield Target(name, port, child, headers if name != "nginx" else ())


@contextlib.contextmanager
def trace_sink(tmp: Path, pin: Pinning) -> Iterator[int]:
    """An OTLP/HTTP receiver that discards (``bench/otlp_sink.py``), on the load CPUs."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.otlp_sink", "--host", HOST, "--port", str(port)]
    with running(spawn("otlp-sink", argv, tmp, pin.sim)) as child:
        wait_http_ok(child, f"http://{HOST}:{port}/health")
        yield port


def nginx_config(tmp: Path, port: int, upstream_port: int) -> str:
    """A minimal streaming-friendly reverse proxy: one process, pooled upstream connections."""
    return f"""\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;

events {{
    worker_connections 16384;
}}

http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    keepalive_requests 1000000;

    upstream sim {{
        server {HOST}:{upstream_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}

    server {{
        listen {HOST}:{port} backlog=4096;
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def _start_nginx(tmp: Path, port: int, upstream_port: int, pin: Pinning) -> Child:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise BenchError("nginx is not installed (apt-get install -y nginx-light)")
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(tmp, port, upstream_port))
    return spawn("nginx", [nginx, "-p", str(tmp), "-c", str(conf)], tmp, pin.sut)


def lockgate_config(
    tmp: Path,
    port: int,
    upstream_port: int,
    workers: int,
    *,
    variant: str = "lockgate",
    trace_sink_port: int | None = None,
) -> str:
    """The gateway's config: one model, one deployment pointing at the simulator.

    ``lockgate`` serves anonymously (the foundation's figure); ``lockgate-auth``
    checks an API key on every request, as in production; ``lockgate-limits``
    adds request and token limits (never reached) decided in process, and
    ``lockgate-redis`` the same limits decided in Redis, one round trip each.
    ``lockgate-tracing`` is ``lockgate`` with every request traced (sampling 1.0)
    and exported over OTLP/HTTP to a discarding receiver on ``trace_sink_port``.
    ``lockgate-nometrics`` is ``lockgate`` without per-request metrics
    (``observability.metrics: false``): the difference is what metrics cost.
    ``lockgate-async-ledger`` is ``lockgate`` with ``metering.acknowledge: async``: a
    response's end does not wait for its usage record's journal commit, and
    ``lockgate-nometering`` has no usage ledger at all (``metering.enabled: false``).
    """
    auth = variant not in _ANONYMOUS
    tracing = ""
    if trace_sink_port is not None:
        tracing = (
            "  tracing: {enabled: true, exporter: otlp_http, sampling_ratio: 1.0, "
            f"endpoint: 'http://{HOST}:{trace_sink_port}/v1/traces'}}\n"
        )
    metrics = "  metrics: false\n" if variant == "lockgate-nometrics" else ""
    metering = {
        "lockgate-async-ledger": "metering: {acknowledge: async}\n",
        "lockgate-nometering": "metering: {enabled: false}\n",
    }.get(variant, "")
    limited = variant in ("lockgate-limits", "lockgate-redis")
    redis = f"redis:\n  url: {BENCH_REDIS_URL}\n  key_prefix: 'lgbench-{port}:'\n"
    limits = "    limits: {requests_per_minute: 100000000, tokens_per_minute: 100000000000}\n"
    return f"""\
server:
  host: {HOST}
  port: {port}
  workers: {workers}
  log_level: warning
  data_dir: {tmp / (variant + "-data")}
auth:
  allow_anonymous: {"false" if auth else "true"}
{redis if variant == "lockgate-redis" else ""}observability:
  access_log: null  # as nginx runs here (access_log off): compare like with like
{metrics}{tracing}{metering}admission:
  # Several workers need Redis for exact limits; without it, measure without them.
  enabled: {"true" if workers == 1 or variant == "lockgate-redis" else "false"}
models:
  - name: {MODEL}
{limits if limited else ""}    deployments:
      - name: sim-1
        base_url: http://{HOST}:{upstream_port}/v1
"""


def _start_lockgate(
    tmp: Path,
    port: int,
    upstream_port: int,
    pin: Pinning,
    workers: int,
    *,
    variant: str,
    trace_sink_port: int | None = None,
) -> tuple[Child, tuple[tuple[str, str], ...]]:
    if variant not in TARGETS:
        raise BenchError(f"unknown target {variant!r}; choose from {', '.join(TARGETS)}")
    label = variant
    conf = tmp / f"{label}.yaml"
    conf.write_text(
        lockgate_config(
            tmp, port, upstream_port, workers, variant=variant, trace_sink_port=trace_sink_port
        )
    )
    headers: tuple[tuple[str, str], ...] = ()
    if variant not in _ANONYMOUS:
        headers = (("Authorization", f"Bearer {provision_key(conf)}"),)
    argv = [sys.executable, "-m", "lockgate", "serve", "--config", str(conf)]
    return spawn(label, [*argv, "--workers", str(workers)], tmp, pin.sut), headers
