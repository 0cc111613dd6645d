"""The simulator's HTTP handler: routing, plus the probe and control endpoints.

Inference endpoints live in ``inference``; this module owns what tests and
operators poke at: /health, /metrics, /v1/models and /sim/*.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from lockgate.http.server import Connection, HttpRequest
from lockgate.sim.config import SimConfig
from lockgate.sim.engine import Engine
from lockgate.sim.inference import Inference
from lockgate.sim.metrics import render_metrics
from lockgate.sim.responses import (
    JSON_HEADERS,
    PROMETHEUS_HEADERS,
    ApiError,
    error_body,
    model_list,
)

Route = Callable[[HttpRequest, Connection], Awaitable[None]]


class SimApp:
    """One simulated engine behind one handler; all state lives on this object."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.engine = Engine(config)
        self.inference = Inference(config, self.engine)
        # Raw (method, path, query, headers, body); decoded only when someone asks.
        self.recent: collections.deque[tuple[bytes, str, bytes, dict[bytes, bytes], bytes]] = (
            collections.deque(maxlen=config.recent_requests)
        )
        self.started_at = int(time.time())
        inference = self.inference
        self._routes: dict[str, tuple[bytes, Route]] = {
            "/v1/chat/completions": (b"POST", inference.chat),
            "/v1/completions": (b"POST", inference.completions),
            "/v1/embeddings": (b"POST", inference.embeddings),
            "/v1/rerank": (b"POST", inference.rerank),
            "/rerank": (b"POST", inference.rerank),
            "/v2/rerank": (b"POST", inference.rerank),
            "/v1/models": (b"GET", self._models),
            "/health": (b"GET", self._health),
            "/metrics": (b"GET", self._metrics),
            "/sim/stats": (b"GET", self._stats),
            "/sim/reset": (b"POST", self._reset),
            "/sim/requests": (b"GET", self._requests),
        }

    @property
    def tasks(self) -> set[asyncio.Task[Any]]:
        """Inference handlers in flight (``SimServer.close`` waits for them)."""
        return self.inference.tasks

    async def handle(self, request: HttpRequest, conn: Connection) -> None:
        path = request.path
        if not path.startswith("/sim/") and self.recent.maxlen:
            self.recent.append((request.method, path, request.query, request.headers, request.body))
        route = self._routes.get(path)
        if route is None:
            body = error_body(404, f"Unknown path {path}", code="not_found")
            conn.respond(404, JSON_HEADERS, body)
        elif route[0] != request.method:
            body = error_body(405, f"Method {request.method.decode()} not allowed on {path}")
            conn.respond(405, JSON_HEADERS + b"allow: " + route[0] + b"\r\n", body)
        else:
            await route[1](request, conn)

    async def _models(self, request: HttpRequest, conn: Connection) -> None:
        try:
            self.inference.check_auth(request)
        except ApiError as error:
            conn.respond(error.status, JSON_HEADERS, error.body())
            return
        conn.respond(200, JSON_HEADERS, model_list(self.config.models, self.started_at))

    async def _health(self, request: HttpRequest, conn: Connection) -> None:
        conn.respond(200, b"", b"")

    async def _metrics(self, request: HttpRequest, conn: Connection) -> None:
        conn.respond(200, PROMETHEUS_HEADERS, render_metrics(self.engine, self.config.models[0]))

    async def _stats(self, request: HttpRequest, conn: Connection) -> None:
        conn.respond(200, JSON_HEADERS, orjson.dumps(self.engine.stats()))

    async def _reset(self, request: HttpRequest, conn: Connection) -> None:
        """Zero counters, forget recorded requests, cool the cache, reseed random faults."""
        self.engine.reset()
        self.inference.faults.reset()
        self.recent.clear()
        conn.respond(200, JSON_HEADERS, orjson.dumps(self.engine.stats()))

    async def _requests(self, request: HttpRequest, conn: Connection) -> None:
        out = []
        for method, path, query, headers, raw in self.recent:
            item: dict[str, Any] = {
                "method": method.decode("latin-1"),
                "path": path,
                "query": query.decode("latin-1"),
                "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()},
                "body": None,
            }
            if raw:
                try:
                    item["body"] = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    item["body_text"] = raw.decode("utf-8", "replace")
            out.append(item)
        conn.respond(200, JSON_HEADERS, orjson.dumps({"requests": out}))
