"""Background GETs on deployments, over their own connection pools and credentials.

Two callers, both owned tasks of the data plane: active health checks
(``HttpProbe``: is ``/health`` 2xx?) and engine-metrics scraping
(``HttpMetricsFetch``: the ``/metrics`` page). Neither is on the request path.
"""

from __future__ import annotations

from lockgate.config import DeploymentTarget
from lockgate.dataplane.upstreams import Upstreams
from lockgate.http.client import Deadlines, UpstreamError, UpstreamResponse
from lockgate.routing.spec import EngineMetricsSpec, HealthCheckSpec

_PROBE_BODY_LIMIT = 64 * 1024
# vLLM's page with every histogram is ~100 KiB per model; leave room.
_METRICS_BODY_LIMIT = 4 * 1024 * 1024


async def _get(
    upstreams: Upstreams, deployment: DeploymentTarget, path: str, timeout_s: float, limit: int
) -> tuple[int, bytes]:
    """GET ``path`` on the deployment's origin; raises ``UpstreamError``."""
    binding = upstreams.binding(deployment)
    request = b"GET %s HTTP/1.1\r\n%s\r\n" % (path.encode(), binding.template.static_headers)
    response: UpstreamResponse = await binding.origin.send(
        request, Deadlines(timeout_s, timeout_s, timeout_s, timeout_s)
    )
    try:
        body = await response.read_body(limit)
    except BaseException:
        response.abort()
        raise
    response.release()
    return response.status, body


class HttpProbe:
    """Active health check: GET ``path``; any 2xx within the timeout is healthy."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams

    async def __call__(self, deployment: DeploymentTarget, spec: HealthCheckSpec) -> bool:
        try:
            status, _ = await _get(
                self._upstreams, deployment, spec.path, spec.timeout_s, _PROBE_BODY_LIMIT
            )
        except UpstreamError:
            return False
        return 200 <= status < 300


class HttpMetricsFetch:
    """The deployment's Prometheus page (``routing.engine_metrics.path``); raises
    ``UpstreamError`` when it cannot be read or is not a 2xx."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams

    async def __call__(self, deployment: DeploymentTarget, spec: EngineMetricsSpec) -> bytes:
        status, body = await _get(
            self._upstreams, deployment, spec.path, spec.timeout_s, _METRICS_BODY_LIMIT
        )
        if not 200 <= status < 300:
            raise UpstreamError(f"{spec.path} answered HTTP {status}")
        return body
