"""The parent of ``lockgate serve``: forks the workers, restarts one that crashes, stops
them all on a signal, and reloads the configuration on SIGHUP without dropping a request.

A reload is a rolling replacement, as nginx does it. The new configuration is read and
validated first; if it is invalid, or changes something only a restart can (the
listening addresses, the data directory, the worker count, metering on or off, the
store, Redis, the API key pepper), it is
refused with a log line and nothing changes. Otherwise a new worker is forked per
worker, each binding the same port (SO_REUSEPORT); once every one of them is ready, the
old ones get SIGTERM and drain (finish in-flight requests and streams, up to
``server.drain_timeout_s``) while the new ones already take new connections. New workers
that fail to start abort the reload: they are stopped and the old ones keep serving.
The ledger process is restarted with the new configuration when its ``metering``
section changed (new prices); journals wait for it meanwhile.

Each worker has a slot (its usage journal is ``journal-<slot>.db``): a new worker takes
the lowest slot no live worker holds, so a reload uses at most twice ``workers`` slots.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockgate.config import RuntimeConfig

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from lockgate.metering.flush_process import FlusherProcess

log = logging.getLogger("lockgate.serve")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# How long new workers may take to become ready before a reload is abandoned.
_RELOAD_READY_TIMEOUT_S = 60.0


def print_ready(config: RuntimeConfig, workers: int) -> Callable[[int], None]:
    def ready(port: int) -> None:
        print(
            f"lockgate listening on http://{config.server.host}:{port} (workers={workers})",
            flush=True,
        )

    return ready


def restart_needed(old: RuntimeConfig, new: RuntimeConfig) -> list[str]:
    """The settings a reload cannot apply, each named; empty when it can."""
    checks = (
        ("server.host", old.server.host, new.server.host),
        ("server.port", old.server.port, new.server.port),
        ("server.admin_port", old.server.admin_port, new.server.admin_port),
        ("server.data_dir", old.server.data_dir, new.server.data_dir),
        ("server.workers", old.server.workers, new.server.workers),
        ("metering.enabled", old.metering.enabled, new.metering.enabled),
        # Shared state: new workers on another store or Redis would split the gateway in
        # two (the ledger process and the old workers stay where they were), and a new
        # store would not have been migrated.
        ("database.url", old.database_url, new.database_url),
        ("redis.url", old.redis_url, new.redis_url),
        ("redis.key_prefix", old.redis_key_prefix, new.redis_key_prefix),
        # Every API key's hash depends on it: a new pepper would lock out every client.
        ("auth.api_key_pepper", old.auth.api_key_pepper, new.auth.api_key_pepper),
    )
    return [name for name, before, after in checks if before != after]


@dataclass
class _Worker:
    process: BaseProcess
    ready: Any  # a multiprocessing Event
    generation: int
    config: RuntimeConfig
    is_admin: bool  # serves the admin API (one worker per generation)


@dataclass
class Supervisor:
    """The workers of one ``serve``; ``run`` returns the exit status."""

    config: RuntimeConfig
    flusher: FlusherProcess | None
    # The worker's entry point: (config, slot, serves_admin, announce, ready event).
    target: Callable[..., None]
    # Reads the configuration again (SIGHUP); raises when it is invalid.
    load: Callable[[], RuntimeConfig] | None = None
    _workers: dict[int, _Worker] = field(default_factory=dict)  # by slot
    _incoming: dict[int, _Worker] = field(default_factory=dict)  # a reload's new workers
    _incoming_config: RuntimeConfig | None = None
    _incoming_since: float = 0.0
    _generation: int = 0
    _is_stopping: bool = False
    _is_reload_asked: bool = False
    _failed: bool = False

    def __post_init__(self) -> None:
        self._context = multiprocessing.get_context("fork")

    # -- signals ------------------------------------------------------------------
    def _on_stop(self, signum: int, _frame: object) -> None:
        self._is_stopping = True
        self._signal_all(signal.SIGKILL if signum == signal.SIGQUIT else signal.SIGTERM)

    def _on_reload(self, _signum: int, _frame: object) -> None:
        self._is_reload_asked = True

    def _signal_all(self, signum: int) -> None:
        for worker in (*self._workers.values(), *self._incoming.values()):
            _kill(worker.process, signum)

    # -- the loop -----------------------------------------------------------------
    def run(self) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        for index in range(self.config.server.workers):
            self._start(self._workers, index, self.config, is_admin=index == 0, announce=index == 0)
        while True:
            time.sleep(0.1)
            if self._is_stopping:
                self._reap_stopping()
                if not self._workers and not self._incoming:
                    return 1 if self._failed else 0
                continue
            if self.flusher is not None:
                self.flusher.check()
            if self._is_reload_asked and not self._incoming:
                self._is_reload_asked = False
                self._begin_reload()
            if self._incoming:
                self._advance_reload()
            self._reap()

    def _start(
        self,
        table: dict[int, _Worker],
        slot: int,
        config: RuntimeConfig,
        *,
        is_admin: bool,
        announce: bool,
    ) -> None:
        """Fork a worker into ``table[slot]``."""
        ready = self._context.Event()
        process = self._context.Process(
            target=self.target,
            args=(config, slot, is_admin, announce, ready),
            name=f"lockgate-{slot}",
        )
        # Children must not run the parent's handler before installing their own, and the
        # parent's handler must see every forked worker: a signal landing between the
        # fork and the bookkeeping would otherwise never reach that worker. So the worker
        # is in ``table`` before signals are let through again.
        signal.pthread_sigmask(signal.SIG_BLOCK, (*STOP_SIGNALS, signal.SIGHUP))
        gc.collect()  # as ``serve`` does before the first fork: keep the pages shared
        gc.freeze()
        try:
            process.start()
            table[slot] = _Worker(process, ready, self._generation, config, is_admin)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, (*STOP_SIGNALS, signal.SIGHUP))

    def _reap_stopping(self) -> None:
        for table in (self._workers, self._incoming):
            for slot, worker in list(table.items()):
                if worker.process.exitcode is not None:
                    self._failed |= worker.process.exitcode != 0
                    table.pop(slot)

    def _reap(self) -> None:
        """Workers that exited: an old generation's are done draining; a current one that
        never got ready fails the command; a current one that crashed is restarted."""
        for slot, worker in list(self._workers.items()):
            code = worker.process.exitcode
            if code is None:
                continue
            if worker.generation != self._generation:  # drained after a reload
                self._workers.pop(slot)
                continue
            if code != 0:
                self._failed = True
            if not worker.ready.is_set():
                log.error("worker %d failed to start (exit %s); stopping", slot, code)
                self._workers.pop(slot)
                self._is_stopping = True
                self._signal_all(signal.SIGTERM)
                return
            log.error("worker %d exited with %s; restarting it", slot, code)
            time.sleep(0.5)  # a worker that keeps crashing must not spin the CPU
            config, is_admin = worker.config, worker.is_admin
            self._start(self._workers, slot, config, is_admin=is_admin, announce=False)

    # -- reload -------------------------------------------------------------------
    def _begin_reload(self) -> None:
        if self.load is None:
            log.warning("SIGHUP: this gateway has no configuration file to reload")
            return
        try:
            new = self.load()
        except Exception as error:  # invalid YAML or values, an unreadable secret, ...
            log.error("reload refused, still serving the old configuration: %s", error)
            return
        if new.server.port == 0:  # "any free port": the one chosen at start stays
            new = _with_port(new, self.config.server.port)
        blocked = restart_needed(self.config, new)
        if blocked:
            log.error("reload refused: %s can change only with a restart", ", ".join(blocked))
            return
        self._generation += 1
        self._incoming_config = new
        self._incoming_since = time.monotonic()
        taken = set(self._workers)
        for n in range(new.server.workers):
            slot = min(s for s in range(len(taken) + 1) if s not in taken)
            taken.add(slot)
            self._start(self._incoming, slot, new, is_admin=n == 0, announce=False)
        log.info("reload: %d new worker(s) starting", len(self._incoming))

    def _advance_reload(self) -> None:
        incoming = self._incoming
        failed = [s for s, w in incoming.items() if w.process.exitcode is not None]
        overdue = time.monotonic() - self._incoming_since > _RELOAD_READY_TIMEOUT_S
        if failed or overdue:
            why = f"worker {failed[0]} exited" if failed else "new workers not ready in time"
            log.error("reload abandoned (%s); still serving the old configuration", why)
            for worker in incoming.values():
                _kill(worker.process, signal.SIGTERM)
            for worker in incoming.values():
                worker.process.join(10)
            incoming.clear()
            self._generation -= 1
            return
        if not all(w.ready.is_set() for w in incoming.values()):
            return
        old = self.config
        assert self._incoming_config is not None
        self.config = self._incoming_config
        for worker in self._workers.values():  # drain: they finish what they hold
            _kill(worker.process, signal.SIGTERM)
        self._workers.update(incoming)
        incoming.clear()
        if self.flusher is not None and old.metering != self.config.metering:
            self.flusher.restart(self.config)
        log.info("reload: done; the old workers are draining")


def _kill(process: BaseProcess, signum: int) -> None:
    if process.exitcode is None and process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def _with_port(config: RuntimeConfig, port: int) -> RuntimeConfig:
    import dataclasses

    return dataclasses.replace(config, server=config.server.model_copy(update={"port": port}))
