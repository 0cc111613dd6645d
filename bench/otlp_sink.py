"""An OTLP/HTTP trace receiver that reads and discards: the collector of ``lockgate-tracing``.

Run as ``python -m bench.otlp_sink --port N``. It answers every ``POST`` with an
empty ``ExportTraceServiceResponse`` (zero bytes of protobuf) and ``GET /health``
with 200, and on SIGTERM writes how many export requests and bytes it took to its
log, so a run can see that spans really left the gateway. It runs on the load
CPUs, so what the gateway pays for tracing (building, encoding, sending) is all
that the target's CPU figure adds.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class _Totals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0


def serve(host: str, port: int) -> None:
    totals = _Totals()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

        def do_POST(self) -> None:
            size = int(self.headers.get("content-length", "0"))
            self.rfile.read(size)
            with totals.lock:
                totals.requests += 1
                totals.bytes += size
            self._answer(b"application/x-protobuf")

        def do_GET(self) -> None:
            self._answer(b"text/plain")

        def _answer(self, content_type: bytes) -> None:
            self.send_response(200)
            self.send_header("content-type", content_type.decode())
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    print(f"otlp sink: {totals.requests} export requests, {totals.bytes} bytes", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
