"""``InProcessBus``: invalidation for embedded mode with a single worker process.

With one process there is nobody else to tell, so ``publish`` just runs this
process's handlers. It keeps the same contract as the networked buses so the
caches and the admin API never ask which deployment they are in.
"""

from __future__ import annotations

from lockgate.invalidation.bus import KeyHandler, ReconnectHandler, Subscriptions, check_message


class InProcessBus:
    """Synchronous delivery to this process's handlers; owns no task and no connection.

    ``on_reconnect`` handlers are accepted and never called: there is no
    connection to lose, so no message can be missed.
    """

    def __init__(self) -> None:
        self._subscriptions = Subscriptions()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, topic: str, key: str) -> None:
        check_message(topic, key)
        self._subscriptions.deliver(topic, key)

    def subscribe(self, topic: str, handler: KeyHandler) -> None:
        self._subscriptions.add(topic, handler)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        self._subscriptions.add_reconnect(handler)
