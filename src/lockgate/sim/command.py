"""``lockgate sim``: run the simulator as a process (demo, benchmark, manual testing).

Options on the command line override the YAML file, which overrides the
defaults, so a shared benchmark config can be tweaked per run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lockgate.sim.config import SimConfig
from lockgate.sim.server import SimServer

# Flags whose argparse destination is also the SimConfig field name.
_FLAG_FIELDS = (
    "ttft_ms",
    "tokens_per_s",
    "capacity",
    "max_waiting",
    "output_tokens",
    "seed",
    "api_key",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=9000, help="port to bind, 0 = any (default 9000)"
    )
    parser.add_argument("--config", type=Path, help="YAML file with SimConfig fields")
    parser.add_argument("--ttft-ms", type=float, help="fixed time to first token (ms)")
    parser.add_argument(
        "--tokens-per-s", type=float, help="decode speed; 0 with --ttft-ms 0 = instant"
    )
    parser.add_argument("--capacity", type=int, help="requests generating at once")
    parser.add_argument("--max-waiting", type=int, help="queue length beyond which to answer 429")
    parser.add_argument("--output-tokens", type=int, help="natural answer length in tokens")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="served model name (repeatable)",
    )
    parser.add_argument("--seed", type=int, help="seed for content and random faults")
    parser.add_argument("--api-key", help="require this bearer token on /v1/*")


def build_config(args: argparse.Namespace) -> SimConfig:
    """Defaults, then the YAML file, then command-line flags."""
    fields: dict[str, Any] = {}
    if args.config is not None:
        loaded = yaml.safe_load(args.config.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of SimConfig fields")
        fields.update(loaded or {})
    for name in _FLAG_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    if getattr(args, "models", None):
        fields["models"] = tuple(args.models)
    return SimConfig.model_validate(fields)


async def serve(config: SimConfig, host: str, port: int, stop: asyncio.Event) -> None:
    async with SimServer(config, host=host, port=port) as sim:
        print(f"lockgate sim listening on {sim.base_url}", flush=True)
        await stop.wait()
        await sim.close(timeout_s=2.0)


async def _main(config: SimConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await serve(config, host, port, stop)


def _runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    try:
        import uvloop  # absent on Windows: fall back to the stock loop
    except ImportError:
        return asyncio.run

    def run(coro: Coroutine[Any, Any, None]) -> None:
        uvloop.run(coro)

    return run


def run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except (OSError, ValueError, yaml.YAMLError, ValidationError) as exc:
        print(f"lockgate sim: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        _runner()(_main(config, args.host, args.port))
    except OSError as exc:
        print(f"lockgate sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m lockgate.sim.command``) until the CLI wires it."""
    parser = argparse.ArgumentParser(prog="lockgate sim", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
