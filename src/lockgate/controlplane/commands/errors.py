"""Failures of an operator command, each with the exit code scripts can rely on.

Exit codes: 0 done; 1 the command failed (not found, conflict, refused,
unreachable database or bus, a broken audit chain); 2 bad input or
configuration; 3 the change was committed but running gateways could not be
told (they drop cached keys when ``auth.key_cache_ttl_s`` runs out).
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_PROPAGATED = 3


class OperatorError(Exception):
    """A failure explained in one line; ``exit_code`` says what kind."""

    exit_code = EXIT_FAILED


class UsageError(OperatorError):
    """The operator's input is malformed (a duration, a CIDR, a timestamp ...)."""

    exit_code = EXIT_USAGE


class Refused(OperatorError):
    """The request is well formed, but the deployment's state does not allow it."""
