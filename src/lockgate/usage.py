"""Token usage of one request, as read from an upstream's OpenAI ``usage`` object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_openai(cls, raw: dict[str, Any]) -> Usage:
        """Read an OpenAI ``usage`` object, tolerating missing or null detail fields."""
        prompt = raw.get("prompt_tokens") or 0
        completion = raw.get("completion_tokens") or 0
        prompt_details = raw.get("prompt_tokens_details") or {}
        completion_details = raw.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=raw.get("total_tokens") or prompt + completion,
            cached_tokens=prompt_details.get("cached_tokens") or 0,
            reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
        )
