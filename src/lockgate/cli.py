"""Command line: parse arguments → load config → build → serve. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lockgate import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lockgate", description="Lockgate AI model gateway")
    parser.add_argument("--version", action="version", version=f"lockgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", "-c", help="YAML config file (default: none, no models)")
    serve.add_argument("--host", help="listen address (overrides config and LOCKGATE_HOST)")
    serve.add_argument("--port", type=int, help="listen port (overrides config and LOCKGATE_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (default: config, else 1)")

    from lockgate.sim import command as sim_command

    sim = commands.add_parser("sim", help="run the inference engine simulator")
    sim_command.add_arguments(sim)

    demo = commands.add_parser("demo", help="gateway + a simulated engine, ready to try")
    demo.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    validate = config_commands.add_parser("validate", help="check a config file and exit")
    validate.add_argument("file")

    from lockgate.controlplane import commands as operator_commands

    operator_commands.add_parsers(commands)  # admin, orgs, projects, keys, users, audit

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Alembic narrates every plugin and step at INFO; only its warnings matter to an operator.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command == "serve":
        return _serve(args)
    if args.command == "sim":
        return sim_command.run(args)
    if args.command in operator_commands.GROUPS:
        return operator_commands.run(args)
    if args.command == "demo":
        from lockgate.demo import run_demo

        return run_demo(port=args.port)
    return _validate(args.file)


def _serve(args: argparse.Namespace) -> int:
    from lockgate.config import ConfigError, GatewaySpec, RuntimeConfig, load_config, resolve
    from lockgate.serve import serve
    from lockgate.store.errors import StoreError

    def load() -> RuntimeConfig:
        """The file (and environment) with the command line's overrides, validated; read
        at start and again on SIGHUP. Raises ConfigError or ValueError."""
        spec = load_config(args.config) if args.config else GatewaySpec()
        overrides = {
            key: value
            for key, value in (("host", args.host), ("port", args.port), ("workers", args.workers))
            if value is not None
        }
        if overrides:
            spec = spec.model_copy(
                update={
                    "server": spec.server.model_validate({**spec.server.model_dump(), **overrides})
                }
            )
        return resolve(spec, source=args.config or "<defaults>")

    try:
        runtime = load()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValueError as exc:  # pydantic validation of command-line overrides
        print(f"invalid command-line option: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(runtime.server.log_level.upper())
    from lockgate.metering.journal import JournalBusy

    try:
        # With a file, SIGHUP reloads it (supervisor.py); without one there is nothing to read.
        return serve(runtime, load=load if args.config else None)
    except JournalBusy as exc:  # another gateway serves from this data directory
        print(
            f"lockgate: cannot start: the usage journal {exc}; is another gateway using "
            f"data_dir {runtime.server.data_dir}? Give each gateway its own.",
            file=sys.stderr,
        )
        return 2
    except (ValueError, StoreError) as exc:  # start-up problems an operator can fix
        print(f"lockgate: cannot start: {exc}", file=sys.stderr)
        return 2


def _validate(path: str) -> int:
    from lockgate.config import ConfigError, load_config, resolve

    try:
        spec = load_config(path)
        resolve(spec, source=path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    deployments = sum(len(m.deployments) for m in spec.models)
    print(f"{path}: OK ({len(spec.models)} models, {deployments} deployments)")
    return 0
