"""Parsers of ``lockgate budgets …`` and ``lockgate webhooks …`` (light imports only: every
CLI invocation builds them)."""

from __future__ import annotations

import argparse

from lockgate.metering.budgets import BudgetAction, Period
from lockgate.webhooks.model import DeliveryStatus, EventType


def add_budget_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    group = commands.add_parser("budgets", help="spend budgets of organisations and projects")
    actions = group.add_subparsers(dest="budgets_command", required=True, metavar="ACTION")
    set_budget = actions.add_parser(
        "set", help="set a budget (creates it, or changes the scope's one)", parents=[common]
    )
    set_budget.set_defaults(operator="budgets.set")
    set_budget.add_argument("--org", required=True, help="organisation id or name")
    set_budget.add_argument("--project", help="project id or name (default: the organisation)")
    set_budget.add_argument("--period", required=True, choices=[p.value for p in Period])
    set_budget.add_argument("--amount", help="in currency units, e.g. 250 or 12.5")
    set_budget.add_argument("--currency", help="ISO 4217 code (default: USD)")
    set_budget.add_argument(
        "--threshold",
        action="append",
        type=int,
        metavar="PERCENT",
        help="alert at this share of the amount; repeat for several (default: 50, 80, 100)",
    )
    set_budget.add_argument(
        "--action",
        choices=[a.value for a in BudgetAction],
        help="at 100%%: refuse the scope's requests (reject) or only alert (default)",
    )
    list_budgets = actions.add_parser("list", help="budgets with spend so far", parents=[common])
    list_budgets.set_defaults(operator="budgets.list")
    list_budgets.add_argument("--org", required=True, help="organisation id or name")
    list_budgets.add_argument("--project", help="only this project's budgets")
    delete = actions.add_parser("delete", help="delete a budget", parents=[common])
    delete.set_defaults(operator="budgets.delete")
    delete.add_argument("--org", required=True, help="organisation id or name")
    delete.add_argument("budget_id", metavar="BUDGET_ID")


def add_webhook_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    group = commands.add_parser("webhooks", help="webhook subscriptions and deliveries")
    actions = group.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")

    def leaf(name: str, operator: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, parents=[common])
        parser.set_defaults(operator=operator)
        parser.add_argument("--org", required=True, help="organisation id or name")
        return parser

    create = leaf("create", "webhooks.create", "subscribe a URL (its secret is printed once)")
    create.add_argument("--url", required=True, help="http(s) URL the events are POSTed to")
    create.add_argument(
        "--event",
        action="append",
        required=True,
        choices=[t.value for t in EventType],
        help="event type to send; repeat for several",
    )
    create.add_argument("--description", default="", help="what the endpoint is")
    leaf("list", "webhooks.list", "list subscriptions (never their secrets)")
    leaf("delete", "webhooks.delete", "delete a subscription").add_argument("webhook_id")
    deliveries = leaf("deliveries", "webhooks.deliveries", "a subscription's deliveries")
    deliveries.add_argument("webhook_id")
    deliveries.add_argument("--status", choices=[s.value for s in DeliveryStatus])
    leaf("replay", "webhooks.replay", "send a delivery's event again").add_argument("delivery_id")
