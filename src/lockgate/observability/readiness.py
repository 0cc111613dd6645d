"""Readiness: may this gateway process take traffic? Dependencies checked in the background.

Kubernetes asks ``/readyz`` every few seconds on every replica, so the answer
must cost nothing: a background task checks the dependencies every
``interval_s`` and ``/readyz`` returns the last verdict as pre-rendered bytes.
The checks:

* ``store``: one ``SELECT 1`` round trip (keys, admin changes and the usage
  ledger need it);
* ``redis``, when configured: one ``PING`` (shared limits and the bus need it);
* ``model:<name>`` for each model: at least one deployment this worker would
  send a request to now (not ejected, breaker not open, health checks passing).
  Only required models (``observability.readiness.required_models``; all of
  them by default) make the process unready; the others are reported.

Each check has ``timeout_s``; a check that fails or times out reports its
error's type (never its message: the data-plane port is reachable by clients,
and a driver's message may name hosts). The full message is logged when a
check changes state.

``liveness`` stays separate (``/healthz``: the event loop answers), so a
database outage takes replicas out of the load balancer without restarting
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from lockgate.config import RuntimeConfig
from lockgate.observability.app_log import redact
from lockgate.observability.routing_metrics import DeploymentState, PlanSource, deployment_state

log = logging.getLogger("lockgate.readiness")

READY = b"ready"
NOT_READY = b"not_ready"
_STARTING = (503, b'{"status":"starting","checks":{}}')
DRAINING = (503, b'{"status":"draining"}')


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One dependency's state: ``is_ok``, whether it counts (``is_required``), details."""

    name: str
    is_ok: bool
    is_required: bool = True
    detail: dict[str, Any] = field(default_factory=dict)
    message: str = ""  # the error's full text: logged, never served


class DependencyCheck(Protocol):
    """A dependency the process needs: ``check`` raises (or times out) when it is down."""

    name: str

    async def check(self) -> dict[str, Any]: ...


class PingCheck:
    """A dependency checked by one round trip (``ping`` raises on failure)."""

    def __init__(self, name: str, ping: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._ping = ping

    async def check(self) -> dict[str, Any]:
        started = time.perf_counter()
        await self._ping()
        return {"latency_ms": round((time.perf_counter() - started) * 1000.0, 3)}


class RedisPing:
    """``PING`` on a Redis client of its own (tiny: one pooled connection at most)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import redis.asyncio as redis  # only where Redis is configured

        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, max_connections=2
        )

    async def __call__(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()


class ModelsCheck:
    """Per model: how many deployments this worker would route to now (no I/O)."""

    def __init__(
        self,
        router: PlanSource,
        models: Sequence[str],
        required: Iterable[str] | None,
        clock: Callable[[], float],
    ) -> None:
        self._plans = [(name, router.plan_for(name)) for name in models]
        self._required = set(models) if required is None else set(required)
        self._clock = clock

    def results(self) -> list[CheckResult]:
        now = self._clock()
        results = []
        for name, plan in self._plans:
            states = [deployment_state(m, now) for m in plan.pool.members]
            healthy = sum(1 for state in states if state is DeploymentState.HEALTHY)
            detail: dict[str, Any] = {"healthy_deployments": healthy, "deployments": len(states)}
            if not healthy:
                detail["deployment_states"] = {
                    m.name: state.value for m, state in zip(plan.pool.members, states, strict=True)
                }
            results.append(
                CheckResult(f"model:{name}", healthy > 0, name in self._required, detail)
            )
        return results


class Readiness:
    """The cached verdict of one worker. ``answer()`` is what ``/readyz`` sends.

    Lifecycle: ``await refresh()`` once before serving (so the first probe gets a
    real answer), ``start()`` in the worker's loop, ``await stop()`` at shutdown.
    """

    def __init__(
        self,
        checks: Sequence[DependencyCheck],
        models: ModelsCheck | None = None,
        *,
        interval_s: float = 2.0,
        timeout_s: float = 1.0,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._checks = checks
        self._models = models
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._on_close = on_close
        self._answer = _STARTING
        self._failing: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.results: list[CheckResult] = []

    @property
    def is_ready(self) -> bool:
        return self._answer[0] == 200

    def answer(self) -> tuple[int, bytes]:
        """``(status, JSON body)`` from the last check: 200 ready, 503 not (yet)."""
        return self._answer

    async def refresh(self) -> None:
        """Check every dependency now (concurrently, each bounded by ``timeout_s``)."""
        results = list(await asyncio.gather(*(self._run(check) for check in self._checks)))
        if self._models is not None:
            results.extend(self._models.results())
        is_ready = all(r.is_ok for r in results if r.is_required)
        body = {
            "status": (READY if is_ready else NOT_READY).decode(),
            "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "checks": {
                r.name: {
                    "status": "ok" if r.is_ok else "failing",
                    "required": r.is_required,
                    **r.detail,
                }
                for r in results
            },
        }
        self.results = results
        self._answer = (200 if is_ready else 503, orjson.dumps(body))
        self._note_changes(results)

    async def _run(self, check: DependencyCheck) -> CheckResult:
        try:
            async with asyncio.timeout(self._timeout_s):
                detail = await check.check()
        except TimeoutError:
            return CheckResult(check.name, False, detail={"error": "timeout"}, message="timeout")
        except Exception as error:
            return CheckResult(
                check.name,
                False,
                detail={"error": type(error).__name__},
                message=redact(str(error)),
            )
        return CheckResult(check.name, True, detail=detail)

    def _note_changes(self, results: Sequence[CheckResult]) -> None:
        failing = {r.name for r in results if not r.is_ok}
        for result in results:
            if result.name in failing and result.name not in self._failing:
                log.warning(
                    "readiness: %s is failing (%s)%s",
                    result.name,
                    result.message or result.detail,
                    "" if result.is_required else "; not required",
                )
        for name in self._failing - failing:
            log.warning("readiness: %s is ok again", name)
        self._failing = failing

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="readiness")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._on_close is not None:
            await self._on_close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.refresh()
            except Exception:  # a bug in a check must not freeze the verdict silently
                log.exception("readiness: checking dependencies failed")
                self._answer = (503, b'{"status":"not_ready","error":"readiness check crashed"}')


def build_readiness(
    config: RuntimeConfig,
    store_ping: Callable[[], Awaitable[object]],
    router: PlanSource,
    clock: Callable[[], float],
) -> Readiness:
    """The checks ``config`` implies: the store, Redis if configured, every model."""
    settings = config.observability.readiness
    checks: list[DependencyCheck] = [PingCheck("store", store_ping)]
    redis = None
    if config.redis_url is not None:
        redis = RedisPing(config.redis_url, settings.timeout_s)
        checks.append(PingCheck("redis", redis))
    models = ModelsCheck(router, [m.name for m in config.models], settings.required_models, clock)
    return Readiness(
        checks,
        models,
        interval_s=settings.interval_s,
        timeout_s=settings.timeout_s,
        on_close=redis.close if redis is not None else None,
    )
