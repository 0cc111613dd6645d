"""The operator commands' parsers: what an operator types, and nothing else.

Every leaf records the command it names in ``args.operator`` ("keys.rotate"),
which ``dispatch`` routes. Values are kept as typed (durations, CIDRs, times)
and checked by ``inputs``, so a bad one is a one-line error with exit code 2.
"""

from __future__ import annotations

import argparse

from lockgate.controlplane.commands.billing_arguments import (
    add_budget_parsers,
    add_webhook_parsers,
)
from lockgate.controlplane.commands.deployment_arguments import add_lifecycle_parsers
from lockgate.controlplane.commands.usage_arguments import add_usage_parsers
from lockgate.tenancy.model import Scope

GROUPS = (
    "admin",
    "orgs",
    "projects",
    "keys",
    "users",
    "audit",
    "inspect",
    "budgets",
    "webhooks",
    "deployments",
    "rollouts",
    "usage",
    "prices",
)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``admin``, ``orgs``, ``projects``, ``keys``, ``users`` and ``audit`` commands."""
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        "-c",
        help="the gateway's YAML config (as for serve; LOCKGATE_* overrides apply)",
    )
    common = argparse.ArgumentParser(add_help=False, parents=[config])
    common.add_argument("--json", action="store_true", help="JSON lines instead of a table")

    def leaf(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        operator: str,
        help_text: str,
        *,
        parent: argparse.ArgumentParser = common,
    ) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=help_text, parents=[parent])
        parser.set_defaults(operator=operator)
        return parser

    def group(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        parser = commands.add_parser(name, help=help_text)
        return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")

    admin = group("admin", "deployment administration on this host")
    bootstrap = leaf(admin, "bootstrap", "admin.bootstrap", "create the first superadmin key")
    bootstrap.add_argument(
        "--org", default="operators", help="organisation to create or reuse (default: operators)"
    )
    bootstrap.add_argument(
        "--force", action="store_true", help="add another superadmin key even if one exists"
    )

    orgs = group("orgs", "organisations (tenants)")
    leaf(orgs, "create", "orgs.create", "create an organisation").add_argument("name")
    leaf(orgs, "list", "orgs.list", "list organisations")
    update_org = leaf(
        orgs, "update", "orgs.update", "rename an organisation, set its model ceiling or limits"
    )
    update_org.add_argument("org", metavar="ORG", help="organisation id or name")
    update_org.add_argument("--name", help="the new name")
    _replace_list(
        update_org, "--allow-model", "--any-model", "MODEL", "models its projects may use"
    )
    _limits(update_org)

    projects = group("projects", "projects of an organisation")
    create_project = leaf(projects, "create", "projects.create", "create a project")
    _org(create_project)
    create_project.add_argument("name")
    _allow_models(create_project, "models the project may call (default: all)")
    _org(leaf(projects, "list", "projects.list", "list an organisation's projects"))
    delete_project = leaf(
        projects,
        "delete",
        "projects.delete",
        "delete a project and its API keys (they stop working)",
    )
    _org(delete_project)
    delete_project.add_argument("project", metavar="PROJECT", help="project id or name")
    update_project = leaf(
        projects, "update", "projects.update", "rename a project, set its models or limits"
    )
    _org(update_project)
    update_project.add_argument("project", metavar="PROJECT", help="project id or name")
    update_project.add_argument("--name", help="the new name")
    _replace_list(
        update_project, "--allow-model", "--any-model", "MODEL", "models the project may call"
    )
    _limits(update_project)
    update_project.add_argument(
        "--model-limit",
        action="append",
        metavar="MODEL:NAME=VALUE",
        help="a limit on the project's use of one model, e.g. gpt-4o:tokens_per_minute=90000; "
        "repeat for several (replaces all per-model limits)",
    )
    update_project.add_argument(
        "--log-prompts",
        choices=("on", "off"),
        help="the project's prompts in the access log, redacted (observability.prompt_logging)",
    )

    keys = group("keys", "API keys")
    create_key = leaf(keys, "create", "keys.create", "create an API key (printed once)")
    _org(create_key)
    create_key.add_argument("--project", required=True, help="project id or name")
    create_key.add_argument("--name", required=True, help="what the key is for")
    create_key.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in Scope],
        help="API surface the key may use; repeat for several (default: inference)",
    )
    _allow_models(create_key, "models the key may call (default: what the project allows)")
    create_key.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="network the key may be used from; repeat for several (default: anywhere)",
    )
    create_key.add_argument(
        "--require-tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tag every model the key calls must carry; repeat for several",
    )
    create_key.add_argument(
        "--expires-in", metavar="DURATION", help="e.g. 30d, 12h (default: never)"
    )
    list_keys = leaf(keys, "list", "keys.list", "list keys (never their secrets)")
    _org(list_keys)
    list_keys.add_argument("--project", help="only this project (id or name)")
    rotate = _key(leaf(keys, "rotate", "keys.rotate", "new secret for a key (printed once)"))
    rotate.add_argument(
        "--grace",
        default="24h",
        metavar="DURATION",
        help="how long the old secret keeps working (default: 24h)",
    )
    update_key = _key(
        leaf(keys, "update", "keys.update", "change a key's settings (not its secret)")
    )
    update_key.add_argument("--name", help="the new name")
    update_key.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in Scope],
        help="API surface the key may use; repeat for several (replaces the scopes)",
    )
    _replace_list(update_key, "--allow-model", "--any-model", "MODEL", "models the key may call")
    _replace_list(
        update_key, "--allow-cidr", "--any-network", "CIDR", "networks it may be used from"
    )
    _replace_list(
        update_key, "--require-tag", "--no-required-tags", "KEY=VALUE", "tags its models must carry"
    )
    expiry = update_key.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", metavar="DURATION", help="from now, e.g. 30d, 12h")
    expiry.add_argument("--never-expires", action="store_true", help="remove the expiry")
    _limits(update_key)
    _key(leaf(keys, "revoke", "keys.revoke", "revoke a key for good"))
    _key(leaf(keys, "disable", "keys.disable", "disable a key until enabled again"))
    _key(leaf(keys, "enable", "keys.enable", "enable a disabled key"))
    debug = _key(
        leaf(keys, "debug", "keys.debug", "capture the key's next requests in full detail")
    )
    debug.add_argument(
        "--requests", type=int, default=10, help="how many requests to capture (default: 10)"
    )
    debug.add_argument(
        "--ttl", default="1h", metavar="DURATION", help="stop after this long anyway (default: 1h)"
    )
    _key(leaf(keys, "undebug", "keys.undebug", "end the key's debug sessions"))

    users = group("users", "users of an organisation")
    create_user = _org(leaf(users, "create", "users.create", "add a user to an organisation"))
    create_user.add_argument("--email", required=True, help="unique in the organisation")
    create_user.add_argument("--name", required=True, help="how the user is shown")
    _org(leaf(users, "list", "users.list", "list an organisation's users"))

    audit = group("audit", "the tamper-evident audit log")
    leaf(audit, "verify", "audit.verify", "check the whole hash chain")
    export = leaf(
        audit, "export", "audit.export", "write entries as JSON lines to stdout", parent=config
    )
    export.add_argument("--org", help="only this organisation's entries (id or name)")
    export.add_argument("--since", metavar="TIME", help="ISO 8601; entries at or after it")

    inspect = commands.add_parser(
        "inspect",
        help="everything known about one request: usage record, attempts, timings",
        parents=[common],
    )
    inspect.set_defaults(operator="inspect")
    inspect.add_argument("request_id", metavar="REQUEST_ID", help="as in x-request-id")

    # Spend budgets and webhooks (their parsers in a module of their own).
    add_budget_parsers(commands, common)
    add_webhook_parsers(commands, common)
    add_lifecycle_parsers(commands, common)
    add_usage_parsers(commands, common, config)  # usage report/export, prices add/list


def _org(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--org", required=True, help="organisation id or name")
    return parser


def _key(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("key_id", metavar="KEY_ID", help="the key id (as keys list shows it)")
    return _org(parser)


def _allow_models(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--allow-model",
        action="append",
        default=[],
        metavar="MODEL",
        help=help_text + "; repeat for several",
    )


def _replace_list(
    parser: argparse.ArgumentParser, option: str, clear: str, metavar: str, what: str
) -> None:
    """``option`` (repeatable) replaces a list; ``clear`` empties it; neither: unchanged."""
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        option, action="append", metavar=metavar, help=f"{what}; repeat for several (replaces)"
    )
    choice.add_argument(clear, action="store_true", help=f"no restriction on {what}")


def _limits(parser: argparse.ArgumentParser) -> None:
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--limit",
        action="append",
        metavar="NAME=VALUE",
        help="a limit, e.g. requests_per_minute=600 or spend_per_day=25; repeat for several "
        "(replaces all limits; names as in the config file's limits)",
    )
    choice.add_argument("--no-limits", action="store_true", help="remove every limit")
