"""Routing's one client-visible error: nothing healthy to send the request to."""

from __future__ import annotations

from lockgate.errors import UpstreamFailure


class NoHealthyDeployment(UpstreamFailure):
    """Every deployment of the model (and of its fallbacks) is ejected, open or failing.

    Answered at once instead of queueing behind dead replicas; ``Retry-After`` says
    when the first one is due back, so SDKs wait rather than hammer. Attributed to the
    upstream: the engines are what is down, not the gateway or the client.
    """

    status = 503
    code = "no_healthy_deployment"
