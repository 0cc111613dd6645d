"""A replica in its own OS process, for the cross-process exactness test.

argv: Redis URL, namespace, limit, number of concurrent acquires. Prints
``ready`` once connected, waits for a line on stdin (so every process starts
at once), fires the acquires concurrently and prints one JSON line
``{"admitted", "degraded"}``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from lockgate.admission.limiter import Limit, LimitKind
from lockgate.admission.redis_limiter import RedisLimiter


def main(argv: list[str]) -> None:
    url, namespace, limit, count = argv[0], argv[1], float(argv[2]), int(argv[3])
    asyncio.run(_run(url, namespace, limit, count))


async def _run(url: str, namespace: str, most: float, count: int) -> None:
    limiter = RedisLimiter(url, namespace=namespace, timeout_s=10.0)
    limit = Limit("shared:rph", LimitKind.REQUESTS, most, 3600.0)
    try:
        await limiter.acquire([Limit("warm-up", LimitKind.REQUESTS, 1, 1.0)], [0], "warm")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        decisions = await asyncio.gather(
            *(limiter.acquire([limit], [1], f"r{index}") for index in range(count))
        )
    finally:
        await limiter.close()
    result = {
        "admitted": sum(decision.admitted for decision in decisions),
        "degraded": sum(decision.degraded for decision in decisions),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
