"""FastAPI dependencies: the caller, and the services the app was built with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from lockgate.controlplane.actions import AdminActions
from lockgate.controlplane.admin.auth import AdminAuthenticator, AdminPrincipal
from lockgate.store.store import Store


@dataclass(frozen=True, slots=True)
class AdminServices:
    store: Store
    actions: AdminActions
    authenticator: AdminAuthenticator


def services(request: Request) -> AdminServices:
    found: AdminServices = request.app.state.services
    return found


async def principal(request: Request) -> AdminPrincipal:
    return await services(request).authenticator(request)


Caller = Annotated[AdminPrincipal, Depends(principal)]
Services = Annotated[AdminServices, Depends(services)]
