"""What every repository shares: its connector, tenant filtering, paging, "unchanged" markers.

Tenant isolation lives here so no repository can forget it: ``tenant_filter``
turns the caller's ``organization_id`` into a WHERE clause, and a row of another
organisation is then simply not found. ``organization_id`` is a required
keyword everywhere; ``None`` is the deliberate spelling of "deployment-wide"
(superadmin reads), never a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, Final, Literal, TypeAlias, TypeVar

import orjson
from sqlalchemy import ColumnElement, Select, true
from sqlalchemy.engine import Row

from lockgate.admission.spec import LimitSpec, parse_limits
from lockgate.store.connector import Connector
from lockgate.store.errors import Conflict, ConflictReason, Invalid, NotFound, StoreError

MAX_PAGE_SIZE: Final = 1000
_S = TypeVar("_S", bound=Select[Any])


class Unset(Enum):
    """Marks an update argument the caller left alone (``None`` may be a real value)."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET
Unchanged: TypeAlias = Literal[Unset.UNSET]


class Repository:
    def __init__(self, connector: Connector) -> None:
        self._connector = connector


def tenant_filter(column: ColumnElement[Any], organization_id: str | None) -> ColumnElement[bool]:
    """``column = :organization_id``, or no restriction for a deployment-wide (None) caller."""
    if organization_id is None:
        return true()
    return column == organization_id


def page(statement: _S, id_column: ColumnElement[str], *, limit: int, after: str | None) -> _S:
    """Keyset paging by id: the next page starts after the last id the caller saw.

    Ids start with their creation time (``columns.new_id``), so this is creation order.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise Invalid(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    if after is not None:
        statement = statement.where(id_column > after)
    return statement.order_by(id_column).limit(limit)


def changed(**values: Any) -> dict[str, Any]:
    """The update arguments the caller actually gave."""
    return {name: value for name, value in values.items() if value is not UNSET}


def json_value(value: Any) -> Any:
    """``value`` as it will read back from a JSON column (tuples → lists, datetimes → text).

    Records returned by writes then equal those later read, which the audit
    chain needs byte for byte. Values JSON cannot hold raise ``Invalid``.
    """
    try:
        return orjson.loads(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError) as error:
        raise Invalid(f"not storable as JSON: {error}") from error


def json_object(value: Mapping[str, Any] | None) -> dict[str, Any]:
    result = json_value(dict(value or {}))
    assert isinstance(result, dict)
    return result


def explained(error: Conflict, *, duplicate: str, reference: str) -> StoreError:
    """``error`` restated for the caller: what was duplicated, or what was missing.

    A REFERENCE conflict on create means the parent is absent (or in another
    organisation), which the caller should see as ``NotFound``.
    """
    if error.reason is ConflictReason.DUPLICATE:
        return Conflict(duplicate, reason=ConflictReason.DUPLICATE)
    return NotFound(reference)


def strings(values: Any) -> tuple[str, ...]:
    """A JSON array column read back as the tuple the records use."""
    return tuple(str(v) for v in values or ())


def limits_json(spec: LimitSpec) -> dict[str, Any]:
    """A ``LimitSpec`` as its JSON column holds it (only the fields that are set)."""
    return json_object(spec.to_json())


def model_limits_json(specs: Mapping[str, LimitSpec]) -> dict[str, Any]:
    return json_object({name: spec.to_json() for name, spec in specs.items()})


def read_model_limits(raw: Any) -> dict[str, LimitSpec]:
    """A ``model_limits`` column back into specs (validated when written, so trusted)."""
    return {str(name): parse_limits(value) for name, value in (raw or {}).items()}


def require(row: Row[Any] | None, kind: str, object_id: str) -> Row[Any]:
    """The row, or ``NotFound`` naming what was looked for."""
    if row is None:
        raise NotFound(f"{kind} {object_id!r} not found")
    return row
