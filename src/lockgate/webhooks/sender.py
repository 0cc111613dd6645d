"""One signed webhook POST, over the gateway's own HTTP client (``lockgate.http.client``).

A fresh connection per attempt (``connection: close``): deliveries are rare,
go to many hosts, and a pooled connection to a receiver that changed would
only add a failure mode. Redirects are not followed (a 3xx is a failed
attempt): following them would let a receiver point the gateway at another
host. At most ``MAX_RESPONSE_BYTES`` of the answer are read; only its status
matters. ``timeout_s`` bounds the whole attempt, connecting included.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from lockgate import __version__
from lockgate.http.client import Deadlines, Origin, UpstreamError

MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = f"lockgate-webhooks/{__version__}"


@dataclass(frozen=True, slots=True)
class SendResult:
    status_code: int | None  # None: no HTTP answer
    latency_ms: float
    error: str | None  # None on a 2xx

    @property
    def is_delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    """POSTs bodies; holds the TLS context (built once, off the event loop)."""

    def __init__(self, *, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if scheme == "https" and self._tls is None:
            self._tls = await asyncio.to_thread(ssl.create_default_context)
        head = [
            f"POST {target} HTTP/1.1",
            f"host: {parts.netloc}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            f"user-agent: {USER_AGENT}",
            "connection: close",
        ]
        head.extend(f"{name}: {value}" for name, value in headers.items())
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        started = time.perf_counter()
        timeout = self._timeout_s
        origin = Origin(scheme, host, port, tls=self._tls if scheme == "https" else None)
        try:
            async with asyncio.timeout(timeout):
                response = await origin.send(request, Deadlines(timeout, timeout, timeout, timeout))
                status = response.status
                try:
                    # Read what the receiver says (up to a bound) so it is not cut off
                    # mid-answer; only the status counts, even if the body is too long.
                    with contextlib.suppress(UpstreamError):
                        await response.read_body(MAX_RESPONSE_BYTES)
                finally:
                    response.abort()
        except TimeoutError:
            return self._result(started, None, f"timed out after {timeout:g} s")
        except UpstreamError as exc:
            return self._result(started, None, str(exc))
        except (OSError, ssl.SSLError) as exc:
            return self._result(started, None, f"{type(exc).__name__}: {exc}")
        finally:
            origin.close()
        error = None if 200 <= status < 300 else f"HTTP {status}"
        return self._result(started, status, error)

    @staticmethod
    def _result(started: float, status: int | None, error: str | None) -> SendResult:
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return SendResult(status, latency_ms, error)
