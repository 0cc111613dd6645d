"""The admit stage a worker runs: limits in Redis when replicas share it, else in process."""

from __future__ import annotations

from lockgate.admission.admitter import LimitAdmitter
from lockgate.admission.limiter import Limiter
from lockgate.admission.local import LocalLimiter
from lockgate.config import RuntimeConfig
from lockgate.dataplane.pipeline.admit import AdmitAll, Admitter


def build_admitter(config: RuntimeConfig) -> Admitter:
    """Limits in Redis when replicas share it (exact across them), else in process."""
    if not config.admission.enabled:
        return AdmitAll()
    limiter: Limiter
    if config.redis_url is not None:
        from lockgate.admission.redis_limiter import RedisLimiter

        limiter = RedisLimiter(
            config.redis_url,
            namespace=f"{config.redis_key_prefix}limits:",
            timeout_s=config.admission.backend_timeout_ms / 1000,
        )
    else:
        limiter = LocalLimiter()
    return LimitAdmitter(limiter, config.admission)
