"""``RedisLimiter``'s transport: decisions batched per event-loop turn, one pipelined connection.

Every ``acquire`` issued during one turn of the event loop joins one batch;
the batch is sent at the start of the next turn as ONE ``EVALSHA`` of the
limiter's script (``BATCH_LUA`` in ``redis_script.py``: the layout of its
arguments is packed in ``redis_wire.py``), which runs the decisions atomically, one after the
other in the order they were asked, and answers each. So a decision still
takes one round trip (plus the rest of the turn it was asked in), and
replicas still never interleave between a check and its charge. Settlements
and lease releases join the same batch, ahead of any decision asked after
them; a batch of settlements alone waits up to ``settle_delay_s`` for
decisions to ride along with (nobody waits on a settlement).

Batches are pipelined on one dedicated connection (opened by redis-py, so
every URL option works; the script is loaded when it connects) and are
answered in the order they were sent. The command is packed here, keys
deduplicated per batch, and the answer is one string split here, so
redis-py's per-command and per-element costs are paid once per batch rather
than once per call (see ``tests/admission/test_redis_batching.py``).

``timeout_s`` bounds each batch, connecting included. A batch that fails (no
answer in time, connection lost, error reply) fails every call in it; when
it timed out or the connection broke, the connection is dropped with every
batch still in flight on it (their answers could only come later), and the
next batch opens a new one. A ``NOSCRIPT`` answer is retried once with
``EVAL``, on the same connection, within the same bound.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError

from lockgate.admission.redis_wire import (
    ONE,
    Op,
    Outcome,
    Plan,
    Releases,
    bulk,
    bulk_int,
    bulk_number,
)


class _Batch:
    __slots__ = (
        "args",
        "channel",
        "delayed",
        "is_done",
        "is_retried",
        "key_index",
        "keys",
        "nargs",
        "ntokens",
        "sending",
        "size",
        "timer",
        "waiters",
    )

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.key_index: dict[bytes, bytes] = {}
        self.args: list[bytes] = []
        self.nargs = 0
        self.ntokens = 0
        self.size = 0
        # (future, plan of a decision or None, lease id or the releases of a settlement, offset)
        self.waiters: list[
            tuple[asyncio.Future[Outcome], Plan | None, str | Releases | None, int]
        ] = []
        self.sending = False
        self.delayed: asyncio.TimerHandle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.channel: _Channel | None = None
        self.is_done = False
        self.is_retried = False

    def key(self, key: bytes) -> bytes:
        """Index of ``key`` in this batch's KEYS (added if new), as a bulk string."""
        index = self.key_index.get(key)
        if index is None:
            self.keys.append(key)
            index = self.key_index[key] = bulk_int(len(self.keys))
        return index

    def command(self, head: bytes, ttl: bytes) -> bytes:
        nkeys = len(self.keys)
        return b"".join(
            (
                b"*%d\r\n" % (4 + nkeys + self.nargs),
                head,
                bulk_int(nkeys),
                *self.keys,
                ttl,
                *self.args,
            )
        )


class _Channel:
    """One connection, its reader task, and the batches it owes an answer, oldest first."""

    __slots__ = ("connection", "in_flight", "is_open", "reader")

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.in_flight: deque[_Batch] = deque()
        self.is_open = True
        self.reader: asyncio.Task[None] | None = None


class BatchPipe:
    """Batches of limiter operations on one pipelined connection; see the module docstring.

    ``on_orphan`` is given the lease releases that nobody will make: of a decision
    whose caller was cancelled while waiting (admitted, or its batch failed).
    """

    def __init__(
        self,
        url: str,
        script: str,
        *,
        timeout_s: float,
        lease_ttl_ms: int,
        settle_delay_s: float,
        max_batch: int,
        on_orphan: Callable[[Releases], None],
    ) -> None:
        # No socket timeout: the batch timers bound every wait, connecting included.
        self._pool: ConnectionPool = ConnectionPool.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            client_name="lockgate-limiter",
        )
        self._pool.connection_kwargs["socket_timeout"] = None  # even if the URL sets one
        self._script = script
        sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest().encode()
        self._evalsha = b"$7\r\nEVALSHA\r\n" + bulk(sha)
        self._eval = b"$4\r\nEVAL\r\n" + bulk(script.encode())
        self._timeout_s = timeout_s
        self._ttl = bulk(b"%d" % lease_ttl_ms)
        self._settle_delay_s = settle_delay_s
        self._max_batch = max_batch
        self._on_orphan = on_orphan
        self._current: _Batch | None = None
        self._channel: _Channel | None = None
        self._connecting: asyncio.Task[_Channel] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: set[_Batch] = set()  # sent or about to be, not answered yet
        self._idle: asyncio.Future[None] | None = None

    # -- adding to the current batch ---------------------------------------------------
    def decide(self, plan: Plan, costs: Sequence[float], lease_id: str) -> asyncio.Future[Outcome]:
        """Queue one decision; the future gets its part of the answer, or the failure."""
        batch = self._current
        if batch is None:
            batch = self._current = _Batch()
        key = batch.key
        append = batch.args.append
        append(plan.head)
        append(bulk(lease_id.encode()))
        for key_bulk, static, is_rate, cost in zip(
            plan.keys, plan.statics, plan.is_rate, costs, strict=True
        ):
            append(key(key_bulk))
            append(static)
            append(bulk_number(cost) if is_rate else ONE)
        batch.nargs += plan.nargs
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        batch.waiters.append((future, plan, lease_id, batch.ntokens))
        batch.ntokens += plan.ntokens
        self._added(batch, urgent=True)
        return future

    def settle(self, ops: Sequence[Op], releases: Releases) -> asyncio.Future[Outcome]:
        """Queue a settlement (releases and corrections); the future gets None or the failure."""
        batch = self._current
        if batch is None:
            batch = self._current = _Batch()
        append = batch.args.append
        for code, key_bulk, rest, nargs in ops:
            append(code)
            append(batch.key(key_bulk))
            append(rest)
            batch.nargs += nargs
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        batch.waiters.append((future, None, releases, 0))
        self._added(batch, urgent=self._settle_delay_s <= 0)
        return future

    def _added(self, batch: _Batch, *, urgent: bool) -> None:
        batch.size += 1
        if batch.size >= self._max_batch:
            self._current = None  # full: later calls start the next one
            urgent = True
        if batch.sending:
            return
        loop = asyncio.get_running_loop()
        if urgent:
            # A task's first step runs on the next turn: after every call of this one.
            batch.sending = True
            if batch.delayed is not None:
                batch.delayed.cancel()
            self._spawn(self._send(batch))
        elif batch.delayed is None:
            batch.delayed = loop.call_later(self._settle_delay_s, self._send_delayed, batch)

    def _send_delayed(self, batch: _Batch) -> None:
        if not batch.sending:
            batch.sending = True
            self._spawn(self._send(batch))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending -----------------------------------------------------------------------
    async def _send(self, batch: _Batch) -> None:
        if self._current is batch:
            self._current = None
        self._pending.add(batch)
        batch.timer = asyncio.get_running_loop().call_later(self._timeout_s, self._expire, batch)
        payload = batch.command(self._evalsha, self._ttl)
        channel = self._channel
        try:
            if channel is None or not channel.is_open:
                channel = await self._open()
            await self._write(channel, batch, payload)
        except Exception as exc:  # connecting or writing failed: so did the batch
            self._fail(batch, exc)

    async def _write(self, channel: _Channel, batch: _Batch, payload: bytes) -> None:
        if batch.is_done:
            return  # expired while connecting
        connection = channel.connection
        if not (channel.is_open and connection.is_connected):
            raise ConnectionError("the limiter's connection closed")
        channel.in_flight.append(batch)
        batch.channel = channel
        try:
            await connection.send_packed_command(payload, check_health=False)
        except Exception as exc:
            self._drop(channel, exc)

    async def _resend(self, channel: _Channel, batch: _Batch) -> None:
        try:
            await self._write(channel, batch, batch.command(self._eval, self._ttl))
        except Exception as exc:
            self._fail(batch, exc)

    async def _open(self) -> _Channel:
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Channel:
        connection: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self._timeout_s):
                await connection.connect()  # type: ignore[no-untyped-call]
                await connection.send_command("SCRIPT", "LOAD", self._script, check_health=False)
                await connection.read_response()
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            self._connecting = None
        channel = self._channel = _Channel(connection)
        channel.reader = asyncio.get_running_loop().create_task(self._read(channel))
        return channel

    # -- answers -----------------------------------------------------------------------
    async def _read(self, channel: _Channel) -> None:
        connection = channel.connection
        try:
            while channel.is_open:
                reply: Any
                try:
                    reply = await connection.read_response(disable_decoding=True)
                except ResponseError as exc:  # an error reply: the connection is fine
                    reply = exc
                if not channel.in_flight:
                    raise ConnectionError(f"an answer nobody asked for: {reply!r}")
                self._answer(channel, channel.in_flight.popleft(), reply)
        except Exception as exc:
            self._drop(channel, exc)
        finally:
            await connection.disconnect(nowait=True)

    def _answer(self, channel: _Channel, batch: _Batch, reply: Any) -> None:
        if batch.is_done:
            return
        if isinstance(reply, NoScriptError) and not batch.is_retried:
            # The script cache was flushed: send the batch again, with the script.
            batch.is_retried = True
            self._spawn(self._resend(channel, batch))
            return
        if isinstance(reply, BaseException):
            self._fail(batch, reply)
            return
        tokens: list[bytes] = reply.split() if isinstance(reply, bytes) else []
        if len(tokens) != batch.ntokens:
            self._fail(batch, ValueError(f"unexpected answer from the limiter script: {reply!r}"))
            return
        self._done(batch)
        for future, plan, lease, offset in batch.waiters:
            if plan is None:
                if not future.done():
                    future.set_result(None)
                continue
            part = tokens[offset : offset + plan.ntokens]
            if not future.done():
                future.set_result(part)
            elif part[0] == b"1" and plan.lease_keys:
                assert isinstance(lease, str)
                self._on_orphan([(key, lease) for key in plan.lease_keys])

    def _fail(self, batch: _Batch, exc: BaseException) -> None:
        if batch.is_done:
            return
        self._done(batch)
        for future, plan, lease, _ in batch.waiters:
            if not future.done():
                future.set_result(exc)
            elif plan is None:
                assert isinstance(lease, list)
                self._on_orphan(lease)
            elif plan.lease_keys:
                assert isinstance(lease, str)
                self._on_orphan([(key, lease) for key in plan.lease_keys])

    def _done(self, batch: _Batch) -> None:
        batch.is_done = True
        if batch.timer is not None:
            batch.timer.cancel()
        self._pending.discard(batch)
        if not self._pending and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _expire(self, batch: _Batch) -> None:
        error = TimeoutError(f"no answer from Redis within {self._timeout_s} s")
        if batch.channel is not None:
            self._drop(batch.channel, error)  # its answer, and every later one, would be late
        self._fail(batch, error)

    def _drop(self, channel: _Channel, exc: BaseException) -> None:
        """Close a connection, failing every batch in flight on it."""
        if not channel.is_open:
            return
        channel.is_open = False
        if self._channel is channel:
            self._channel = None
        while channel.in_flight:
            self._fail(channel.in_flight.popleft(), exc)
        if channel.reader is not None and channel.reader is not asyncio.current_task():
            channel.reader.cancel()  # it disconnects

    # -- closing -----------------------------------------------------------------------
    async def close(self) -> None:
        """Send what is queued, wait for the answers (each bounded), then disconnect."""
        batch = self._current
        if batch is not None and not batch.sending:
            if batch.delayed is not None:
                batch.delayed.cancel()
            batch.sending = True
            self._spawn(self._send(batch))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending:
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle
        channel = self._channel
        if channel is not None:
            self._drop(channel, ConnectionError("the limiter is closed"))
            if channel.reader is not None:
                await asyncio.gather(channel.reader, return_exceptions=True)
        await self._pool.disconnect()
