"""``SimServer``: the simulator on the project's own HTTP server, as an async context manager.

Tests start one per test on port 0 and read counters straight off
``sim.engine``; ``close`` cuts whatever is still in flight (hung or stalled
requests included) and waits for the handlers to unwind, so no task outlives
the test's event loop.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from lockgate.http.server import HttpServer
from lockgate.sim.app import SimApp
from lockgate.sim.config import SimConfig
from lockgate.sim.engine import Engine


class SimServer:
    def __init__(
        self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config if config is not None else SimConfig()
        self.host = host
        self._requested_port = port
        self.app = SimApp(self.config)
        self.port = 0
        self._http: HttpServer | None = None

    @property
    def engine(self) -> Engine:
        return self.app.engine

    @property
    def url(self) -> str:
        """Root URL, for /health, /metrics and /sim/*."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI base URL (ends in /v1), as SDKs expect it."""
        return self.url + "/v1"

    async def start(self) -> SimServer:
        if self._http is None:
            http = HttpServer(self.app.handle, max_body_bytes=self.config.max_body_bytes)
            self.port = await http.listen(self.host, self._requested_port)
            self._http = http
        return self

    async def close(self, timeout_s: float = 0.0) -> None:
        """Stop accepting; give in-flight requests ``timeout_s``, then cut them."""
        http, self._http = self._http, None
        if http is None:
            return
        await http.drain(timeout_s)
        # Cut connections cancel their handlers on the next loop turns.
        for _ in range(3):
            await asyncio.sleep(0)
        if self.app.tasks:
            await asyncio.wait(list(self.app.tasks), timeout=2.0)

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
