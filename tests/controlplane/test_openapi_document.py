"""The checked-in admin OpenAPI document matches the code."""

from __future__ import annotations

from pathlib import Path

import orjson

from lockgate.controlplane.admin.openapi import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "admin-openapi.json"


def test_document_is_current() -> None:
    assert DOC.read_bytes() == render(), (
        "docs/admin-openapi.json is stale: run "
        "python -m lockgate.controlplane.admin.openapi > docs/admin-openapi.json"
    )


def test_key_and_audit_routes_are_documented() -> None:
    spec = orjson.loads(render())
    paths = spec["paths"]
    assert "/admin/v1/organizations/{org_id}/projects/{project_id}/api_keys" in paths
    assert "/admin/v1/audit/verify" in paths
    created = paths["/admin/v1/organizations/{org_id}/projects/{project_id}/api_keys"]["post"]
    assert "201" in created["responses"]
