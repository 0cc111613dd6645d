"""Parsers of ``lockgate deployments …`` and ``lockgate rollouts …`` (cheap to import).

lockgate deployments list [--model M]
lockgate deployments add MODEL NAME BASE_URL [--upstream-model X] [--capacity N]
                                             [--weight W] [--tag KEY=VALUE …]
lockgate deployments remove MODEL NAME
lockgate rollouts show [MODEL]
lockgate rollouts set MODEL [--candidate V] [--percent P] [--shadow-percent P]
lockgate rollouts resume MODEL
"""

from __future__ import annotations

import argparse

GROUPS = ("deployments", "rollouts")


def add_lifecycle_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    def group(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        parser = commands.add_parser(name, help=help_text)
        return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")

    def leaf(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        operator: str,
        help_text: str,
    ) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, help=help_text, parents=[common])
        parser.set_defaults(operator=operator)
        return parser

    deployments = group("deployments", "deployments of the configured models (runtime ones too)")
    listing = leaf(deployments, "list", "deployments.list", "configured and runtime deployments")
    listing.add_argument("--model", help="only this model (or name@version)")
    add = leaf(deployments, "add", "deployments.add", "add a deployment until removed")
    add.add_argument("model", metavar="MODEL", help="a configured model, or name@version")
    add.add_argument("name", metavar="NAME", help="the deployment's name within the model")
    add.add_argument("base_url", metavar="BASE_URL", help="e.g. http://10.0.0.7:8000/v1")
    add.add_argument("--upstream-model", help="the model id the engine serves")
    add.add_argument("--capacity", type=int, help="requests it serves at once")
    add.add_argument("--weight", type=float, default=1.0, help="share under weighted_random")
    add.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="repeat for several"
    )
    remove = leaf(deployments, "remove", "deployments.remove", "remove a deployment added so")
    remove.add_argument("model", metavar="MODEL")
    remove.add_argument("name", metavar="NAME")

    rollouts = group("rollouts", "progressive rollouts of versioned models")
    show = leaf(rollouts, "show", "rollouts.show", "the live split of one or every model")
    show.add_argument("model", metavar="MODEL", nargs="?")
    change = leaf(rollouts, "set", "rollouts.set", "change a split live (others stay)")
    change.add_argument("model", metavar="MODEL")
    change.add_argument("--candidate", metavar="VERSION", help="the version being rolled out")
    change.add_argument("--percent", type=float, help="share of callers on the candidate")
    change.add_argument("--shadow-percent", type=float, help="share copied to the candidate")
    resume = leaf(rollouts, "resume", "rollouts.resume", "undo an automatic rollback")
    resume.add_argument("model", metavar="MODEL")
