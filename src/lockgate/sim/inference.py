"""The life of one inference request, from parsing to the last byte.

Every inference request follows one path: count it, check it, pick a fault,
optional delay, then an injected error or the engine. It ends in exactly one
bucket of the engine's counters: ``completed``, ``cancelled`` (the client
left), ``failed[kind]`` (a fault was injected, whatever happened next) or
``rejected[reason]`` (refused before any work: bad request, auth, full queue).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from lockgate.http.server import ClientDisconnected, Connection, HttpRequest
from lockgate.sim.config import FaultKind, SimConfig
from lockgate.sim.delivery import (
    StreamFault,
    deliver_stream,
    generate,
    send_whole,
    wait_forever,
    whole_body,
)
from lockgate.sim.engine import Engine, QueueFull
from lockgate.sim.faults import (
    ERROR_FAULTS,
    NO_OPTIONS,
    STREAM_FAULTS,
    BadSimHeader,
    FaultPolicy,
    RequestOptions,
    parse_options,
    retry_headers,
)
from lockgate.sim.plans import Plan, plan_chat, plan_completion, resolve_model
from lockgate.sim.responses import JSON_HEADERS, ApiError, ChunkHead, error_body
from lockgate.sim.vectors import embeddings_body, rerank_body

Planner = Callable[[dict[str, Any], SimConfig, RequestOptions], Plan]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return value


def _options(request: HttpRequest) -> RequestOptions:
    try:
        return parse_options(request.headers)
    except BadSimHeader as exc:
        raise ApiError(400, str(exc)) from None


_PLAN_CACHE_SIZE = 512
_PLAN_CACHE_MAX_BODY = 64 * 1024  # bounds the cache's memory to ~32 MiB of keys


class Inference:
    """Handlers of the inference endpoints; shares the engine with the rest of the app."""

    def __init__(self, config: SimConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.faults = FaultPolicy(config)
        self.tasks: set[asyncio.Task[Any]] = set()
        self._instant = config.is_instant
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(6)
        key = config.api_key
        self._expected_auth = None if key is None else b"Bearer " + key.encode()
        self._chat_plans: dict[bytes, Plan] = {}
        self._text_plans: dict[bytes, Plan] = {}

    def check_auth(self, request: HttpRequest) -> None:
        expected = self._expected_auth
        if expected is None:
            return
        given = request.headers.get(b"authorization", b"")
        if not hmac.compare_digest(given, expected):
            raise ApiError(
                401,
                "Incorrect API key provided. You can find your API key in the simulator config.",
                code="invalid_api_key",
                reason="unauthorized",
            )

    def _prologue(self, request: HttpRequest) -> tuple[dict[str, Any], RequestOptions]:
        self.check_auth(request)
        options = _options(request)
        return _json_object(request.body), options

    def _refuse(self, conn: Connection, error: ApiError) -> None:
        self.engine.record_rejected(error.reason)
        conn.respond(error.status, JSON_HEADERS + error.headers, error.body())

    async def _before_engine(
        self, conn: Connection, options: RequestOptions, fault: FaultKind | None
    ) -> bool:
        """Delay, hang or answer with an injected error; True if the request is answered."""
        delay_ms = options.delay_ms
        if fault == "slow-first-token" and delay_ms is None:
            delay_ms = self.config.slow_first_token_ms
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)
        if fault is None:
            return False
        if fault == "hang":
            await wait_forever()
        error = ERROR_FAULTS.get(fault)
        if error is None:
            return False
        status, message, code = error
        headers = JSON_HEADERS
        if status == 429:
            retry = options.retry_after
            headers += retry_headers(self.config.retry_after_s if retry is None else retry)
        conn.respond(status, headers, error_body(status, message, code=code))
        return True

    def _queue_full(self) -> ApiError:
        return ApiError(
            429,
            f"The engine's waiting queue is full ({self.config.max_waiting} requests).",
            code="rate_limit_exceeded",
            reason="queue_full",
            headers=retry_headers(self.config.retry_after_s),
        )

    async def _track(self, fault: FaultKind | None, work: Awaitable[list[str] | None]) -> None:
        """Run ``work`` and file the request under completed / cancelled."""
        engine = self.engine
        if fault is not None:
            engine.record_failed(fault)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            reasons = await work
        except (asyncio.CancelledError, ClientDisconnected):
            if fault is None:
                engine.cancelled += 1
            raise
        finally:
            if task is not None:
                self.tasks.discard(task)
        if fault is None and reasons is not None:
            engine.record_completed(reasons)

    # -- chat and text completions ------------------------------------------
    async def chat(self, request: HttpRequest, conn: Connection) -> None:
        await self._generation(
            request, conn, plan_chat, self._chat_plans, "chatcmpl-", "chat.completion.chunk"
        )

    async def completions(self, request: HttpRequest, conn: Connection) -> None:
        await self._generation(
            request, conn, plan_completion, self._text_plans, "cmpl-", "text_completion"
        )

    def _plan(
        self, request: HttpRequest, planner: Planner, cache: dict[bytes, Plan]
    ) -> tuple[Plan, RequestOptions]:
        """Plans are pure functions of (body, headers, config): a repeated body with no
        steering headers (the benchmark's case) reuses its plan instead of re-tokenizing."""
        self.check_auth(request)
        options = _options(request)
        raw = request.body
        if options is NO_OPTIONS:
            cached = cache.get(raw)
            if cached is not None:
                return cached, options
        plan = planner(_json_object(raw), self.config, options)
        if options is NO_OPTIONS and len(raw) <= _PLAN_CACHE_MAX_BODY:
            if len(cache) >= _PLAN_CACHE_SIZE:
                cache.clear()
            cache[raw] = plan
        return plan, options

    async def _generation(
        self,
        request: HttpRequest,
        conn: Connection,
        planner: Planner,
        cache: dict[bytes, Plan],
        prefix: str,
        obj: str,
    ) -> None:
        self.engine.requests_total += 1
        try:
            plan, options = self._plan(request, planner, cache)
        except ApiError as error:
            self._refuse(conn, error)
            return
        fault = self.faults.pick(options)
        request_id = request.headers.get(b"x-request-id")
        work = self._run_plan(conn, plan, options, fault, prefix, obj, request_id)
        await self._track(fault, work)

    async def _run_plan(
        self,
        conn: Connection,
        plan: Plan,
        options: RequestOptions,
        fault: FaultKind | None,
        prefix: str,
        obj: str,
        request_id: bytes | None = None,
    ) -> list[str] | None:
        if await self._before_engine(conn, options, fault):
            return None
        try:
            seq = self.engine.submit(plan.prompt_tokens, plan.prompts, request_id)
        except QueueFull:
            error = self._queue_full()
            conn.respond(error.status, JSON_HEADERS + error.headers, error.body())
            if fault is None:
                self.engine.record_rejected(error.reason)
            return None
        completion_id = f"{prefix}{self._id_prefix}{next(self._ids):08x}"
        created = int(time.time())
        broken = fault if fault in STREAM_FAULTS else None
        try:
            if plan.stream:
                head = ChunkHead(completion_id, obj, created, plan.model, plan.include_usage)
                after = options.fault_after
                armed = None
                if broken is not None:
                    armed = StreamFault(
                        broken, self.config.fault_after_chunks if after is None else after
                    )
                await deliver_stream(conn, seq, plan, head, armed, self._instant)
            else:
                await generate(seq, plan, self._instant)
                body = whole_body(plan, seq, completion_id, created)
                await send_whole(conn, 200, JSON_HEADERS, body, broken)
        finally:
            seq.finish()
        return [c.finish_reason for c in plan.choices]

    # -- embeddings and rerank ------------------------------------------------
    async def embeddings(self, request: HttpRequest, conn: Connection) -> None:
        config = self.config

        def build(body: dict[str, Any], model: str) -> tuple[bytes, int]:
            return embeddings_body(body, model, config.embedding_dimensions, config.seed)

        await self._pooling(request, conn, build)

    async def rerank(self, request: HttpRequest, conn: Connection) -> None:
        def build(body: dict[str, Any], model: str) -> tuple[bytes, int]:
            return rerank_body(body, model, f"rerank-{self._id_prefix}{next(self._ids):08x}")

        await self._pooling(request, conn, build)

    async def _pooling(
        self,
        request: HttpRequest,
        conn: Connection,
        build: Callable[[dict[str, Any], str], tuple[bytes, int]],
    ) -> None:
        """Prompt-only work: queue, prefill, answer (no decode, no prefix cache)."""
        self.engine.requests_total += 1
        try:
            body, options = self._prologue(request)
            out, tokens = build(body, resolve_model(body, self.config))
        except ApiError as error:
            self._refuse(conn, error)
            return
        fault = self.faults.pick(options)
        await self._track(fault, self._run_pooling(conn, out, tokens, options, fault))

    async def _run_pooling(
        self,
        conn: Connection,
        out: bytes,
        tokens: int,
        options: RequestOptions,
        fault: FaultKind | None,
    ) -> list[str] | None:
        if await self._before_engine(conn, options, fault):
            return None
        try:
            seq = self.engine.submit(tokens)
        except QueueFull:
            error = self._queue_full()
            conn.respond(error.status, JSON_HEADERS + error.headers, error.body())
            if fault is None:
                self.engine.record_rejected(error.reason)
            return None
        try:
            await seq.admitted()
            if not self._instant:
                await seq.prefill()
        finally:
            seq.finish()
        await send_whole(conn, 200, JSON_HEADERS, out, fault if fault in STREAM_FAULTS else None)
        return ["stop"]
