"""A process that meters requests until it is killed: the crash test's victim.

    python -m tests.metering.crash_worker run   <journal> <store-url> <prefix>
    python -m tests.metering.crash_worker drain <journal> <store-url>

``run`` settles requests ``<prefix>-0``, ``<prefix>-1``, … in bursts and, after
each burst's group commit (``await ledger.sync()``), prints the burst's request
ids on one line: those are the requests it acknowledged. The flusher runs all
along, so a SIGKILL lands in the middle of journal commits and store batches.
``drain`` starts a ledger on the same journal, waits until the store has
everything, and prints ``drained``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from lockgate.metering.ledger import UsageLedger
from lockgate.store import Store
from lockgate.usage import Usage
from tests.metering.support import settled_context

BURST = 25


async def run(journal: Path, url: str, prefix: str) -> None:
    store = await Store.open(url)
    ledger = UsageLedger(journal, store.usage, batch_size=40, flush_interval_s=0.005)
    await ledger.start()
    n = 0
    while True:
        ids = []
        for _ in range(BURST):
            request_id = f"{prefix}-{n}"
            usage = Usage(prompt_tokens=n % 97, completion_tokens=n % 13)
            ledger.settle(settled_context(request_id, usage=usage))
            ids.append(request_id)
            n += 1
        await ledger.sync()
        sys.stdout.write(" ".join(ids) + "\n")
        sys.stdout.flush()
        await asyncio.sleep(0.001)


async def drain(journal: Path, url: str) -> None:
    store = await Store.open(url)
    ledger = UsageLedger(journal, store.usage)
    await ledger.start()
    await ledger.flush()
    await ledger.close()
    await store.close()
    print("drained", flush=True)


if __name__ == "__main__":
    mode, journal, url = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if mode == "run":
        asyncio.run(run(journal, url, sys.argv[4]))
    else:
        asyncio.run(drain(journal, url))
