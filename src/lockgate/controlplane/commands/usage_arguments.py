"""Parsers of ``lockgate usage …`` and ``lockgate prices …`` (cheap to import).

lockgate usage report --from TIME [--to TIME] [--bucket hour|day|month]
                      [--group-by org,project,key,model,deployment] [--org ORG]
                      [--project P] [--key K] [--model M] [--json]
lockgate usage export --format csv|jsonl|cloudevents --from TIME [--to TIME] [--org ORG]
                      [--project P] [--key K] [--model M] [--source URI] [--subject …]
lockgate prices add --model M [--deployment D] --effective-from TIME [--currency C]
                    [--input X] [--output Y] [--cached-input Z] [--request-fee F]
lockgate prices list [--model M] [--json]
"""

from __future__ import annotations

import argparse

GROUPS = ("usage", "prices")


def add_usage_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    config: argparse.ArgumentParser,
) -> None:
    """``common``: --config and --json; ``config``: --config only (for raw output)."""

    def group(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        parser = commands.add_parser(name, help=help_text)
        return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")

    def leaf(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        operator: str,
        help_text: str,
        *,
        parents: argparse.ArgumentParser = common,
    ) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, help=help_text, parents=[parents])
        parser.set_defaults(operator=operator)
        return parser

    usage = group("usage", "the usage ledger: reports and exports")
    report = leaf(usage, "report", "usage.report", "requests, tokens and cost per time bucket")
    _range(report)
    report.add_argument(
        "--bucket", choices=["hour", "day", "month"], default="day", help="default: day"
    )
    report.add_argument(
        "--group-by",
        action="append",
        default=[],
        metavar="DIMENSIONS",
        help="org, project, key, model, deployment; comma-separated or repeated",
    )
    export = leaf(
        usage, "export", "usage.export", "write records to stdout, streamed", parents=config
    )
    _range(export)
    export.add_argument("--format", choices=["csv", "jsonl", "cloudevents"], default="csv")
    export.add_argument(
        "--source", default="//lockgate", help="CloudEvents source (default: //lockgate)"
    )
    export.add_argument(
        "--subject",
        choices=["organization", "project", "key"],
        default="organization",
        help="CloudEvents subject: who is billed (default: organization)",
    )

    prices = group("prices", "price versions (config and admin-set)")
    add = leaf(prices, "add", "prices.add", "add a price version (never retroactive)")
    add.add_argument("--model", required=True, help="the public model name")
    add.add_argument("--deployment", help="only on this deployment (default: every one)")
    add.add_argument(
        "--effective-from",
        required=True,
        metavar="TIME",
        help="ISO 8601, at least a minute ahead (UTC if no offset)",
    )
    add.add_argument("--currency", help="ISO 4217 (default: the catalogue's)")
    add.add_argument("--input", default="0", metavar="PRICE", help="per million prompt tokens")
    add.add_argument("--output", default="0", metavar="PRICE", help="per million completion tokens")
    add.add_argument(
        "--cached-input", metavar="PRICE", help="per million cached tokens (default: --input)"
    )
    add.add_argument("--request-fee", default="0", metavar="PRICE", help="per request")
    listing = leaf(prices, "list", "prices.list", "every version, config and admin-set")
    listing.add_argument("--model", help="only this model")


def _range(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="start", required=True, metavar="TIME", help="ISO 8601 (UTC if no offset)"
    )
    parser.add_argument("--to", dest="end", metavar="TIME", help="exclusive (default: now)")
    parser.add_argument("--org", help="organisation id or name (default: every one)")
    parser.add_argument("--project", help="project id or name (needs --org)")
    parser.add_argument("--key", help="API key id")
    parser.add_argument("--model", help="public model name")
