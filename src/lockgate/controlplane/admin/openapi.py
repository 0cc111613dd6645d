"""The admin API's OpenAPI document, generated from the code.

``python -m lockgate.controlplane.admin.openapi > docs/admin-openapi.json``
refreshes the checked-in copy; a test fails when it is stale.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from lockgate.controlplane.admin.app import create_admin_app


def document() -> dict[str, Any]:
    # Services are only used while serving requests; the schema needs none.
    app = create_admin_app(None, None, None, None)  # type: ignore[arg-type]
    spec: dict[str, Any] = app.openapi()
    return spec


def render() -> bytes:
    return orjson.dumps(document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(render())
