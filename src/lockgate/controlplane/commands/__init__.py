"""Operator commands that act on the store directly, like ``psql`` on the gateway host.

``lockgate admin bootstrap``, ``orgs``, ``projects``, ``keys``, ``users`` and ``audit`` need
no running gateway and no credential: whoever can read the config (and so reach
the database) is the operator. Changes go through ``AdminActions`` (audited as
``cli:<os user>``) and their invalidations through the deployment's bus, so
running gateways hear of them exactly as they would from the admin API.

Importing this package is cheap: ``arguments`` only builds parsers. The store,
the bus and everything else load in ``run``, so ``lockgate --version`` and
``lockgate sim`` do not pay for them.
"""

from __future__ import annotations

import argparse
import logging

from lockgate.controlplane.commands.arguments import GROUPS as GROUPS
from lockgate.controlplane.commands.arguments import add_parsers as add_parsers


def run(args: argparse.Namespace) -> int:
    """Run the operator command ``args`` names; returns the process exit code."""
    # Alembic logs at INFO as it loads (before any migration runs): that chatter
    # would bury the one line an operator reads. Its warnings still show.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from lockgate.controlplane.commands.dispatch import execute

    return execute(args)
