"""Model versions: ``name@version``, a default version, deprecation and retirement.

Config resolution (``config.runtime.resolve``) calls ``expand_versions`` and
``nest_versions``: every version becomes a ``ModelEntry`` of its own, named
``name@version``, with its own deployments (and so its own pool), nested in
the public entry's ``versions``. The public entry is what clients name,
authorisation checks and admission charges; the version entry is what serves,
so the answer's ``model`` field and ``x-lockgate-model`` say ``name@version``
(forward sets ``ctx.model`` to the pool's entry, as it does for fallbacks).

A model without versions is resolved exactly as before and never touches this
module on the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING

from lockgate.errors import ClientError
from lockgate.routing.lifecycle_spec import VersionLifecycleSpec

if TYPE_CHECKING:
    from lockgate.config.runtime import ModelEntry
    from lockgate.config.spec import ModelSpec


class ModelRetired(ClientError):
    """A retired version (or one past its sunset) was asked for: 410, naming the successor.

    Raised when the model is resolved, before authorisation and admission, so a
    retired name costs the caller nothing and the gateway no upstream call.
    """

    status = 410
    code = "model_retired"


def version_name(model: str, version: str) -> str:
    return f"{model}@{version}"


def expand_versions(models: Sequence[ModelSpec]) -> Iterator[ModelSpec]:
    """Each model as written, followed by one synthetic model per version.

    A version's synthetic model is named ``name@version`` (a name no config can
    write, so it cannot collide), has the version's deployments and the model's
    routing with the version's on top; everything else is the model's.
    ``nest_versions`` folds them back under their model after resolution.
    """
    for model in models:
        yield model
        for version in model.versions:
            routing = model.routing
            if version.routing is not None:
                routing = (
                    version.routing
                    if routing is None
                    else routing.model_copy(
                        update={
                            n: getattr(version.routing, n) for n in version.routing.model_fields_set
                        }
                    )
                )
            yield model.model_copy(
                update={
                    "name": version_name(model.name, version.version),
                    "aliases": [],
                    "deployments": version.deployments,
                    "versions": [],
                    "default_version": None,
                    "rollout": None,
                    "routing": routing,
                }
            )


def nest_versions(specs: Sequence[ModelSpec], entries: Sequence[ModelEntry]) -> list[ModelEntry]:
    """``entries`` (resolved from ``expand_versions``' output, in order) with each
    version folded into its model: the public entry gets ``versions``,
    ``default_version`` and ``rollout``; each version entry its lifecycle and the
    ``Deprecation``/``Sunset`` lines it answers with."""
    nested: list[ModelEntry] = []
    position = 0
    for spec in specs:
        public = entries[position]
        position += 1
        if not spec.versions:
            nested.append(public)
            continue
        versions = []
        for version in spec.versions:
            entry = entries[position]
            position += 1
            versions.append(
                replace(
                    entry,
                    version=version.version,
                    lifecycle=version,
                    response_headers=lifecycle_headers(version),
                )
            )
        nested.append(
            replace(
                public,
                versions=tuple(versions),
                default_version=spec.default_version or spec.versions[0].version,
                rollout=spec.rollout,
            )
        )
    return nested


def lifecycle_headers(version: VersionLifecycleSpec) -> bytes:
    """Header lines every answer of a deprecated version carries (b"" for active ones).

    ``Deprecation`` is RFC 9745's structured date (``@`` + Unix seconds); ``Sunset``
    is RFC 8594's HTTP-date; ``Link`` points at the operator's notes, if any.
    """
    lines = b""
    if version.status == "deprecated" and version.deprecated_at is not None:
        lines += b"deprecation: @%d\r\n" % int(version.deprecated_at.timestamp())
    if version.sunset_at is not None:
        lines += b"sunset: %s\r\n" % http_date(version.sunset_at).encode()
    if version.info_url is not None and version.status == "deprecated":
        lines += b'link: <%s>; rel="deprecation"\r\n' % version.info_url.encode()
    return lines


def http_date(when: datetime) -> str:
    """RFC 9110's IMF-fixdate, e.g. ``Tue, 30 Jun 2026 00:00:00 GMT``."""
    return format_datetime(when.astimezone(UTC), usegmt=True)


def is_retired(version: ModelEntry, now_s: float | None = None) -> bool:
    """Retired by status, or past its sunset (RFC 8594: it is gone from then on)."""
    lifecycle = version.lifecycle
    if lifecycle is None:
        return False
    if lifecycle.status == "retired":
        return True
    sunset = lifecycle.sunset_at
    return sunset is not None and (time.time() if now_s is None else now_s) >= sunset.timestamp()


def retired_error(public: ModelEntry, version: ModelEntry) -> ModelRetired:
    lifecycle = version.lifecycle
    replacement = lifecycle.replacement if lifecycle is not None else None
    instead = (
        f" Use '{replacement}' instead."
        if replacement
        else f" '{public.name}' serves its current version."
    )
    return ModelRetired(f"The model '{version.name}' has been retired.{instead}", param="model")


def pinned_names(public: ModelEntry) -> dict[str, ModelEntry]:
    """Every ``name@version`` and ``alias@version`` a client may write, to its version."""
    return {
        version_name(name, version.version): version
        for version in public.versions
        for name in (public.name, *public.aliases)
    }
