"""The admin REST API (``/admin/v1``), on its own port, built with FastAPI.

It is control plane: it may use a framework and talk to the database on
every request. Every mutation goes through ``controlplane.actions`` (audited,
invalidated); every read and write is checked against ``tenancy.rbac``.
"""

from lockgate.controlplane.admin.app import create_admin_app

__all__ = ["create_admin_app"]
