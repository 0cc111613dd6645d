"""The operator commands' route table, and the one place failures become exit codes.

    lockgate <group> <action> --config FILE [--json] ...
      → load the config (as serve does) → prepare the database (writes only)
      → open store (+ bus, actions) → run the command → close → exit code

Every failure leaves as one line on stderr, ``lockgate <group> <action>: <why>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lockgate.config import ConfigError, RuntimeConfig
from lockgate.controlplane.bootstrap import AlreadyBootstrapped
from lockgate.controlplane.commands import (
    admin,
    audit,
    budgets,
    deployments,
    inspect,
    keys,
    prices,
    tenants,
    usage,
    users,
    webhooks,
)
from lockgate.controlplane.commands.errors import (
    EXIT_FAILED,
    EXIT_NOT_PROPAGATED,
    EXIT_USAGE,
    OperatorError,
)
from lockgate.controlplane.commands.session import (
    Session,
    close_session,
    load,
    open_session,
    report_warnings,
)
from lockgate.errors import GatewayError
from lockgate.invalidation.bus import InvalidationUnavailable
from lockgate.startup import resolve_pepper
from lockgate.store.errors import Invalid, InvalidDatabaseUrl, NotFound, StoreError

Handler = Callable[[Session, argparse.Namespace], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Command:
    run: Handler
    writes: bool  # migrate first, start the bus, record the actor


ROUTES: dict[str, Command] = {
    "admin.bootstrap": Command(admin.bootstrap, writes=True),
    "orgs.create": Command(tenants.create_organization, writes=True),
    "orgs.list": Command(tenants.list_organizations, writes=False),
    "orgs.update": Command(tenants.update_organization, writes=True),
    "projects.create": Command(tenants.create_project, writes=True),
    "projects.list": Command(tenants.list_projects, writes=False),
    "projects.delete": Command(tenants.delete_project, writes=True),
    "projects.update": Command(tenants.update_project, writes=True),
    "keys.create": Command(keys.create, writes=True),
    "keys.list": Command(keys.list_keys, writes=False),
    "keys.update": Command(keys.update, writes=True),
    "keys.rotate": Command(keys.rotate, writes=True),
    "keys.revoke": Command(keys.revoke, writes=True),
    "keys.disable": Command(keys.disable, writes=True),
    "keys.enable": Command(keys.enable, writes=True),
    "users.create": Command(users.create_user, writes=True),
    "users.list": Command(users.list_users, writes=False),
    "audit.verify": Command(audit.verify, writes=False),
    "audit.export": Command(audit.export, writes=False),
    "budgets.set": Command(budgets.set_budget, writes=True),
    "budgets.list": Command(budgets.list_budgets, writes=False),
    "budgets.delete": Command(budgets.delete_budget, writes=True),
    "webhooks.create": Command(webhooks.create, writes=True),
    "webhooks.list": Command(webhooks.list_webhooks, writes=False),
    "webhooks.delete": Command(webhooks.delete, writes=True),
    "webhooks.deliveries": Command(webhooks.deliveries, writes=False),
    "webhooks.replay": Command(webhooks.replay, writes=True),
    "inspect": Command(inspect.inspect, writes=False),
    "keys.debug": Command(inspect.start_debug, writes=True),
    "keys.undebug": Command(inspect.stop_debug, writes=True),
    "deployments.list": Command(deployments.list_deployments, writes=False),
    "deployments.add": Command(deployments.add_deployment, writes=True),
    "deployments.remove": Command(deployments.remove_deployment, writes=True),
    "rollouts.show": Command(deployments.show_rollouts, writes=False),
    "rollouts.set": Command(deployments.set_rollout, writes=True),
    "rollouts.resume": Command(deployments.resume_rollout, writes=True),
    "usage.report": Command(usage.report, writes=False),
    "usage.export": Command(usage.export, writes=False),
    "prices.add": Command(prices.add, writes=True),
    "prices.list": Command(prices.list_prices, writes=False),
}


def execute(args: argparse.Namespace) -> int:
    """Run ``args.operator``; returns the exit code (see ``errors``), never raises for
    a failure an operator can act on."""
    command = ROUTES[args.operator]
    label = "lockgate " + args.operator.replace(".", " ")
    try:
        config = load(args.config)
        if command.writes:
            from lockgate.serve import prepare  # what serve does before its workers start

            # The pepper first: a config missing it must not migrate the database it
            # names (an operator pointing at the wrong database learns before any change).
            resolve_pepper(config)
            prepare(config)
        return asyncio.run(_run(command, config, args, label))
    except (ConfigError, InvalidDatabaseUrl) as error:
        return _fail(label, str(error), EXIT_USAGE)
    except OperatorError as error:
        return _fail(label, str(error), error.exit_code)
    except AlreadyBootstrapped as error:
        return _fail(label, str(error), EXIT_FAILED)
    except InvalidationUnavailable as error:
        return _fail(label, f"cannot reach the invalidation bus, nothing changed: {error}")
    except NotFound as error:
        return _fail(label, str(error))
    except Invalid as error:
        return _fail(label, str(error), EXIT_USAGE)
    except StoreError as error:
        return _fail(label, str(error))
    except GatewayError as error:  # an action's refusal, e.g. models outside the ceiling
        code = EXIT_USAGE if error.status in (400, 422) else EXIT_FAILED
        return _fail(label, error.message, code)
    except ValueError as error:  # refused values: a missing pepper, enabling a revoked key
        return _fail(label, str(error), EXIT_USAGE)
    except BrokenPipeError:  # stdout closed early (``audit export | head``): not an error
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


async def _run(
    command: Command, config: RuntimeConfig, args: argparse.Namespace, label: str
) -> int:
    session = await open_session(
        config, writes=command.writes, is_json=getattr(args, "json", False)
    )
    try:
        code = await command.run(session, args)
    finally:
        sys.stdout.flush()
        await close_session(session)
    report_warnings(session, label)
    failures = session.writer.bus.failures if session.writer else []
    if failures:
        return _fail(
            label,
            "the change was committed, but running gateways could not be told "
            f"({failures[0]}); they drop cached keys within auth.key_cache_ttl_s",
            EXIT_NOT_PROPAGATED,
        )
    return code


def _fail(label: str, message: str, code: int = EXIT_FAILED) -> int:
    # One line: a multi-line message (a config error lists its problems) is joined.
    line = message.replace(":\n", ": ").replace("\n", "; ")
    print(f"{label}: {line}", file=sys.stderr)
    return code
