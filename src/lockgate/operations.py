"""The API operations the gateway understands."""

from enum import Enum


class Operation(Enum):
    CHAT = "chat.completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    PASSTHROUGH = "passthrough"

    @property
    def is_streamable(self) -> bool:
        return self is Operation.CHAT or self is Operation.COMPLETIONS
